//! Rotary position embedding in HF's rotate-half layout, fused with the head transpose.
//!
//! Input `[B, T, H, D]` (the projection output, reshaped without a copy), output `[B, H, T, D]`
//! ready for attention. For i < D/2: o_i = x_i·cos − x_{i+D/2}·sin, o_{i+D/2} = x_{i+D/2}·cos + x_i·sin.
//! The backward pass is the inverse rotation (sin → −sin) with the transpose undone.
//! `cos`/`sin` are `[B, T, D/2]` because left padding gives every row its own positions.

use super::cpu::{slice, with_slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub d: usize,
}

/// `[B,T,H,D]` → `[B,H,T,D]`, rotated by +θ.
pub(crate) fn rope_fwd<T: Real>(x: &[T], cos: &[T], sin: &[T], n: Dims) -> Vec<T> {
    let half = n.d / 2;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(n.t * n.d).enumerate().for_each(|(bh, o)| {
        let (b, h) = (bh / n.h, bh % n.h);
        for t in 0..n.t {
            let xr = &x[((b * n.t + t) * n.h + h) * n.d..][..n.d];
            let c = &cos[(b * n.t + t) * half..][..half];
            let s = &sin[(b * n.t + t) * half..][..half];
            let orow = &mut o[t * n.d..][..n.d];
            for i in 0..half {
                orow[i] = xr[i] * c[i] - xr[i + half] * s[i];
                orow[i + half] = xr[i + half] * c[i] + xr[i] * s[i];
            }
        }
    });
    out
}

/// `[B,H,T,D]` → `[B,T,H,D]`, rotated by −θ.
pub(crate) fn rope_bwd<T: Real>(g: &[T], cos: &[T], sin: &[T], n: Dims) -> Vec<T> {
    let half = n.d / 2;
    let mut dx = vec![T::zero(); g.len()];
    dx.par_chunks_mut(n.h * n.d).enumerate().for_each(|(bt, o)| {
        let (b, t) = (bt / n.t, bt % n.t);
        let c = &cos[bt * half..][..half];
        let s = &sin[bt * half..][..half];
        for h in 0..n.h {
            let gr = &g[((b * n.h + h) * n.t + t) * n.d..][..n.d];
            let orow = &mut o[h * n.d..][..n.d];
            for i in 0..half {
                orow[i] = gr[i] * c[i] + gr[i + half] * s[i];
                orow[i + half] = gr[i + half] * c[i] - gr[i] * s[i];
            }
        }
    });
    dx
}

struct RopeOp;

fn dims_of(x: &Layout, cos: &Layout) -> Result<Dims> {
    let (b, t, h, d) = x.shape().dims4()?;
    if d % 2 != 0 || cos.dims() != [b, t, d / 2] {
        bail!("rope: cos/sin {:?} do not match input {:?} ([B,T,H,D] with even D)", cos.dims(), x.dims());
    }
    Ok(Dims { b, t, h, d })
}

impl CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "fused-rope"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = dims_of(xl, cl)?;
        let out = match xs.dtype() {
            DType::F32 => {
                CpuStorage::F32(rope_fwd(slice(xs, xl, "rope")?, slice(cs, cl, "rope")?, slice(ss, sl, "rope")?, n))
            }
            DType::F64 => {
                CpuStorage::F64(rope_fwd(slice(xs, xl, "rope")?, slice(cs, cl, "rope")?, slice(ss, sl, "rope")?, n))
            }
            dt => bail!("rope: unsupported dtype {dt:?}"),
        };
        Ok((out, Shape::from((n.b, n.h, n.t, n.d))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, h, d) = x.dims4()?;
        let n = Dims { b, t, h, d };
        macro_rules! run {
            ($t:ty) => {
                with_slice::<$t, _>(grad, "rope_bwd", |g| {
                    with_slice::<$t, _>(cos, "rope_bwd", |c| {
                        with_slice::<$t, _>(sin, "rope_bwd", |s| rope_bwd(g, c, s, n))
                    })
                })???
            };
        }
        let dx = match x.dtype() {
            DType::F32 => Tensor::from_vec(run!(f32), x.shape(), x.device())?,
            DType::F64 => Tensor::from_vec(run!(f64), x.shape(), x.device())?,
            dt => bail!("rope: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), None, None))
    }
}

/// `x: [B,T,H,D]`, `cos`/`sin`: `[B,T,D/2]` → `[B,H,T,D]`.
pub fn rope_fused(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeOp)
}

/// Reference implementation from differentiable primitives (same shapes as [`rope_fused`]).
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.transpose(1, 2)?; // [B,H,T,D]
    let half = x.dim(3)? / 2;
    let (x1, x2) = (x.narrow(3, 0, half)?, x.narrow(3, half, half)?);
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?); // [B,1,T,D/2]
    let o1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let o2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Tensor::cat(&[o1, o2], 3)?.contiguous()
}
