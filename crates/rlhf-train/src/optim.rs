//! AdamW with decoupled weight decay (Loshchilov & Hutter), updating parameters in place.
//!
//! candle-nn's AdamW allocates several full-size tensors per parameter per step (0.9 s/step on
//! the default model); this one keeps the moments as plain f32 buffers and fuses the whole
//! update into one pass over memory. The arithmetic follows PyTorch's `AdamW`:
//! p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
//! p ← p − (lr/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε).

use candle_core::{bail, CpuStorage, DType, InplaceOp1, Layout, Result, Tensor, Var};
use rayon::prelude::*;
use rlhf_model::grads::Grads;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults (TRL passes `weight_decay` 0.0 by default).
    fn default() -> Self {
        Self { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

struct ParamState {
    name: String,
    var: Var,
    /// Norm weights and biases are not decayed.
    decay: bool,
    m: Vec<f32>,
    v: Vec<f32>,
}

pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<ParamState>,
    step: u64,
}

/// Parameters that conventionally get no weight decay: biases and normalisation weights.
pub fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("norm") || name.contains("ln_")
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    bail!(
                        "AdamW: parameter `{name}` is {:?}; the in-place optimiser keeps f32 parameters",
                        var.dtype()
                    );
                }
                let n = var.elem_count();
                Ok(ParamState { decay: !is_no_decay(&name), name, var, m: written_zeros(n), v: written_zeros(n) })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cfg, params, step: 0 })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update at learning rate `lr`. Parameters without a gradient are left untouched.
    /// Gradients come from [`rlhf_model::CausalLm::grads`] (or any [`Grads`]).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`Self::step`] with every gradient multiplied by `grad_scale` on the fly (global-norm
    /// clipping without rewriting the gradient buffers).
    pub fn step_scaled(&mut self, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for p in &mut self.params {
            let (var, m, v) = (&p.var, &mut p.m, &mut p.v);
            let hyper = Hyper {
                decay: if p.decay { (lr * c.weight_decay) as f32 } else { 0.0 },
                b1: c.beta1 as f32,
                b2: c.beta2 as f32,
                eps: c.eps as f32,
                step_size: (lr / bc1) as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                grad_scale: grad_scale as f32,
            };
            let applied = grads.with_f32(&p.name, var, |g| {
                let op = Update { grad: g, moments: Mutex::new((m, v)), hyper };
                var.as_tensor().inplace_op1(&op)
            })?;
            if let Some(result) = applied {
                result.map_err(|e| candle_core::Error::Msg(format!("AdamW update of `{}`: {e}", p.name)))?;
            }
        }
        // Copies made from the weights (the bf16 decoding copy) are now stale.
        rlhf_model::weights::note_in_place_update();
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// `(name, shape, first moment, second moment)` of every parameter, borrowed (checkpoints
    /// write them without a second copy of the optimiser state).
    pub fn moments(&self) -> impl Iterator<Item = (&str, &[usize], &[f32], &[f32])> {
        self.params.iter().map(|p| (p.name.as_str(), p.var.dims(), p.m.as_slice(), p.v.as_slice()))
    }

    /// Restores the moments checkpoints write (`exp_avg.<param>`, `exp_avg_sq.<param>`; see
    /// [`Self::moments`]) at optimiser step `step`.
    pub fn load_state(&mut self, step: u64, tensors: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for p in &mut self.params {
            for (prefix, buf) in [("exp_avg", &mut p.m), ("exp_avg_sq", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let t = tensors.get(&key).ok_or_else(|| candle_core::Error::Msg(format!("missing `{key}`")))?;
                if t.dims() != p.var.dims() || t.dtype() != DType::F32 {
                    bail!("`{key}` is {:?} {:?}, the parameter is {:?} f32", t.dtype(), t.dims(), p.var.dims());
                }
                *buf = t.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// `n` zeros written to memory. `vec![0.0; n]` maps the kernel's shared zero page; the first
/// update then takes a copy-on-write fault per page, each flushing the other threads' TLBs:
/// about 5 s on the first step of the default model with 2 threads.
fn written_zeros(n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    // Through `black_box` the compiler cannot know the buffer is zero and drop the stores.
    std::hint::black_box(&mut v).fill(0.0);
    v
}

#[derive(Clone, Copy)]
struct Hyper {
    decay: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    grad_scale: f32,
}

struct Update<'a> {
    grad: &'a [f32],
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
    hyper: Hyper,
}

const CHUNK: usize = 64 * 1024;

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout) -> Result<()> {
        let CpuStorage::F32(p) = p else { bail!("AdamW: f32 storage expected") };
        let Some((ps, pe)) = pl.contiguous_offsets() else { bail!("AdamW: contiguous parameter expected") };
        let p = &mut p[ps..pe];
        let g = self.grad;
        let mut guard = self.moments.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))?;
        let (m, v) = &mut *guard;
        if g.len() != p.len() || m.len() != p.len() {
            bail!("AdamW: gradient has {} elements, parameter {}", g.len(), p.len());
        }
        let h = self.hyper;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    let gi = g[i] * h.grad_scale;
                    p[i] -= h.decay * p[i];
                    m[i] = h.b1 * m[i] + (1.0 - h.b1) * gi;
                    v[i] = h.b2 * v[i] + (1.0 - h.b2) * gi * gi;
                    p[i] -= h.step_size * m[i] / (v[i].sqrt() * h.inv_sqrt_bc2 + h.eps);
                }
            });
        Ok(())
    }
}

