//! What PPO and GRPO share around the rollout: the one step loop (`driver`), the clipped
//! policy-gradient objective over rollout rows, the optimiser session (schedule, AdamW,
//! clipping, metrics, checkpoints), and held-out evaluation with greedy decoding scored by a
//! reward source.

pub mod driver;
pub mod sampling;

use crate::checkpoint::{self, CheckpointState, Fingerprint};
use crate::error::{Result, TrainError};
use crate::kl::KlEstimator;
use crate::metric_keys as keys;
use crate::metrics::MetricsLogger;
use crate::optim::AdamW;
use crate::policy_loss::{clipped_policy_loss, ClipConfig, PolicyLossInputs, PolicyStats};
use crate::rollout::{
    decode_rows, response_logprobs, score_rows, LogprobMismatch, PromptRef, RolloutConfig, RolloutRow, RowText,
};
use crate::schedule::LrSchedule;
use crate::stats::mean;
use crate::trainer::{
    accumulate_batch, apply_gradients, batch_indices, MicroOutput, Objective, StepReport, TrainConfig,
};
use candle_core::{DType, Tensor, Var};
use rlhf_data::Tokenizer;
use rlhf_model::{CausalLm, FinishReason};
use rlhf_reward::{RewardSource, Score};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One response as the policy update sees it: tokens, per-token advantages and aggregation
/// weights (computed over the whole minibatch, so micro-batching is exact), and the logprobs
/// the ratio and the KL term are taken against.
#[derive(Clone, Debug)]
pub struct PolicyRow {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// π_old per token; `None` = the update is on-policy (first pass over fresh samples), so
    /// π_old is the current policy itself, detached, and the ratio is exactly 1.
    pub old_logp: Option<Vec<f64>>,
    pub ref_logp: Option<Vec<f64>>,
    /// The sampler's logprobs, to report the sampler/trainer mismatch.
    pub sampler_logp: Vec<f32>,
    pub advantages: Vec<f64>,
    pub weights: Vec<f64>,
}

/// The clipped surrogate (+ optional per-token KL to the reference) over [`PolicyRow`]s.
pub struct PolicyObjective<'m> {
    pub policy: &'m CausalLm,
    pub pad_id: u32,
    pub temperature: f64,
    pub clip: ClipConfig,
    pub kl_coef: f64,
    pub kl_estimator: KlEstimator,
    /// Merged over every micro-batch since the last [`Self::take_stats`].
    pub stats: PolicyStats,
    /// Sampler vs trainer logprobs over the on-policy passes.
    pub mismatch: LogprobMismatch,
    /// `rollout.tis_cap` (0 = off).
    pub tis_cap: f64,
    pub tis: TisStats,
}

/// Truncated importance sampling since the last take.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TisStats {
    pub weight_sum: f64,
    /// Tokens whose weight the cap lowered.
    pub capped: usize,
    pub tokens: usize,
}

impl TisStats {
    pub fn merge(&mut self, other: &Self) {
        self.weight_sum += other.weight_sum;
        self.capped += other.capped;
        self.tokens += other.tokens;
    }
}

/// What a [`PolicyObjective`] sums over micro-batches, as data-parallel ranks exchange it.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct PolicyRankStats {
    pub policy: PolicyStats,
    pub mismatch: LogprobMismatch,
    pub tis: TisStats,
}

impl<'m> PolicyObjective<'m> {
    pub fn new(policy: &'m CausalLm, pad_id: u32, temperature: f64, clip: ClipConfig) -> Self {
        Self {
            policy,
            pad_id,
            temperature,
            clip,
            kl_coef: 0.0,
            kl_estimator: KlEstimator::K3,
            stats: PolicyStats::default(),
            mismatch: LogprobMismatch::default(),
            tis_cap: 0.0,
            tis: TisStats::default(),
        }
    }

    /// Weights every token's loss by min(π_old / π_sampler, `cap`) (`rollout.tis_cap`; 0 = off).
    pub fn with_tis_cap(mut self, cap: f64) -> Self {
        self.tis_cap = cap;
        self
    }

