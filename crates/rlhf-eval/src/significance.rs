//! Whether one model beat another on the same problems, or only moved within the noise: paired
//! comparisons of per-problem scores (two models answered the same prompts, so their errors are
//! correlated and an unpaired interval would be too wide).
//!
//! - The mean difference with a 95% percentile interval from a paired bootstrap: problems are
//!   resampled with replacement, both models' scores of a problem move together.
//! - For 0/1 scores, McNemar's exact test: under "no difference", the problems only one model
//!   solved are equally likely to favour either, a Binomial(n_discordant, ½).

/// The difference `mean(a) − mean(b)` over paired problems and its 95% bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedDifference {
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// Problems compared.
    pub n: usize,
}

impl PairedDifference {
    /// The interval lies entirely above (1), below (−1) or around (0) zero.
    pub fn sign(&self) -> i8 {
        if self.lo > 0.0 {
            1
        } else if self.hi < 0.0 {
            -1
        } else {
            0
        }
    }
}

/// Bootstrap resamples behind every reported interval: the interval's ends move by well under
/// a point of accuracy between seeds at this count.
pub const RESAMPLES: usize = 10_000;

/// `mean(a − b)` with the 2.5th and 97.5th percentiles of `resamples` paired bootstrap means,
/// drawn from a generator seeded with `seed` (the same inputs give the same interval). `None`
/// when there is no pair.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<PairedDifference> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n == 0 || resamples == 0 {
        return None;
    }
    let diff = d.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64(seed);
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| d[(rng.next() % n as u64) as usize]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    Some(PairedDifference { diff, lo: at(0.025), hi: at(0.975), n })
}

/// Two-sided exact McNemar p-value for paired 0/1 outcomes: `only_a` problems solved by `a` alone,
/// `only_b` by `b` alone. 1 when no problem separates them.
pub fn mcnemar_exact(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // P(X ≤ k) for X ~ Binomial(n, ½), summed in log space so large n does not overflow.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Discordant counts of two 0/1 score vectors (a score > ½ counts as solved): (only `a`, only `b`).
pub fn discordant(a: &[f64], b: &[f64]) -> (usize, usize) {
    a.iter().zip(b).fold((0, 0), |(x, y), (&s, &t)| match (s > 0.5, t > 0.5) {
        (true, false) => (x + 1, y),
        (false, true) => (x, y + 1),
        _ => (x, y),
    })
}

/// SplitMix64: a small seeded generator, so this crate needs no random-number dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        // 10 problems only a solved, 2 only b: p = 2·(C(12,0)+C(12,1)+C(12,2))/2¹² = 158/4096.
        assert!((mcnemar_exact(10, 2) - 158.0 / 4096.0).abs() < 1e-12);
        assert!((mcnemar_exact(2, 10) - 158.0 / 4096.0).abs() < 1e-12, "symmetric");
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(3, 3), 1.0, "balanced discordance is no evidence");
        // 1 vs 0 discordant: p = 2·½ = 1; 5 vs 0: 2/32.
        assert_eq!(mcnemar_exact(1, 0), 1.0);
        assert!((mcnemar_exact(5, 0) - 2.0 / 32.0).abs() < 1e-12);
        // Large n stays finite: 600 vs 400 is far in the tail.
        let p = mcnemar_exact(600, 400);
        assert!(p > 0.0 && p < 1e-9, "{p}");
        assert_eq!(discordant(&[1.0, 0.0, 1.0, 0.0], &[0.0, 1.0, 1.0, 0.0]), (1, 1));
    }

    #[test]
    fn bootstrap_interval_is_deterministic_and_near_the_normal_one() {
        // 200 problems: a solves 120, b solves 90, 40 discordant for a and 10 for b.
        let mut a = vec![0.0; 200];
        let mut b = vec![0.0; 200];
        for i in 0..80 {
            a[i] = 1.0;
            b[i] = 1.0;
        }
        for x in a.iter_mut().skip(80).take(40) {
            *x = 1.0;
        }
        for x in b.iter_mut().skip(120).take(10) {
            *x = 1.0;
        }
        let d = paired_bootstrap(&a, &b, RESAMPLES, 0).unwrap();
        assert!((d.diff - 0.15).abs() < 1e-12);
        // Normal approximation of the paired difference: 0.15 ± 1.96·sd/√n.
        let var = (0.2 + 0.05) - 0.15f64.powi(2); // E[d²] − E[d]²
        let half = 1.96 * (var / 200.0).sqrt();
        assert!((d.lo - (0.15 - half)).abs() < 0.015 && (d.hi - (0.15 + half)).abs() < 0.015, "{d:?} vs ±{half}");
        assert_eq!(d.sign(), 1);
        assert_eq!(paired_bootstrap(&a, &b, RESAMPLES, 0), Some(d), "same seed, same interval");
        let same = paired_bootstrap(&a, &a, 1000, 3).unwrap();
        assert_eq!((same.diff, same.lo, same.hi, same.sign()), (0.0, 0.0, 0.0, 0));
        assert_eq!(paired_bootstrap(&[], &[], 10, 0), None);
    }
}
