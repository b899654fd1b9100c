//! Bradley–Terry reward-model loss (InstructGPT; TRL's RewardTrainer):
//! loss = −mean(logσ(r_c − r_r − m)) + coef · mean((r_c + r_r)²).
//! The optional margin m asks for a larger gap on strongly preferred pairs; the centring term
//! (Eisenstein et al.) keeps rewards near zero so they need no offset before RL.

use crate::dpo::log_sigmoid;
use crate::error::Result as TrainResult;
use crate::trainer::{MicroOutput, Objective};
use candle_core::{bail, DType, Result, Tensor};
use rlhf_data::PreferenceGroup;
use rlhf_model::heads::RewardStats;
use rlhf_model::last_states_packed;
use rlhf_model::CausalLm;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RewardMetrics {
    pub bt_loss: f64,
    /// Fraction of pairs with r_c > r_r (strict).
    pub accuracy: f64,
    /// mean(r_c − r_r), without the input margin.
    pub margin: f64,
    pub min_reward: f64,
    pub mean_reward: f64,
    pub max_reward: f64,
}

pub struct RewardOutput {
    pub loss: Tensor,
    pub per_pair: Tensor,
    pub metrics: RewardMetrics,
}

/// `chosen`, `rejected`, `margin`: `[B]` scalar rewards of each pair's responses.
pub fn bradley_terry_loss(
    chosen: &Tensor,
    rejected: &Tensor,
    margin: Option<&Tensor>,
    center_rewards_coefficient: Option<f64>,
) -> Result<RewardOutput> {
    if chosen.dims() != rejected.dims() || chosen.rank() != 1 {
        bail!("bradley_terry_loss: chosen {:?} and rejected {:?} must both be [B]", chosen.dims(), rejected.dims());
    }
    let mut gap = (chosen - rejected)?;
    if let Some(m) = margin {
        gap = (gap - m.to_dtype(chosen.dtype())?)?;
    }
    let per_pair = log_sigmoid(&gap)?.neg()?;
    let bt = per_pair.mean_all()?;
    let loss = match center_rewards_coefficient {
        Some(c) => (&bt + ((chosen + rejected)?.sqr()?.mean_all()? * c)?)?,
        None => bt.clone(),
    };
    let f = |t: &Tensor| -> Result<Vec<f64>> { t.detach().to_dtype(DType::F64)?.to_vec1::<f64>() };
    let (c, r) = (f(chosen)?, f(rejected)?);
    let n = c.len().max(1) as f64;
    let all: Vec<f64> = c.iter().chain(&r).copied().collect();
    let metrics = RewardMetrics {
        bt_loss: bt.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        accuracy: c.iter().zip(&r).filter(|(a, b)| a > b).count() as f64 / n,
        margin: c.iter().zip(&r).map(|(a, b)| a - b).sum::<f64>() / n,
        min_reward: all.iter().copied().fold(f64::INFINITY, f64::min),
        mean_reward: all.iter().sum::<f64>() / all.len().max(1) as f64,
        max_reward: all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Ok(RewardOutput { loss, per_pair, metrics })
}

// ---- Training objective --------------------------------------------------------------------

/// Scores of a group's distinct responses and, per pair, the indices of chosen and rejected.
/// A K-wise ranking gives C(K,2) pairs but only K forwards: each response is scored once.
fn score_groups(model: &CausalLm, head: &Tensor, pad_id: u32, groups: &[&PreferenceGroup]) -> Result<ScoredPairs> {
    let mut rows: Vec<(&[u32], &[u32])> = Vec::new();
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    for g in groups {
        let first = rows.len();
        for (c, r) in &g.pairs {
            for (resp, out) in [(c, &mut chosen), (r, &mut rejected)] {
                let idx = match rows[first..].iter().position(|(_, x)| *x == resp.as_slice()) {
                    Some(i) => first + i,
                    None => {
                        rows.push((g.prompt.as_slice(), resp.as_slice()));
                        rows.len() - 1
                    }
                };
                out.push(idx as u32);
            }
        }
    }
    // The group's responses share one pass over its prompt (packed).
    let (last, _) = last_states_packed(model, &rows, pad_id)?; // [R, d]
    let scores = last.matmul(&head.t()?)?.squeeze(1)?; // [R]
    let n = chosen.len();
    let dev = model.device();
    Ok(ScoredPairs {
        chosen: scores.index_select(&Tensor::from_vec(chosen, n, dev)?, 0)?,
        rejected: scores.index_select(&Tensor::from_vec(rejected, n, dev)?, 0)?,
        scores,
        tokens: rows.iter().map(|(p, r)| p.len() + r.len()).sum(),
    })
}

struct ScoredPairs {
    /// `[R]` every distinct response's score
    scores: Tensor,
    /// `[P]`
    chosen: Tensor,
    rejected: Tensor,
    tokens: usize,
}

pub struct RewardObjective<'m> {
    pub model: &'m CausalLm,
    /// `[1, d]` score head (a `Var` while training).
    pub head: Tensor,
    pub pad_id: u32,
    /// TRL's `center_rewards_coefficient` (e.g. 0.01); `None` disables.
    pub center_rewards_coefficient: Option<f64>,
    pub eval_batch_size: usize,
}

