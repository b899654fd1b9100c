//! log softmax(logits / temperature) gathered at target ids, fused, with backward.
//!
//! The `[N, V]` log-probability matrix is never materialised: the forward keeps one
//! log-sum-exp per row, the backward writes d(logits) = g·(1/τ)·(onehot(target) − softmax(logits/τ)).

use super::cpu::{slice, with_slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::Mutex;

/// Per-row log-sum-exp of logits/τ, and the gathered log-probabilities.
fn logprob_fwd<T: Real>(logits: &[T], ids: &[u32], v: usize, inv_t: T) -> Result<(Vec<T>, Vec<T>)> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
        bail!("gather_log_softmax: target id {bad} is outside the vocabulary of {v}");
    }
    let (lse, lp): (Vec<T>, Vec<T>) = logits
        .par_chunks(v)
        .zip(ids.par_iter())
        .map(|(row, &id)| {
            let max = row.iter().fold(T::neg_infinity(), |m, &x| num_traits::Float::max(m, x)) * inv_t;
            let sum: T = row.iter().map(|&x| (x * inv_t - max).exp()).sum();
            let lse = max + sum.ln();
            (lse, row[id as usize] * inv_t - lse)
        })
        .unzip();
    Ok((lse, lp))
}

fn logprob_bwd<T: Real>(logits: &[T], ids: &[u32], lse: &[T], g: &[T], v: usize, inv_t: T) -> Vec<T> {
    let mut d = vec![T::zero(); logits.len()];
    d.par_chunks_mut(v).enumerate().for_each(|(n, drow)| {
        let row = &logits[n * v..][..v];
        let scale = g[n] * inv_t;
        for k in 0..v {
            drow[k] = -scale * (row[k] * inv_t - lse[n]).exp();
        }
        drow[ids[n] as usize] += scale;
    });
    d
}

struct GatherLogSoftmax {
    inv_temperature: f64,
    /// The forward's per-row log-sum-exp (as f64), reused by the backward pass.
    lse: Mutex<Vec<f64>>,
}

impl CustomOp2 for GatherLogSoftmax {
    fn name(&self) -> &'static str {
        "fused-gather-log-softmax"
    }
    fn cpu_fwd(&self, ls: &CpuStorage, ll: &Layout, is: &CpuStorage, il: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = ll.shape().dims2()?;
        if il.dims() != [n] {
            bail!("gather_log_softmax: targets {:?} do not match logits {:?}", il.dims(), ll.dims());
        }
        let ids: &[u32] = slice(is, il, "gather_log_softmax")?;
        let (out, lse) = match ls.dtype() {
            DType::F32 => {
                let (lse, lp) =
                    logprob_fwd(slice::<f32>(ls, ll, "gather_log_softmax")?, ids, v, self.inv_temperature as f32)?;
                (CpuStorage::F32(lp), lse.into_iter().map(f64::from).collect())
            }
            DType::F64 => {
                let (lse, lp) = logprob_fwd(slice::<f64>(ls, ll, "gather_log_softmax")?, ids, v, self.inv_temperature)?;
                (CpuStorage::F64(lp), lse)
            }
            dt => bail!("gather_log_softmax: unsupported dtype {dt:?}"),
        };
        *self.lse.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))? = lse;
        Ok((out, Shape::from(n)))
    }
    fn bwd(
        &self,
        logits: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let v = logits.dim(1)?;
        let lse = self.lse.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))?.clone();
        let ids = ids.to_vec1::<u32>()?;
        let d = match logits.dtype() {
            DType::F32 => {
                let lse: Vec<f32> = lse.iter().map(|&x| x as f32).collect();
                let g = grad.to_vec1::<f32>()?;
                let d = with_slice::<f32, _>(logits, "logprob_bwd", |l| {
                    logprob_bwd(l, &ids, &lse, &g, v, self.inv_temperature as f32)
                })?;
                Tensor::from_vec(d, logits.shape(), logits.device())?
            }
            DType::F64 => {
                let g = grad.to_vec1::<f64>()?;
                let d = with_slice::<f64, _>(logits, "logprob_bwd", |l| {
                    logprob_bwd(l, &ids, &lse, &g, v, self.inv_temperature)
                })?;
                Tensor::from_vec(d, logits.shape(), logits.device())?
            }
            dt => bail!("gather_log_softmax: unsupported dtype {dt:?}"),
        };
        Ok((Some(d), None))
    }
}

/// `logits: [N, V]`, `targets: [N]` (u32) → `[N]` log-probabilities at temperature τ.
pub fn gather_log_softmax_fused(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    let op = GatherLogSoftmax { inv_temperature: 1.0 / temperature, lse: Mutex::new(Vec::new()) };
    logits.contiguous()?.apply_op2(&targets.contiguous()?, op)
}

pub fn gather_log_softmax_composed(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(&(logits / temperature)?, D::Minus1)?;
    lsm.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)
}
