//! SwiGLU gate: silu(gate) ⊙ up, fused, with backward.
//! With σ = sigmoid(a): silu(a) = a·σ and silu'(a) = σ·(1 + a·(1 − σ)).

use super::cpu::{slice, with_slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;

fn sigmoid<T: Real>(a: T) -> T {
    (T::one() + (-a).exp()).recip()
}

pub(crate) fn swiglu_fwd<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); gate.len()];
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(o, (g, u))| {
        for i in 0..o.len() {
            o[i] = g[i] * sigmoid(g[i]) * u[i];
        }
    });
    out
}

pub(crate) fn swiglu_bwd<T: Real>(gate: &[T], up: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let mut dgate = vec![T::zero(); gate.len()];
    let mut dup = vec![T::zero(); gate.len()];
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)))
        .for_each(|((dg, du), ((g, u), d))| {
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = d[i] * silu;
                dg[i] = d[i] * u[i] * s * (T::one() + g[i] * (T::one() - s));
            }
        });
    (dgate, dup)
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }
    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        if gl.dims() != ul.dims() {
            bail!("swiglu: gate {:?} and up {:?} differ in shape", gl.dims(), ul.dims());
        }
        let out = match gs.dtype() {
            DType::F32 => CpuStorage::F32(swiglu_fwd(slice(gs, gl, "swiglu")?, slice(us, ul, "swiglu")?)),
            DType::F64 => CpuStorage::F64(swiglu_fwd(slice(gs, gl, "swiglu")?, slice(us, ul, "swiglu")?)),
            dt => bail!("swiglu: unsupported dtype {dt:?}"),
        };
        Ok((out, gl.shape().clone()))
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        macro_rules! run {
            ($t:ty) => {
                with_slice::<$t, _>(gate, "swiglu_bwd", |g| {
                    with_slice::<$t, _>(up, "swiglu_bwd", |u| {
                        with_slice::<$t, _>(grad, "swiglu_bwd", |d| swiglu_bwd(g, u, d))
                    })
                })???
            };
        }
        let (dg, du) = match gate.dtype() {
            DType::F32 => {
                let (a, b) = run!(f32);
                (Tensor::from_vec(a, gate.shape(), gate.device())?, Tensor::from_vec(b, gate.shape(), gate.device())?)
            }
            DType::F64 => {
                let (a, b) = run!(f64);
                (Tensor::from_vec(a, gate.shape(), gate.device())?, Tensor::from_vec(b, gate.shape(), gate.device())?)
            }
            dt => bail!("swiglu: unsupported dtype {dt:?}"),
        };
        Ok((Some(dg), Some(du)))
    }
}

pub fn swiglu_fused(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

pub fn swiglu_composed(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}
