//! GRPO (Shao et al., DeepSeekMath): G samples per prompt, advantages normalised within each
//! group (no critic), the clipped surrogate with an optional k3 KL term to the reference in the
//! loss. Defaults are TRL 1.16's: β = 0, ε = 0.2, token-mean ("dapo") aggregation, group std.
//!
//! A step: rollout → scores from every reward source → group advantages (or leave-one-out) →
//! zero-variance groups and (optionally) truncated rows dropped → μ passes of minibatch updates.

use crate::advantage::{group_advantages, process_advantages, rloo_advantages, MultiRewardAggregation, StdScale};
use crate::aggregate::{token_weights, LossAggregation};
use crate::error::{Result, TrainError};
use crate::kl::KlEstimator;
use crate::metrics::MetricsLogger;
use crate::online::{self, log_metrics, Clock, HeldOutEval, PolicyObjective, PolicyRow, SampleLog, Session};
use crate::policy_loss::ClipConfig;
use crate::rollout::{self, decode_rows, response_logprobs_rows, PromptRef, RolloutConfig, RolloutRow};
use crate::trainer::{batch_indices, StepReport, TrainConfig};
use candle_core::Var;
use rlhf_data::Tokenizer;
use rlhf_model::CausalLm;
use rlhf_reward::RewardSource;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// (r − group mean) / (scale + 1e-4), TRL's GRPO.
    Group,
    /// r − mean of the other G−1 samples of the prompt (RLOO; no std scaling).
    Rloo,
}

/// What to do with responses cut off at `max_new_tokens` (RLHF_DETAILS 25).
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
        }
    }
}

/// A training prompt: its ids and what verifiers need.
pub struct RlPrompt<'a> {
    pub ids: &'a [u32],
    pub refs: PromptRef<'a>,
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

pub struct RunInfo<'a> {
    pub dir: &'a Path,
    pub config: serde_json::Value,
    /// Evaluate every this many steps (0 = only before and after).
    pub eval_steps: usize,
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
    let total = train.max_steps.max(1) as u64;
    let mut session = Session::new(s.policy, s.params, train, total as usize, &run.dir.join("checkpoints"))?;
    let mut logger = MetricsLogger::create(run.dir).map_err(|e| TrainError::file(run.dir, e.to_string()))?;
    let mut samples = SampleLog::create(run.dir)?;
    let mut clock = Clock::start();
    let mut last_eval = clock.evaluate(s.eval.as_mut(), s.policy, s.tokenizer, &mut logger, 0)?;
    for step in 1..=total {
        let t0 = Instant::now();
        let idx = batch_indices(s.prompts.len(), cfg.prompts_per_step, train.seed, step - 1);
        let prompts: Vec<&[u32]> = idx.iter().map(|&i| s.prompts[i].ids).collect();
        let refs: Vec<PromptRef> = idx.iter().map(|&i| s.prompts[i].refs).collect();
        let rows = rollout::rollout(
            s.policy,
            &prompts,
            cfg.num_generations,
            roll,
            s.tokenizer,
            rollout::step_seed(train.seed, step),
            &mut |_| {},
        )?;
        let rollout_secs = t0.elapsed().as_secs_f64();
        let mut metrics = score_and_update(s, cfg, roll, &mut session, &rows, &refs, step, &mut samples)?;
        let secs = t0.elapsed().as_secs_f64();
        let tokens: usize = rows.iter().map(|r| r.response_ids.len()).sum();
        metrics.extend([
            ("lr".to_string(), session.schedule.lr_at(step as usize - 1)),
            ("rollout/tokens_per_sec".into(), tokens as f64 / rollout_secs.max(1e-9)),
            ("update/seconds".into(), secs - rollout_secs),
            ("step_time".into(), secs),
            ("elapsed_seconds".into(), clock.elapsed()),
            ("train_seconds".into(), clock.train_seconds()),
        ]);
        log_metrics(&mut logger, step, &metrics)?;
        let get = |k: &str| metrics.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v);
        on_step(&StepReport {
            step,
            total_steps: total,
            loss: get("reward/mean"),
            lr: get("lr"),
            grad_norm: get("grad_norm"),
            tokens_per_sec: tokens as f64 / secs.max(1e-9),
            stats: metrics.clone(),
        });
        let kl = get("kl/sequence");
        let stop = cfg.max_kl > 0.0 && kl > cfg.max_kl;
        if step == total || stop || (run.eval_steps > 0 && step % run.eval_steps as u64 == 0) {
            last_eval = clock.evaluate(s.eval.as_mut(), s.policy, s.tokenizer, &mut logger, step)?;
        }
        if step == total || stop || (train.save_steps > 0 && step % train.save_steps as u64 == 0) {
            session.save(step, total, train.seed, "grpo", &run.config)?;
        }
        if stop {
            eprintln!("grpo: stopping at step {step}: KL to the reference {kl:.3} > max_kl {}", cfg.max_kl);
            break;
        }
    }
    Ok(last_eval)
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