    /// The truncated importance weights min(exp(old − sampler), cap) of `micro`'s tokens, where
    /// `old` is the trainer's π_old: the sampled tokens came from the sampler's distribution,
    /// which differs from the trainer's when their arithmetic does (bf16 rollouts).
    fn tis_weights(&mut self, micro: &[&PolicyRow], old: &Tensor) -> Result<Tensor> {
        let old_v = crate::rollout::to_f64(old)?;
        let sampler = micro.iter().flat_map(|r| r.sampler_logp.iter().map(|&x| x as f64));
        let w: Vec<f64> = old_v
            .iter()
            .zip(sampler)
            .map(|(o, s)| {
                let ratio = (o - s).exp();
                let capped = ratio.min(self.tis_cap);
                self.tis.weight_sum += capped;
                self.tis.capped += usize::from(ratio > self.tis_cap);
                self.tis.tokens += 1;
                capped
            })
            .collect();
        Ok(Tensor::from_vec(w, old_v.len(), old.device())?.to_dtype(old.dtype())?)
    }

    /// The policy loss of `micro` (scalar Σ w·l) from the current logprobs `[N]` of its response
    /// tokens, merging the statistics; shared by this objective and PPO's shared-trunk one.
    pub fn loss_given(&mut self, micro: &[&PolicyRow], logp: &Tensor) -> Result<Tensor> {
        let (dtype, dev) = (logp.dtype(), logp.device().clone());
        let on_policy = micro.iter().all(|r| r.old_logp.is_none());
        let old = if on_policy {
            let current = crate::rollout::to_f64(logp)?;
            let sampler = micro.iter().flat_map(|r| r.sampler_logp.iter().map(|&x| x as f64));
            self.mismatch.add(sampler, current.into_iter());
            logp.detach()
        } else {
            if micro.iter().any(|r| r.old_logp.is_none()) {
                return Err(TrainError::Config("a minibatch mixes on- and off-policy rows".into()));
            }
            flat(micro, |r| r.old_logp.as_deref().unwrap_or(&[]), dtype, &dev)?
        };
        let reference = if micro.iter().all(|r| r.ref_logp.is_some()) {
            Some(flat(micro, |r| r.ref_logp.as_deref().unwrap_or(&[]), dtype, &dev)?)
        } else {
            None
        };
        let advantages = flat(micro, |r| &r.advantages, dtype, &dev)?;
        let mut weights = flat(micro, |r| &r.weights, dtype, &dev)?;
        if self.tis_cap > 0.0 {
            weights = (weights * self.tis_weights(micro, &old)?)?;
        }
        let (loss, stats) = clipped_policy_loss(
            &self.clip,
            &PolicyLossInputs {
                logp,
                old_logp: &old,
                advantages: &advantages,
                weights: &weights,
                ref_logp: reference.as_ref(),
                kl_coef: self.kl_coef,
                kl_estimator: self.kl_estimator,
            },
        )?;
        self.stats.merge(&stats);
        Ok(loss)
    }

    /// Everything [`Self::take_stats`] reports, taken out as one record (reset here).
    pub fn take_sums(&mut self) -> PolicyRankStats {
        PolicyRankStats {
            policy: std::mem::take(&mut self.stats),
            mismatch: std::mem::take(&mut self.mismatch),
            tis: std::mem::take(&mut self.tis),
        }
    }

    pub fn merge_sums(&mut self, part: &PolicyRankStats) {
        self.stats.merge(&part.policy);
        self.mismatch.merge(&part.mismatch);
        self.tis.merge(&part.tis);
    }

    pub fn take_stats(&mut self) -> Vec<(String, f64)> {
        let mut rows = std::mem::take(&mut self.stats).rows();
        let mismatch = std::mem::take(&mut self.mismatch);
        if mismatch.tokens > 0 {
            rows.extend(mismatch.rows());
        }
        let tis = std::mem::take(&mut self.tis);
        if tis.tokens > 0 {
            rows.push(("tis/mean_weight".into(), tis.weight_sum / tis.tokens as f64));
            rows.push(("tis/capped_frac".into(), tis.capped as f64 / tis.tokens as f64));
        }
        rows
    }
}

fn flat(
    rows: &[&PolicyRow],
    f: impl Fn(&PolicyRow) -> &[f64],
    dtype: DType,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let v: Vec<f64> = rows.iter().flat_map(|r| f(r).iter().copied()).collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, n, dev)?.to_dtype(dtype)?)
}

