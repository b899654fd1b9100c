//! Rollout, shared by every online trainer: prompts → batched sampling on detached weights →
//! rows of (prompt, response, sampler logprobs, finish reason), then the per-token logprobs and
//! values of those rows under any model, and their scores under any [`RewardSource`].
//!
//! Rows are kept unpadded on the host; each forward packs them (prompt then response as token
//! ids, never re-tokenised text — docs/ARCHITECTURE.md, detail 4), one prompt shared by all of its responses
//! (`rlhf_model::packing`), and reads only response positions.

use crate::error::Result;
use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rlhf_data::Tokenizer;
use rlhf_model::{generate_rows, response_logprobs_packed, CausalLm, FinishReason, RowSpec, SamplingParams};
use rlhf_reward::{RewardSource, Sample, Score};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// Longest response; a response that reaches it is truncated (see `truncation`).
    pub max_new_tokens: usize,
    /// Sampling temperature; logprobs everywhere are computed at it (docs/ARCHITECTURE.md, detail 1).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// Rows per `generate` call (0 = all rows of a step at once).
    pub generation_batch_size: usize,
    /// Rows per forward pass when scoring logprobs/values without gradients (0 = all).
    pub forward_batch_size: usize,
    /// Never stop at EOS: every response has `max_new_tokens` tokens (fixed-shape benchmarks).
    pub ignore_eos: bool,
    /// Truncated importance sampling on the sampler/trainer ratio: each token's loss is
    /// weighted by min(π_trainer / π_sampler, cap), correcting for the sampler's arithmetic
    /// (bf16 rollouts) differing from the trainer's. 0 = off.
    pub tis_cap: f64,
    /// Where responses are sampled: `local` (this process) or `openai` (the `servers`).
    pub engine: RolloutEngine,
    /// `engine = "openai"`: API roots (`http://host:port/v1`) of `rlhf serve` or SGLang
    /// workers; each row goes to the least busy one, and to another after a failure.
    pub servers: Vec<String>,
    /// How the servers get the policy after each update.
    pub sync: WeightSync,
    /// A folder the servers can read the weights from (empty: `rollout-weights/` in the run folder).
    pub sync_dir: String,
    /// Updates a sample's weights may lag behind the trainer's: 0 samples each step with the
    /// current policy; ≥ 1 lets the servers draw the next step's rows during this step's update
    /// (one update behind).
    pub max_staleness: usize,
    /// Seconds per request to a server.
    pub request_timeout_s: f64,
    /// Attempts per row on other servers after a failed one.
    pub max_retries: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutEngine {
    #[default]
    Local,
    Openai,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightSync {
    /// Write an HF folder, then SGLang's pause → `update_weights_from_disk` → continue.
    #[default]
    SglangDisk,
    /// LoRA runs: write the PEFT adapter, then vLLM's `load_lora_adapter` (in place); rows are
    /// sampled with that adapter's name as the `model`.
    VllmLora,
}

impl RolloutConfig {
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(crate::TrainError::Config(format!(
                "rollout.temperature must be ≥ 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(crate::TrainError::Config("rollout.max_new_tokens must be ≥ 1".into()));
        }
        if !(self.tis_cap >= 0.0 && self.tis_cap.is_finite()) {
            return Err(crate::TrainError::Config(format!(
                "rollout.tis_cap must be a finite number ≥ 0 (0 = off), got {}",
                self.tis_cap
            )));
        }
        match self.engine {
            RolloutEngine::Openai => crate::remote::validate(self)?,
            RolloutEngine::Local if self.max_staleness != 0 => {
                return Err(crate::TrainError::Config(
                    "rollout.max_staleness applies to rollouts on servers (engine = \"openai\"); the in-process sampler is always on-policy".into(),
                ))
            }
            RolloutEngine::Local => {}
        }
        Ok(())
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            generation_batch_size: 0,
            forward_batch_size: 16,
            ignore_eos: false,
            tis_cap: 0.0,
            engine: RolloutEngine::Local,
            servers: Vec::new(),
            sync: WeightSync::SglangDisk,
            sync_dir: String::new(),
            max_staleness: 0,
            request_timeout_s: 600.0,
            max_retries: 3,
        }
    }
}

/// One sampled response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRow {
    /// Index of the prompt in the step's prompt list (rows of one prompt are contiguous).
    pub prompt_index: usize,
    pub prompt_ids: Vec<u32>,
    /// Generated tokens, including the final EOS when the row stopped on one.
    pub response_ids: Vec<u32>,
    /// The sampler's logprobs of `response_ids` (full tempered distribution).
    pub sampler_logprobs: Vec<f32>,
    pub finish: FinishReason,
    /// Drawn by inference servers: the version of the weights they held (the policy's updates
    /// then). `None`: sampled in process, with the policy as it is.
    pub weight_version: Option<u64>,
}