/// A reference AdamW from tensor ops, for tests (allocates; f64-friendly).
pub fn adamw_reference_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    cfg: &AdamWConfig,
    lr: f64,
    t: i32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = (p * (1.0 - lr * cfg.weight_decay))?;
    let m = ((m * cfg.beta1)? + (g * (1.0 - cfg.beta1))?)?;
    let v = ((v * cfg.beta2)? + (g.sqr()? * (1.0 - cfg.beta2))?)?;
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2 = 1.0 - cfg.beta2.powi(t);
    let denom = ((v.sqrt()? / bc2.sqrt())? + cfg.eps)?;
    let p = (p - (m.div(&denom)? * (lr / bc1))?)?;
    Ok((p, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn in_place_update_matches_reference_over_several_steps() {
        let dev = Device::Cpu;
        let cfg = AdamWConfig { lr: 1e-2, weight_decay: 0.1, ..Default::default() };
        let init: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        let w = Var::from_vec(init.clone(), 300, &dev).unwrap();
        let b = Var::from_vec(vec![0.5f32; 4], 4, &dev).unwrap();
        let mut opt =
            AdamW::new(vec![("layer.weight".into(), w.clone()), ("layer.bias".into(), b.clone())], cfg.clone())
                .unwrap();
        let mut rp = Tensor::new(init, &dev).unwrap();
        let mut rm = rp.zeros_like().unwrap();
        let mut rv = rp.zeros_like().unwrap();
        for t in 1..=5 {
            // loss = Σ w³/3 + Σ b², so grad_w = w², grad_b = 2b.
            let loss = (w.as_tensor().powf(3.0).unwrap().sum_all().unwrap() / 3.0).unwrap();
            let loss = (loss + b.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            let g = grads.get(w.as_tensor()).unwrap().clone();
            opt.step(&Grads { store: &grads, sink: None }, cfg.lr).unwrap();
            (rp, rm, rv) = adamw_reference_step(&rp, &g, &rm, &rv, &cfg, cfg.lr, t).unwrap();
            let d = (w.as_tensor() - &rp).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-6, "step {t}: {d}");
        }
        // Bias: no weight decay; Adam moves it by at most ~lr per step towards lower loss.
        let bv = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!(bv.iter().all(|&x| x < 0.5 && x > 0.5 - 6.0 * 1e-2), "{bv:?}");
    }

    #[test]
    fn rejects_non_f32_parameters() {
        let v = Var::from_vec(vec![1.0f64], 1, &Device::Cpu).unwrap();
        let err = AdamW::new(vec![("x".into(), v)], AdamWConfig::default()).err().unwrap().to_string();
        assert!(err.contains("`x`") && err.contains("f32"), "{err}");
    }
}
