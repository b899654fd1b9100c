//! Per-token KL estimators between the policy and the frozen reference, and the adaptive KL
//! coefficient of Ziegler et al. (2019).
//!
//! With x = log π(a) − log π_ref(a) for a sampled a ~ π (Schulman, "Approximating KL divergence"):
//! - k1 = x: unbiased, but negative on many tokens (high variance);
//! - k2 = x²/2: biased, non-negative;
//! - k3 = e^{−x} − 1 + x: unbiased and non-negative (GRPO's loss term, DeepSeekMath).
//!
//! Estimates can be clamped to [−c, c] (OpenRLHF and verl use c = 10) so that a single
//! degenerate token cannot dominate a reward or a loss.

use crate::error::{Result, TrainError};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    K1,
    K2,
    K3,
}

/// One token's KL estimate; `clamp = Some(c)` limits it to [−c, c].
pub fn kl_value(est: KlEstimator, logp: f64, ref_logp: f64, clamp: Option<f64>) -> f64 {
    let x = logp - ref_logp;
    let kl = match est {
        KlEstimator::K1 => x,
        KlEstimator::K2 => 0.5 * x * x,
        KlEstimator::K3 => (-x).exp() - 1.0 + x,
    };
    match clamp {
        Some(c) => kl.clamp(-c, c),
        None => kl,
    }
}

/// Elementwise KL estimate of two same-shape, same-dtype tensors, differentiable w.r.t. `logp`
/// (and `ref_logp`, though the reference is normally detached). Inside the clamp range the
/// gradient is the estimator's; outside it is 0.
pub fn kl_tensor(
    est: KlEstimator,
    logp: &Tensor,
    ref_logp: &Tensor,
    clamp: Option<f64>,
) -> candle_core::Result<Tensor> {
    let x = (logp - ref_logp)?;
    let kl = match est {
        KlEstimator::K1 => x,
        KlEstimator::K2 => (x.sqr()? * 0.5)?,
        KlEstimator::K3 => ((x.neg()?.exp()? - 1.0)? + &x)?,
    };
    match clamp {
        Some(c) => kl.clamp(-c, c),
        None => Ok(kl),
    }
}

/// Where the KL leash acts: as a per-token penalty in the reward (PPO, Ziegler et al.), or as
/// a term of the loss (GRPO, DeepSeekMath).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlPlacement {
    Reward,
    Loss,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlControl {
    /// β stays at `init_kl_coef`.
    Fixed,
    /// β follows the observed KL towards `target` (Ziegler et al. 2019).
    Adaptive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlControllerConfig {
    pub kind: KlControl,
    /// β at the first step.
    pub init_kl_coef: f64,
    /// KL (nats per sequence, as measured by the trainer) the adaptive controller aims at.
    pub target: f64,
    /// Steps over which a persistent ±20 % error changes β by a factor of about e^{±0.2}.
    pub horizon: f64,
}

impl Default for KlControllerConfig {
    /// The defaults of Ziegler et al. as carried by the TRL PPO trainer.
    fn default() -> Self {
        Self { kind: KlControl::Adaptive, init_kl_coef: 0.05, target: 6.0, horizon: 10000.0 }
    }
}

impl KlControllerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.init_kl_coef.is_nan() || self.init_kl_coef < 0.0 || self.init_kl_coef.is_infinite() {
            return Err(TrainError::Config(format!("init_kl_coef must be ≥ 0, got {}", self.init_kl_coef)));
        }
        if self.kind == KlControl::Adaptive
            && (self.target.is_nan() || self.target <= 0.0 || self.horizon.is_nan() || self.horizon <= 0.0)
        {
            return Err(TrainError::Config(format!(
                "adaptive KL control needs target > 0 and horizon > 0, got target {} and horizon {}",
                self.target, self.horizon
            )));
        }
        Ok(())
    }
}

/// The current KL coefficient β and the rule that moves it.
#[derive(Clone, Debug, PartialEq)]
pub struct KlController {
    pub coef: f64,
    pub kind: KlControl,
    pub target: f64,
    pub horizon: f64,
}

impl KlController {
    pub fn new(cfg: &KlControllerConfig) -> Self {
        Self { coef: cfg.init_kl_coef, kind: cfg.kind, target: cfg.target, horizon: cfg.horizon }
    }

    /// After a rollout of `n_steps` samples with mean KL `observed_kl`: proportional control with
    /// the error clipped to ±0.2, so a single outlier batch cannot swing β far.
    pub fn update(&mut self, observed_kl: f64, n_steps: usize) {
        if self.kind == KlControl::Fixed || !observed_kl.is_finite() {
            return;
        }
        let error = (observed_kl / self.target - 1.0).clamp(-0.2, 0.2);
        self.coef *= 1.0 + error * n_steps as f64 / self.horizon;
    }
}
