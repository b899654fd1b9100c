//! RAFT / rejection-sampling fine-tuning (Dong et al. 2023; "best-of-n" SFT as in Llama 2):
//! each round samples n responses per prompt from the *current* policy, scores them with the
//! reward sources, keeps the best, and fine-tunes the policy on them with the SFT objective in
//! the shared loop. The reward only decides which samples become data: no advantages, ratio or
//! reference model, so it is stable where RL is not, at the cost of discarding most samples.
//! The rounds run in the one online loop (`online::driver`, a step is a round), which samples,
//! scores, logs, evaluates, checkpoints and resumes; `RaftUpdate` selects and fine-tunes.

use crate::advantage::{group_advantages, MultiRewardAggregation, StdScale};
use crate::checkpoint::{self, CheckpointState, Fingerprint};
use crate::error::{Result, TrainError};
use crate::metric_keys as keys;
use crate::online::driver::{LoopSchedule, OnlineAlgorithm, OnlineLoop, Rollout, StepStats};
use crate::online::{self, HeldOutEval, Metrics, RlPrompt, RunInfo};
use crate::rollout::{RolloutConfig, RolloutRow};
use crate::sft::SftObjective;
use crate::stats;
use crate::trainer::{train, RunOptions, StepReport, TrainConfig};
use candle_core::Var;
use rlhf_data::{Location, RecordIndex, SftExample, Tokenizer};
use rlhf_model::CausalLm;
use rlhf_reward::{RewardSource, Score};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// R: sample → select → fine-tune rounds; each samples from the previous round's model.
    pub rounds: usize,
    /// n: responses sampled per prompt.
    pub samples_per_prompt: usize,
    /// k: samples kept per prompt, best first (0 = every sample that reaches `threshold`).
    pub keep_top_k: usize,
    /// Keep only samples whose reward is ≥ this (combined with `keep_top_k`: the best k of those).
    pub threshold: Option<f64>,
    /// Prompts per round, in the seeded epoch order the other trainers use (0 = all).
    pub prompts_per_round: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self { rounds: 2, samples_per_prompt: 8, keep_top_k: 1, threshold: None, prompts_per_round: 0 }
    }
}

impl RaftConfig {
    /// `[train]`, the SFT of every round: SFT's learning rate (TRL 2e-5), one epoch over the
    /// round's kept samples (RAFT trains briefly per round so the next round samples from a
    /// model close to this one), no checkpoints within a round.
    pub fn train_defaults() -> TrainConfig {
        TrainConfig {
            learning_rate: 2e-5,
            lr_scheduler: crate::ScheduleKind::Linear,
            epochs: 1.0,
            save_steps: 0,
            save_total_limit: 1,
            ..TrainConfig::default()
        }
    }

    /// `[rollout]`: 64 new tokens, prompts sampled 64 at a time.
    pub fn rollout_defaults() -> RolloutConfig {
        RolloutConfig { max_new_tokens: 64, generation_batch_size: 64, ..RolloutConfig::default() }
    }
}

impl RaftConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.rounds == 0 {
            return bad("raft.rounds must be ≥ 1 (each round samples, selects and fine-tunes once)".into());
        }
        if self.samples_per_prompt == 0 {
            return bad("raft.samples_per_prompt must be ≥ 1".into());
        }
        if self.keep_top_k > self.samples_per_prompt {
            return bad(format!(
                "raft.keep_top_k = {} is more than raft.samples_per_prompt = {}: at most n samples per prompt can be kept",
                self.keep_top_k, self.samples_per_prompt
            ));
        }
        if self.keep_top_k == 0 && self.threshold.is_none() {
            return bad("raft.keep_top_k = 0 keeps every sample unless raft.threshold is set: set one of them".into());
        }
        if let Some(t) = self.threshold.filter(|t| !t.is_finite()) {
            return bad(format!("raft.threshold must be a finite number, got {t}"));
        }
        Ok(())
    }
}

