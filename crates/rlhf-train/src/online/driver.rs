//! The one online-RL loop. Every step: the step's prompts (seeded epoch order) → rollout →
//! scores from every reward source → the sample log → the algorithm's update → the metrics line
//! and progress report → held-out evaluation and checkpoints when due → the `max_kl` stop.
//! GRPO/RLOO, PPO and RAFT (a step is a round) implement only [`OnlineAlgorithm::update`] (and
//! say how to checkpoint and restore). `RunInfo::resume` continues a run from a checkpoint,
//! bit-identically.

use super::sampling::{Draw, StepSampler};
use super::{due, score_all, step_prompts, HeldOutEval, Metrics, RlPrompt, RunInfo, SampleLog, StepEnds, StepTiming};
use crate::checkpoint;
use crate::error::Result;
use crate::rollout::{self, decode_rows, PromptRef, RolloutConfig, RolloutRow, RowText};
use crate::trainer::{StepReport, TrainConfig};
use rlhf_data::Tokenizer;
use rlhf_model::CausalLm;
use rlhf_reward::{RewardSource, Score};
use std::path::Path;
use std::time::Instant;

/// One step's samples, scored.
pub struct Rollout<'p> {
    pub step: u64,
    pub rows: Vec<RolloutRow>,
    pub texts: Vec<RowText>,
    pub refs: Vec<PromptRef<'p>>,
    /// `[source][row]`, in the order of the run's reward sources.
    pub scores: Vec<Vec<Score>>,
    /// The sources' weights, in the same order.
    pub weights: Vec<f64>,
}

/// What an update reports back to the loop.
pub struct StepStats {
    pub metrics: Metrics,
    /// Mean sequence KL to the reference (nats) where the update measured it: the `max_kl` stop.
    pub sequence_kl: Option<f64>,
}

/// An online RL algorithm as the loop drives it.
pub trait OnlineAlgorithm {
    /// In messages and checkpoints: `grpo`, `ppo`.
    fn name(&self) -> &'static str;
    /// Responses sampled per prompt (a GRPO group, or 1).
    fn samples_per_prompt(&self) -> usize;
    /// Prompts per step in the seeded epoch order; 0 = every prompt, in file order.
    fn prompts_per_step(&self) -> usize;
    /// The metric the progress report shows as the step's number.
    fn headline(&self) -> &'static str;
    /// Stop once the sequence KL to the reference exceeds this (0 = never).
    fn max_kl(&self) -> f64;
    /// Advantages and optimiser steps on one scored rollout.
    fn update(&mut self, rollout: &Rollout) -> Result<StepStats>;
    /// The learning rate at `step` (1-based), for the metrics line.
    fn lr(&self, step: u64) -> f64;
    /// Writes the checkpoint(s) of `step`.
    fn save(&self, step: u64, total: u64, seed: u64, config: &serde_json::Value) -> Result<()>;
    /// Loads everything [`Self::save`] wrote into the checkpoint folder `dir` (and its
    /// siblings, such as PPO's critic); the step it was written at.
    fn restore(&mut self, dir: &Path, run: &RunInfo) -> Result<u64>;
}

/// What the loop owns: the policy it samples from, the prompts, the reward sources, evaluation.
pub struct OnlineLoop<'a, 's> {
    pub policy: &'a CausalLm,
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a [RlPrompt<'a>],
    pub sources: &'s mut [(Box<dyn RewardSource + 'a>, f64)],
    pub eval: Option<&'s mut HeldOutEval<'a>>,
    pub rollout: &'s RolloutConfig,
    pub schedule: LoopSchedule,
    pub run: &'s RunInfo<'s>,
}

/// How long the loop runs, its seed and when it checkpoints.
pub struct LoopSchedule {
    /// Steps to run (fewer at a `max_kl` stop).
    pub steps: u64,
    /// Every random choice of a step derives from (seed, step).
    pub seed: u64,
    /// A checkpoint every this many steps (0 = only at the end or a stop).
    pub save_steps: usize,
}

impl From<&TrainConfig> for LoopSchedule {
    /// GRPO's and PPO's: a step is an RL step.
    fn from(train: &TrainConfig) -> Self {
        Self { steps: train.max_steps as u64, seed: train.seed, save_steps: train.save_steps }
    }
}