impl Objective for PolicyObjective<'_> {
    type Example = PolicyRow;

    fn model(&self) -> &CausalLm {
        self.policy
    }

    /// Weights are already normalised over the minibatch.
    fn normaliser(&self, _batch: &[&PolicyRow]) -> f64 {
        1.0
    }

    fn micro_loss(&mut self, micro: &[&PolicyRow], _normaliser: f64) -> Result<MicroOutput> {
        let pairs: Vec<(&[u32], &[u32])> = micro.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
        let (logp, _) = response_logprobs(self.policy, &pairs, self.pad_id, self.temperature)?; // [N]
        let loss = self.loss_given(micro, &logp)?;
        let tokens = micro.iter().map(|r| r.prompt.len() + r.response.len()).sum();
        Ok(MicroOutput { loss, stats: Vec::new(), tokens })
    }

    fn evaluate(&mut self, _eval: &[PolicyRow]) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    fn take_rank_stats(&mut self) -> Option<Vec<u8>> {
        rlhf_dist::encode(&self.take_sums()).ok()
    }

    fn merge_rank_stats(&mut self, bytes: &[u8]) -> Result<()> {
        self.merge_sums(&rlhf_dist::decode(bytes)?);
        Ok(())
    }
}

/// The optimiser side of an online run for one trainable model: schedule, AdamW, clipping,
/// metrics file, checkpoints.
pub struct Session<'a> {
    pub params: &'a [(String, Var)],
    pub opt: AdamW,
    pub schedule: LrSchedule,
    pub max_grad_norm: f64,
    pub micro_batch_size: usize,
    fingerprint: Fingerprint,
    ckpt_root: PathBuf,
    save_total_limit: usize,
}

impl<'a> Session<'a> {
    /// `lr_scale` lets a second model (PPO's critic) share the run's schedule shape.
    pub fn new(
        model: &CausalLm,
        params: &'a [(String, Var)],
        cfg: &TrainConfig,
        total_steps: usize,
        ckpt_root: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        model.set_activation_checkpointing(cfg.gradient_checkpointing);
        Ok(Self {
            params,
            opt: AdamW::new(params.to_vec(), cfg.adamw())?,
            schedule: cfg.schedule(total_steps),
            max_grad_norm: cfg.max_grad_norm,
            micro_batch_size: cfg.micro_batch_size,
            fingerprint: Fingerprint::new(model.config().to_hf_json(), params),
            ckpt_root: ckpt_root.to_path_buf(),
            save_total_limit: cfg.save_total_limit,
        })
    }

    /// Forward/backward over `rows` (in micro-batches) and one AdamW step; the gradient norm.
    pub fn update<O: Objective>(&mut self, obj: &mut O, rows: &[&O::Example], step: u64) -> Result<f64> {
        let micro = if self.micro_batch_size == 0 { rows.len() } else { self.micro_batch_size };
        accumulate_batch(obj, rows, micro, self.params).map_err(|e| match e {
            TrainError::NonFinite { what, value, .. } => TrainError::NonFinite { step, what, value },
            other => other,
        })?;
        let lr = self.schedule.lr_at(step.saturating_sub(1) as usize);
        apply_gradients(obj.model(), self.params, &mut self.opt, lr, self.max_grad_norm, step)
    }

    pub fn save(&self, step: u64, total: u64, seed: u64, trainer: &str, config: &serde_json::Value) -> Result<PathBuf> {
        self.save_with(step, total, seed, trainer, config, serde_json::Value::Null)
    }

    /// [`Self::save`] with the trainer's own state (`CheckpointState::extra`).
    pub fn save_with(
        &self,
        step: u64,
        total: u64,
        seed: u64,
        trainer: &str,
        config: &serde_json::Value,
        extra: serde_json::Value,
    ) -> Result<PathBuf> {
        let mut state = CheckpointState::new(step, total, seed, trainer, config.clone(), self.fingerprint.clone());
        state.extra = extra;
        checkpoint::save(&self.ckpt_root, self.params, Some(&self.opt), &state, self.save_total_limit)
    }

