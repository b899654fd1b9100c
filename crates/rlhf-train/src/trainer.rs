//! The one training loop every offline trainer runs: seeded data order, micro-batches that add
//! up to the batch's gradient, global-norm clipping, LR schedule, AdamW, non-finite stop,
//! metrics, evaluation and atomic checkpoints with bit-identical resume.
//!
//! An algorithm is an [`Objective`]: the loss of one micro-batch, normalised by a quantity of the
//! whole batch (so accumulation is exact), and an evaluation.

use crate::checkpoint::{self, CheckpointState, Fingerprint};
use crate::error::{Result, TrainError};
use crate::grad_accum;
use crate::metric_keys as keys;
use crate::metrics::MetricsLogger;
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::{LrSchedule, ScheduleKind};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rlhf_model::grads::Grads;
use rlhf_model::CausalLm;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings shared by every trainer; defaults are TRL's `TrainingArguments` defaults except the
/// learning rate, which each trainer sets to its TRL default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    /// Examples per optimiser step (SFT rows, preference groups, …).
    pub batch_size: usize,
    /// Examples per forward/backward; 0 = the whole batch. The last micro-batch may be smaller.
    pub micro_batch_size: usize,
    pub epochs: f64,
    /// Optimiser steps; 0 = derived from `epochs`.
    pub max_steps: usize,
    pub learning_rate: f64,
    pub lr_scheduler: ScheduleKind,
    pub warmup_ratio: f64,
    /// Overrides `warmup_ratio` when > 0.
    pub warmup_steps: usize,
    /// Global gradient-norm clip; 0 disables.
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_steps: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub save_steps: usize,
    /// Checkpoints kept (0 = all).
    pub save_total_limit: usize,
    /// Recompute each decoder layer's activations in the backward pass instead of keeping them
    /// (TRL's `gradient_checkpointing`): less memory, one more forward, identical gradients.
    pub gradient_checkpointing: bool,
    /// Arithmetic of the matrix products: `auto` (bf16 where the CPU has AMX, else fp32),
    /// `bf16` or `fp32` (docs/ARCHITECTURE.md, "Precision").
    pub precision: PrecisionChoice,
}

/// `train.precision` and `--precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    #[default]
    Auto,
    Bf16,
    Fp32,
}

impl std::str::FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "bf16" => Ok(Self::Bf16),
            "fp32" => Ok(Self::Fp32),
            other => Err(format!("unknown precision {other:?}: expected \"auto\", \"bf16\" or \"fp32\"")),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            batch_size: 8,
            micro_batch_size: 0,
            epochs: 3.0,
            max_steps: 0,
            learning_rate: 2e-5,
            lr_scheduler: ScheduleKind::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            eval_steps: 0,
            save_steps: 500,
            save_total_limit: 2,
            gradient_checkpointing: false,
            precision: PrecisionChoice::Auto,
        }
    }
}

impl TrainConfig {
    pub fn total_steps(&self, num_examples: usize) -> usize {
        if self.max_steps > 0 {
            return self.max_steps;
        }
        ((self.epochs * num_examples as f64) / self.batch_size.max(1) as f64).ceil().max(1.0) as usize
    }

    pub fn schedule(&self, total: usize) -> LrSchedule {
        let warmup =
            if self.warmup_steps > 0 { self.warmup_steps } else { (self.warmup_ratio * total as f64).ceil() as usize };
        LrSchedule { kind: self.lr_scheduler, base_lr: self.learning_rate, warmup_steps: warmup, total_steps: total }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.learning_rate,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(TrainError::Config("train.batch_size must be ≥ 1".into()));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return Err(TrainError::Config(format!("train.learning_rate must be ≥ 0, got {}", self.learning_rate)));
        }
        Ok(())
    }
}

/// One micro-batch's contribution.
pub struct MicroOutput {
    /// Scalar loss already divided by the batch normaliser.
    pub loss: Tensor,
    /// `(name, sum, weight)`: the step reports Σsum / Σweight over micro-batches.
    pub stats: Vec<(String, f64, f64)>,
    /// Tokens processed (for throughput).
    pub tokens: usize,
}

