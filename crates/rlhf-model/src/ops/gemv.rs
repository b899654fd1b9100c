//! `y[n, out] = x[n, in] · w[out, in]ᵀ` for a few rows of fp32 `x` against bfloat16 weights:
//! the products of a decoding step, which read every weight once per token and so are bound by
//! the bytes of the weights. Stored in bf16 they are half the bytes of fp32; each value is
//! widened exactly (a 16-bit shift) and every sum is kept in fp32. Used where the CPU has no AMX
//! tiles (`decode.rs` rounds `x` to bf16 first, as the tiles would) and for attention scores.
//!
//! Each output element is one task's fixed-order sum, whatever the thread count.

use super::bf16::round;
use rayon::prelude::*;

/// Weights per accumulator block: two AVX-512 registers of f32, so four rows of `x` give eight
/// independent FMA chains.
const LANES: usize = 32;

/// `x` → bf16, rounding to nearest even, in parallel (a weight matrix becomes its decoding copy).
pub(crate) fn to_bf16(x: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; x.len()];
    out.par_chunks_mut(64 * 1024).zip(x.par_chunks(64 * 1024)).for_each(|(o, x)| {
        o.iter_mut().zip(x).for_each(|(o, &x)| *o = round(x));
    });
    out
}

/// `y[n, out] = x[n, in] · w[out, in]ᵀ`.
pub(crate) fn gemv_bf16(x: &[f32], w: &[u16], n: usize, din: usize, dout: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * din, "gemv_bf16: x is not [{n}, {din}]");
    assert_eq!(w.len(), dout * din, "gemv_bf16: w is not [{dout}, {din}]");
    let xrow = |i: usize| &x[i * din..][..din];
    super::linear::by_output(n, din, dout, |j, out| {
        let wr = &w[j * din..][..din];
        let mut i = 0;
        while i + 4 <= n {
            out[i..i + 4].copy_from_slice(&dots(wr, [xrow(i), xrow(i + 1), xrow(i + 2), xrow(i + 3)]));
            i += 4;
        }
        while i + 2 <= n {
            out[i..i + 2].copy_from_slice(&dots(wr, [xrow(i), xrow(i + 1)]));
            i += 2;
        }
        if i < n {
            out[i] = dots(wr, [xrow(i)])[0];
        }
    })
}

/// `w · x` in the same fixed order as a row of [`gemv_bf16`] (attention scores over the cached
/// bf16 keys).
#[inline(always)]
pub(crate) fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    dots(w, [x])[0]
}

