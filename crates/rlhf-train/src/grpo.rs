//! GRPO (Shao et al., DeepSeekMath): G samples per prompt, advantages normalised within each
//! group (no critic), the clipped surrogate with an optional k3 KL term to the reference in the
//! loss. Defaults are TRL 1.16's: β = 0, ε = 0.2, token-mean ("dapo") aggregation, group std.
//!
//! A step, and where each part lives:
//! 1. `online::driver::OnlineLoop::run`: the step's prompts → `rollout::rollout` (G per prompt)
//!    → `online::score_all` → `online::SampleLog::write` → the update below → metrics line,
//!    held-out evaluation, checkpoints, the `max_kl` stop.
//! 2. Here, `GrpoUpdate::score_and_update`: reference logprobs and sequence KL (β > 0 or
//!    `max_kl`) → `GrpoUpdate::advantages` (`advantage::group_advantages`, `rloo_advantages` or
//!    `process_advantages`; zero-variance groups and masked truncations dropped) → μ passes of
//!    minibatches, each weighted by `aggregate::token_weights` and run through
//!    `online::Session::update` on `online::PolicyObjective` (`policy_loss::clipped_policy_loss`).

use crate::advantage::{group_advantages, process_advantages, rloo_advantages, MultiRewardAggregation, StdScale};
use crate::aggregate::{token_weights, LossAggregation};
use crate::error::{Result, TrainError};
use crate::kl::{kl_value, KlEstimator, KlPlacement};
use crate::metric_keys as keys;
use crate::online::driver::{OnlineAlgorithm, OnlineLoop, Rollout, StepStats};
use crate::online::{self, HeldOutEval, PolicyObjective, PolicyRow, RlPrompt, RunInfo, Session};
use crate::policy_loss::ClipConfig;
use crate::rollout::{self, sharded_logprobs, RolloutConfig, RolloutRow};
use crate::stats;
use crate::trainer::{StepReport, TrainConfig};
use candle_core::Var;
use rlhf_data::Tokenizer;
use rlhf_model::CausalLm;
use rlhf_reward::RewardSource;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// (r − group mean) / (scale + 1e-4), TRL's GRPO.
    Group,
    /// r − mean of the other G−1 samples of the prompt (RLOO; no std scaling).
    Rloo,
}

/// What to do with responses cut off at `max_new_tokens` (docs/ARCHITECTURE.md, detail 25).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Score them like any other response.
    Keep,
    /// Leave them out of the loss (they still count in their group's statistics).
    Mask,
    /// Replace their reward with this value.
    Penalty(f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoConfig {
    /// G: responses sampled per prompt.
    pub num_generations: usize,
    /// Prompts per step (the step's batch is prompts × G responses).
    pub prompts_per_step: usize,
    /// β of the KL term in the loss (TRL default 0; DeepSeekMath 0.04).
    pub beta: f64,
    pub kl_estimator: KlEstimator,
    /// Lower clip ε and upper ε_high (clip-higher: 0.28).
    pub epsilon: f64,
    pub epsilon_high: f64,
    pub loss_type: LossAggregation,
    pub advantage: AdvantageEstimator,
    pub scale_rewards: StdScale,
    pub multi_reward: MultiRewardAggregation,
    /// μ: passes over each rollout (1 = on-policy, the ratio is exactly 1).
    pub num_iterations: usize,
    /// Optimiser steps per pass over a rollout.
    pub num_minibatches: usize,
    /// Leave groups whose rewards all tie out of the loss (they carry no signal).
    pub drop_zero_variance_groups: bool,
    pub truncation: Truncation,
    /// Use the sources' step rewards (process supervision) instead of outcome rewards.
    pub process_supervision: bool,
    /// Stop the run when the mean sequence KL to the reference exceeds this (nats; 0 = never).
    pub max_kl: f64,
    /// Where β·KL goes: a k-estimator term per token in the loss (GRPO), or −β·Σ_t KL_t added
    /// to each response's reward before group normalisation.
    pub kl_placement: KlPlacement,
    /// Dual clip c > 1 for negative advantages (None: off).
    pub dual_clip: Option<f64>,
}

impl GrpoConfig {
    /// `[train]` of a GRPO run: TRL 1.16's `GRPOConfig` (lr 1e-6, linear decay), 100 steps,
    /// a checkpoint every 50.
    pub fn train_defaults() -> TrainConfig {
        TrainConfig {
            learning_rate: 1e-6,
            lr_scheduler: crate::ScheduleKind::Linear,
            max_steps: 100,
            save_steps: 50,
            ..TrainConfig::default()
        }
    }
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            num_generations: 8,
            prompts_per_step: 1,
            beta: 0.0,
            kl_estimator: KlEstimator::K3,
            epsilon: 0.2,
            epsilon_high: 0.2,
            loss_type: LossAggregation::TokenMean,
            advantage: AdvantageEstimator::Group,
            scale_rewards: StdScale::Group,
            multi_reward: MultiRewardAggregation::SumThenNormalize,
            num_iterations: 1,
            num_minibatches: 1,
            drop_zero_variance_groups: true,
            truncation: Truncation::Keep,
            process_supervision: false,
            max_kl: 0.0,
            kl_placement: KlPlacement::Loss,
            dual_clip: None,
        }
    }
}