    /// Loads parameters and AdamW state from the checkpoint folder `dir`, refusing one written
    /// by another trainer, with another configuration, or for other parameters (the offline
    /// trainers' rules); its state.
    pub fn restore(&mut self, dir: &Path, trainer: &str, config: &serde_json::Value) -> Result<CheckpointState> {
        let state = checkpoint::read_state_of(dir, &self.fingerprint, trainer, config)?;
        checkpoint::restore(dir, &state, self.params, Some(&mut self.opt))?;
        Ok(state)
    }

    /// Where this session's checkpoint of `step` is.
    pub fn checkpoint_dir(&self, step: u64) -> PathBuf {
        self.ckpt_root.join(checkpoint::step_dir_name(step))
    }
}

/// A training prompt: its ids and what verifiers need.
pub struct RlPrompt<'a> {
    pub ids: &'a [u32],
    pub refs: PromptRef<'a>,
}

/// Where an online run writes, and how often it evaluates.
pub struct RunInfo<'a> {
    pub dir: &'a Path,
    /// The command's whole configuration, stored in checkpoints.
    pub config: serde_json::Value,
    /// Evaluate every this many steps (0 = only before and after).
    pub eval_steps: usize,
    /// Continue from this checkpoint (a `step-NNNNNN` folder, or a run folder: its newest).
    pub resume: Option<PathBuf>,
}

/// The prompts of `step` (1-based): `per_step` of them in the same seeded epoch order the
/// offline trainers use, or (`per_step` = 0, RAFT's "every prompt every round") all in file order.
pub fn step_prompts<'p>(
    prompts: &'p [RlPrompt<'p>],
    per_step: usize,
    seed: u64,
    step: u64,
) -> (Vec<&'p [u32]>, Vec<PromptRef<'p>>) {
    let idx = match per_step {
        0 => (0..prompts.len()).collect(),
        n => batch_indices(prompts.len(), n, seed, step - 1),
    };
    (idx.iter().map(|&i| prompts[i].ids).collect(), idx.iter().map(|&i| prompts[i].refs).collect())
}

/// Whether something done every `every` steps is due at `step` (always at the end or a stop).
pub fn due(step: u64, every: usize, total: u64, stop: bool) -> bool {
    step == total || stop || (every > 0 && step.is_multiple_of(every as u64))
}

/// How long a step took and how much it generated.
pub struct StepTiming {
    pub started: Instant,
    pub rollout_secs: f64,
    pub tokens: usize,
}

/// The end of every online step: timing rows, the metrics line, the progress report.
pub struct StepEnds {
    pub logger: MetricsLogger,
    pub clock: Clock,
    total: u64,
}

impl StepEnds {
    /// A fresh metrics file, or (`resumed_at`) the run's own cut back to that step.
    pub fn new(dir: &Path, total: u64, resumed_at: Option<u64>) -> Result<Self> {
        let logger = match resumed_at {
            Some(step) => MetricsLogger::resume(dir, step),
            None => MetricsLogger::create(dir),
        };
        let logger = logger.map_err(|e| TrainError::file(dir, e.to_string()))?;
        Ok(Self { logger, clock: Clock::start(), total })
    }

    /// Logs `metrics` plus timing and reports `headline` as the bar's number.
    pub fn finish(
        &mut self,
        step: u64,
        lr: f64,
        timing: &StepTiming,
        headline: &str,
        mut metrics: Vec<(String, f64)>,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<()> {
        let secs = timing.started.elapsed().as_secs_f64();
        metrics.extend([
            ("lr".to_string(), lr),
            ("rollout/tokens_per_sec".into(), timing.tokens as f64 / timing.rollout_secs.max(1e-9)),
            (keys::UPDATE_SECONDS.into(), secs - timing.rollout_secs),
            (keys::STEP_TIME.into(), secs),
            ("elapsed_seconds".into(), self.clock.elapsed()),
            ("train_seconds".into(), self.clock.train_seconds()),
        ]);
        if rlhf_dist::world().size() > 1 {
            metrics.push((keys::ALL_REDUCE_SECONDS.into(), rlhf_dist::take_all_reduce_seconds()));
        }
        let get = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v);
        let update_secs = secs - timing.rollout_secs;
        let update_tokens = get(&metrics, keys::UPDATE_TOKENS);
        if update_tokens > 0.0 {
            metrics.push(("update/tokens_per_sec".into(), update_tokens / update_secs.max(1e-9)));
        }
        log_metrics(&mut self.logger, step, &metrics)?;
        let get = |k: &str| get(&metrics, k);
        on_step(&StepReport {
            step,
            total_steps: self.total,
            loss: get(headline),
            lr,
            grad_norm: get("grad_norm"),
            tokens_per_sec: timing.tokens as f64 / secs.max(1e-9),
            stats: metrics.clone(),
        });
        Ok(())
    }
}