/// `[w·x_k for k in 0..R]`, `w` widened from bf16 once per block and used R times.
///
/// The order of every sum is fixed: lane `l` of 32 accumulates elements `l, l + 32, …` with
/// fused multiply-adds, the lanes are added as a tree (16, 8, 4, 2, 1 apart), then the tail in
/// order. The AVX-512 path and the portable one compute exactly the same numbers.
#[inline(always)]
fn dots<const R: usize>(w: &[u16], xs: [&[f32]; R]) -> [f32; R] {
    assert!(xs.iter().all(|x| x.len() == w.len()), "dots: operands of different lengths");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: AVX-512F is enabled at compile time, and every operand has w's length.
    let lanes = unsafe { avx512::lane_sums(w, xs) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    let lanes = lane_sums(w, xs);
    let body = w.len() / LANES * LANES;
    std::array::from_fn(|k| {
        let mut sum = lanes[k];
        for (wi, xi) in w[body..].iter().zip(&xs[k][body..]) {
            sum = f32::from_bits((*wi as u32) << 16).mul_add(*xi, sum);
        }
        sum
    })
}

/// The lane accumulators of [`dots`] over the whole 32-element blocks, summed as a tree.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "avx512f"))))]
fn lane_sums<const R: usize>(w: &[u16], xs: [&[f32]; R]) -> [f32; R] {
    let chunks = w.len() / LANES;
    let mut acc = [[0f32; LANES]; R];
    for c in 0..chunks {
        let wb = &w[c * LANES..][..LANES];
        let wv: [f32; LANES] = std::array::from_fn(|l| f32::from_bits((wb[l] as u32) << 16));
        for (a, xk) in acc.iter_mut().zip(&xs) {
            let xv = &xk[c * LANES..][..LANES];
            for l in 0..LANES {
                a[l] = wv[l].mul_add(xv[l], a[l]);
            }
        }
    }
    acc.map(|mut a| {
        let mut width = LANES / 2;
        while width > 0 {
            for l in 0..width {
                a[l] += a[l + width];
            }
            width /= 2;
        }
        a[0]
    })
}

/// [`lane_sums`] on AVX-512 registers. Written out because the compiler widens bf16 and sums
/// at 256 bits, which left the decoding products compute-bound at about half the bandwidth.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod avx512 {
    use std::arch::x86_64::*;

    /// 16 bf16 values at `p` as f32 (exact: the bits move up by 16).
    #[inline(always)]
    unsafe fn widen16(p: *const u16) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
    }

    /// # Safety
    /// Every `xs[k]` must be at least as long as `w`.
    #[inline(always)]
    pub(super) unsafe fn lane_sums<const R: usize>(w: &[u16], xs: [&[f32]; R]) -> [f32; R] {
        let chunks = w.len() / super::LANES;
        let (mut lo, mut hi) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
        for c in 0..chunks {
            let at = c * super::LANES;
            let (wl, wh) = (widen16(w.as_ptr().add(at)), widen16(w.as_ptr().add(at + 16)));
            for k in 0..R {
                let xp = xs[k].as_ptr().add(at);
                lo[k] = _mm512_fmadd_ps(wl, _mm512_loadu_ps(xp), lo[k]);
                hi[k] = _mm512_fmadd_ps(wh, _mm512_loadu_ps(xp.add(16)), hi[k]);
            }
        }
        std::array::from_fn(|k| {
            let s16 = _mm512_add_ps(lo[k], hi[k]);
            let upper8 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s16)));
            let s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), upper8);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bf16::widen;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Against an f64 sum over the widened weights: only fp32 summation error may remain.
    #[test]
    fn matches_f64_on_the_rounded_weights() {
        for &(n, din, dout) in &[(1, 576, 37), (3, 67, 5), (8, 1536, 70), (7, 31, 129), (16, 100, 3)] {
            let x = values(n * din, 1);
            let w = to_bf16(&values(dout * din, 2));
            let y = gemv_bf16(&x, &w, n, din, dout);
            for i in 0..n {
                for j in 0..dout {
                    let want: f64 = (0..din).map(|k| x[i * din + k] as f64 * widen(w[j * din + k]) as f64).sum::<f64>();
                    let got = y[i * dout + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (din as f64).sqrt(),
                        "({n},{din},{dout}) [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Both implementations of the lane sums give the same bits (runs are identical on machines
    /// with and without AVX-512).
    #[test]
    fn lane_sums_are_the_same_everywhere() {
        for n in [0, 31, 32, 64, 100, 576] {
            let w = to_bf16(&values(n, 6));
            let x: Vec<Vec<f32>> = (0..4).map(|k| values(n, 7 + k)).collect();
            let xs = [&x[0][..], &x[1], &x[2], &x[3]];
            let got = dots(&w, xs);
            let mut want = lane_sums(&w, xs);
            let body = n / LANES * LANES;
            for (k, s) in want.iter_mut().enumerate() {
                for i in body..n {
                    *s = widen(w[i]).mul_add(x[k][i], *s);
                }
            }
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "n = {n}");
        }
    }

    /// Every row is summed in the same order alone or in a batch of any size: a sample does not
    /// depend on what else is decoded beside it.
    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let (din, dout) = (200, 50);
        let x = values(5 * din, 4);
        let w = to_bf16(&values(dout * din, 5));
        let all = gemv_bf16(&x, &w, 5, din, dout);
        for i in 0..5 {
            let one = gemv_bf16(&x[i * din..][..din], &w, 1, din, dout);
            assert_eq!(one[..], all[i * dout..][..dout]);
        }
    }
}
