//! Attention probabilities: softmax(scale·scores + mask) over keys, fused, with backward.
//!
//! `scores: [B, G, R, Tk]` where G is the number of key/value heads and R = (query heads per
//! KV head) × Tq: grouped-query attention runs without repeating K and V. `mask: [B, 1, Tq, Tk]`
//! is additive (0 or −∞) and row r of `scores` uses mask row r mod Tq.
//! Backward: d(scores) = scale · p ⊙ (g − Σ_k g⊙p).

use super::cpu::{rows_per_task, slice, with_slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

pub(crate) fn softmax_fwd<T: Real>(
    scores: &[T],
    mask: &[T],
    b: usize,
    rows: usize,
    tq: usize,
    tk: usize,
    scale: T,
) -> Vec<T> {
    let mut p = vec![T::zero(); scores.len()];
    let per_task = rows_per_task(tk);
    p.par_chunks_mut(tk * per_task).enumerate().for_each(|(ci, pc)| {
        for (ri, prow) in pc.chunks_mut(tk).enumerate() {
            let row = ci * per_task + ri; // global row in [B*G*R]
            let srow = &scores[row * tk..][..tk];
            let bi = row / (rows / b);
            let t = (row % (rows / b)) % tq;
            let mrow = &mask[(bi * tq + t) * tk..][..tk];
            let mut max = T::neg_infinity();
            for k in 0..tk {
                let v = srow[k] * scale + mrow[k];
                prow[k] = v;
                if v > max {
                    max = v;
                }
            }
            if max == T::neg_infinity() {
                prow.iter_mut().for_each(|v| *v = T::zero());
                continue;
            }
            let mut sum = T::zero();
            for v in prow.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = sum.recip();
            prow.iter_mut().for_each(|v| *v *= inv);
        }
    });
    p
}

pub(crate) fn softmax_bwd<T: Real>(p: &[T], g: &[T], tk: usize, scale: T) -> Vec<T> {
    let mut ds = vec![T::zero(); p.len()];
    let chunk = tk * rows_per_task(tk);
    ds.par_chunks_mut(chunk).zip(p.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(dc, (pc, gc))| {
        for ((drow, prow), grow) in dc.chunks_mut(tk).zip(pc.chunks(tk)).zip(gc.chunks(tk)) {
            let dot: T = prow.iter().zip(grow).map(|(&a, &b)| a * b).sum();
            for k in 0..tk {
                drow[k] = scale * prow[k] * (grow[k] - dot);
            }
        }
    });
    ds
}

struct MaskedSoftmax {
    scale: f64,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }
    fn cpu_fwd(&self, ss: &CpuStorage, sl: &Layout, ms: &CpuStorage, ml: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, g, r, tk) = sl.shape().dims4()?;
        let (mb, one, tq, mtk) = ml.shape().dims4()?;
        if mb != b || one != 1 || mtk != tk || tq == 0 || r % tq != 0 {
            bail!("masked_softmax: mask {:?} does not fit scores {:?}", ml.dims(), sl.dims());
        }
        let rows = b * g * r;
        let out = match ss.dtype() {
            DType::F32 => CpuStorage::F32(softmax_fwd(
                slice(ss, sl, "masked_softmax")?,
                slice(ms, ml, "masked_softmax")?,
                b,
                rows,
                tq,
                tk,
                self.scale as f32,
            )),
            DType::F64 => CpuStorage::F64(softmax_fwd(
                slice(ss, sl, "masked_softmax")?,
                slice(ms, ml, "masked_softmax")?,
                b,
                rows,
                tq,
                tk,
                self.scale,
            )),
            dt => bail!("masked_softmax: unsupported dtype {dt:?}"),
        };
        Ok((out, sl.shape().clone()))
    }
    fn bwd(
        &self,
        scores: &Tensor,
        _mask: &Tensor,
        p: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let tk = scores.dim(D::Minus1)?;
        let ds = match scores.dtype() {
            DType::F32 => {
                let v = with_slice::<f32, _>(p, "softmax_bwd", |p| {
                    with_slice::<f32, _>(grad, "softmax_bwd", |g| softmax_bwd(p, g, tk, self.scale as f32))
                })??;
                Tensor::from_vec(v, scores.shape(), scores.device())?
            }
            DType::F64 => {
                let v = with_slice::<f64, _>(p, "softmax_bwd", |p| {
                    with_slice::<f64, _>(grad, "softmax_bwd", |g| softmax_bwd(p, g, tk, self.scale))
                })??;
                Tensor::from_vec(v, scores.shape(), scores.device())?
            }
            dt => bail!("masked_softmax: unsupported dtype {dt:?}"),
        };
        Ok((Some(ds), None))
    }
}

pub fn masked_softmax_fused(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op2(&mask.contiguous()?, MaskedSoftmax { scale })
}

/// Reference implementation from differentiable primitives (same contract as the fused op).
pub fn masked_softmax_composed(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, g, r, tk) = scores.dims4()?;
    let tq = mask.dim(2)?;
    let s = (scores * scale)?.reshape((b, g, r / tq, tq, tk))?.broadcast_add(&mask.unsqueeze(1)?)?;
    candle_nn::ops::softmax(&s, D::Minus1)?.reshape((b, g, r, tk))
}