/// The models and data of a GRPO run.
pub struct GrpoSetup<'a> {
    pub policy: &'a CausalLm,
    pub params: &'a [(String, Var)],
    /// Frozen reference (needed when β > 0 or `max_kl` > 0).
    pub reference: Option<&'a CausalLm>,
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a [RlPrompt<'a>],
    /// Reward sources and their weights.
    pub sources: Vec<(Box<dyn RewardSource + 'a>, f64)>,
    pub eval: Option<HeldOutEval<'a>>,
}

/// Runs GRPO for `train.max_steps` steps; returns the last evaluation.
pub fn train_grpo(
    s: &mut GrpoSetup,
    cfg: &GrpoConfig,
    roll: &RolloutConfig,
    train: &TrainConfig,
    run: &RunInfo,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<Vec<(String, f64)>> {
    validate(cfg, s)?;
    roll.validate()?;
    let total = train.max_steps.max(1);
    let session = Session::new(s.policy, s.params, train, total, &run.dir.join("checkpoints"))?;
    let GrpoSetup { policy, reference, tokenizer, prompts, sources, eval, .. } = s;
    let mut update = GrpoUpdate { cfg, roll, policy, reference: *reference, tokenizer, session };
    let schedule = train.into();
    let online = OnlineLoop { policy, tokenizer, prompts, sources, eval: eval.as_mut(), rollout: roll, schedule, run };
    online.run(&mut update, on_step)
}

/// GRPO's side of a step (the loop in `online::driver` does the rest).
struct GrpoUpdate<'a, 'c> {
    cfg: &'c GrpoConfig,
    roll: &'c RolloutConfig,
    policy: &'a CausalLm,
    reference: Option<&'a CausalLm>,
    tokenizer: &'a Tokenizer,
    session: Session<'a>,
}

impl OnlineAlgorithm for GrpoUpdate<'_, '_> {
    fn name(&self) -> &'static str {
        "grpo"
    }

    fn samples_per_prompt(&self) -> usize {
        self.cfg.num_generations
    }

    fn prompts_per_step(&self) -> usize {
        self.cfg.prompts_per_step
    }

    fn headline(&self) -> &'static str {
        keys::REWARD_MEAN
    }

    fn max_kl(&self) -> f64 {
        self.cfg.max_kl
    }

    fn update(&mut self, rollout: &Rollout) -> Result<StepStats> {
        self.score_and_update(rollout)
    }

    fn lr(&self, step: u64) -> f64 {
        self.session.schedule.lr_at(step as usize - 1)
    }

    fn save(&self, step: u64, total: u64, seed: u64, config: &serde_json::Value) -> Result<()> {
        self.session.save(step, total, seed, "grpo", config).map(|_| ())
    }

    fn restore(&mut self, dir: &Path, run: &RunInfo) -> Result<u64> {
        Ok(self.session.restore(dir, "grpo", &run.config)?.step)
    }
}

fn validate(cfg: &GrpoConfig, s: &GrpoSetup) -> Result<()> {
    let bad = |m: String| Err(TrainError::Config(m));
    if cfg.num_generations < 2 {
        return bad(format!("grpo.num_generations must be ≥ 2 (group statistics), got {}", cfg.num_generations));
    }
    if cfg.prompts_per_step == 0 || cfg.num_iterations == 0 || cfg.num_minibatches == 0 {
        return bad("grpo.prompts_per_step, num_iterations and num_minibatches must be ≥ 1".into());
    }
    if (cfg.beta != 0.0 || cfg.max_kl > 0.0) && s.reference.is_none() {
        return bad("grpo.beta > 0 or max_kl > 0 needs a reference model".into());
    }
    if s.prompts.is_empty() || s.sources.is_empty() {
        return bad("grpo needs prompts and at least one reward source".into());
    }
    if matches!(cfg.truncation, Truncation::Penalty(_)) && s.sources[0].1 == 0.0 {
        return bad("grpo.truncation = penalty needs a nonzero weight on the first reward source".into());
    }
    Ok(())
}

