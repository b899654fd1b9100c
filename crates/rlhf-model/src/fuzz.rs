//! A small deterministic mutator for the parser fuzz tests of every crate: seeded byte-level
//! mutations of a valid input (flips, splices, truncations, boundary integers), so a failing case
//! is reproduced by its seed. Run more cases with `RLHF_FUZZ_CASES=N` (the suite runs a bounded
//! number).

/// Cases per target: `RLHF_FUZZ_CASES`, or `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("RLHF_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: reproducible without a dependency.
#[derive(Clone, Debug)]
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `input` after 1–4 random mutations.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            self.mutate_once(&mut out);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>) {
        let at = |m: &mut Self, len: usize| m.below(len + 1);
        match self.below(7) {
            0 if !out.is_empty() => {
                let i = self.below(out.len());
                out[i] ^= 1 << self.below(8);
            }
            1 if !out.is_empty() => {
                let i = self.below(out.len());
                out[i] = self.next_u64() as u8;
            }
            2 => {
                let i = at(self, out.len());
                let n = 1 + self.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if !out.is_empty() => {
                let i = self.below(out.len());
                let n = (1 + self.below(64)).min(out.len() - i);
                out.drain(i..i + n);
            }
            4 => {
                let n = at(self, out.len());
                out.truncate(n);
            }
            5 if out.len() >= 8 => {
                // Boundary integers where lengths, counts and offsets live.
                let values = [0u64, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 1 << 40, u64::MAX / 2, u64::MAX];
                let v = values[self.below(values.len())];
                let width = [1usize, 2, 4, 8][self.below(4)];
                let i = self.below(out.len() - width + 1);
                out[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            _ if out.len() >= 2 => {
                // Duplicate a run of bytes elsewhere (repeats structure, e.g. a JSON member).
                let i = self.below(out.len());
                let n = (1 + self.below(32)).min(out.len() - i);
                let run = out[i..i + n].to_vec();
                let j = at(self, out.len());
                out.splice(j..j, run);
            }
            _ => out.push(self.next_u64() as u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutations() {
        let input = b"{\"a\": [1, 2, 3], \"b\": \"text\"}";
        let a: Vec<Vec<u8>> = (0..20).map(|s| Mutator::new(s).mutate(input)).collect();
        let b: Vec<Vec<u8>> = (0..20).map(|s| Mutator::new(s).mutate(input)).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|m| m.as_slice() != input).count() >= 15, "mutations change the input");
    }
}