/// The samples kept from one prompt's group of rewards (NaN = no source scored it): those that
/// reach `threshold`, best first, at most `keep_top_k` (0 = no limit). The sort is stable, so
/// equal rewards go to the earlier sample. Indices are into `rewards`, in rank order.
pub fn select(rewards: &[f64], keep_top_k: usize, threshold: Option<f64>) -> Vec<usize> {
    let mut ranked: Vec<usize> =
        (0..rewards.len()).filter(|&i| !rewards[i].is_nan() && threshold.is_none_or(|t| rewards[i] >= t)).collect();
    ranked.sort_by(|&a, &b| rewards[b].total_cmp(&rewards[a]));
    if keep_top_k > 0 {
        ranked.truncate(keep_top_k);
    }
    ranked
}

/// One row's combined reward: Σ weight·score over the sources that scored it, NaN when none did
/// — GRPO's combination, so a reward means the same to both trainers.
pub fn combined_rewards(per_source: &[Vec<Score>], weights: &[f64], rows: usize) -> Result<Vec<f64>> {
    let per_func: Vec<Vec<f64>> =
        (0..rows).map(|i| per_source.iter().map(|sc| sc[i].value.unwrap_or(f64::NAN)).collect()).collect();
    let groups = group_advantages(&per_func, weights, 1, StdScale::None, MultiRewardAggregation::SumThenNormalize)?;
    Ok(groups.rewards)
}

/// A kept sample as SFT data: prompt then response ids (never re-tokenised text, EOS included
/// when the response stopped on it), loss on the response only. `source` points at the sample's
/// line in `samples.jsonl`.
pub fn sft_example(row: &RolloutRow, source: Location) -> SftExample {
    let input_ids = row.prompt_ids.iter().chain(&row.response_ids).copied().collect();
    let loss_mask =
        std::iter::repeat_n(0u8, row.prompt_ids.len()).chain(std::iter::repeat_n(1u8, row.response_ids.len()));
    SftExample { input_ids, loss_mask: loss_mask.collect(), source }
}

/// The models and data of a RAFT run.
pub struct RaftSetup<'a> {
    pub policy: &'a CausalLm,
    pub params: &'a [(String, Var)],
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a [RlPrompt<'a>],
    /// Reward sources and their weights.
    pub sources: Vec<(Box<dyn RewardSource + 'a>, f64)>,
    pub eval: Option<HeldOutEval<'a>>,
}

/// What the caller does around the rounds: save a round's model into its folder (full weights
/// or adapters, the caller knows which), and report progress: each SFT step `(round, step)`
/// and each round's end (its metrics line).
pub struct RaftHooks<'h> {
    pub save_round: &'h mut dyn FnMut(u64, &Path) -> Result<PathBuf>,
    pub on_sft_step: &'h mut dyn FnMut(u64, &StepReport),
    pub on_round: &'h mut dyn FnMut(&StepReport),
}

