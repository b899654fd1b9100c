//! RAFT / rejection-sampling fine-tuning (Dong et al. 2023; "best-of-n" SFT as in Llama 2):
//! each round samples n responses per prompt from the *current* policy, scores them with the
//! reward sources, keeps the best, and fine-tunes the policy on them with the SFT objective in
//! the shared loop. The reward only decides which samples become data: no advantages, ratio or
//! reference model, so it is stable where RL is not, at the cost of discarding most samples.

use crate::advantage::{group_advantages, MultiRewardAggregation, StdScale};
use crate::error::{Result, TrainError};
use crate::online::{self, step_prompts, HeldOutEval, Metrics, RlPrompt, RunInfo, SampleLog};
use crate::rollout::{self, decode_rows, PromptRef, RolloutConfig, RolloutRow};
use crate::sft::SftObjective;
use crate::trainer::{train, RunOptions, StepReport, TrainConfig};
use candle_core::Var;
use rlhf_data::{Location, RecordIndex, SftExample, Tokenizer};
use rlhf_model::CausalLm;
use rlhf_reward::{RewardSource, Score};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// Responses per `generate` call (0 = all of a round at once).
    pub generation_batch_size: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            rounds: 2,
            samples_per_prompt: 8,
            keep_top_k: 1,
            threshold: None,
            prompts_per_round: 0,
            temperature: 1.0,
            max_new_tokens: 64,
            top_k: None,
            top_p: None,
            generation_batch_size: 64,
        }
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
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("raft.temperature must be ≥ 0, got {}", self.temperature));
        }
        if self.max_new_tokens == 0 {
            return bad("raft.max_new_tokens must be ≥ 1".into());
        }
        Ok(())
    }

    pub fn rollout(&self) -> RolloutConfig {
        RolloutConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            generation_batch_size: self.generation_batch_size,
            ..RolloutConfig::default()
        }
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

/// One line of `rounds.jsonl` (round 0: the starting model's held-out evaluation, if any).
#[derive(Clone, Debug)]
pub struct RoundSummary {
    pub round: u64,
    pub metrics: Metrics,
}

impl RoundSummary {
    pub fn get(&self, name: &str) -> f64 {
        self.metrics.iter().find(|(k, _)| k == name).map_or(f64::NAN, |(_, v)| *v)
    }
}

/// What the caller does around the rounds: save a round's model into its folder (full weights
/// or adapters, the caller knows which), and report SFT steps `(round, step)` for progress.
pub struct RaftHooks<'h> {
    pub save_round: &'h mut dyn FnMut(u64, &Path) -> Result<PathBuf>,
    pub on_step: &'h mut dyn FnMut(u64, &StepReport),
}

/// Runs `cfg.rounds` rounds into `run.dir`: `round-<r>/` holds each round's SFT metrics,
/// TensorBoard events, checkpoints and (through `save_round`) model; `samples.jsonl` every
/// sample with its rewards; `rounds.jsonl` one summary per round, also returned.
pub fn train_raft(
    s: &mut RaftSetup,
    cfg: &RaftConfig,
    train_cfg: &TrainConfig,
    run: &RunInfo,
    hooks: &mut RaftHooks,
) -> Result<Vec<RoundSummary>> {
    cfg.validate()?;
    train_cfg.validate()?;
    if s.prompts.is_empty() {
        return Err(TrainError::Config("raft needs at least one prompt".into()));
    }
    if s.sources.is_empty() {
        return Err(TrainError::Config("raft needs at least one reward source ([[rewards]])".into()));
    }
    let mut rounds = RoundsLog::create(run.dir)?;
    let mut samples = SampleLog::create(run.dir)?;
    let mut sample_lines = 0usize;
    let mut out = Vec::new();
    if let Some(eval) = s.eval.as_mut() {
        let summary = RoundSummary { round: 0, metrics: prefixed("eval/", eval.run(s.policy, s.tokenizer)?) };
        rounds.write(&summary)?;
        out.push(summary);
    }
    for round in 1..=cfg.rounds as u64 {
        let t0 = Instant::now();
        let (prompts, refs) = round_prompts(s.prompts, cfg.prompts_per_round, train_cfg.seed, round);
        let n = cfg.samples_per_prompt;
        eprintln!("raft round {round}/{}: sampling {} × {n} responses", cfg.rounds, prompts.len());
        let seed = rollout::step_seed(train_cfg.seed, round);
        let rows = rollout::rollout(s.policy, &prompts, n, &cfg.rollout(), s.tokenizer, seed, &mut |_| {})?;
        let sample_secs = t0.elapsed().as_secs_f64();
        let texts = decode_rows(s.tokenizer, &rows)?;
        let (per_source, mut metrics) = online::score_all(&mut s.sources, &rows, &texts, &refs)?;
        let names: Vec<String> = s.sources.iter().map(|(src, _)| src.name().to_string()).collect();
        samples.write(round, &rows, &texts, &names, &per_source)?;
        let weights: Vec<f64> = s.sources.iter().map(|(_, w)| *w).collect();
        let rewards = combined_rewards(&per_source, &weights, rows.len())?;
        let kept: Vec<usize> = rewards
            .chunks(n)
            .enumerate()
            .flat_map(|(p, group)| select(group, cfg.keep_top_k, cfg.threshold).into_iter().map(move |i| p * n + i))
            .collect();
        metrics.extend(selection_metrics(&rows, &rewards, &kept, n));
        let path = run.dir.join("samples.jsonl");
        let examples: Vec<SftExample> = kept
            .iter()
            .map(|&i| {
                sft_example(&rows[i], Location { path: path.clone(), index: RecordIndex::Line(sample_lines + i + 1) })
            })
            .collect();
        sample_lines += rows.len();
        let dir = run.dir.join(format!("round-{round}"));
        metrics.extend(fine_tune(s, train_cfg, run, round, &dir, &examples, hooks)?);
        let model_dir = (hooks.save_round)(round, &dir)?;
        eprintln!("raft round {round}: {} samples kept; model in {}", kept.len(), model_dir.display());
        if let Some(eval) = s.eval.as_mut() {
            metrics.extend(prefixed("eval/", eval.run(s.policy, s.tokenizer)?));
        }
        metrics.push(("sample_seconds".into(), sample_secs));
        metrics.push(("round_seconds".into(), t0.elapsed().as_secs_f64()));
        let summary = RoundSummary { round, metrics };
        rounds.write(&summary)?;
        out.push(summary);
    }
    Ok(out)
}