/// Scores the rollout, builds advantages and runs the updates; returns the step's metrics.
#[allow(clippy::too_many_arguments)]
fn score_and_update(
    s: &mut GrpoSetup,
    cfg: &GrpoConfig,
    roll: &RolloutConfig,
    session: &mut Session,
    rows: &[RolloutRow],
    refs: &[PromptRef],
    step: u64,
    samples: &mut SampleLog,
) -> Result<Vec<(String, f64)>> {
    let texts = decode_rows(s.tokenizer, rows)?;
    let (per_source, mut metrics) = online::score_all(&mut s.sources, rows, &texts, refs)?;
    let names: Vec<String> = s.sources.iter().map(|(src, _)| src.name().to_string()).collect();
    samples.write(step, rows, &texts, &names, &per_source)?;
    let weights: Vec<f64> = s.sources.iter().map(|(_, w)| *w).collect();
    let mut per_func: Vec<Vec<f64>> =
        (0..rows.len()).map(|i| per_source.iter().map(|sc| sc[i].value.unwrap_or(f64::NAN)).collect()).collect();
    if let Truncation::Penalty(p) = cfg.truncation {
        for (r, row) in per_func.iter_mut().zip(rows) {
            if row.truncated() {
                // Only the penalty counts: the weighted sum of [p/w₀, NaN…] is p.
                *r = std::iter::once(p / weights[0]).chain(std::iter::repeat_n(f64::NAN, weights.len() - 1)).collect();
            }
        }
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
        let steps: Vec<Vec<(usize, f64)>> = (0..rows.len())
            .map(|i| {
                per_source
                    .iter()
                    .zip(&weights)
                    .flat_map(|(sc, w)| sc[i].steps.iter().map(move |&(t, r)| (t, r * w)))
                    .collect()
            })
            .collect();
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
    metrics.extend([
        ("reward/mean".to_string(), online::mean(&rewards_ok)),
        ("reward/std".into(), online::std(&rewards_ok)),
        (
            "zero_variance_group_fraction".into(),
            zero_var.iter().filter(|&&z| z).count() as f64 / n_groups.max(1) as f64,
        ),
        ("rows_trained".into(), keep.len() as f64),
        ("response_length".into(), online::mean_len(rows)),
        ("truncation_rate".into(), online::truncation_rate(rows)),
        ("entropy".into(), online::sampled_entropy(rows)),
    ]);
    let pairs: Vec<(&[u32], &[u32])> =
        rows.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
    let ref_logp = match s.reference {
        Some(reference) if cfg.beta != 0.0 || cfg.max_kl > 0.0 => {
            let lp = response_logprobs_rows(
                reference,
                &pairs,
                s.tokenizer.pad_id(),
                roll.temperature,
                roll.forward_batch_size,
            )?;
            let seq_kl: Vec<f64> = rows
                .iter()
                .zip(&lp)
                .map(|(r, l)| r.sampler_logprobs.iter().zip(l).map(|(&a, b)| a as f64 - b).sum())
                .collect();
            metrics.push(("kl/sequence".into(), online::mean(&seq_kl)));
            Some(lp)
        }
        _ => None,
    };
    if keep.is_empty() {
        return Ok(metrics);
    }
    let multi_pass = cfg.num_iterations > 1 || cfg.num_minibatches > 1;
    let old: Option<Vec<Vec<f64>>> = if multi_pass {
        let kept: Vec<(&[u32], &[u32])> = keep.iter().map(|&i| pairs[i]).collect();
        Some(response_logprobs_rows(s.policy, &kept, s.tokenizer.pad_id(), roll.temperature, roll.forward_batch_size)?)
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
            ref_logp: ref_logp.as_ref().filter(|_| cfg.beta != 0.0).map(|r| r[i].clone()),
            sampler_logp: rows[i].sampler_logprobs.clone(),
            advantages: token_adv[i].clone(),
            weights: Vec::new(),
        })
        .collect();
    let clip = ClipConfig { epsilon_low: cfg.epsilon, epsilon_high: cfg.epsilon_high, dual_clip: None };
    let mut obj = PolicyObjective::new(s.policy, s.tokenizer.pad_id(), roll.temperature, clip);
    obj.kl_coef = cfg.beta;
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
            grad_norms.push(session.update(&mut obj, &batch, step)?);
        }
    }
    metrics.push(("grad_norm".into(), online::mean(&grad_norms)));
    metrics.extend(obj.take_stats());
    Ok(metrics)
}
