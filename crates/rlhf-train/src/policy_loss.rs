//! PPO/GRPO clipped surrogate, clipped value loss and their metrics.
//!
//! Tensors are the trainers' flattened `[N]` response tokens of one micro-batch; the scalar losses
//! are Σ_t w_t·l_t with weights from [`crate::aggregate::token_weights`], so micro-batch losses
//! add up to the batch loss. Statistics are host sums and counts for the same reason: merge the
//! micro-batches, then take means (docs/ARCHITECTURE.md, detail 26: watch KL and clip fractions, not the loss).

use crate::kl::{kl_tensor, KlEstimator};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    /// The ratio is clipped below at 1 − ε_low.
    pub epsilon_low: f64,
    /// The ratio is clipped above at 1 + ε_high; 0.28 is DAPO's clip-higher, which leaves room
    /// for unlikely tokens to grow and so delays entropy collapse.
    pub epsilon_high: f64,
    /// Dual clip c > 1 (Ye et al. 2020): for A < 0 the loss is capped at −c·A, so a huge ratio on
    /// a bad token cannot produce an unbounded update.
    pub dual_clip: Option<f64>,
}

impl Default for ClipConfig {
    /// PPO's ε = 0.2 on both sides, no dual clip.
    fn default() -> Self {
        Self { epsilon_low: 0.2, epsilon_high: 0.2, dual_clip: None }
    }
}

/// Inputs of [`clipped_policy_loss`], all `[N]` and of one float dtype.
pub struct PolicyLossInputs<'a> {
    /// log π_θ of the sampled tokens: the only input that carries gradient.
    pub logp: &'a Tensor,
    /// log π_old, recorded at rollout (the ratio is exactly 1 on the first minibatch).
    pub old_logp: &'a Tensor,
    pub advantages: &'a Tensor,
    /// Aggregation weights (`token_weights` flattened).
    pub weights: &'a Tensor,
    /// log π_ref; with `kl_coef ≠ 0`, β·KL is added to each token's loss before aggregation, so
    /// the KL shares the policy term's normaliser (GRPO).
    pub ref_logp: Option<&'a Tensor>,
    pub kl_coef: f64,
    pub kl_estimator: KlEstimator,
}

/// Host-side sums and counts of one or more micro-batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStats {
    pub tokens: usize,
    /// ratio < 1 − ε_low with A < 0 (the clip removes the gradient).
    pub clipped_low: usize,
    /// ratio > 1 + ε_high with A > 0.
    pub clipped_high: usize,
    /// Either of the two.
    pub clipped_region: usize,
    /// Tokens whose clipped term won (pg2 > pg1), PPO's `pg_clipfrac`.
    pub pg_clipped: usize,
    /// Tokens whose loss the dual clip capped.
    pub dual_clipped: usize,
    pub ratio_sum: f64,
    pub ratio_max: f64,
    /// Σ KL over the tokens that had a reference (measured even when β = 0).
    pub kl_sum: f64,
    pub kl_tokens: usize,
}

impl PolicyStats {
    pub fn merge(&mut self, other: &PolicyStats) {
        if other.tokens > 0 {
            self.ratio_max = if self.tokens == 0 { other.ratio_max } else { self.ratio_max.max(other.ratio_max) };
        }
        self.tokens += other.tokens;
        self.clipped_low += other.clipped_low;
        self.clipped_high += other.clipped_high;
        self.clipped_region += other.clipped_region;
        self.pg_clipped += other.pg_clipped;
        self.dual_clipped += other.dual_clipped;
        self.ratio_sum += other.ratio_sum;
        self.kl_sum += other.kl_sum;
        self.kl_tokens += other.kl_tokens;
    }

    /// Token means for logging; empty when no token was seen, `kl` only when a reference was given.
    pub fn rows(&self) -> Vec<(String, f64)> {
        if self.tokens == 0 {
            return Vec::new();
        }
        let n = self.tokens as f64;
        let mut rows = vec![
            ("clip_ratio/low_mean".to_string(), self.clipped_low as f64 / n),
            ("clip_ratio/high_mean".to_string(), self.clipped_high as f64 / n),
            ("clip_ratio/region_mean".to_string(), self.clipped_region as f64 / n),
            ("ratio/mean".to_string(), self.ratio_sum / n),
            ("ratio/max".to_string(), self.ratio_max),
        ];
        if self.kl_tokens > 0 {
            rows.push(("kl".to_string(), self.kl_sum / self.kl_tokens as f64));
        }
        rows.push(("pg_clipfrac".to_string(), self.pg_clipped as f64 / n));
        rows
    }
}