pub trait Objective {
    type Example;
    /// The model whose gradient sink receives the batch's gradients.
    fn model(&self) -> &CausalLm;
    /// The quantity every micro-batch loss is divided by (tokens, sequences, pairs of the batch).
    fn normaliser(&self, batch: &[&Self::Example]) -> f64;
    fn micro_loss(&mut self, micro: &[&Self::Example], normaliser: f64) -> Result<MicroOutput>;
    fn evaluate(&mut self, eval: &[Self::Example]) -> Result<Vec<(String, f64)>>;
    /// Statistics the objective sums over micro-batches itself (outside [`MicroOutput`]), taken
    /// out: a data-parallel batch merges every rank's part back with [`Self::merge_rank_stats`],
    /// so they describe the global batch. `None`: it keeps none.
    fn take_rank_stats(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn merge_rank_stats(&mut self, _stats: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// What the loop reports after every step (for progress bars).
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub stats: Vec<(String, f64)>,
}

pub struct RunOptions<'a> {
    pub dir: &'a Path,
    /// Name stored in checkpoints (`sft`, `reward`, `dpo`).
    pub trainer: &'a str,
    /// The trainer's full config, stored in checkpoints; a resume must match it.
    pub config: serde_json::Value,
    pub resume: Option<PathBuf>,
    /// Write checkpoints (every `save_steps` and at the end). Off for a RAFT round, which is
    /// redone whole after an interruption and whose optimiser does not outlive it.
    pub checkpoints: bool,
}

pub struct RunOutcome {
    pub steps: u64,
    pub last_loss: f64,
    pub eval: Vec<(String, f64)>,
}

/// Seeded example order: epoch `e` is a fresh permutation from `(seed, e)`, and step `s` takes
/// positions `s·B … s·B+B−1` of the endless sequence of epochs. A function of the step alone.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for pos in step * batch as u64..(step + 1) * batch as u64 {
        let (epoch, i) = (pos / n as u64, (pos % n as u64) as usize);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..n).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            perm.shuffle(&mut rng);
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().map(|(_, p)| p[i]).unwrap_or(i));
    }
    out
}

