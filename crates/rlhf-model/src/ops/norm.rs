//! RMSNorm and LayerNorm over the last dimension, fused, with a hand-written backward.
//!
//! x̂ = (x − μ)·r with r = 1/√(var + ε) (RMSNorm: μ = 0, var = mean(x²)); y = x̂·w (+ b).
//! Backward with ĝ = g·w: dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) (RMSNorm drops the mean(ĝ) term),
//! dw = Σ_rows g·x̂, db = Σ_rows g.

use super::cpu::{rows_per_task, slice, with_slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

#[derive(Clone, Copy)]
pub(crate) struct NormSpec {
    pub eps: f64,
    /// LayerNorm subtracts the mean; RMSNorm does not.
    pub center: bool,
}

pub(crate) fn norm_fwd<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, spec: NormSpec) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    let eps = T::from(spec.eps).unwrap();
    let dn = T::from(d).unwrap();
    y.par_chunks_mut(d * rows_per_task(d)).zip(x.par_chunks(d * rows_per_task(d))).for_each(|(yc, xc)| {
        for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
            let mu = if spec.center { xr.iter().copied().sum::<T>() / dn } else { T::zero() };
            let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() / dn;
            let r = (var + eps).sqrt().recip();
            for i in 0..d {
                let mut v = (xr[i] - mu) * r * w[i];
                if let Some(b) = b {
                    v += b[i];
                }
                yr[i] = v;
            }
        }
    });
    y
}

/// Returns (dx, dw, db).
pub(crate) fn norm_bwd<T: Real>(x: &[T], w: &[T], g: &[T], spec: NormSpec) -> (Vec<T>, Vec<T>, Vec<T>) {
    let d = w.len();
    let chunk = d * rows_per_task(d);
    let eps = T::from(spec.eps).unwrap();
    let dn = T::from(d).unwrap();
    let mut dx = vec![T::zero(); x.len()];
    let partials: Vec<(Vec<T>, Vec<T>)> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
        .map(|(dxc, (xc, gc))| {
            let mut dw = vec![T::zero(); d];
            let mut db = vec![T::zero(); d];
            let mut xhat = vec![T::zero(); d];
            for ((dxr, xr), gr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                let mu = if spec.center { xr.iter().copied().sum::<T>() / dn } else { T::zero() };
                let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() / dn;
                let r = (var + eps).sqrt().recip();
                let (mut mean_gh, mut mean_ghx) = (T::zero(), T::zero());
                for i in 0..d {
                    xhat[i] = (xr[i] - mu) * r;
                    let gh = gr[i] * w[i];
                    mean_gh += gh;
                    mean_ghx += gh * xhat[i];
                    dw[i] += gr[i] * xhat[i];
                    db[i] += gr[i];
                }
                mean_gh = if spec.center { mean_gh / dn } else { T::zero() };
                mean_ghx /= dn;
                for i in 0..d {
                    dxr[i] = r * (gr[i] * w[i] - mean_gh - xhat[i] * mean_ghx);
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![T::zero(); d];
    let mut db = vec![T::zero(); d];
    for (pw, pb) in partials {
        for i in 0..d {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
    (dx, dw, db)
}

fn check_shapes(x: &Layout, w: &Layout) -> Result<()> {
    let d = x.dims().last().copied().unwrap_or(0);
    if w.dims() != [d] {
        bail!("norm: weight shape {:?} does not match last dim {d} of input {:?}", w.dims(), x.dims());
    }
    Ok(())
}

fn backward(spec: NormSpec, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = x.device();
    let d = w.dim(0)?;
    macro_rules! run {
        ($t:ty) => {{
            let (dx, dw, db) = with_slice::<$t, _>(x, "norm_bwd", |xs| {
                with_slice::<$t, _>(w, "norm_bwd", |ws| {
                    with_slice::<$t, _>(grad, "norm_bwd", |gs| norm_bwd(xs, ws, gs, spec))
                })
            })???;
            (Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dw, d, dev)?, Tensor::from_vec(db, d, dev)?)
        }};
    }
    Ok(match x.dtype() {
        DType::F32 => run!(f32),
        DType::F64 => run!(f64),
        dt => bail!("norm: unsupported dtype {dt:?}"),
    })
}

struct RmsNormOp(NormSpec);

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        check_shapes(xl, wl)?;
        let out = match xs.dtype() {
            DType::F32 => {
                CpuStorage::F32(norm_fwd(slice(xs, xl, "rms_norm")?, slice(ws, wl, "rms_norm")?, None, self.0))
            }
            DType::F64 => {
                CpuStorage::F64(norm_fwd(slice(xs, xl, "rms_norm")?, slice(ws, wl, "rms_norm")?, None, self.0))
            }
            dt => bail!("rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((out, xl.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(self.0, x, w, grad)?;
        // A frozen weight (LoRA) gets no gradient buffer.
        Ok((Some(dx), w.track_op().then_some(dw)))
    }
}

struct LayerNormOp(NormSpec);

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_shapes(xl, wl)?;
        check_shapes(xl, bl)?;
        let out = match xs.dtype() {
            DType::F32 => CpuStorage::F32(norm_fwd(
                slice(xs, xl, "layer_norm")?,
                slice(ws, wl, "layer_norm")?,
                Some(slice(bs, bl, "layer_norm")?),
                self.0,
            )),
            DType::F64 => CpuStorage::F64(norm_fwd(
                slice(xs, xl, "layer_norm")?,
                slice(ws, wl, "layer_norm")?,
                Some(slice(bs, bl, "layer_norm")?),
                self.0,
            )),
            dt => bail!("layer_norm: unsupported dtype {dt:?}"),
        };
        Ok((out, xl.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(self.0, x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

pub fn rms_norm_fused(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNormOp(NormSpec { eps, center: false }))
}

pub fn layer_norm_fused(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNormOp(NormSpec { eps, center: true }))
}

/// Reference RMSNorm from differentiable primitives.
pub fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(w)
}

/// Reference LayerNorm from differentiable primitives.
pub fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mu = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (var + eps)?.sqrt()?.recip()?;
    xc.broadcast_mul(&r)?.broadcast_mul(w)?.broadcast_add(b)
}
