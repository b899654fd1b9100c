//! Direct Preference Optimization losses (Rafailov et al.) and their TRL-compatible metrics.
//!
//! Inputs are *sequence* log-probabilities — sums of per-token logprobs over the completion —
//! of the policy and the frozen reference on chosen and rejected responses. With
//! Δ = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)):
//! - sigmoid: −logσ(βΔ); with label smoothing ε it is cDPO: −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)
//! - ipo: ((Δ_w/|y_w| − Δ_l/|y_l|) − 1/(2β))², log-ratios averaged per token (as TRL does)
//! - robust (rDPO): (−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)) / (1 − 2ε)
//!
//! The loss is the mean over pairs. At init (π = π_ref) Δ = 0 and the sigmoid loss is ln 2.

use candle_core::{bail, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLossType {
    Sigmoid,
    Ipo,
    Robust,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoLossConfig {
    /// KL strength β (IPO's τ).
    pub beta: f64,
    pub loss_type: DpoLossType,
    /// ε: the assumed probability that a preference label is flipped (cDPO / rDPO).
    pub label_smoothing: f64,
}

impl Default for DpoLossConfig {
    /// TRL's defaults.
    fn default() -> Self {
        Self { beta: 0.1, loss_type: DpoLossType::Sigmoid, label_smoothing: 0.0 }
    }
}

/// Sequence log-probabilities `[B]` of a batch of preference pairs.
pub struct PairLogps<'a> {
    pub chosen: &'a Tensor,
    pub rejected: &'a Tensor,
    pub ref_chosen: &'a Tensor,
    pub ref_rejected: &'a Tensor,
    /// Completion lengths (IPO's per-token normalisation).
    pub chosen_tokens: &'a [usize],
    pub rejected_tokens: &'a [usize],
}

/// TRL's logged DPO metrics (means over the batch).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DpoMetrics {
    /// β·(log π − log π_ref) on chosen responses (implicit reward; sums, also for IPO).
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    /// Fraction of pairs with chosen reward > rejected reward (strict: ties count as wrong).
    pub rewards_accuracies: f64,
    /// Like `rewards_accuracies` but a tie counts one half: 0.5 at init, when π = π_ref.
    pub accuracy_ties_half: f64,
    pub rewards_margins: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
}

pub struct DpoOutput {
    /// Scalar loss (mean over pairs), differentiable w.r.t. the policy log-probs.
    pub loss: Tensor,
    /// `[B]` per-pair losses.
    pub per_pair: Tensor,
    pub metrics: DpoMetrics,
}

/// Numerically stable log σ(x) = min(x, 0) − log(1 + e^{−|x|}).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.minimum(0.0)? - softplus_neg_abs
}

/// Sum of `per_token` logprobs `[B, T]` where `mask` `[B, T]` is 1: the sequence log-probability.
/// Masked positions may hold any finite value.
pub fn sequence_logps(per_token: &Tensor, mask: &Tensor) -> Result<Tensor> {
    (per_token * mask.to_dtype(per_token.dtype())?)?.sum(1)
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

pub fn dpo_loss(cfg: &DpoLossConfig, p: &PairLogps) -> Result<DpoOutput> {
    let b = p.chosen.dim(0)?;
    if p.chosen_tokens.len() != b || p.rejected_tokens.len() != b {
        bail!("dpo_loss: {b} pairs but {} / {} completion lengths", p.chosen_tokens.len(), p.rejected_tokens.len());
    }
    let eps = cfg.label_smoothing;
    if !(0.0..0.5).contains(&eps) {
        bail!("dpo_loss: label_smoothing must be in [0, 0.5), got {eps}");
    }
    let chosen_ratio = (p.chosen - p.ref_chosen.detach())?;
    let rejected_ratio = (p.rejected - p.ref_rejected.detach())?;
    let delta = (&chosen_ratio - &rejected_ratio)?;
    let scaled = (&delta * cfg.beta)?;
    let per_pair = match cfg.loss_type {
        DpoLossType::Sigmoid => {
            let pos = log_sigmoid(&scaled)?;
            if eps == 0.0 {
                pos.neg()?
            } else {
                ((pos * -(1.0 - eps))? - (log_sigmoid(&scaled.neg()?)? * eps)?)?
            }
        }
        DpoLossType::Robust => {
            let pos = (log_sigmoid(&scaled)? * -(1.0 - eps))?;
            let neg = (log_sigmoid(&scaled.neg()?)? * eps)?;
            ((pos + neg)? / (1.0 - 2.0 * eps))?
        }
        DpoLossType::Ipo => {
            let dev = p.chosen.device();
            let norm = |n: &[usize]| -> Result<Tensor> {
                let v: Vec<f64> = n.iter().map(|&x| 1.0 / x.max(1) as f64).collect();
                Tensor::from_vec(v, b, dev)?.to_dtype(p.chosen.dtype())
            };
            let ipo_delta =
                ((&chosen_ratio * norm(p.chosen_tokens)?)? - (&rejected_ratio * norm(p.rejected_tokens)?)?)?;
            (ipo_delta - 1.0 / (2.0 * cfg.beta))?.sqr()?
        }
    };
    let loss = per_pair.mean_all()?;
    let f = |t: &Tensor| -> Result<Vec<f64>> { t.detach().to_dtype(DType::F64)?.to_vec1::<f64>() };
    let (rc, rr) = (f(&(&chosen_ratio * cfg.beta)?)?, f(&(&rejected_ratio * cfg.beta)?)?);
    let wins: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| if c > r { 1.0 } else { 0.0 }).collect();
    let half: Vec<f64> = rc
        .iter()
        .zip(&rr)
        .map(|(c, r)| {
            if c > r {
                1.0
            } else if c == r {
                0.5
            } else {
                0.0
            }
        })
        .collect();
    let margins: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
    let metrics = DpoMetrics {
        rewards_chosen: mean(&rc),
        rewards_rejected: mean(&rr),
        rewards_accuracies: mean(&wins),
        accuracy_ties_half: mean(&half),
        rewards_margins: mean(&margins),
        logps_chosen: mean(&f(p.chosen)?),
        logps_rejected: mean(&f(p.rejected)?),
    };
    Ok(DpoOutput { loss, per_pair, metrics })
}
