//! `C (+)= A·B` with A and B rounded to bfloat16 and every sum kept in fp32: on the AMX tiles
//! where the CPU has them (`tdpbf16ps`, 16×16×32 per instruction), emulated with the fp32 gemm
//! on bf16-rounded copies elsewhere.
//!
//! The operands are packed once per call: A into 1 KiB tiles of 16 rows × 32 values, B into
//! 16-column panels in the pair-interleaved ("VNNI") layout the tile product reads; K is
//! zero-padded to a multiple of 32, M and N to multiples of 32. Each thread
//! owns whole 32×32 output blocks and K is walked in fixed chunks in order, so every output
//! element is summed in the same order whatever the thread count: runs stay bit-identical.

use super::linear::gemm_into_f32;
use pack::{pack_a, pack_b, reuse};
use rayon::prelude::*;

mod pack;

/// f32 → bf16, round to nearest even (NaN stays NaN). Integer-only, so the packing loops
/// vectorise.
#[inline(always)]
pub fn round(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let quiet_nan = (b >> 16) | 0x40;
    (if b & 0x7fff_ffff > 0x7f80_0000 { quiet_nan } else { rounded }) as u16
}

#[inline(always)]
pub fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The value `x` takes once rounded to bf16.
#[inline(always)]
pub fn quantise(x: f32) -> f32 {
    widen(round(x))
}

/// A matrix read with (row, column) strides: transposed operands cost nothing to describe.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Strided<'_> {
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

const TILE_K: usize = 32; // bf16 values per tile row (64 bytes)
const BLOCK: usize = 32; // output rows and columns per task: 2×2 tiles of 16×16
/// K per pass over the output: a 32-row A block of this depth (at most 64 KiB) stays close
/// (L1/L2) while the task sweeps its group of column blocks; fewer passes mean fewer loads and
/// stores of the fp32 output (measured best of 256, 512 and 1024 on the default model's shapes).
/// Part of the arithmetic: the passes fix the order of the sums.
const MAX_KC: usize = 1024;
/// Column blocks (of 32) per task.
const GROUP: usize = 8;

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Raw pointer a parallel loop writes disjoint parts through.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// A method, so that closures capture the wrapper and not its raw field.
    fn get(self) -> *mut T {
        self.0
    }
}

/// `dst[m, n] (+)= A[m, k] · B[k, n]` with bf16 operands and fp32 sums; `dst` row-major.
pub fn gemm(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    a: Strided,
    b: Strided,
    parallel: bool,
) {
    assert!(dst.len() >= m * n, "bf16 gemm: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs, "bf16 gemm: A too small");
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs, "bf16 gemm: B too small");
    if super::precision::units().amx_bf16 {
        amx::gemm(dst, accumulate, (m, n, k), a, b, parallel);
    } else {
        emulated(dst, accumulate, (m, n, k), a, b, parallel);
    }
}

/// The B operand of [`gemm`] (`k × n`) rounded and laid out for the tiles once, for products
/// that reuse it many times: decoding reads every weight matrix at every step.
pub struct PackedB {
    panels: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedB {
    pub fn new(b: Strided, k: usize, n: usize) -> Self {
        assert!(k > 0 && n > 0, "bf16 packed B: empty {k} × {n}");
        assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs, "bf16 packed B: too small");
        let mut panels = Vec::new();
        pack_b(&mut panels, b, k, n, round_up(n, BLOCK), round_up(k, TILE_K), true);
        Self { panels, k, n }
    }

    /// Bytes held (the bf16 values of B, padded to whole tiles).
    pub fn bytes(&self) -> usize {
        self.panels.len() * 4
    }
}

/// `dst[m, n] = A[m, k] · B` on the matrix unit with B packed beforehand: the same blocks and
/// order of sums as [`gemm`], so each row equals what `gemm` computes for it. Requires AMX.
pub fn gemm_packed(dst: &mut [f32], m: usize, a: Strided, b: &PackedB, parallel: bool) {
    assert!(super::precision::units().amx_bf16, "bf16 gemm_packed needs AMX tiles");
    assert!(dst.len() >= m * b.n, "bf16 gemm_packed: destination too small");
    if m == 0 {
        return;
    }
    assert!(a.data.len() > (m - 1) * a.rs + (b.k - 1) * a.cs, "bf16 gemm_packed: A too small");
    amx::gemm_packed(dst, m, a, b, parallel);
}