impl OnlineLoop<'_, '_> {
    /// Runs `steps` steps of `alg` (fewer at a `max_kl` stop); the last evaluation.
    pub fn run(mut self, alg: &mut dyn OnlineAlgorithm, on_step: &mut dyn FnMut(&StepReport)) -> Result<Metrics> {
        let (run, plan) = (self.run, &self.schedule);
        let total = plan.steps.max(1);
        // Every random choice of a step is derived from (seed, step): the prompts, the sampling,
        // the minibatch order. So a resumed run only needs the models, the optimisers and the
        // algorithm's own state back to continue bit for bit.
        let resumed_at = match &run.resume {
            Some(path) => Some(alg.restore(&checkpoint::resolve(path)?, run)?),
            None => None,
        };
        let mut samples = SampleLog::open(run.dir, resumed_at)?;
        let mut ends = StepEnds::new(run.dir, total, resumed_at)?;
        let mut last_eval = match resumed_at {
            Some(_) => Vec::new(),
            None => ends.clock.evaluate(self.eval.as_deref_mut(), self.policy, self.tokenizer, &mut ends.logger, 0)?,
        };
        let names: Vec<String> = self.sources.iter().map(|(src, _)| src.name().to_string()).collect();
        let mut sampler = StepSampler::new(self.rollout, run.dir)?;
        let mut saved_at = resumed_at;
        let (all_prompts, per_step, repeats, seed) =
            (self.prompts, alg.prompts_per_step(), alg.samples_per_prompt(), plan.seed);
        let draw = |step: u64| {
            let (prompts, refs) = step_prompts(all_prompts, per_step, seed, step);
            (Draw { prompts, repeats, seed: rollout::step_seed(seed, step) }, refs)
        };
        for step in resumed_at.unwrap_or(0) + 1..=total {
            let t0 = Instant::now();
            let (this, refs) = draw(step);
            let sampled = match sampler.rows(self.policy, self.tokenizer, self.rollout, step, this) {
                Ok(sampled) => sampled,
                Err(e) => {
                    // Servers gone: keep what was trained so far, then stop.
                    if step > 1 && saved_at != Some(step - 1) {
                        alg.save(step - 1, total, plan.seed, &run.config)?;
                    }
                    return Err(e);
                }
            };
            let rows = sampled.rows;
            let rollout_secs = t0.elapsed().as_secs_f64();
            let texts = decode_rows(self.tokenizer, &rows)?;
            let (scores, mut metrics) = score_all(self.sources, &rows, &texts, &refs)?;
            if let StepSampler::Remote { .. } = sampler {
                metrics.push(("rollout/weight_lag".into(), sampled.lag as f64));
            }
            samples.write(step, &rows, &texts, &names, &scores)?;
            let weights = self.sources.iter().map(|(_, w)| *w).collect();
            let scored = Rollout { step, rows, texts, refs, scores, weights };
            let next = (step < total && sampler.draws_ahead(self.rollout)).then(|| draw(step + 1).0);
            let (stats, ahead_sync) = sampler.update(alg, &scored, self.policy, self.rollout, step, next)?;
            let sync = sampled.sync_seconds.into_iter().chain(ahead_sync).sum::<f64>();
            if let StepSampler::Remote { .. } = sampler {
                metrics.push(("rollout/weight_sync_seconds".into(), sync));
            }
            metrics.extend(stats.metrics);
            let tokens = scored.rows.iter().map(|r| r.response_ids.len()).sum();
            let timing = StepTiming { started: t0, rollout_secs, tokens };
            ends.finish(step, alg.lr(step), &timing, alg.headline(), metrics, on_step)?;
            let kl = stats.sequence_kl.unwrap_or(f64::NAN);
            let stop = alg.max_kl() > 0.0 && kl > alg.max_kl();
            if due(step, run.eval_steps, total, stop) {
                let eval = self.eval.as_deref_mut();
                last_eval = ends.clock.evaluate(eval, self.policy, self.tokenizer, &mut ends.logger, step)?;
            }
            if due(step, plan.save_steps, total, stop) {
                alg.save(step, total, plan.seed, &run.config)?;
                saved_at = Some(step);
            }
            if stop {
                eprintln!(
                    "{}: stopping at step {step}: KL to the reference {kl:.3} > max_kl {}",
                    alg.name(),
                    alg.max_kl()
                );
                break;
            }
        }
        Ok(last_eval)
    }
}
