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

use crate::error::Result as TrainResult;
use crate::stats::mean;
use crate::trainer::{MicroOutput, Objective};
use candle_core::{bail, DType, Result, Tensor};
use rlhf_data::PairExample;
use rlhf_model::{response_logprobs_packed, CausalLm};
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

impl DpoLossConfig {
    /// β must be a positive number: β < 0 trains towards the rejected answers while the reward
    /// metrics still look right, β = 0 learns nothing. ε must be a flip probability below ½.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            bail!("loss.beta must be a positive number (TRL's default is 0.1), got {}", self.beta);
        }
        let eps = self.label_smoothing;
        if !(0.0..0.5).contains(&eps) {
            bail!("loss.label_smoothing must be in [0, 0.5), got {eps}");
        }
        Ok(())
    }
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

pub fn dpo_loss(cfg: &DpoLossConfig, p: &PairLogps) -> Result<DpoOutput> {
    let b = p.chosen.dim(0)?;
    if p.chosen_tokens.len() != b || p.rejected_tokens.len() != b {
        bail!("dpo_loss: {b} pairs but {} / {} completion lengths", p.chosen_tokens.len(), p.rejected_tokens.len());
    }
    cfg.validate()?;
    let eps = cfg.label_smoothing;
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

// ---- Training objective --------------------------------------------------------------------

/// A preference pair with its reference sequence logprobs, computed once before training
/// (docs/ARCHITECTURE.md, detail 29): the reference never changes, so one pass over the data replaces a
/// reference forward on every step.
pub struct DpoExample {
    pub pair: PairExample,
    pub ref_chosen: f64,
    pub ref_rejected: f64,
}

/// Sequence logprobs `[R]` of `prompt ++ response` rows: the sum over response tokens only. A
/// pair's chosen and rejected share one pass over their prompt (packed).
pub fn response_logps(model: &CausalLm, pad_id: u32, rows: &[(&[u32], &[u32])]) -> Result<Tensor> {
    let (lp, _) = response_logprobs_packed(model, rows, pad_id, 1.0)?; // [N]
    let owner: Vec<u32> =
        rows.iter().enumerate().flat_map(|(r, (_, resp))| std::iter::repeat_n(r as u32, resp.len())).collect();
    let owner = Tensor::from_vec(owner, lp.dim(0)?, model.device())?;
    Tensor::zeros(rows.len(), lp.dtype(), model.device())?.index_add(&owner, &lp, 0)
    // [R]
}

/// Reference logprobs of every pair, `batch_size` pairs per forward.
pub fn precompute_reference(
    reference: &CausalLm,
    pad_id: u32,
    pairs: Vec<PairExample>,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<DpoExample>> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut pending = pairs.into_iter().peekable();
    while pending.peek().is_some() {
        let chunk: Vec<PairExample> = pending.by_ref().take(batch_size.max(1)).collect();
        let (c, r) = pair_logps(reference, pad_id, &chunk.iter().collect::<Vec<_>>())?;
        let (c, r) = (to_f64s(&c)?, to_f64s(&r)?);
        for (i, pair) in chunk.into_iter().enumerate() {
            out.push(DpoExample { pair, ref_chosen: c[i], ref_rejected: r[i] });
        }
        progress(out.len());
    }
    Ok(out)
}

/// Chosen and rejected sequence logprobs `[B]` each, in one forward (chosen rows, then rejected).
fn pair_logps(model: &CausalLm, pad_id: u32, pairs: &[&PairExample]) -> Result<(Tensor, Tensor)> {
    let n = pairs.len();
    let rows: Vec<(&[u32], &[u32])> = pairs
        .iter()
        .map(|p| (p.prompt.as_slice(), p.chosen.as_slice()))
        .chain(pairs.iter().map(|p| (p.prompt.as_slice(), p.rejected.as_slice())))
        .collect();
    let all = response_logps(model, pad_id, &rows)?;
    Ok((all.narrow(0, 0, n)?, all.narrow(0, n, n)?))
}

fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    t.detach().to_dtype(DType::F64)?.to_vec1::<f64>()
}