/// Runs `cfg.rounds` rounds into `run.dir` through the one online loop, a step being a round:
/// `metrics.jsonl` holds one line per round (and the held-out evaluation before the first
/// round and every `run.eval_steps` rounds), `samples.jsonl` every sample with its rewards,
/// `round-<r>/` each round's SFT metrics, TensorBoard events and (through `save_round`) model,
/// and `checkpoints/` the policy after the newest round, which `run.resume` continues from. A
/// round's SFT writes no checkpoints: an interrupted round is redone from its start, and its
/// optimiser state (twice the policy's size) does not outlive the round.
/// Returns the last evaluation.
pub fn train_raft(
    s: &mut RaftSetup,
    cfg: &RaftConfig,
    roll: &RolloutConfig,
    train_cfg: &TrainConfig,
    run: &RunInfo,
    hooks: &mut RaftHooks,
) -> Result<Metrics> {
    cfg.validate()?;
    roll.validate()?;
    train_cfg.validate()?;
    if s.prompts.is_empty() {
        return Err(TrainError::Config("raft needs at least one prompt".into()));
    }
    if s.sources.is_empty() {
        return Err(TrainError::Config("raft needs at least one reward source ([[rewards]])".into()));
    }
    let RaftSetup { policy, params, tokenizer, prompts, sources, eval } = s;
    let RaftHooks { save_round, on_sft_step, on_round } = hooks;
    let mut update = RaftUpdate {
        cfg,
        train: train_cfg,
        policy,
        params,
        tokenizer,
        fingerprint: Fingerprint::new(policy.config().to_hf_json(), params),
        dir: run.dir,
        config: &run.config,
        save_round: &mut **save_round,
        on_sft_step: &mut **on_sft_step,
    };
    // A step is a round; every round is checkpointed.
    let schedule = LoopSchedule { steps: cfg.rounds as u64, seed: train_cfg.seed, save_steps: 1 };
    let online = OnlineLoop { policy, tokenizer, prompts, sources, eval: eval.as_mut(), rollout: roll, schedule, run };
    online.run(&mut update, &mut **on_round)
}

/// RAFT's side of a round (the loop in `online::driver` samples, scores and logs).
struct RaftUpdate<'a, 'c> {
    cfg: &'c RaftConfig,
    /// Each round's SFT.
    train: &'c TrainConfig,
    policy: &'a CausalLm,
    params: &'a [(String, Var)],
    tokenizer: &'a Tokenizer,
    fingerprint: Fingerprint,
    dir: &'c Path,
    /// The command's configuration, stored in every checkpoint.
    config: &'c serde_json::Value,
    save_round: &'c mut dyn FnMut(u64, &Path) -> Result<PathBuf>,
    on_sft_step: &'c mut dyn FnMut(u64, &StepReport),
}

impl OnlineAlgorithm for RaftUpdate<'_, '_> {
    fn name(&self) -> &'static str {
        "raft"
    }

    fn samples_per_prompt(&self) -> usize {
        self.cfg.samples_per_prompt
    }

    fn prompts_per_step(&self) -> usize {
        self.cfg.prompts_per_round
    }

    fn headline(&self) -> &'static str {
        keys::REWARD_MEAN
    }

    fn max_kl(&self) -> f64 {
        0.0
    }

    /// Keeps the best samples of each prompt and fine-tunes on them.
    fn update(&mut self, r: &Rollout) -> Result<StepStats> {
        let (round, rows, n) = (r.step, &r.rows, self.cfg.samples_per_prompt);
        let rewards = combined_rewards(&r.scores, &r.weights, rows.len())?;
        let kept: Vec<usize> = rewards
            .chunks(n)
            .enumerate()
            .flat_map(|(p, group)| {
                select(group, self.cfg.keep_top_k, self.cfg.threshold).into_iter().map(move |i| p * n + i)
            })
            .collect();
        let mut metrics = selection_metrics(rows, &rewards, &kept, n);
        // Every round samples as many rows, so this round's lines in samples.jsonl follow
        // (round − 1) × rows earlier ones.
        let first_line = (round as usize - 1) * rows.len();
        let path = self.dir.join("samples.jsonl");
        let examples: Vec<SftExample> = kept
            .iter()
            .map(|&i| {
                sft_example(&rows[i], Location { path: path.clone(), index: RecordIndex::Line(first_line + i + 1) })
            })
            .collect();
        let dir = self.dir.join(format!("round-{round}"));
        // Left by a run stopped during this round: the round starts again from its beginning.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::file(&dir, format!("cannot clear: {e}")))?;
        }
        metrics.extend(self.fine_tune(round, &dir, &examples)?);
        let model_dir = (self.save_round)(round, &dir)?;
        eprintln!("raft round {round}: {} samples kept; model in {}", kept.len(), model_dir.display());
        Ok(StepStats { metrics, sequence_kl: None })
    }

    fn lr(&self, _step: u64) -> f64 {
        self.train.learning_rate
    }

    /// The policy's parameters only: every round's SFT starts a fresh optimiser.
    fn save(&self, step: u64, total: u64, seed: u64, config: &serde_json::Value) -> Result<()> {
        let state = CheckpointState::new(step, total, seed, "raft", config.clone(), self.fingerprint.clone());
        checkpoint::save(&self.dir.join("checkpoints"), self.params, None, &state, 1)?;
        Ok(())
    }

    fn restore(&mut self, dir: &Path, run: &RunInfo) -> Result<u64> {
        let state = checkpoint::read_state_of(dir, &self.fingerprint, "raft", &run.config)?;
        checkpoint::restore(dir, &state, self.params, None)?;
        Ok(state.step)
    }
}