pub fn train<O: Objective>(
    obj: &mut O,
    train_set: &[O::Example],
    eval_set: &[O::Example],
    params: &[(String, Var)],
    cfg: &TrainConfig,
    run: &RunOptions,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<RunOutcome> {
    cfg.validate()?;
    if train_set.is_empty() {
        return Err(TrainError::Config("the training set is empty".into()));
    }
    let total = cfg.total_steps(train_set.len()) as u64;
    let schedule = cfg.schedule(total as usize);
    let mut opt = AdamW::new(params.to_vec(), cfg.adamw())?;
    obj.model().set_activation_checkpointing(cfg.gradient_checkpointing);
    let fingerprint = Fingerprint::new(obj.model().config().to_hf_json(), params);
    let ckpt_root = run.dir.join("checkpoints");
    let mut start = 0u64;
    if let Some(path) = &run.resume {
        let dir = checkpoint::resolve(path)?;
        let state = checkpoint::read_state_of(&dir, &fingerprint, run.trainer, &run.config)?;
        checkpoint::restore(&dir, &state, params, Some(&mut opt))?;
        start = state.step;
    }
    let logger =
        if run.resume.is_some() { MetricsLogger::resume(run.dir, start) } else { MetricsLogger::create(run.dir) };
    let mut logger = logger.map_err(|e| TrainError::file(run.dir, e.to_string()))?;
    let micro = if cfg.micro_batch_size == 0 { cfg.batch_size } else { cfg.micro_batch_size };
    let mut last_loss = f64::NAN;
    let mut eval = Vec::new();
    for step in start..total {
        let t0 = Instant::now();
        let batch: Vec<&O::Example> =
            batch_indices(train_set.len(), cfg.batch_size, cfg.seed, step).into_iter().map(|i| &train_set[i]).collect();
        let acc = accumulate_batch(obj, &batch, micro, params).map_err(|e| at_step(e, step + 1))?;
        let (loss_sum, tokens, stats) = (acc.loss, acc.tokens, acc.stats);
        let lr = schedule.lr_at(step as usize);
        let grad_norm = apply_gradients(obj.model(), params, &mut opt, lr, cfg.max_grad_norm, step + 1)?;
        last_loss = loss_sum;
        let done = step + 1;
        let secs = t0.elapsed().as_secs_f64();
        let mut row: Vec<(String, f64)> = vec![
            ("loss".into(), loss_sum),
            ("lr".into(), lr),
            ("grad_norm".into(), grad_norm),
            ("tokens_per_sec".into(), tokens as f64 / secs.max(1e-9)),
            (keys::STEP_TIME.into(), secs),
        ];
        row.extend(stats.iter().map(|(n, s, w)| (n.clone(), s / w.max(1e-300))));
        if rlhf_dist::world().size() > 1 {
            row.push((keys::ALL_REDUCE_SECONDS.into(), rlhf_dist::take_all_reduce_seconds()));
        }
        log(&mut logger, done, &row)?;
        on_step(&StepReport {
            step: done,
            total_steps: total,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens_per_sec: tokens as f64 / secs.max(1e-9),
            stats: row[5..].to_vec(),
        });
        let last = done == total;
        if !eval_set.is_empty() && (last || (cfg.eval_steps > 0 && done % cfg.eval_steps as u64 == 0)) {
            eval = obj.evaluate(eval_set)?;
            let rows: Vec<(String, f64)> = eval.iter().map(|(k, v)| (keys::eval(k), *v)).collect();
            log(&mut logger, done, &rows)?;
        }
        if run.checkpoints && (last || (cfg.save_steps > 0 && done % cfg.save_steps as u64 == 0)) {
            let state =
                CheckpointState::new(done, total, cfg.seed, run.trainer, run.config.clone(), fingerprint.clone());
            checkpoint::save(&ckpt_root, params, Some(&opt), &state, cfg.save_total_limit)?;
        }
    }
    Ok(RunOutcome { steps: total, last_loss, eval })
}

/// The summed loss, token count and statistics of one batch.
pub struct BatchOutcome {
    pub loss: f64,
    pub tokens: usize,
    pub stats: Vec<(String, f64, f64)>,
}

/// Forward + backward of `batch` in micro-batches of `micro` examples, leaving the batch's
/// gradient in the model's gradient sink: each micro-batch loss is divided by the *batch's*
/// normaliser, so the sum of micro-batch gradients is the whole batch's gradient (docs/ARCHITECTURE.md, detail 7).
///
/// Data-parallel (more than one rank in [`rlhf_dist::world`]): every rank holds the same global
/// batch and takes its contiguous share of it ([`rlhf_dist::shard`]); the gradients, the loss,
/// the token count and the statistics are then summed across ranks, so every rank leaves with
/// what one process would have computed, up to the order of the float additions.
pub fn accumulate_batch<O: Objective>(
    obj: &mut O,
    batch: &[&O::Example],
    micro: usize,
    params: &[(String, Var)],
) -> Result<BatchOutcome> {
    let world = rlhf_dist::world();
    let norm = obj.normaliser(batch);
    let earlier = if world.size() > 1 { obj.take_rank_stats() } else { None };
    let mine = &batch[rlhf_dist::shard(batch.len(), world.rank(), world.size())];
    let mut out = BatchOutcome { loss: 0.0, tokens: 0, stats: Vec::new() };
    for chunk in mine.chunks(micro.max(1)) {
        let m = obj.micro_loss(chunk, norm)?;
        let value = m.loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            obj.model().zero_grad();
            return Err(TrainError::NonFinite { step: 0, what: "loss".into(), value });
        }
        let store = m.loss.backward()?;
        let grads = obj.model().grads(&store);
        let sink = grads.sink.ok_or_else(|| TrainError::Config("the model has no gradient sink".into()))?;
        grad_accum::accumulate(sink, &store, params)?;
        out.loss += value;
        out.tokens += m.tokens;
        merge_stats(&mut out.stats, m.stats);
    }
    if world.size() > 1 {
        sum_across_ranks(obj, &mut out, earlier, params, world)?;
    }
    Ok(out)
}

