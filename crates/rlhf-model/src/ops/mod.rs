//! The numerical building blocks of the models, each in two implementations:
//!
//! * **fused** — our CPU kernels (f32/f64) with hand-written backward passes. candle's own fused
//!   ops (`softmax_last_dim`, `rms_norm`, `rope`, ...) silently drop gradients, so we do not use
//!   them; these are what training and inference run on the CPU.
//! * **composed** — the same maths from differentiable candle primitives. The reference for the
//!   fused kernels in tests, and the path on devices or dtypes the fused kernels do not cover.

// Kernels index several arrays in lock-step; explicit index loops read clearest there.
#![allow(clippy::needless_range_loop)]

pub mod bf16;
pub mod cpu;
pub mod gemv;
pub mod linear;
pub mod logprob;
pub mod norm;
pub mod precision;
pub mod rope;
pub mod softmax;
pub mod swiglu;

use candle_core::{DType, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Fused CPU kernels where they apply, composed ops elsewhere.
    #[default]
    Fused,
    /// Composed candle primitives everywhere (the reference path).
    Composed,
}

impl Kernels {
    fn fused_for(self, t: &Tensor) -> bool {
        self == Kernels::Fused && t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
    }

    pub fn rms_norm(self, x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        if self.fused_for(x) {
            norm::rms_norm_fused(x, w, eps)
        } else {
            norm::rms_norm_composed(x, w, eps)
        }
    }

    pub fn layer_norm(self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        if self.fused_for(x) {
            norm::layer_norm_fused(x, w, b, eps)
        } else {
            norm::layer_norm_composed(x, w, b, eps)
        }
    }

    /// `[B,T,H,D]` → rotated `[B,H,T,D]`.
    pub fn rope(self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.fused_for(x) {
            rope::rope_fused(x, cos, sin)
        } else {
            rope::rope_composed(x, cos, sin)
        }
    }

    pub fn masked_softmax(self, scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
        if self.fused_for(scores) {
            softmax::masked_softmax_fused(scores, mask, scale)
        } else {
            softmax::masked_softmax_composed(scores, mask, scale)
        }
    }

    pub fn swiglu(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if self.fused_for(gate) {
            swiglu::swiglu_fused(gate, up)
        } else {
            swiglu::swiglu_composed(gate, up)
        }
    }

    /// `x: [N, in]` · `w: [out, in]`ᵀ (+ `b: [out]`) → `[N, out]` (HF `nn.Linear` layout).
    pub fn linear(self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let y = if self.fused_for(x) { linear::linear_fused(x, w)? } else { linear::linear_composed(x, w)? };
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub fn gather_log_softmax(self, logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
        if self.fused_for(logits) {
            logprob::gather_log_softmax_fused(logits, targets, temperature)
        } else {
            logprob::gather_log_softmax_composed(logits, targets, temperature)
        }
    }
}

#[cfg(test)]
mod tests;