/// Writes one metrics row.
pub fn log_metrics(logger: &mut MetricsLogger, step: u64, rows: &[(String, f64)]) -> Result<()> {
    let refs: Vec<(&str, f64)> = rows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    logger.log(step, &refs).map_err(|e| TrainError::Config(format!("cannot write metrics: {e}")))
}

/// Held-out prompts scored by a reward source on the policy's greedy (or sampled) answers:
/// with a 0/1 verifier the mean reward is the accuracy.
pub struct HeldOutEval<'a> {
    pub prompts: Vec<Vec<u32>>,
    pub refs: Vec<PromptRef<'a>>,
    pub source: Box<dyn RewardSource + 'a>,
    pub rollout: RolloutConfig,
}

impl HeldOutEval<'_> {
    /// `(mean reward, mean response length, truncation rate)` of `policy` on the prompts.
    pub fn run(&mut self, policy: &CausalLm, tok: &Tokenizer) -> Result<Vec<(String, f64)>> {
        let prompts: Vec<&[u32]> = self.prompts.iter().map(Vec::as_slice).collect();
        let rows = crate::rollout::rollout(policy, &prompts, 1, &self.rollout, tok, 0, &mut |_| {})?;
        let texts = decode_rows(tok, &rows)?;
        let scores = score_rows(self.source.as_mut(), &rows, &texts, &self.refs)?;
        let values: Vec<f64> = scores.iter().filter_map(|s| s.value).collect();
        Ok(vec![
            (format!("reward/{}", self.source.name()), mean(&values)),
            (keys::RESPONSE_LENGTH.into(), mean_len(&rows)),
            ("truncation_rate".into(), truncation_rate(&rows)),
        ])
    }
}

/// Wall time of a run, and the part of it spent on held-out evaluation (so curves can be read
/// against training time alone).
pub struct Clock {
    started: Instant,
    eval_secs: f64,
}