/// The same arithmetic without a matrix unit: bf16-rounded copies through the fp32 gemm
/// (a product of two bf16 values is exact in fp32, so only the order of the sums differs).
pub fn emulated(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    a: Strided,
    b: Strided,
    parallel: bool,
) {
    let qa: Vec<f32> = (0..m * k).map(|i| quantise(a.at(i / k, i % k))).collect();
    let qb: Vec<f32> = (0..k * n).map(|i| quantise(b.at(i / n, i % n))).collect();
    gemm_into_f32(dst, accumulate, (m, n, k), &qa, (k, 1), &qb, (n, 1), parallel);
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::*;
    use std::arch::asm;

    /// Palette 1 with all eight tiles at 16 rows × 64 bytes: tiles 0–3 the 2×2 fp32 output
    /// block, 4–5 two 16-row strips of A, 6–7 two 16-column panels of B.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64; // bytes per row (little-endian u16)
            c[48 + t] = 16; // rows
            t += 1;
        }
        TileConfig(c)
    };

    /// Configures the tiles of the calling thread for the duration of `f`.
    fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
        assert!(crate::ops::precision::units().amx_bf16, "AMX tiles used without the tile-state permission");
        // SAFETY: the process holds the tile-state permission (checked by `units()` before
        // any call reaches here); the configuration is a valid palette-1 layout.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        let r = f();
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
        r
    }

    /// One 32×32 output block over `steps` × 32 values of K.
    ///
    /// SAFETY: `c` addresses 32 rows of 32 f32 at `c_stride` bytes apart; `a0`, `a1` (two
    /// 16-row strips of A) and `b0`, `b1` (two 16-column panels of B) each `steps` contiguous
    /// 1 KiB tiles.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        c: *mut f32,
        c_stride: usize,
        load_c: bool,
        a0: *const u16,
        a1: *const u16,
        b0: *const u16,
        b1: *const u16,
        steps: usize,
    ) {
        let c_lo = c as *mut u8;
        let c_hi = c_lo.add(16 * c_stride);
        if load_c {
            asm!(
                "tileloadd tmm0, [{lo} + {cs}*1]",
                "tileloadd tmm1, [{lo} + {cs}*1 + 64]",
                "tileloadd tmm2, [{hi} + {cs}*1]",
                "tileloadd tmm3, [{hi} + {cs}*1 + 64]",
                lo = in(reg) c_lo, hi = in(reg) c_hi, cs = in(reg) c_stride,
                options(nostack, readonly),
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        asm!(
            "2:",
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) steps => _,
            s = in(reg) 64usize,
            options(nostack, readonly),
        );
        asm!(
            "tilestored [{lo} + {cs}*1], tmm0",
            "tilestored [{lo} + {cs}*1 + 64], tmm1",
            "tilestored [{hi} + {cs}*1], tmm2",
            "tilestored [{hi} + {cs}*1 + 64], tmm3",
            lo = in(reg) c_lo, hi = in(reg) c_hi, cs = in(reg) c_stride,
            options(nostack),
        );
    }

    pub fn gemm(
        dst: &mut [f32],
        accumulate: bool,
        (m, n, k): (usize, usize, usize),
        a: Strided,
        b: Strided,
        parallel: bool,
    ) {
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        // Packing buffers live on as long as the thread: allocating 100 MB afresh for every
        // LM-head product costs more in page faults than the packing itself.
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => run(&mut bufs, dst, accumulate, (m, n, k), a, b, threads),
            // Re-entered on this thread (a rayon worker stealing an outer job): fresh buffers.
            Err(_) => run(&mut Buffers::default(), dst, accumulate, (m, n, k), a, b, threads),
        })
    }

    #[derive(Default)]
    struct Buffers {
        a: Vec<u16>,
        b: Vec<u32>,
        c: Vec<f32>,
    }

    thread_local! {
        static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        bufs: &mut Buffers,
        dst: &mut [f32],
        accumulate: bool,
        (m, n, k): (usize, usize, usize),
        a: Strided,
        b: Strided,
        threads: usize,
    ) {
        let Buffers { a: a_buf, b: b_buf, c: c_buf } = bufs;
        pack_b(b_buf, b, k, n, round_up(n, BLOCK), round_up(k, TILE_K), threads > 1);
        tiles(a_buf, c_buf, dst, accumulate, (m, n, k), a, b_buf, GROUP, threads);
    }

    /// One 16-row strip of A against two 16-column panels of B over `steps` × 32 values of K,
    /// stored as a 16 × 32 fp32 block (row stride 128 bytes). Row by row the same sequence of
    /// tile products as [`block`], without the second strip a few rows do not need (running
    /// `block` with the one strip twice decoded the default model at 58 tokens/s against 66).
    ///
    /// SAFETY: `c` addresses 16 × 32 f32; `a`, `b0`, `b1` each `steps` contiguous 1 KiB tiles.
    unsafe fn strip_block(c: *mut f32, a: *const u16, b0: *const u16, b1: *const u16, steps: usize) {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        asm!(
            "2:",
            "tileloadd tmm4, [{a} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "add {a}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            a = inout(reg) a => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) steps => _,
            s = in(reg) 64usize,
            options(nostack, readonly),
        );
        asm!(
            "tilestored [{c} + {cs}*1], tmm0",
            "tilestored [{c} + {cs}*1 + 64], tmm1",
            c = in(reg) c, cs = in(reg) 128usize,
            options(nostack),
        );
    }

    /// `dst[m, n] = A[m, k] · B` with B packed once beforehand (see [`PackedB`]).
    pub fn gemm_packed(dst: &mut [f32], m: usize, a: Strided, b: &PackedB, parallel: bool) {
        let threads = if parallel { rayon::current_num_threads() } else { 1 };
        if m <= 16 {
            return few_rows(dst, m, a, b, threads);
        }
        // A few rows against many columns: one column block per task keeps both threads busy.
        let mut run =
            |bufs: &mut Buffers| tiles(&mut bufs.a, &mut bufs.c, dst, false, (m, b.n, b.k), a, &b.panels, 1, threads);
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => run(&mut bufs),
            Err(_) => run(&mut Buffers::default()),
        })
    }

    /// [`gemm_packed`] for at most 16 rows (a decoding step): one strip of A, packed serially,
    /// and the whole of K in one sweep per column block (the fp32 partial sums [`tiles`] stores
    /// between its passes are exact, so the sums are the same).
    fn few_rows(dst: &mut [f32], m: usize, a: Strided, b: &PackedB, threads: usize) {
        let (n, kp) = (b.n, round_up(b.k, TILE_K));
        let mut a_tiles = Vec::new();
        pack_a(&mut a_tiles, a, m, b.k, 16, kp, false);
        let blocks = round_up(n, BLOCK) / BLOCK;
        let per_range = blocks.div_ceil(threads * 4).max(1);
        let out = SendPtr(dst.as_mut_ptr());
        let run_range = |r: usize| {
            with_tiles(|| {
                #[repr(align(64))]
                struct Block([f32; 16 * BLOCK]);
                let mut c = Block([0.0; 16 * BLOCK]);
                for j in r * per_range..((r + 1) * per_range).min(blocks) {
                    let panel = |p: usize| b.panels[p * 8 * kp..].as_ptr().cast::<u16>();
                    // SAFETY: panels 2j and 2j + 1 exist (n was padded to whole blocks) and hold
                    // kp / 32 tiles each, as does the strip of A; `c` is 16 × 32 f32.
                    unsafe {
                        strip_block(c.0.as_mut_ptr(), a_tiles.as_ptr(), panel(2 * j), panel(2 * j + 1), kp / TILE_K)
                    };
                    let (j0, cols) = (j * BLOCK, BLOCK.min(n - j * BLOCK));
                    for (i, row) in c.0.chunks(BLOCK).take(m).enumerate() {
                        // SAFETY: row i < m, columns j0..j0 + cols < n; ranges write disjoint
                        // column blocks.
                        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.get().add(i * n + j0), cols) };
                    }
                }
            })
        };
        let ranges = blocks.div_ceil(per_range);
        if threads > 1 {
            (0..ranges).into_par_iter().for_each(run_range);
        } else {
            (0..ranges).for_each(run_range);
        }
    }

    /// The tile products over packed B panels (`bp`); A is packed here. `group` column blocks
    /// per task only shares out the work: the order of every sum is the same for any value.
    #[allow(clippy::too_many_arguments)]
    fn tiles(
        a_buf: &mut Vec<u16>,
        scratch: &mut Vec<f32>,
        dst: &mut [f32],
        accumulate: bool,
        (m, n, k): (usize, usize, usize),
        a: Strided,
        bp: &[u32],
        group: usize,
        threads: usize,
    ) {
        let kp = round_up(k, TILE_K);
        let (m_pad, n_pad) = (round_up(m, BLOCK), round_up(n, BLOCK));
        pack_a(a_buf, a, m, k, m_pad, kp, threads > 1);
        let ap = &*a_buf;
        // Write straight into `dst` when it has whole blocks; otherwise into a padded scratch.
        let direct = m == m_pad && n == n_pad;
        if !direct {
            reuse(scratch, m_pad * n_pad); // every block is stored by the first pass
        }
        let (c, c_cols) = if direct { (SendPtr(dst.as_mut_ptr()), n) } else { (SendPtr(scratch.as_mut_ptr()), n_pad) };
        let (mb, nb) = (m_pad / BLOCK, n_pad / BLOCK);
        let passes = kp.div_ceil(MAX_KC);
        let kc = round_up(kp.div_ceil(passes), TILE_K);
        // A task is one 32-row block of A against a group of column blocks: the A block stays
        // in L1 across the group, the group's B panels in L2 across consecutive tasks.
        let groups_n = nb.div_ceil(group);
        let tasks = groups_n * mb;
        let per_range = tasks.div_ceil(threads * 4).max(1);
        let kq = kp / TILE_K;
        for (pass, k0) in (0..kp).step_by(kc).enumerate() {
            let steps = kc.min(kp - k0) / TILE_K;
            let load_c = pass > 0 || (direct && accumulate);
            let run_range = |r: usize| {
                with_tiles(|| {
                    for t in r * per_range..((r + 1) * per_range).min(tasks) {
                        let (g, i) = (t / mb, t % mb);
                        for j in g * group..((g + 1) * group).min(nb) {
                            // SAFETY: block (i, j) lies inside C (m_pad × n_pad, or m × n of
                            // whole blocks); A and B were packed to the padded extents and kp;
                            // tasks write disjoint blocks.
                            unsafe {
                                let cp = c.get().add(i * BLOCK * c_cols + j * BLOCK);
                                let strip = |s: usize| ap.as_ptr().add((s * kq + k0 / TILE_K) * 512);
                                let panel = |p: usize| bp.as_ptr().add(p * 8 * kp + k0 * 8).cast::<u16>();
                                block(
                                    cp,
                                    c_cols * 4,
                                    load_c,
                                    strip(2 * i),
                                    strip(2 * i + 1),
                                    panel(2 * j),
                                    panel(2 * j + 1),
                                    steps,
                                );
                            }
                        }
                    }
                })
            };
            let ranges = tasks.div_ceil(per_range);
            if threads > 1 {
                (0..ranges).into_par_iter().for_each(run_range);
            } else {
                (0..ranges).for_each(run_range);
            }
        }
        if !direct {
            for (row, src) in dst[..m * n].chunks_mut(n).zip(scratch.chunks(n_pad)) {
                if accumulate {
                    row.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
                } else {
                    row.copy_from_slice(&src[..n]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod amx {
    use super::*;
    pub fn gemm(dst: &mut [f32], accumulate: bool, mnk: (usize, usize, usize), a: Strided, b: Strided, parallel: bool) {
        emulated(dst, accumulate, mnk, a, b, parallel)
    }
    pub fn gemm_packed(_: &mut [f32], _: usize, _: Strided, _: &PackedB, _: bool) {
        unreachable!("no AMX tiles outside x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = fn(&mut [f32], bool, (usize, usize, usize), Strided, Strided, bool);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Checks `kernel` on A (m×k) and B (k×n), each stored plain or transposed, with and
    /// without accumulation, against f64 sums of the bf16-rounded operands: the only error
    /// allowed is fp32 summation (≤ k·2⁻²³·Σ|ab| and a little), far below what a wrong pairing,
    /// layout or rounding of an operand would give (≥ 2⁻⁹ of the terms).
    fn check(kernel: Kernel, m: usize, n: usize, k: usize) {
        let (a, b, c0) = (values(m * k, 1), values(k * n, 2), values(m * n, 3));
        for (a_t, b_t, acc, par) in [
            (false, false, false, true),
            (true, false, true, true),
            (false, true, false, false),
            (true, true, true, true),
        ] {
            let a_s = if a_t { Strided { data: &a, rs: 1, cs: m } } else { Strided { data: &a, rs: k, cs: 1 } };
            let b_s = if b_t { Strided { data: &b, rs: 1, cs: k } } else { Strided { data: &b, rs: n, cs: 1 } };
            let mut c = c0.clone();
            kernel(&mut c, acc, (m, n, k), a_s, b_s, par);
            let (mut worst, mut exact_err) = (0f64, 0f64);
            for i in 0..m {
                for j in 0..n {
                    let (mut sum, mut mag, mut unrounded) = (0f64, 0f64, 0f64);
                    for kk in 0..k {
                        let p = quantise(a_s.at(i, kk)) as f64 * quantise(b_s.at(kk, j)) as f64;
                        sum += p;
                        mag += p.abs();
                        unrounded += a_s.at(i, kk) as f64 * b_s.at(kk, j) as f64;
                    }
                    let base = if acc { c0[i * n + j] as f64 } else { 0.0 };
                    let got = c[i * n + j] as f64 - base;
                    let tol = (k as f64 + 4.0) * f32::EPSILON as f64 * (mag + base.abs()) + 1e-30;
                    worst = worst.max((got - sum).abs() / tol);
                    exact_err = exact_err.max((got - unrounded).abs() / (mag + 1e-30));
                }
            }
            assert!(
                worst <= 1.0,
                "{m}×{n}×{k} (aᵀ {a_t}, bᵀ {b_t}, acc {acc}): error {worst:.2}× the fp32 summation bound"
            );
            // And it is bf16 arithmetic: within 2⁻⁸ of the exact product, relative to Σ|ab|.
            assert!(exact_err <= 1.0 / 256.0, "{m}×{n}×{k}: {exact_err} from the unrounded product");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round(1.0), 0x3f80);
        assert_eq!(widen(round(1.0 + 1.0 / 256.0)), 1.0); // halfway, even below
        assert_eq!(widen(round(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0); // halfway, even above
        assert_eq!(widen(round(1.0 + 1.5 / 256.0)), 1.0 + 2.0 / 256.0);
        assert_eq!(widen(round(f32::INFINITY)), f32::INFINITY);
        assert_eq!(widen(round(f32::MAX)), f32::INFINITY);
        assert!(widen(round(f32::NAN)).is_nan());
        assert_eq!(widen(round(-2.5)), -2.5);
    }

    #[test]
    fn emulated_gemm_is_bf16_arithmetic() {
        for (m, n, k) in [(1, 1, 1), (17, 33, 31), (32, 32, 64), (45, 19, 77)] {
            check(emulated, m, n, k);
        }
    }

    #[test]
    fn gemm_on_this_cpu_is_bf16_arithmetic() {
        // The AMX path where the CPU has it (the emulation elsewhere): odd shapes exercise the
        // padding of M, N and K; 1100 and 2100 cross the K passes of `MAX_KC`. The packing
        // buffers are reused dirty from one shape to the next (a large one before small padded
        // ones), so padding left unwritten would show here.
        for (m, n, k) in [(16, 16, 32), (17, 33, 31), (64, 96, 128), (33, 47, 1100), (96, 64, 2100), (5, 200, 40)] {
            check(gemm, m, n, k);
        }
    }

    #[test]
    fn gemm_is_identical_across_thread_counts() {
        let (m, n, k) = (96, 160, 1500);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let run = |par: bool| {
            let mut c = vec![0f32; m * n];
            gemm(&mut c, false, (m, n, k), Strided { data: &a, rs: k, cs: 1 }, Strided { data: &b, rs: 1, cs: k }, par);
            c
        };
        let one = run(false);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(one, pool.install(|| run(true)));
    }
}
