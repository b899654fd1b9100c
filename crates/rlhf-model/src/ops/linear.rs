//! `y = x·wᵀ` for `x: [N, in]`, `w: [out, in]` (HF `nn.Linear` layout), with a backward that
//! writes both gradients contiguously: dx = g·w and dw = gᵀ·x.
//!
//! Composing `x.matmul(&w.t())` in candle routes the weight gradient through a transpose node:
//! an extra `[in, out]` buffer and a strided accumulation into `[out, in]` for every weight of
//! every layer on every step. This op calls gemm directly with the strides that make every
//! operand and result contiguous.

use super::bf16::{self, Strided};
use super::cpu::{slice, with_slice, Real};
use super::precision::Precision;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::any::TypeId;

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, each operand given by its (row, column) strides, so
/// transposed operands cost nothing. `accumulate` adds to `dst` instead of overwriting it.
/// `parallel` lets gemm split the product over the thread pool (off inside parallel loops).
///
/// In bf16 mode ([`super::precision`]) the f32 products with at least 16 rows and columns and
/// 32 terms per sum take the bf16 path; the skinny ones (decoding, LoRA's rank-r factors) stay
/// fp32: they are bound by bytes moved, not by multiplications.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Real>(
    dst: &mut [T],
    accumulate: bool,
    mnk: (usize, usize, usize),
    lhs: &[T],
    lhs_strides: (usize, usize),
    rhs: &[T],
    rhs_strides: (usize, usize),
    parallel: bool,
) {
    let (m, n, k) = mnk;
    if m >= 16 && n >= 16 && k >= 32 && super::precision::current() == Precision::Bf16 {
        if let (Some(dst), Some(lhs), Some(rhs)) = (as_f32_mut(dst), as_f32(lhs), as_f32(rhs)) {
            let a = Strided { data: lhs, rs: lhs_strides.0, cs: lhs_strides.1 };
            let b = Strided { data: rhs, rs: rhs_strides.0, cs: rhs_strides.1 };
            return bf16::gemm(dst, accumulate, mnk, a, b, parallel);
        }
    }
    gemm_exact(dst, accumulate, mnk, lhs, lhs_strides, rhs, rhs_strides, parallel)
}

/// The fp32 product whatever the precision setting (the bf16 emulation runs on it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into_f32(
    dst: &mut [f32],
    accumulate: bool,
    mnk: (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    parallel: bool,
) {
    gemm_exact(dst, accumulate, mnk, lhs, lhs_strides, rhs, rhs_strides, parallel)
}

fn as_f32<T: Real>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 when the type ids match.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

fn as_f32_mut<T: Real>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

#[allow(clippy::too_many_arguments)]
fn gemm_exact<T: Real>(
    dst: &mut [T],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    assert!(dst.len() >= m * n, "gemm_into: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "gemm_into: lhs too small");
    assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "gemm_into: rhs too small");
    // SAFETY: the asserts above bound every index the strides reach; dst is m×n row-major.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            if parallel { parallelism() } else { Parallelism::None },
        );
    }
}

/// `a[m, k] · b[k, n]` for row-major slices, in the process's precision, on the thread pool:
/// the product every linear layer runs (what `rlhf bench` times).
pub fn matmul(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    product((m, n, k), a, (k, 1), b, (n, 1))
}

/// A fresh `[m, n]` product (see [`gemm_into`]).
fn product<T: Real>(
    mnk: (usize, usize, usize),
    lhs: &[T],
    lhs_strides: (usize, usize),
    rhs: &[T],
    rhs_strides: (usize, usize),
) -> Vec<T> {
    let mut dst = vec![T::zero(); mnk.0 * mnk.1];
    gemm_into(&mut dst, false, mnk, lhs, lhs_strides, rhs, rhs_strides, true);
    dst
}

/// Rows of `x` up to which the forward streams the weights once instead of calling gemm: the
/// decoding shapes (one row per sequence), where gemm's packing dominates and its AVX-512 path
/// is slower than a plain dot-product sweep that is bound by memory bandwidth.
const SMALL_N: usize = 16;

/// y[N, out] = x[N, in] · w[out, in]ᵀ
pub(crate) fn fwd<T: Real>(x: &[T], w: &[T], n: usize, din: usize, dout: usize) -> Vec<T> {
    if n <= SMALL_N {
        return fwd_small_n(x, w, n, din, dout);
    }
    product((n, dout, din), x, (din, 1), w, (1, din))
}

/// Each weight row is read once and dotted with every row of `x` while it sits in L1, four
/// rows of `x` at a time: one weight load per four FMAs, and eight independent accumulator
/// chains (one chain is bound by the FMA latency, not by the FMA units).
fn fwd_small_n<T: Real>(x: &[T], w: &[T], n: usize, din: usize, dout: usize) -> Vec<T> {
    let xrow = |i: usize| &x[i * din..][..din];
    by_output(n, din, dout, |j, out| {
        let wr = &w[j * din..][..din];
        let mut i = 0;
        while i + 4 <= n {
            out[i..i + 4].copy_from_slice(&dots(wr, [xrow(i), xrow(i + 1), xrow(i + 2), xrow(i + 3)]));
            i += 4;
        }
        for (o, k) in out[i..].iter_mut().zip(i..n) {
            *o = dot(wr, xrow(k));
        }
    })
}