/// All prompts in file order, or `per_round` of them in the seeded epoch order.
fn round_prompts<'p>(
    prompts: &'p [RlPrompt<'p>],
    per_round: usize,
    seed: u64,
    round: u64,
) -> (Vec<&'p [u32]>, Vec<PromptRef<'p>>) {
    if per_round == 0 {
        return (prompts.iter().map(|p| p.ids).collect(), prompts.iter().map(|p| p.refs).collect());
    }
    step_prompts(prompts, per_round, seed, round)
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
        ("reward/mean".into(), online::mean(&finite)),
        ("reward/std".into(), online::std(&finite)),
        ("reward/kept_mean".into(), online::mean(&kept_rewards)),
        ("kept".into(), kept.len() as f64),
        ("prompts".into(), prompts as f64),
        ("kept_prompt_share".into(), with_kept.len() as f64 / prompts.max(1) as f64),
        ("unscored_prompts".into(), unscored as f64),
        ("response_length".into(), online::mean_len(rows)),
        ("kept_response_length".into(), if kept.is_empty() { f64::NAN } else { online::mean_len(&kept_rows) }),
        ("truncation_rate".into(), online::truncation_rate(rows)),
        ("entropy".into(), online::sampled_entropy(rows)),
    ]
}

/// The round's SFT in `dir` with the shared loop; its first and last step losses. A round that
/// kept nothing leaves the policy as it is.
fn fine_tune(
    s: &RaftSetup,
    train_cfg: &TrainConfig,
    run: &RunInfo,
    round: u64,
    dir: &Path,
    examples: &[SftExample],
    hooks: &mut RaftHooks,
) -> Result<Metrics> {
    if examples.is_empty() {
        eprintln!("raft round {round}: no sample reached the selection; the model is not updated this round");
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, format!("cannot create: {e}")))?;
        return Ok(vec![("sft/steps".into(), 0.0)]);
    }
    let mut obj = SftObjective { model: s.policy, pad_id: s.tokenizer.pad_id(), eval_batch_size: 8 };
    let opts = RunOptions { dir, trainer: "raft", config: run.config.clone(), resume: None };
    let mut first = f64::NAN;
    let outcome = train(&mut obj, examples, &[], s.params, train_cfg, &opts, &mut |r| {
        if r.step == 1 {
            first = r.loss;
        }
        (hooks.on_step)(round, r)
    })?;
    Ok(vec![
        ("sft/steps".into(), outcome.steps as f64),
        ("sft/examples".into(), examples.len() as f64),
        ("sft/loss_first".into(), first),
        ("sft/loss".into(), outcome.last_loss),
    ])
}

fn prefixed(prefix: &str, rows: Metrics) -> Metrics {
    rows.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect()
}

/// `rounds.jsonl`: one JSON object per round, written as each round ends (NaN → null).
struct RoundsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl RoundsLog {
    fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("rounds.jsonl");
        let file = std::fs::File::create(&path).map_err(|e| TrainError::file(&path, format!("cannot create: {e}")))?;
        Ok(Self { file, path })
    }

    fn write(&mut self, s: &RoundSummary) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("round".into(), s.round.into());
        for (k, v) in &s.metrics {
            obj.insert(k.clone(), serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into));
        }
        writeln!(self.file, "{}", serde_json::Value::Object(obj))
            .map_err(|e| TrainError::file(&self.path, format!("cannot write: {e}")))
    }
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