impl RolloutRow {
    pub fn truncated(&self) -> bool {
        self.finish == FinishReason::Length
    }
}

/// The seed of step `step`'s sampling: different every step, a function of `(seed, step)`
/// alone so a resumed run samples what the uninterrupted one would have.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0F5A_3B1E);
    rng.set_stream(step);
    rand::Rng::random(&mut rng)
}

/// Samples `repeats` responses to each prompt (GRPO's G; 1 for PPO). Rows come out grouped by
/// prompt. `on_tokens` receives the number of response tokens generated so far.
pub fn rollout(
    policy: &CausalLm,
    prompts: &[&[u32]],
    repeats: usize,
    cfg: &RolloutConfig,
    tok: &Tokenizer,
    seed: u64,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<RolloutRow>> {
    rollout_of(policy, prompts, repeats, cfg, tok, seed, 0..prompts.len() * repeats.max(1), on_tokens)
}

/// Rows `rows` of [`rollout`] (row `g` answers prompt `g / repeats`), each drawn with the random
/// stream it has there: seed `seed + g / B` and stream `g % B` (B = `generation_batch_size`),
/// whichever rows share its batch. So data-parallel ranks that each sample a share of the rows
/// draw what one process would.
#[allow(clippy::too_many_arguments)]
pub fn rollout_of(
    policy: &CausalLm,
    prompts: &[&[u32]],
    repeats: usize,
    cfg: &RolloutConfig,
    tok: &Tokenizer,
    seed: u64,
    rows: std::ops::Range<usize>,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<RolloutRow>> {
    let repeats = repeats.max(1);
    let chunk =
        if cfg.generation_batch_size == 0 { (prompts.len() * repeats).max(1) } else { cfg.generation_batch_size };
    let rows: Vec<(usize, RowSpec)> = rows
        .map(|g| {
            let i = g / repeats;
            let sampling = SamplingParams {
                temperature: cfg.temperature,
                top_k: cfg.top_k,
                top_p: cfg.top_p,
                seed: seed.wrapping_add((g / chunk) as u64),
            };
            let spec = RowSpec {
                prompt: prompts[i].to_vec(),
                sampling,
                stream: (g % chunk) as u64,
                max_new_tokens: cfg.max_new_tokens,
                top_logprobs: 0,
            };
            (i, spec)
        })
        .collect();
    let eos = if cfg.ignore_eos { Vec::new() } else { tok.eos_ids() };
    let mut out = Vec::with_capacity(rows.len());
    let mut done_tokens = 0usize;
    for part in rows.chunks(chunk) {
        let specs: Vec<RowSpec> = part.iter().map(|(_, r)| r.clone()).collect();
        let live = part.len();
        let g = generate_rows(policy, &specs, &eos, tok.pad_id(), None, &mut |steps| {
            on_tokens(done_tokens + steps * live)
        })?;
        done_tokens += g.response_ids.iter().map(Vec::len).sum::<usize>();
        for (((i, spec), (resp, lps)), finish) in
            part.iter().zip(g.response_ids.into_iter().zip(g.response_logprobs)).zip(g.finish)
        {
            out.push(RolloutRow {
                prompt_index: *i,
                prompt_ids: spec.prompt.clone(),
                response_ids: resp,
                sampler_logprobs: lps,
                finish,
                weight_version: None,
            });
        }
    }
    Ok(out)
}

/// Per-token logprobs `[N]` of every response token of `rows` under `model` at `temperature`,
/// flattened row after row, with the hidden states `[N, d]` that predicted them. Rows with the
/// same prompt run it once (packed). A graph node when `model` is trainable.
pub fn response_logprobs(
    model: &CausalLm,
    rows: &[(&[u32], &[u32])],
    pad_id: u32,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    Ok(response_logprobs_packed(model, rows, pad_id, temperature)?)
}

/// [`response_logprobs`] without gradients, `forward_batch` rows per pass, as host rows.
pub fn response_logprobs_rows(
    model: &CausalLm,
    rows: &[(&[u32], &[u32])],
    pad_id: u32,
    temperature: f64,
    forward_batch: usize,
) -> Result<Vec<Vec<f64>>> {
    let model = model.detached()?;
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(forward_batch.max(1)) {
        let (lp, _) = response_logprobs(&model, part, pad_id, temperature)?;
        out.extend(split_rows(&to_f64(&lp)?, part.iter().map(|(_, r)| r.len())));
    }
    Ok(out)
}

/// [`response_logprobs_rows`] with the rows split across data-parallel ranks (each computes its
/// share; every rank gets all of them). One process computes them all.
pub fn sharded_logprobs(
    model: &CausalLm,
    rows: &[(&[u32], &[u32])],
    pad_id: u32,
    temperature: f64,
    forward_batch: usize,
) -> Result<Vec<Vec<f64>>> {
    rlhf_dist::shard_map(rlhf_dist::world(), rows.len(), |of| {
        response_logprobs_rows(model, &rows[of], pad_id, temperature, forward_batch)
    })
}

/// Splits a flat vector into rows of the given lengths.
pub fn split_rows(flat: &[f64], lengths: impl IntoIterator<Item = usize>) -> Vec<Vec<f64>> {
    let mut at = 0;
    lengths
        .into_iter()
        .map(|n| {
            let row = flat[at..at + n].to_vec();
            at += n;
            row
        })
        .collect()
}

pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.detach().to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Decoded text of a rollout: the prompt (special tokens kept, as the model saw it) and the
/// response (special tokens removed).
pub struct RowText {
    pub prompt: String,
    pub response: String,
}

pub fn decode_rows(tok: &Tokenizer, rows: &[RolloutRow]) -> Result<Vec<RowText>> {
    rows.iter()
        .map(|r| {
            Ok(RowText { prompt: tok.decode(&r.prompt_ids, false)?, response: tok.decode(&r.response_ids, true)? })
        })
        .collect()
}

/// Reference data of a prompt for verifiers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PromptRef<'a> {
    pub answer: Option<&'a str>,
    pub tests: Option<&'a str>,
}

/// Scores every row with `source`; `refs[row.prompt_index]` supplies answers and tests.
pub fn score_rows(
    source: &mut dyn RewardSource,
    rows: &[RolloutRow],
    texts: &[RowText],
    refs: &[PromptRef<'_>],
) -> Result<Vec<Score>> {
    let samples: Vec<Sample> = rows
        .iter()
        .zip(texts)
        .map(|(r, t)| {
            let pr = refs.get(r.prompt_index).copied().unwrap_or_default();
            Sample {
                prompt: &t.prompt,
                response: &t.response,
                prompt_ids: &r.prompt_ids,
                response_ids: &r.response_ids,
                answer: pr.answer,
                tests: pr.tests,
                finished: !r.truncated(),
            }
        })
        .collect();
    let scores = source.score(&samples).map_err(|e| crate::TrainError::Config(format!("reward source: {e}")))?;
    if scores.len() != rows.len() {
        return Err(crate::TrainError::Config(format!(
            "reward source `{}` returned {} scores for {} responses",
            source.name(),
            scores.len(),
            rows.len()
        )));
    }
    Ok(scores)
}

/// Maps process-supervision step ends, given as byte offsets in the decoded response, to the
/// index of the first response token whose decoded prefix reaches the offset.
pub fn offsets_to_tokens(tok: &Tokenizer, response: &[u32], steps: &[(usize, f64)]) -> Result<Vec<(usize, f64)>> {
    if steps.is_empty() || response.is_empty() {
        return Ok(Vec::new());
    }
    let mut ends = Vec::with_capacity(response.len());
    for k in 1..=response.len() {
        ends.push(tok.decode(&response[..k], true)?.len());
    }
    let last = response.len() - 1;
    let mut out: Vec<(usize, f64)> =
        steps.iter().map(|&(off, r)| (ends.iter().position(|&e| e >= off).unwrap_or(last), r)).collect();
    out.sort_by_key(|&(t, _)| t);
    Ok(out)
}

/// Splits `n` items into minibatches of `size` in a seeded order (PPO's shuffled minibatches).
pub fn minibatches(n: usize, size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Sampler-vs-trainer logprob mismatch, summed token by token. Nonzero only through
/// top-k/top-p truncation or numerical drift (docs/ARCHITECTURE.md, detail 30).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogprobMismatch {
    pub sum_abs: f64,
    pub max_abs: f64,
    pub tokens: usize,
    /// Tokens whose trainer/sampler probability ratio is outside [0.9, 1.1].
    pub outside_10pct: usize,
}

impl LogprobMismatch {
    /// Over every token of `rows`, against the trainer's logprobs of the same tokens.
    pub fn of(rows: &[RolloutRow], trainer: &[Vec<f64>]) -> Self {
        let mut m = Self::default();
        for (r, t) in rows.iter().zip(trainer) {
            m.add(r.sampler_logprobs.iter().map(|&s| s as f64), t.iter().copied());
        }
        m
    }

    pub fn add(&mut self, sampler: impl Iterator<Item = f64>, trainer: impl Iterator<Item = f64>) {
        for (s, x) in sampler.zip(trainer) {
            let d = (s - x).abs();
            self.sum_abs += d;
            self.max_abs = self.max_abs.max(d);
            self.tokens += 1;
            self.outside_10pct += usize::from(!(0.9..=1.1).contains(&(x - s).exp()));
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.sum_abs += other.sum_abs;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.tokens += other.tokens;
        self.outside_10pct += other.outside_10pct;
    }

    /// Mean |Δ| (0 over no tokens).
    pub fn mean_abs(&self) -> f64 {
        self.sum_abs / self.tokens.max(1) as f64
    }

    /// The metrics: mean and max |Δ logprob|, and the share of tokens whose ratio is off by > 10%.
    pub fn rows(&self) -> Vec<(String, f64)> {
        vec![
            ("logprob_mismatch/mean_abs".into(), self.mean_abs()),
            ("logprob_mismatch/max_abs".into(), self.max_abs),
            ("logprob_mismatch/ratio_outside_10pct".into(), self.outside_10pct as f64 / self.tokens.max(1) as f64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_offsets_map_to_the_token_that_ends_them() {
        let tok = rlhf_data::tiny::tokenizer();
        let ids = tok.encode("ab\ncd\n", false).unwrap(); // one token per byte
        let steps = offsets_to_tokens(&tok, &ids, &[(2, 1.0), (5, 0.0), (99, 0.5)]).unwrap();
        assert_eq!(steps, vec![(1, 1.0), (4, 0.0), (5, 0.5)], "offset 2 ends at `b`, 5 at `d`, past the end → last");
        assert!(offsets_to_tokens(&tok, &ids, &[]).unwrap().is_empty());
    }
}