impl Objective for RewardObjective<'_> {
    type Example = PreferenceGroup;

    fn model(&self) -> &CausalLm {
        self.model
    }

    fn normaliser(&self, batch: &[&PreferenceGroup]) -> f64 {
        batch.iter().map(|g| g.pairs.len()).sum::<usize>().max(1) as f64
    }

    /// Σ −logσ(r_c − r_r) (+ coef·Σ(r_c + r_r)²) over the micro-batch's pairs, / batch pairs.
    fn micro_loss(&mut self, micro: &[&PreferenceGroup], normaliser: f64) -> TrainResult<MicroOutput> {
        let s = score_groups(self.model, &self.head, self.pad_id, micro)?;
        let out = bradley_terry_loss(&s.chosen, &s.rejected, None, None)?;
        let mut total = out.per_pair.sum_all()?;
        if let Some(c) = self.center_rewards_coefficient {
            total = (total + ((&s.chosen + &s.rejected)?.sqr()?.sum_all()? * c)?)?;
        }
        let n = s.chosen.dim(0)? as f64;
        let m = &out.metrics;
        let stats = vec![
            ("accuracy".to_string(), m.accuracy * n, n),
            ("margin".to_string(), m.margin * n, n),
            ("mean_reward".to_string(), m.mean_reward * n, n),
        ];
        Ok(MicroOutput { loss: (total / normaliser)?, stats, tokens: s.tokens })
    }

    fn evaluate(&mut self, eval: &[PreferenceGroup]) -> TrainResult<Vec<(String, f64)>> {
        let model = self.model.detached()?;
        let head = self.head.detach();
        let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
        let groups: Vec<&PreferenceGroup> = eval.iter().collect();
        for chunk in groups.chunks(self.eval_batch_size.max(1)) {
            let s = score_groups(&model, &head, self.pad_id, chunk)?;
            chosen.extend(s.chosen.to_dtype(DType::F64)?.to_vec1::<f64>()?);
            rejected.extend(s.rejected.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(pair_metrics(&chosen, &rejected))
    }
}

/// Held-out metrics of scored pairs: BT loss, accuracy (strict), mean margin and the expected
/// calibration error of P(chosen ≻ rejected) = σ(r_c − r_r) (10 equal-width confidence bins).
pub fn pair_metrics(chosen: &[f64], rejected: &[f64]) -> Vec<(String, f64)> {
    let n = chosen.len().max(1) as f64;
    let gaps: Vec<f64> = chosen.iter().zip(rejected).map(|(c, r)| c - r).collect();
    let loss = gaps.iter().map(|&g| softplus(-g)).sum::<f64>() / n;
    let accuracy = gaps.iter().filter(|&&g| g > 0.0).count() as f64 / n;
    let margin = gaps.iter().sum::<f64>() / n;
    vec![
        ("loss".into(), loss),
        ("accuracy".into(), accuracy),
        ("margin".into(), margin),
        ("ece".into(), expected_calibration_error(&gaps, 10)),
        ("pairs".into(), chosen.len() as f64),
    ]
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// ECE of the binary prediction "chosen wins" with probability p = σ(gap): each pair predicts
/// the side with p ≥ ½ at confidence max(p, 1−p) and is right when that side is the chosen one.
pub fn expected_calibration_error(gaps: &[f64], bins: usize) -> f64 {
    let mut conf_sum = vec![0f64; bins];
    let mut right = vec![0f64; bins];
    let mut count = vec![0usize; bins];
    for &g in gaps {
        let p = 1.0 / (1.0 + (-g).exp());
        let conf = p.max(1.0 - p); // in [0.5, 1]
        let bin = (((conf - 0.5) * 2.0 * bins as f64) as usize).min(bins - 1);
        conf_sum[bin] += conf;
        right[bin] += if g > 0.0 {
            1.0
        } else if g == 0.0 {
            0.5
        } else {
            0.0
        };
        count[bin] += 1;
    }
    let n = gaps.len().max(1) as f64;
    (0..bins).filter(|&b| count[b] > 0).map(|b| (right[b] - conf_sum[b]).abs() / n).sum()
}

/// Mean and standard deviation of the scores of `groups`' distinct responses (the reference set
/// RL normalises with).
pub fn reward_stats(
    model: &CausalLm,
    head: &Tensor,
    pad_id: u32,
    groups: &[PreferenceGroup],
    batch_size: usize,
) -> Result<RewardStats> {
    let model = model.detached()?;
    let head = head.detach();
    let mut all = Vec::new();
    let refs: Vec<&PreferenceGroup> = groups.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        all.extend(score_groups(&model, &head, pad_id, chunk)?.scores.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    let n = all.len().max(1) as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Ok(RewardStats { mean, std: var.sqrt(), count: all.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_error_by_hand() {
        // σ(2) = 0.880797 (right, bin 7); σ(−1) = 0.268941 → confidence 0.731059 (wrong, bin 4).
        let ece = expected_calibration_error(&[2.0, -1.0], 10);
        let expected = ((1.0 - 0.880797077977882) + 0.7310585786300049) / 2.0;
        assert!((ece - expected).abs() < 1e-12, "{ece}");
        // Two pairs in one bin: |mean correctness − mean confidence| weighted by the bin share.
        let ece = expected_calibration_error(&[0.1, -0.1], 10);
        let conf = 1.0 / (1.0 + (-0.1f64).exp());
        assert!((ece - (conf - 0.5)).abs() < 1e-12, "{ece}");
    }

    #[test]
    fn pair_metrics_by_hand() {
        let m = pair_metrics(&[1.0, 0.0, 2.0], &[0.0, 1.0, 2.0]);
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        assert!((get("accuracy") - 1.0 / 3.0).abs() < 1e-12, "ties count as wrong");
        assert!((get("margin") - 0.0).abs() < 1e-12);
        let loss = ((1.0 + (-1f64).exp()).ln() + (1.0 + 1f64.exp()).ln() + 2f64.ln()) / 3.0;
        assert!((get("loss") - loss).abs() < 1e-12);
    }
}
