//! Rewards and advantages on the host, in f64. Per-token data is one `Vec<f64>` per response,
//! holding only its real tokens (no padding), so nothing here can read a padded slot.
//!
//! PPO: KL-penalised per-token rewards → optional reward whitening → GAE → advantage whitening.
//! GRPO: group-relative advantages (TRL 1.16 semantics), RLOO, and process supervision.

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// r_t = −β·kl_t on every response token, plus the sequence score on the last one
/// (docs/ARCHITECTURE.md, detail 13). Rows `[n_i]`; an empty row stays empty (its score has nowhere to go).
pub fn kl_penalised_rewards(kl: &[Vec<f64>], scores: &[f64], kl_coef: f64) -> Vec<Vec<f64>> {
    kl.iter()
        .zip(scores)
        .map(|(row, &score)| {
            let mut r: Vec<f64> = row.iter().map(|&k| -kl_coef * k).collect();
            if let Some(last) = r.last_mut() {
                *last += score;
            }
            r
        })
        .collect()
}

/// Whitening over every token of the batch (the pre-1.x TRL PPO convention):
/// (x − mean)·(var + 1e-8)^{−1/2}, var unbiased (·n/(n−1)) when asked; `shift_mean = false` adds
/// the mean back (used for rewards, whose sign carries meaning). With a single token the
/// unbiased variance is undefined and the population one (0) is used.
pub fn masked_whiten(rows: &[Vec<f64>], shift_mean: bool, unbiased: bool) -> Vec<Vec<f64>> {
    if rows.iter().all(Vec::is_empty) {
        return rows.to_vec();
    }
    let (mean, var) = mean_var(rows, unbiased);
    let scale = 1.0 / (var + 1e-8).sqrt();
    let back = if shift_mean { 0.0 } else { mean };
    rows.iter().map(|row| row.iter().map(|x| (x - mean) * scale + back).collect()).collect()
}

/// Mean and variance over every token of the batch (unbiased: ·n/(n−1), when n > 1); NaN when
/// there is no token.
pub fn mean_var(rows: &[Vec<f64>], unbiased: bool) -> (f64, f64) {
    let n = rows.iter().map(Vec::len).sum::<usize>();
    let mean = rows.iter().flatten().sum::<f64>() / n as f64;
    let mut var = rows.iter().flatten().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    if unbiased && n > 1 {
        var *= n as f64 / (n - 1) as f64;
    }
    (mean, var)
}

/// Generalised advantage estimation per row: δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1},
/// with V = 0 and A = 0 after the last token (the response ended). Returns (advantages,
/// returns = advantages + values), both shaped like `rewards`.
pub fn gae(rewards: &[Vec<f64>], values: &[Vec<f64>], gamma: f64, lam: f64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut advantages = Vec::with_capacity(rewards.len());
    let mut returns = Vec::with_capacity(rewards.len());
    for (r, v) in rewards.iter().zip(values) {
        assert_eq!(r.len(), v.len(), "gae: a row of rewards and values differ in length");
        let mut adv = vec![0.0; r.len()];
        let (mut next_v, mut next_a) = (0.0, 0.0);
        for t in (0..r.len()).rev() {
            let delta = r[t] + gamma * next_v - v[t];
            next_a = delta + gamma * lam * next_a;
            adv[t] = next_a;
            next_v = v[t];
        }
        returns.push(adv.iter().zip(v).map(|(a, v)| a + v).collect());
        advantages.push(adv);
    }
    (advantages, returns)
}

/// Which std divides the group-centred rewards (docs/ARCHITECTURE.md, detail 21).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdScale {
    /// std of the prompt's group (DeepSeekMath).
    #[default]
    Group,
    /// std of all rewards of the batch (the mean is still the group's).
    Batch,
    /// No division (Dr. GRPO): avoids up-weighting prompts that are nearly solved or hopeless.
    None,
}