impl RaftUpdate<'_, '_> {
    /// The round's SFT in `dir` with the shared loop; its first and last step losses. A round
    /// that kept nothing leaves the policy as it is.
    fn fine_tune(&mut self, round: u64, dir: &Path, examples: &[SftExample]) -> Result<Metrics> {
        if examples.is_empty() {
            eprintln!("raft round {round}: no sample reached the selection; the model is not updated this round");
            std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, format!("cannot create: {e}")))?;
            return Ok(vec![("sft/steps".into(), 0.0)]);
        }
        let mut obj = SftObjective { model: self.policy, pad_id: self.tokenizer.pad_id(), eval_batch_size: 8 };
        let opts = RunOptions { dir, trainer: "raft", config: self.config.clone(), resume: None, checkpoints: false };
        let mut first = f64::NAN;
        let on_sft_step = &mut *self.on_sft_step;
        let outcome = train(&mut obj, examples, &[], self.params, self.train, &opts, &mut |r| {
            if r.step == 1 {
                first = r.loss;
            }
            on_sft_step(round, r)
        })?;
        Ok(vec![
            ("sft/steps".into(), outcome.steps as f64),
            ("sft/examples".into(), examples.len() as f64),
            ("sft/loss_first".into(), first),
            (keys::SFT_LOSS.into(), outcome.last_loss),
        ])
    }
}