impl GrpoUpdate<'_, '_> {
    /// Builds advantages from the rollout's scores and runs the updates.
    fn score_and_update(&mut self, rollout: &Rollout) -> Result<StepStats> {
        let (cfg, roll) = (self.cfg, self.roll);
        let (rows, step) = (&rollout.rows, rollout.step);
        let mut metrics = Vec::new();
        let mut mean_kl = None;
        let pairs: Vec<(&[u32], &[u32])> =
            rows.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
        let ref_logp = match self.reference {
            Some(reference) if cfg.beta != 0.0 || cfg.max_kl > 0.0 => {
                let (pad, fb) = (self.tokenizer.pad_id(), roll.forward_batch_size);
                let lp = sharded_logprobs(reference, &pairs, pad, roll.temperature, fb)?;
                let seq_kl: Vec<f64> = rows.iter().zip(&lp).map(|(r, l)| sequence_kl(KlEstimator::K1, r, l)).collect();
                let kl = stats::mean(&seq_kl);
                metrics.push((keys::KL_SEQUENCE.into(), kl));
                mean_kl = Some(kl);
                Some(lp)
            }
            _ => None,
        };
        let (token_adv, keep) = self.advantages(rollout, ref_logp.as_deref(), &mut metrics)?;
        if keep.is_empty() {
            return Ok(StepStats { metrics, sequence_kl: mean_kl });
        }
        let kl_in_loss = cfg.beta != 0.0 && cfg.kl_placement == KlPlacement::Loss;
        let multi_pass = cfg.num_iterations > 1 || cfg.num_minibatches > 1;
        let old: Option<Vec<Vec<f64>>> = if multi_pass {
            let kept: Vec<(&[u32], &[u32])> = keep.iter().map(|&i| pairs[i]).collect();
            Some(sharded_logprobs(
                self.policy,
                &kept,
                self.tokenizer.pad_id(),
                roll.temperature,
                roll.forward_batch_size,
            )?)
        } else {
            None
        };
        let mut policy_rows: Vec<PolicyRow> = keep
            .iter()
            .enumerate()
            .map(|(k, &i)| PolicyRow {
                prompt: rows[i].prompt_ids.clone(),
                response: rows[i].response_ids.clone(),
                old_logp: old.as_ref().map(|o| o[k].clone()),
                ref_logp: ref_logp.as_ref().filter(|_| kl_in_loss).map(|r| r[i].clone()),
                sampler_logp: rows[i].sampler_logprobs.clone(),
                advantages: token_adv[i].clone(),
                weights: Vec::new(),
            })
            .collect();
        let clip = ClipConfig { epsilon_low: cfg.epsilon, epsilon_high: cfg.epsilon_high, dual_clip: cfg.dual_clip };
        let mut obj = PolicyObjective::new(self.policy, self.tokenizer.pad_id(), roll.temperature, clip)
            .with_tis_cap(roll.tis_cap);
        obj.kl_coef = if kl_in_loss { cfg.beta } else { 0.0 };
        obj.kl_estimator = cfg.kl_estimator;
        let mb_size = policy_rows.len().div_ceil(cfg.num_minibatches);
        let mut grad_norms = Vec::new();
        for pass in 0..cfg.num_iterations {
            let order = rollout::minibatches(policy_rows.len(), mb_size, rollout::step_seed(step, pass as u64));
            for mb in order {
                let lengths: Vec<usize> = mb.iter().map(|&i| policy_rows[i].response.len()).collect();
                let w = token_weights(cfg.loss_type, &lengths, roll.max_new_tokens, None);
                for (&i, w) in mb.iter().zip(w) {
                    policy_rows[i].weights = w;
                }
                let batch: Vec<&PolicyRow> = mb.iter().map(|&i| &policy_rows[i]).collect();
                grad_norms.push(self.session.update(&mut obj, &batch, step)?);
            }
        }
        metrics.push(("grad_norm".into(), stats::mean(&grad_norms)));
        let trained: usize = policy_rows.iter().map(|r| r.prompt.len() + r.response.len()).sum();
        metrics.push((keys::UPDATE_TOKENS.into(), (trained * cfg.num_iterations) as f64));
        metrics.extend(obj.take_stats());
        Ok(StepStats { metrics, sequence_kl: mean_kl })
    }