/// `y[n, out]` for a few rows, one output at a time: `fill(j, y_j)` writes output j of all n
/// rows. Tasks take blocks of outputs (about 64K weights each), so each weight row is read
/// once and stays in L1 while every row of `x` is dotted with it.
pub(crate) fn by_output<T: Real>(n: usize, din: usize, dout: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut yt = vec![T::zero(); dout * n]; // [out, N]: each task writes a contiguous block
    let rows_per_task = (64 * 1024 / din.max(1)).max(1);
    yt.par_chunks_mut(rows_per_task * n).enumerate().for_each(|(ci, block)| {
        for (jj, out) in block.chunks_mut(n).enumerate() {
            fill(ci * rows_per_task + jj, out);
        }
    });
    let mut y = vec![T::zero(); n * dout];
    for j in 0..dout {
        for i in 0..n {
            y[i * dout + j] = yt[j * n + i];
        }
    }
    y
}

/// Lanes per accumulator block: two AVX-512 registers of f32, so that four rows give eight
/// independent FMA chains.
const LANES: usize = 32;

/// One dot product with a single 16-lane accumulator (faster than [`dots`] for lone rows:
/// batch-1 decoding is bound by memory bandwidth, not by FMA latency).
fn dot<T: Real>(w: &[T], x: &[T]) -> T {
    const LANES1: usize = 16;
    let mut acc = [T::zero(); LANES1];
    let (wc, xc) = (w.chunks_exact(LANES1), x.chunks_exact(LANES1));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wv, xv) in wc.zip(xc) {
        for l in 0..LANES1 {
            acc[l] = wv[l].mul_add(xv[l], acc[l]);
        }
    }
    let mut sum = acc.iter().copied().sum::<T>();
    for (a, b) in wt.iter().zip(xt) {
        sum = a.mul_add(*b, sum);
    }
    sum
}

/// `[w·x_k for k in 0..R]` for equally long `w` and `xs[k]`.
#[inline(always)]
#[allow(clippy::assign_op_pattern)] // `Real` has no `AddAssign`
fn dots<T: Real, const R: usize>(w: &[T], xs: [&[T]; R]) -> [T; R] {
    let chunks = w.len() / LANES;
    let mut acc = [[T::zero(); LANES]; R];
    for c in 0..chunks {
        let wv = &w[c * LANES..(c + 1) * LANES];
        for (a, xk) in acc.iter_mut().zip(&xs) {
            let xv = &xk[c * LANES..(c + 1) * LANES];
            for l in 0..LANES {
                a[l] = wv[l].mul_add(xv[l], a[l]);
            }
        }
    }
    let mut out = [T::zero(); R];
    for ((o, mut a), xk) in out.iter_mut().zip(acc).zip(&xs) {
        // Pairwise lane sum: a tree, not a 31-long chain of dependent additions.
        let mut width = LANES / 2;
        while width > 0 {
            for l in 0..width {
                a[l] = a[l] + a[l + width];
            }
            width /= 2;
        }
        let mut sum = a[0];
        for (wi, xi) in w[chunks * LANES..].iter().zip(&xk[chunks * LANES..]) {
            sum = wi.mul_add(*xi, sum);
        }
        *o = sum;
    }
    out
}

/// (dx[N, in] = g[N, out]·w[out, in], dw[out, in] = g[N, out]ᵀ·x[N, in]); `dw` only when
/// `want_dw` (a frozen weight, e.g. the LM head under LoRA, needs no `[out, in]` gradient).
fn bwd<T: Real>(
    x: &[T],
    w: &[T],
    g: &[T],
    n: usize,
    din: usize,
    dout: usize,
    want_dw: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let dx = product((n, din, dout), g, (dout, 1), w, (din, 1));
    let dw = want_dw.then(|| product((dout, din, n), g, (1, dout), x, (din, 1)));
    (dx, dw)
}

struct Linear;

fn dims(xl: &Layout, wl: &Layout) -> Result<(usize, usize, usize)> {
    let (n, din) = xl.shape().dims2()?;
    let (dout, win) = wl.shape().dims2()?;
    if win != din {
        bail!("linear: input {:?} does not match weight {:?} ([out, in])", xl.dims(), wl.dims());
    }
    Ok((n, din, dout))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, din, dout) = dims(xl, wl)?;
        let out = match xs.dtype() {
            DType::F32 => CpuStorage::F32(fwd::<f32>(slice(xs, xl, "linear")?, slice(ws, wl, "linear")?, n, din, dout)),
            DType::F64 => CpuStorage::F64(fwd::<f64>(slice(xs, xl, "linear")?, slice(ws, wl, "linear")?, n, din, dout)),
            dt => bail!("linear: unsupported dtype {dt:?}"),
        };
        Ok((out, Shape::from((n, dout))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, din) = x.dims2()?;
        let dout = w.dim(0)?;
        let want_dw = w.track_op();
        macro_rules! run {
            ($t:ty) => {{
                let (dx, dw) = with_slice::<$t, _>(x, "linear_bwd", |xs| {
                    with_slice::<$t, _>(w, "linear_bwd", |ws| {
                        with_slice::<$t, _>(g, "linear_bwd", |gs| bwd(xs, ws, gs, n, din, dout, want_dw))
                    })
                })???;
                let dw = dw.map(|dw| Tensor::from_vec(dw, (dout, din), w.device())).transpose()?;
                (Tensor::from_vec(dx, (n, din), x.device())?, dw)
            }};
        }
        let (dx, dw) = match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("linear: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), dw))
    }
}

/// `x: [N, in]`, `w: [out, in]` → `[N, out]`.
pub fn linear_fused(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

pub fn linear_composed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.matmul(&w.t()?)
}