/// Means over all samples and over the kept ones, and how many prompts contributed.
fn selection_metrics(rows: &[RolloutRow], rewards: &[f64], kept: &[usize], n: usize) -> Metrics {
    let prompts = rows.len() / n;
    let finite: Vec<f64> = rewards.iter().copied().filter(|r| !r.is_nan()).collect();
    let kept_rewards: Vec<f64> = kept.iter().map(|&i| rewards[i]).collect();
    let kept_rows: Vec<RolloutRow> = kept.iter().map(|&i| rows[i].clone()).collect();
    let mut with_kept: Vec<usize> = kept.iter().map(|&i| i / n).collect();
    with_kept.dedup(); // `kept` is grouped by prompt
    let unscored = rewards.chunks(n).filter(|g| g.iter().all(|r| r.is_nan())).count();
    vec![
        (keys::REWARD_MEAN.into(), stats::mean(&finite)),
        ("reward/std".into(), stats::std(&finite)),
        (keys::KEPT_REWARD_MEAN.into(), stats::mean(&kept_rewards)),
        (keys::KEPT.into(), kept.len() as f64),
        ("prompts".into(), prompts as f64),
        (keys::KEPT_PROMPT_SHARE.into(), with_kept.len() as f64 / prompts.max(1) as f64),
        ("unscored_prompts".into(), unscored as f64),
        (keys::RESPONSE_LENGTH.into(), online::mean_len(rows)),
        ("kept_response_length".into(), if kept.is_empty() { f64::NAN } else { online::mean_len(&kept_rows) }),
        ("truncation_rate".into(), online::truncation_rate(rows)),
        ("entropy".into(), online::sampled_entropy(rows)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlhf_model::FinishReason;

    const NAN: f64 = f64::NAN;

    #[test]
    fn top_k_keeps_the_best_in_rank_order() {
        assert_eq!(select(&[0.1, 0.9, 0.5, 0.7], 1, None), vec![1]);
        assert_eq!(select(&[0.1, 0.9, 0.5, 0.7], 2, None), vec![1, 3]);
        assert_eq!(select(&[0.1, 0.9, 0.5, 0.7], 4, None), vec![1, 3, 2, 0]);
        assert_eq!(select(&[-3.0, -1.0], 1, None), vec![1], "negative rewards still rank");
    }

    #[test]
    fn threshold_keeps_what_reaches_it_and_combines_with_top_k() {
        let r = [0.2, 1.0, 0.5, 0.8];
        assert_eq!(select(&r, 0, Some(0.5)), vec![1, 3, 2], "≥ threshold, unlimited");
        assert_eq!(select(&r, 2, Some(0.5)), vec![1, 3], "best 2 of those above");
        assert_eq!(select(&r, 3, Some(0.9)), vec![1], "fewer than k reach it");
        assert!(select(&r, 1, Some(1.5)).is_empty(), "none reach it");
    }

    #[test]
    fn unscored_samples_are_never_kept() {
        assert_eq!(select(&[NAN, 0.0, NAN], 1, None), vec![1], "a 0 beats no score");
        assert_eq!(select(&[NAN, 0.3, 0.7], 0, Some(0.0)), vec![2, 1]);
        assert!(select(&[NAN, NAN], 2, None).is_empty(), "a prompt with no scored sample is skipped");
    }

    #[test]
    fn ties_go_to_the_earlier_sample() {
        assert_eq!(select(&[1.0, 1.0, 1.0], 1, None), vec![0]);
        assert_eq!(select(&[0.0, 1.0, 0.0, 1.0], 3, None), vec![1, 3, 0]);
    }

    #[test]
    fn combined_reward_is_the_weighted_sum_of_the_sources_that_scored() {
        let s = |v: Option<f64>| Score { value: v, ..Score::default() };
        let per_source = vec![vec![s(Some(1.0)), s(None), s(None)], vec![s(Some(2.0)), s(Some(4.0)), s(None)]];
        let r = combined_rewards(&per_source, &[1.0, 0.5], 3).unwrap();
        assert_eq!(r[..2], [2.0, 2.0]);
        assert!(r[2].is_nan(), "no source scored it");
    }

    #[test]
    fn a_kept_sample_trains_on_its_response_and_eos_only() {
        let row = RolloutRow {
            prompt_index: 0,
            prompt_ids: vec![1, 5, 6],
            response_ids: vec![7, 2],
            sampler_logprobs: vec![-1.0, -2.0],
            finish: FinishReason::Eos,
            weight_version: None,
        };
        let e = sft_example(&row, Location { path: "samples.jsonl".into(), index: RecordIndex::Line(3) });
        assert_eq!(e.input_ids, vec![1, 5, 6, 7, 2]);
        assert_eq!(e.loss_mask, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn bad_settings_are_refused_with_the_key_to_fix() {
        let err = |c: RaftConfig| c.validate().unwrap_err().to_string();
        assert!(err(RaftConfig { keep_top_k: 9, ..Default::default() }).contains("raft.keep_top_k = 9"));
        assert!(err(RaftConfig { rounds: 0, ..Default::default() }).contains("raft.rounds"));
        assert!(err(RaftConfig { keep_top_k: 0, ..Default::default() }).contains("raft.threshold"));
        assert!(err(RaftConfig { threshold: Some(f64::INFINITY), ..Default::default() }).contains("finite"));
        RaftConfig { keep_top_k: 0, threshold: Some(1.0), ..Default::default() }.validate().unwrap();
        RaftConfig::default().validate().unwrap();
    }
}