pub struct DpoObjective<'m> {
    pub policy: &'m CausalLm,
    pub pad_id: u32,
    pub loss: DpoLossConfig,
    pub eval_batch_size: usize,
}

impl DpoObjective<'_> {
    fn run(&self, model: &CausalLm, micro: &[&DpoExample]) -> Result<DpoOutput> {
        let pairs: Vec<&PairExample> = micro.iter().map(|e| &e.pair).collect();
        let (chosen, rejected) = pair_logps(model, self.pad_id, &pairs)?;
        let dev = model.device();
        let refs = |f: fn(&DpoExample) -> f64| -> Result<Tensor> {
            Tensor::from_vec(micro.iter().map(|e| f(e)).collect::<Vec<f64>>(), micro.len(), dev)?
                .to_dtype(chosen.dtype())
        };
        let (ref_chosen, ref_rejected) = (refs(|e| e.ref_chosen)?, refs(|e| e.ref_rejected)?);
        let chosen_tokens: Vec<usize> = pairs.iter().map(|p| p.chosen.len()).collect();
        let rejected_tokens: Vec<usize> = pairs.iter().map(|p| p.rejected.len()).collect();
        dpo_loss(
            &self.loss,
            &PairLogps {
                chosen: &chosen,
                rejected: &rejected,
                ref_chosen: &ref_chosen,
                ref_rejected: &ref_rejected,
                chosen_tokens: &chosen_tokens,
                rejected_tokens: &rejected_tokens,
            },
        )
    }
}

fn metric_rows(m: &DpoMetrics, weight: f64) -> Vec<(String, f64, f64)> {
    [
        ("rewards/chosen", m.rewards_chosen),
        ("rewards/rejected", m.rewards_rejected),
        ("rewards/accuracies", m.rewards_accuracies),
        ("rewards/accuracy_ties_half", m.accuracy_ties_half),
        ("rewards/margins", m.rewards_margins),
        ("logps/chosen", m.logps_chosen),
        ("logps/rejected", m.logps_rejected),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v * weight, weight))
    .collect()
}

impl Objective for DpoObjective<'_> {
    type Example = DpoExample;

    fn model(&self) -> &CausalLm {
        self.policy
    }

    fn normaliser(&self, batch: &[&DpoExample]) -> f64 {
        batch.len() as f64
    }

    fn micro_loss(&mut self, micro: &[&DpoExample], normaliser: f64) -> TrainResult<MicroOutput> {
        let out = self.run(self.policy, micro)?;
        let loss = (out.per_pair.sum_all()? / normaliser)?;
        let tokens = micro.iter().map(|e| 2 * e.pair.prompt.len() + e.pair.chosen.len() + e.pair.rejected.len()).sum();
        Ok(MicroOutput { loss, stats: metric_rows(&out.metrics, micro.len() as f64), tokens })
    }

    fn evaluate(&mut self, eval: &[DpoExample]) -> TrainResult<Vec<(String, f64)>> {
        let model = self.policy.detached()?;
        let mut acc: Vec<(String, f64, f64)> = Vec::new();
        let mut loss = 0f64;
        let all: Vec<&DpoExample> = eval.iter().collect();
        for chunk in all.chunks(self.eval_batch_size.max(1)) {
            let out = self.run(&model, chunk)?;
            loss += out.per_pair.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            for (k, s, w) in metric_rows(&out.metrics, chunk.len() as f64) {
                match acc.iter_mut().find(|(n, _, _)| *n == k) {
                    Some(e) => {
                        e.1 += s;
                        e.2 += w;
                    }
                    None => acc.push((k, s, w)),
                }
            }
        }
        let mut out = vec![("loss".to_string(), loss / eval.len().max(1) as f64)];
        out.extend(acc.into_iter().map(|(k, s, w)| (k, s / w.max(1e-300))));
        Ok(out)
    }
}