impl Clock {
    pub fn start() -> Self {
        Self { started: Instant::now(), eval_secs: 0.0 }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn train_seconds(&self) -> f64 {
        self.elapsed() - self.eval_secs
    }

    /// Runs `eval` (if any) on `policy` and logs it as `eval/…` at `step`, with the clock.
    pub fn evaluate(
        &mut self,
        eval: Option<&mut HeldOutEval>,
        policy: &CausalLm,
        tok: &Tokenizer,
        logger: &mut MetricsLogger,
        step: u64,
    ) -> Result<Vec<(String, f64)>> {
        let Some(eval) = eval else { return Ok(Vec::new()) };
        let t0 = Instant::now();
        let mut rows: Vec<(String, f64)> =
            eval.run(policy, tok)?.into_iter().map(|(k, v)| (keys::eval(&k), v)).collect();
        self.eval_secs += t0.elapsed().as_secs_f64();
        rows.push((keys::EVAL_ELAPSED_SECONDS.into(), self.elapsed()));
        rows.push((keys::EVAL_TRAIN_SECONDS.into(), self.train_seconds()));
        log_metrics(logger, step, &rows)?;
        Ok(rows)
    }
}

/// `(name, value)` rows of one metrics line.
pub type Metrics = Vec<(String, f64)>;

/// Scores of every row by every source (`[source][row]`) and the step's `reward/<name>` means
/// (over the rows the source could score).
pub fn score_all(
    sources: &mut [(Box<dyn RewardSource + '_>, f64)],
    rows: &[RolloutRow],
    texts: &[RowText],
    refs: &[PromptRef],
) -> Result<(Vec<Vec<Score>>, Metrics)> {
    let mut per_source = Vec::with_capacity(sources.len());
    let mut metrics = Vec::new();
    for (src, _) in sources.iter_mut() {
        // Data-parallel: each rank scores its share of the rows (a reward model's forward
        // passes split like the sampling), and every rank gets all the scores.
        let scores = rlhf_dist::shard_map(rlhf_dist::world(), rows.len(), |of| {
            score_rows(src.as_mut(), &rows[of.clone()], &texts[of], refs)
        })?;
        let vals: Vec<f64> = scores.iter().filter_map(|x| x.value).collect();
        metrics.push((format!("reward/{}", src.name()), mean(&vals)));
        per_source.push(scores);
    }
    Ok((per_source, metrics))
}

/// `samples.jsonl` in the run folder: every sampled response of every step with its rewards
/// and the sources' notes (why a program failed, what the verifier read), so what the policy
/// does — and how it is being rewarded — can be read, not guessed from curves.
pub struct SampleLog {
    /// `None` on data-parallel ranks other than rank 0, which alone writes.
    file: Option<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
}

impl SampleLog {
    pub fn create(dir: &Path) -> Result<Self> {
        Self::open(dir, None)
    }

    /// A fresh log, or (`resumed_at`) the run's own log cut back to the lines of that step and
    /// before, so a resumed run logs each step once.
    pub fn open(dir: &Path, resumed_at: Option<u64>) -> Result<Self> {
        let path = dir.join("samples.jsonl");
        if !rlhf_dist::world().is_writer() {
            return Ok(Self { file: None, path });
        }
        if let Some(step) = resumed_at {
            cut_samples(&path, step)?;
        }
        // A fresh run starts the log anew (a run killed before its first checkpoint leaves lines).
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed_at.is_some())
            .write(true)
            .truncate(resumed_at.is_none())
            .open(&path)
            .map_err(|e| TrainError::file(&path, format!("cannot open: {e}")))?;
        Ok(Self { file: Some(std::io::BufWriter::new(file)), path })
    }

    pub fn write(
        &mut self,
        step: u64,
        rows: &[RolloutRow],
        texts: &[RowText],
        names: &[String],
        per_source: &[Vec<Score>],
    ) -> Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        for (i, (row, text)) in rows.iter().zip(texts).enumerate() {
            let rewards: serde_json::Map<String, serde_json::Value> =
                names.iter().zip(per_source).map(|(n, sc)| (n.clone(), serde_json::json!(sc[i].value))).collect();
            let notes: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(per_source)
                .filter_map(|(n, sc)| sc[i].note.as_ref().map(|t| (n.clone(), serde_json::json!(t))))
                .collect();
            let mut line = serde_json::json!({
                "step": step, "prompt_index": row.prompt_index, "response": text.response,
                "tokens": row.response_ids.len(), "finish": format!("{:?}", row.finish).to_lowercase(),
                "rewards": rewards, "notes": notes,
            });
            if let Some(version) = row.weight_version {
                line["weight_version"] = serde_json::json!(version);
            }
            writeln!(file, "{line}").map_err(|e| TrainError::file(&self.path, format!("cannot write: {e}")))?;
        }
        file.flush().map_err(|e| TrainError::file(&self.path, format!("cannot write: {e}")))
    }
}

/// Keeps the lines of `samples.jsonl` whose step is at most `step` (a line that does not parse
/// is a torn last write, and goes too).
fn cut_samples(path: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::file(path, format!("cannot read: {e}"))),
    };
    let step_of = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok()?.get("step")?.as_u64();
    let kept: String = text.lines().filter(|l| step_of(l).is_some_and(|s| s <= step)).flat_map(|l| [l, "\n"]).collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept).map_err(|e| TrainError::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, format!("cannot write: {e}")))
}

pub fn mean_len(rows: &[RolloutRow]) -> f64 {
    rows.iter().map(|r| r.response_ids.len()).sum::<usize>() as f64 / rows.len().max(1) as f64
}

pub fn truncation_rate(rows: &[RolloutRow]) -> f64 {
    rows.iter().filter(|r| r.finish == FinishReason::Length).count() as f64 / rows.len().max(1) as f64
}

/// Monte-Carlo entropy of the sampling distribution: −mean log p of sampled tokens (unbiased
/// for untruncated sampling; a cheap collapse signal with no extra pass over the vocabulary).
pub fn sampled_entropy(rows: &[RolloutRow]) -> f64 {
    let (s, n) = rows.iter().flat_map(|r| &r.sampler_logprobs).fold((0f64, 0usize), |(s, n), &x| (s - x as f64, n + 1));
    s / n.max(1) as f64
}