/// The data-parallel half of [`accumulate_batch`]: gradients, loss, tokens and statistics of
/// every rank summed on every rank (statistics merged in rank order, the same on all).
fn sum_across_ranks<O: Objective>(
    obj: &mut O,
    out: &mut BatchOutcome,
    earlier: Option<Vec<u8>>,
    params: &[(String, Var)],
    world: &dyn rlhf_dist::Collective,
) -> Result<()> {
    let empty = GradStore::default();
    let sink =
        obj.model().grads(&empty).sink.ok_or_else(|| TrainError::Config("the model has no gradient sink".into()))?;
    grad_accum::all_reduce(sink, params, world)?;
    let mut totals = [out.loss, out.tokens as f64];
    world.all_reduce_sum_f64(&mut totals)?;
    out.loss = totals[0];
    out.tokens = totals[1] as usize;
    let mut stats = Vec::new();
    for part in rlhf_dist::all_gather(world, &std::mem::take(&mut out.stats))? {
        merge_stats(&mut stats, part);
    }
    out.stats = stats;
    let parts = rlhf_dist::all_gather(world, &obj.take_rank_stats())?;
    if let Some(earlier) = earlier {
        obj.merge_rank_stats(&earlier)?;
    }
    for part in parts.into_iter().flatten() {
        obj.merge_rank_stats(&part)?;
    }
    Ok(())
}

/// Clips the accumulated gradient to `max_grad_norm` (global L2 norm), takes one AdamW step at
/// `lr` and clears the gradients. Returns the pre-clip norm; a non-finite norm stops here,
/// before any weight changes.
pub fn apply_gradients(
    model: &CausalLm,
    params: &[(String, Var)],
    opt: &mut AdamW,
    lr: f64,
    max_grad_norm: f64,
    step: u64,
) -> Result<f64> {
    let empty = GradStore::default();
    let grads: Grads = model.grads(&empty);
    let grad_norm = grad_accum::global_norm(&grads, params)?;
    if !grad_norm.is_finite() {
        model.zero_grad();
        return Err(TrainError::NonFinite { step, what: "gradient norm".into(), value: grad_norm });
    }
    opt.step_scaled(&grads, lr, grad_accum::clip_factor(grad_norm, max_grad_norm))?;
    model.zero_grad();
    Ok(grad_norm)
}

fn at_step(e: TrainError, step: u64) -> TrainError {
    match e {
        TrainError::NonFinite { what, value, .. } => TrainError::NonFinite { step, what, value },
        other => other,
    }
}

fn merge_stats(acc: &mut Vec<(String, f64, f64)>, new: Vec<(String, f64, f64)>) {
    for (name, s, w) in new {
        match acc.iter_mut().find(|(n, _, _)| *n == name) {
            Some(e) => {
                e.1 += s;
                e.2 += w;
            }
            None => acc.push((name, s, w)),
        }
    }
}

fn log(logger: &mut MetricsLogger, step: u64, rows: &[(String, f64)]) -> Result<()> {
    let refs: Vec<(&str, f64)> = rows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    logger.log(step, &refs).map_err(|e| TrainError::Config(format!("cannot write metrics: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_a_function_of_seed_and_step_and_covers_each_epoch() {
        let n = 10;
        let seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(n, 4, 7, s)).collect();
        let mut first_epoch = seen[..10].to_vec();
        first_epoch.sort();
        assert_eq!(first_epoch, (0..10).collect::<Vec<_>>());
        let mut second = seen[10..20].to_vec();
        second.sort();
        assert_eq!(second, (0..10).collect::<Vec<_>>());
        assert_ne!(seen[..10], seen[10..20], "each epoch is reshuffled");
        assert_eq!(batch_indices(n, 4, 7, 3), seen[12..16]);
        assert_ne!(batch_indices(n, 4, 8, 0), batch_indices(n, 4, 7, 0));
    }

    #[test]
    fn steps_from_epochs_round_up() {
        let cfg = TrainConfig { batch_size: 4, epochs: 1.0, ..Default::default() };
        assert_eq!(cfg.total_steps(10), 3);
        assert_eq!(TrainConfig { max_steps: 7, ..cfg }.total_steps(10), 7);
    }
}