/// How several reward functions combine (TRL's `multi_objective_aggregation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiRewardAggregation {
    /// Weighted sum per completion, then group normalisation.
    #[default]
    SumThenNormalize,
    /// Z-score each function within its group, weighted sum, then whiten over the batch (GDPO);
    /// the `StdScale` is ignored.
    NormalizeThenSum,
}

/// Per-completion outputs of [`group_advantages`], each `[N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupAdvantages {
    pub advantages: Vec<f64>,
    /// Combined reward; NaN for a completion no function could score.
    pub rewards: Vec<f64>,
    /// The std used (or, for `StdScale::None`, the group std, for logging).
    pub std_rewards: Vec<f64>,
    /// The std is ≈ 0 (|std| ≤ 1e-8): the group carries no learning signal (docs/ARCHITECTURE.md, detail 24).
    pub is_std_zero: Vec<bool>,
}

fn nanmean(x: &[f64]) -> f64 {
    let (s, n) = x.iter().filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    s / n as f64
}

/// Unbiased std ignoring NaNs, as TRL's `nanstd`: NaN with fewer than two values.
fn nanstd(x: &[f64]) -> f64 {
    let m = nanmean(x);
    let (s, n) = x.iter().filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, n), v| (s + (v - m) * (v - m), n + 1));
    (s / n as f64 * (n as f64 / (n as f64 - 1.0))).sqrt()
}

/// Group-relative advantages with TRL 1.16 semantics. `rewards_per_func` is `[N][K]` with the G
/// completions of a prompt in consecutive rows; NaN means "this function did not score it" and
/// counts as 0 in the weighted sum. A row that is all NaN is unscorable: its reward is NaN, it is
/// left out of means and stds, and its advantage is 0. A = (r − group mean) / (std + 1e-4).
pub fn group_advantages(
    rewards_per_func: &[Vec<f64>],
    weights: &[f64],
    group_size: usize,
    scale: StdScale,
    agg: MultiRewardAggregation,
) -> Result<GroupAdvantages> {
    let n = rewards_per_func.len();
    check_groups(n, group_size)?;
    if let Some(row) = rewards_per_func.iter().find(|r| r.len() != weights.len()) {
        return Err(TrainError::Config(format!("{} reward weights for {} reward functions", weights.len(), row.len())));
    }
    let unscorable: Vec<bool> = rewards_per_func.iter().map(|r| r.iter().all(|x| x.is_nan())).collect();
    let weighted_sum = |row: &[f64]| row.iter().zip(weights).filter(|(x, _)| !x.is_nan()).map(|(x, w)| x * w).sum();
    // Broadcast a per-group statistic back to the group's rows.
    let groups = |v: &[f64], f: fn(&[f64]) -> f64| -> Vec<f64> {
        v.chunks(group_size).flat_map(|g| vec![f(g); g.len()]).collect()
    };
    // A std over a single value is taken as 0, as TRL does for G = 1 (evaluation only).
    let group_std = |v: &[f64]| if group_size > 1 { groups(v, nanstd) } else { vec![0.0; n] };
    let batch_std = |v: &[f64]| vec![if n > 1 { nanstd(v) } else { 0.0 }; n];
    let (rewards, advantages, std_rewards) = match agg {
        MultiRewardAggregation::SumThenNormalize => {
            let rewards: Vec<f64> = rewards_per_func
                .iter()
                .zip(&unscorable)
                .map(|(row, &u)| if u { f64::NAN } else { weighted_sum(row) })
                .collect();
            let mean = groups(&rewards, nanmean);
            let std = if scale == StdScale::Batch { batch_std(&rewards) } else { group_std(&rewards) };
            let adv: Vec<f64> = (0..n)
                .map(|i| {
                    let centred = rewards[i] - mean[i];
                    if scale == StdScale::None {
                        centred
                    } else {
                        centred / (std[i] + 1e-4)
                    }
                })
                .collect();
            (rewards, adv, std)
        }
        MultiRewardAggregation::NormalizeThenSum => {
            let k = weights.len();
            let mut z = vec![vec![0.0; k]; n];
            for j in 0..k {
                let col: Vec<f64> = rewards_per_func.iter().map(|r| r[j]).collect();
                let (mean, std) = (groups(&col, nanmean), group_std(&col));
                for i in 0..n {
                    z[i][j] = (col[i] - mean[i]) / (std[i] + 1e-4);
                }
            }
            let rewards: Vec<f64> =
                z.iter().zip(&unscorable).map(|(row, &u)| if u { f64::NAN } else { weighted_sum(row) }).collect();
            let (mean, std) = (nanmean(&rewards), batch_std(&rewards));
            let adv: Vec<f64> = (0..n).map(|i| (rewards[i] - mean) / (std[i] + 1e-4)).collect();
            (rewards, adv, std)
        }
    };
    let advantages = advantages.into_iter().zip(&unscorable).map(|(a, &u)| if u { 0.0 } else { a }).collect();
    let is_std_zero = std_rewards.iter().map(|s| s.abs() <= 1e-8).collect();
    Ok(GroupAdvantages { advantages, rewards, std_rewards, is_std_zero })
}