    /// Per-token advantages of every row and the rows that train: rewards per source (truncation
    /// penalty and, with `kl_placement = "reward"`, −β·KL as one more source), group statistics,
    /// outcome or process advantages, zero-variance groups and masked truncations left out.
    fn advantages(
        &self,
        rollout: &Rollout,
        ref_logp: Option<&[Vec<f64>]>,
        metrics: &mut Vec<(String, f64)>,
    ) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
        let (cfg, rows, per_source) = (self.cfg, &rollout.rows, &rollout.scores);
        let mut weights = rollout.weights.clone();
        let mut per_func: Vec<Vec<f64>> =
            (0..rows.len()).map(|i| per_source.iter().map(|sc| sc[i].value.unwrap_or(f64::NAN)).collect()).collect();
        if let Truncation::Penalty(p) = cfg.truncation {
            for (r, row) in per_func.iter_mut().zip(rows) {
                if row.truncated() {
                    // Only the penalty counts: the weighted sum of [p/w₀, NaN…] is p.
                    *r = std::iter::once(p / weights[0])
                        .chain(std::iter::repeat_n(f64::NAN, weights.len() - 1))
                        .collect();
                }
            }
        }
        if let (Some(lp), KlPlacement::Reward, true) = (ref_logp, cfg.kl_placement, cfg.beta != 0.0) {
            for ((r, row), l) in per_func.iter_mut().zip(rows).zip(lp) {
                r.push(-cfg.beta * sequence_kl(cfg.kl_estimator, row, l));
            }
            weights.push(1.0);
        }
        let g = cfg.num_generations;
        let groups = group_advantages(&per_func, &weights, g, cfg.scale_rewards, cfg.multi_reward)?;
        let seq_adv = match cfg.advantage {
            AdvantageEstimator::Group => groups.advantages.clone(),
            AdvantageEstimator::Rloo => {
                let finite: Vec<f64> = groups.rewards.iter().map(|&r| if r.is_finite() { r } else { 0.0 }).collect();
                rloo_advantages(&finite, g)?
            }
        };
        let token_adv: Vec<Vec<f64>> = if cfg.process_supervision {
            let mut steps = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let weighted: Vec<(usize, f64)> = per_source
                    .iter()
                    .zip(&weights)
                    .flat_map(|(sc, w)| sc[i].steps.iter().map(move |&(off, r)| (off, r * w)))
                    .collect();
                steps.push(rollout::offsets_to_tokens(self.tokenizer, &row.response_ids, &weighted)?);
            }
            let lengths: Vec<usize> = rows.iter().map(|r| r.response_ids.len()).collect();
            process_advantages(&steps, &lengths, g)?
        } else {
            rows.iter().zip(&seq_adv).map(|(r, &a)| vec![a; r.response_ids.len()]).collect()
        };
        let n_groups = rows.len() / g;
        let zero_var: Vec<bool> = (0..n_groups).map(|k| groups.is_std_zero[k * g]).collect();
        let keep: Vec<usize> = (0..rows.len())
            .filter(|&i| !(cfg.drop_zero_variance_groups && zero_var[i / g]))
            .filter(|&i| !(cfg.truncation == Truncation::Mask && rows[i].truncated()))
            .collect();
        let rewards_ok: Vec<f64> = groups.rewards.iter().copied().filter(|r| r.is_finite()).collect();
        let zero_share = zero_var.iter().filter(|&&z| z).count() as f64 / n_groups.max(1) as f64;
        metrics.extend([
            (keys::REWARD_MEAN.to_string(), stats::mean(&rewards_ok)),
            ("reward/std".into(), stats::std(&rewards_ok)),
            ("zero_variance_group_fraction".into(), zero_share),
            ("rows_trained".into(), keep.len() as f64),
            (keys::RESPONSE_LENGTH.into(), online::mean_len(rows)),
            ("truncation_rate".into(), online::truncation_rate(rows)),
            ("entropy".into(), online::sampled_entropy(rows)),
        ]);
        Ok((token_adv, keep))
    }
}

/// Σ_t KL_t of one response between the sampler's logprobs and the reference's.
fn sequence_kl(est: KlEstimator, row: &RolloutRow, reference: &[f64]) -> f64 {
    row.sampler_logprobs.iter().zip(reference).map(|(&a, &b)| kl_value(est, a as f64, b, None)).sum()
}