fn host(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Per-token loss `[N]` (before weighting) and the ratio `[N]`:
/// l = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)), dual-capped at −c·A for A < 0, plus β·KL.
/// Branches are selected with detached masks, so a clipped token has exactly zero gradient.
pub fn per_token_policy_loss(cfg: &ClipConfig, x: &PolicyLossInputs) -> candle_core::Result<(Tensor, Tensor)> {
    let dtype = x.logp.dtype();
    let old = x.old_logp.to_dtype(dtype)?.detach();
    let adv = x.advantages.to_dtype(dtype)?.detach();
    let ratio = (x.logp - &old)?.exp()?;
    let pg1 = (adv.neg()? * &ratio)?;
    let clipped = ratio.detach().clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)?;
    let pg2 = (adv.neg()? * clipped)?;
    // pg2 > pg1 only where the ratio lies outside the clip range, i.e. where pg2 is a constant.
    let mut loss = pg2.gt(&pg1.detach())?.where_cond(&pg2, &pg1)?;
    if let Some(c) = cfg.dual_clip {
        let cap = (adv.neg()? * c)?;
        let capped = adv.lt(0.0)?.mul(&loss.detach().gt(&cap)?)?;
        loss = capped.where_cond(&cap, &loss)?;
    }
    match x.ref_logp {
        Some(r) if x.kl_coef != 0.0 => {
            let kl = kl_tensor(x.kl_estimator, x.logp, &r.to_dtype(dtype)?.detach(), None)?;
            loss = (loss + (kl * x.kl_coef)?)?;
        }
        _ => {}
    }
    Ok((loss, ratio))
}

/// Σ_t w_t·l_t of [`per_token_policy_loss`] (scalar, differentiable w.r.t. `logp`) and the
/// micro-batch's statistics.
pub fn clipped_policy_loss(cfg: &ClipConfig, x: &PolicyLossInputs) -> candle_core::Result<(Tensor, PolicyStats)> {
    let (per_token, ratio) = per_token_policy_loss(cfg, x)?;
    let weights = x.weights.to_dtype(per_token.dtype())?.detach();
    let loss = (per_token * weights)?.sum_all()?;

    let (r, a) = (host(&ratio)?, host(x.advantages)?);
    let mut s = PolicyStats { tokens: r.len(), ratio_max: f64::NEG_INFINITY, ..Default::default() };
    for (&r, &a) in r.iter().zip(&a) {
        let low = r < 1.0 - cfg.epsilon_low && a < 0.0;
        let high = r > 1.0 + cfg.epsilon_high && a > 0.0;
        let pg1 = -a * r;
        let pg = pg1.max(-a * r.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high));
        s.clipped_low += low as usize;
        s.clipped_high += high as usize;
        s.clipped_region += (low || high) as usize;
        s.pg_clipped += (pg > pg1) as usize;
        s.dual_clipped += cfg.dual_clip.is_some_and(|c| a < 0.0 && pg > -c * a) as usize;
        s.ratio_sum += r;
        s.ratio_max = s.ratio_max.max(r);
    }
    if let Some(ref_logp) = x.ref_logp {
        let kl = kl_tensor(x.kl_estimator, &x.logp.detach(), &ref_logp.to_dtype(x.logp.dtype())?, None)?;
        s.kl_sum = host(&kl)?.iter().sum();
        s.kl_tokens = s.tokens;
    }
    Ok((loss, s))
}

/// PPO's clipped value loss 0.5·Σ w·max((v − R)², (v_clip − R)²) with
/// v_clip = clamp(v, v_old − c, v_old + c), so the critic cannot move far from its rollout
/// values in one update; `clip = None` gives the plain 0.5·Σ w·(v − R)². Returns the scalar loss
/// (differentiable w.r.t. `new_values`) and the number of tokens where the clipped term won.
pub fn clipped_value_loss(
    new_values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    weights: &Tensor,
    clip: Option<f64>,
) -> candle_core::Result<(Tensor, f64)> {
    let dtype = new_values.dtype();
    let returns = returns.to_dtype(dtype)?.detach();
    let weights = weights.to_dtype(dtype)?.detach();
    let vf1 = (new_values - &returns)?.sqr()?;
    let (per_token, clipfrac) = match clip {
        None => (vf1, 0.0),
        Some(c) => {
            let old = old_values.to_dtype(dtype)?.detach();
            let vclip = new_values.detach().clamp(&(&old - c)?, &(&old + c)?)?;
            let vf2 = (vclip - &returns)?.sqr()?;
            // vf2 > vf1 only where v was clipped, i.e. where vf2 is a constant.
            let use_clipped = vf2.gt(&vf1.detach())?;
            let n = host(&use_clipped)?.iter().sum::<f64>();
            (use_clipped.where_cond(&vf2, &vf1)?, n)
        }
    };
    Ok((((per_token * weights)?.sum_all()? * 0.5)?, clipfrac))
}

/// 1 − Var(R − V)/Var(R) (population variances): 1 is a perfect critic, 0 one that predicts the
/// mean, negative one that is worse than that. NaN when the returns have no variance.
pub fn explained_variance(values: &[f64], returns: &[f64]) -> f64 {
    fn var(x: &[f64]) -> f64 {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64
    }
    let var_r = var(returns);
    if var_r.is_nan() || var_r <= 0.0 {
        return f64::NAN;
    }
    let residual: Vec<f64> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    1.0 - var(&residual) / var_r
}