fn check_groups(n: usize, group_size: usize) -> Result<()> {
    if group_size == 0 || !n.is_multiple_of(group_size) {
        return Err(TrainError::Config(format!(
            "{n} completions do not split into groups of {group_size} (num_generations)"
        )));
    }
    Ok(())
}

/// REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = r_i − mean of the other G−1 rewards of
/// its group, an unbiased baseline that needs no value model. Needs G ≥ 2.
pub fn rloo_advantages(rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
    check_groups(rewards.len(), group_size)?;
    if group_size < 2 {
        return Err(TrainError::Config("RLOO needs at least 2 completions per prompt".into()));
    }
    let g = group_size as f64;
    Ok(rewards
        .chunks(group_size)
        .flat_map(|grp| {
            let sum: f64 = grp.iter().sum();
            grp.iter().map(move |r| r - (sum - r) / (g - 1.0))
        })
        .collect())
}

/// Process supervision (DeepSeekMath §4.1.3). `step_rewards[i]` lists (index of the token that
/// ends the step, reward) for response i of `lengths[i]` tokens. All step rewards of a group are
/// normalised by the group's mean and **unbiased** std (+1e-4 on the std, as for outcome
/// rewards; std 0 with fewer than two steps); a token's advantage is the sum of the normalised
/// rewards of the steps ending at or after it. Rows without steps get zeros.
pub fn process_advantages(
    step_rewards: &[Vec<(usize, f64)>],
    lengths: &[usize],
    group_size: usize,
) -> Result<Vec<Vec<f64>>> {
    check_groups(step_rewards.len(), group_size)?;
    if lengths.len() != step_rewards.len() {
        return Err(TrainError::Config(format!(
            "{} lengths for {} responses with step rewards",
            lengths.len(),
            step_rewards.len()
        )));
    }
    let mut out = Vec::with_capacity(lengths.len());
    for (steps, lens) in step_rewards.chunks(group_size).zip(lengths.chunks(group_size)) {
        let all: Vec<f64> = steps.iter().flatten().map(|&(_, r)| r).collect();
        let mean = if all.is_empty() { 0.0 } else { all.iter().sum::<f64>() / all.len() as f64 };
        let std = if all.len() < 2 { 0.0 } else { nanstd(&all) };
        for (row, &len) in steps.iter().zip(lens) {
            let mut adv = vec![0.0; len];
            for &(end, r) in row {
                if end >= len {
                    return Err(TrainError::Config(format!(
                        "a step ends at token {end} of a response of {len} tokens"
                    )));
                }
                let z = (r - mean) / (std + 1e-4);
                adv[..=end].iter_mut().for_each(|a| *a += z);
            }
            out.push(adv);
        }
    }
    Ok(out)
}
