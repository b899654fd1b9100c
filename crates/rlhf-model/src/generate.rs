//! Batched generation: left-padded prompts of different lengths, one prefill, then one token per
//! step through the KV cache; rows stop independently on EOS or a stop condition.
//!
//! Returns what RL needs without recomputation: the full sequences with their attention mask,
//! the response mask (generated tokens up to and including the first EOS), and the sampler's
//! per-token logprobs (equal to [`crate::logprobs::token_logprobs`] on the same weights).

use crate::decode::DecodeCache;
use crate::model::CausalLm;
use crate::sampling::{top_logprobs, RowSampler, SamplingParams};
use candle_core::{bail, DType, Result, Tensor};

#[derive(Clone, Debug)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Tokens that end a response (kept in the response and its mask). Empty: never stop early.
    pub eos_token_ids: Vec<u32>,
    /// Filler for left padding and for rows that have stopped; never a real token here.
    pub pad_token_id: u32,
}

/// Decides, after each new token, whether a row is done (e.g. stop strings decoded by a tokenizer).
pub trait StopCondition {
    fn should_stop(&self, row: usize, response: &[u32]) -> bool;

    /// Whether nobody waits for any row any more (a server's clients all went away): checked
    /// between prefill chunks and before each step, it ends generation with an error.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Prompts longer than this are prefilled in chunks of this many tokens: attention scores then
/// take `heads × chunk × prompt` floats instead of `heads × prompt²` (an 8,000-token prompt
/// needed 5.8 GB at once), and a cancellation is seen within one chunk. Shorter prompts, every
/// rollout of the training examples among them, take one pass as before.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    Eos,
    Stop,
    /// Hit `max_new_tokens` (a truncated response).
    Length,
}

pub struct Generated {
    /// Padded prompt length P: responses start at column P of `sequences`.
    pub prompt_len: usize,
    /// `[B, P + N]` u32: left-padded prompts, responses, pad after a row stopped.
    pub sequences: Tensor,
    /// `[B, P + N]` u32: 1 on real prompt and response tokens.
    pub attention_mask: Tensor,
    /// `[B, N]` u32: 1 on generated tokens up to and including the stop token.
    pub response_mask: Tensor,
    /// `[B, N]` f32: the sampler's logprobs, 0 where `response_mask` is 0.
    pub logprobs: Tensor,
    pub response_ids: Vec<Vec<u32>>,
    pub response_logprobs: Vec<Vec<f32>>,
    /// Per row and generated token, the row's `top_logprobs` most likely tokens with their
    /// logprobs (same temperature as `logprobs`); empty lists for rows that asked for none.
    pub response_top_logprobs: Vec<Vec<Vec<(u32, f32)>>>,
    pub finish: Vec<FinishReason>,
}

/// Left-pads `prompts` to a `[B, P]` batch; returns (ids, mask) as host rows.
pub fn left_pad(prompts: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let ids =
        prompts.iter().map(|x| std::iter::repeat_n(pad, p - x.len()).chain(x.iter().copied()).collect()).collect();
    let mask = prompts
        .iter()
        .map(|x| std::iter::repeat_n(0u32, p - x.len()).chain(std::iter::repeat_n(1, x.len())).collect())
        .collect();
    (ids, mask)
}

/// Logits `[B][V]` at the last position of `hidden: [B, T, d]`, on the host.
fn last_logits(model: &CausalLm, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = hidden.dim(1)?;
    let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?; // [B, d]
    model.logits(&last)?.to_dtype(DType::F32)?.to_vec2::<f32>()
}

fn to_tensor(rows: &[Vec<u32>], dev: &candle_core::Device) -> Result<Tensor> {
    let cols = rows.first().map_or(0, Vec::len);
    Tensor::from_vec(rows.concat(), (rows.len(), cols), dev)
}

/// Generates continuations of `prompts` (token ids, no padding). `on_step` is called after every
/// decoding step with the number of tokens generated so far (for progress bars).
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    stop: Option<&dyn StopCondition>,
    on_step: &mut dyn FnMut(usize),
) -> Result<Generated> {
    let rows: Vec<RowSpec> = prompts
        .iter()
        .enumerate()
        .map(|(r, p)| RowSpec {
            prompt: p.clone(),
            sampling: cfg.sampling.clone(),
            stream: r as u64,
            max_new_tokens: cfg.max_new_tokens,
            top_logprobs: 0,
        })
        .collect();
    generate_rows(model, &rows, &cfg.eos_token_ids, cfg.pad_token_id, stop, on_step)
}

/// One row of a batch with its own sampling parameters and length limit (a server batches
/// unrelated requests this way).
#[derive(Clone, Debug)]
pub struct RowSpec {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Random stream of the row's sampler under `sampling.seed` (rows of one request differ here).
    pub stream: u64,
    pub max_new_tokens: usize,
    /// Also record this many most likely alternatives per generated token (0: none).
    pub top_logprobs: usize,
}

/// [`generate`] with per-row sampling and limits; a row that reaches its own limit finishes
/// with [`FinishReason::Length`].
pub fn generate_rows(
    model: &CausalLm,
    rows: &[RowSpec],
    eos_token_ids: &[u32],
    pad_token_id: u32,
    stop: Option<&dyn StopCondition>,
    on_step: &mut dyn FnMut(usize),
) -> Result<Generated> {
    generate_rows_chunked(model, rows, eos_token_ids, pad_token_id, stop, on_step, PREFILL_CHUNK)
}

/// The prompt columns `[B, P]` through the model into `cache`, `chunk` columns at a time (the mask
/// of each pass covers every column so far); returns the last pass's hidden states.
fn prefill(
    model: &CausalLm,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
    cache: &mut crate::kv_cache::KvCache,
    chunk: usize,
    stop: Option<&dyn StopCondition>,
) -> Result<Tensor> {
    let dev = model.device().clone();
    let p = ids[0].len();
    let mut start = 0;
    loop {
        if stop.is_some_and(|s| s.cancelled()) {
            bail!("generation cancelled during the prefill ({start} of {p} prompt tokens done): nobody waits for it any more");
        }
        let end = (start + chunk).min(p);
        let part = |rows: &[Vec<u32>], from: usize| rows.iter().map(|r| r[from..end].to_vec()).collect::<Vec<_>>();
        let hidden =
            model.hidden(&to_tensor(&part(ids, start), &dev)?, &to_tensor(&part(mask, 0), &dev)?, Some(cache))?;
        if end == p {
            return Ok(hidden);
        }
        start = end;
    }
}

/// [`generate_rows`] with the prefill chunk size as a parameter (tests use small ones).
pub fn generate_rows_chunked(
    model: &CausalLm,
    rows: &[RowSpec],
    eos_token_ids: &[u32],
    pad_token_id: u32,
    stop: Option<&dyn StopCondition>,
    on_step: &mut dyn FnMut(usize),
    prefill_chunk: usize,
) -> Result<Generated> {
    if prefill_chunk == 0 {
        bail!("generate: the prefill chunk must be at least one token");
    }
    if rows.is_empty() {
        bail!("generate: no prompts");
    }
    if let Some(i) = rows.iter().position(|r| r.prompt.is_empty()) {
        bail!("generate: prompt {i} is empty (it needs at least one token, e.g. BOS)");
    }
    for r in rows {
        r.sampling.validate().map_err(candle_core::Error::Msg)?;
    }
    let vocab = model.config().vocab_size as u32;
    if let Some((i, &t)) =
        rows.iter().enumerate().find_map(|(i, r)| r.prompt.iter().find(|&&t| t >= vocab).map(|t| (i, t)))
    {
        bail!("generate: prompt {i} has token id {t}, outside the vocabulary of {vocab}");
    }
    let prompts: Vec<Vec<u32>> = rows.iter().map(|r| r.prompt.clone()).collect();
    let max_new_tokens = rows.iter().map(|r| r.max_new_tokens).max().unwrap_or(0);
    let cfg = GenerationConfig {
        max_new_tokens,
        sampling: rows[0].sampling.clone(),
        eos_token_ids: eos_token_ids.to_vec(),
        pad_token_id,
    };
    // In bf16 precision every token after the prompt is decoded from the bf16 copy of the
    // weights (`decode.rs`), taking over the prefilled cache at the first step.
    let decoder = model.bf16_decoder()?;
    let mut bf16_cache: Option<DecodeCache> = None;
    // Rollouts never need gradients: run on detached weights so no graph is kept.
    let model = model.detached()?;
    let dev = model.device().clone();
    let b = prompts.len();
    let (ids, mut mask) = left_pad(&prompts, cfg.pad_token_id);
    let p = ids[0].len();
    let mut cache = model.new_cache(p + cfg.max_new_tokens);
    let mut samplers: Vec<RowSampler> = rows.iter().map(|r| RowSampler::new(&r.sampling, r.stream)).collect();
    let mut responses: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut logprobs: Vec<Vec<f32>> = vec![Vec::new(); b];
    let mut top: Vec<Vec<Vec<(u32, f32)>>> = vec![Vec::new(); b];
    let mut finish: Vec<Option<FinishReason>> = vec![None; b];

    let (distinct, owner) = crate::packing::distinct_rows(ids.iter().map(Vec::as_slice));
    // The tokens sampled last, fed at the next step (the prompts go through `prefill` first).
    let mut step_ids: Option<Vec<u32>> = None;
    let mut steps = 0;
    while steps < cfg.max_new_tokens && finish.iter().any(Option::is_none) {
        let logits = if steps == 0 && distinct.len() < b {
            // Rows with the same prompt (a GRPO group, n > 1 samples) prefill it once.
            let pick = |rows: &[Vec<u32>]| distinct.iter().map(|&r| rows[r].clone()).collect::<Vec<_>>();
            let mut shared = model.new_cache(p + cfg.max_new_tokens);
            let hidden = prefill(&model, &pick(&ids), &pick(&mask), &mut shared, prefill_chunk, stop)?;
            cache = shared.select_rows(&owner)?;
            let per_prompt = last_logits(&model, &hidden)?;
            owner.iter().map(|&u| per_prompt[u as usize].clone()).collect()
        } else if steps == 0 {
            last_logits(&model, &prefill(&model, &ids, &mask, &mut cache, prefill_chunk, stop)?)?
        } else {
            if stop.is_some_and(|s| s.cancelled()) {
                bail!("generation cancelled: nobody waits for it any more");
            }
            let step = step_ids.take().expect("a step after the prefill has its sampled tokens");
            match &decoder {
                Some(weights) => {
                    let c = match &mut bf16_cache {
                        Some(c) => c,
                        None => {
                            let handed_over = DecodeCache::from_prefill(&cache, p + cfg.max_new_tokens)?;
                            cache = model.new_cache(1); // the fp32 prefill cache is no longer read
                            bf16_cache.insert(handed_over)
                        }
                    };
                    weights.step(c, &step, &mask)?
                }
                None => {
                    let step = Tensor::from_vec(step, (b, 1), &dev)?;
                    last_logits(&model, &model.hidden(&step, &to_tensor(&mask, &dev)?, Some(&mut cache))?)?
                }
            }
        };
        let mut next = Vec::with_capacity(b);
        for row in 0..b {
            if finish[row].is_some() {
                next.push(cfg.pad_token_id);
                mask[row].push(0);
                continue;
            }
            let (tok, lp) = samplers[row].sample(&logits[row]);
            if rows[row].top_logprobs > 0 {
                let t = rows[row].sampling.temperature;
                top[row].push(top_logprobs(&logits[row], t, rows[row].top_logprobs));
            }
            responses[row].push(tok);
            logprobs[row].push(lp);
            next.push(tok);
            mask[row].push(1);
            if cfg.eos_token_ids.contains(&tok) {
                finish[row] = Some(FinishReason::Eos);
            } else if stop.is_some_and(|s| s.should_stop(row, &responses[row])) {
                finish[row] = Some(FinishReason::Stop);
            } else if responses[row].len() >= rows[row].max_new_tokens {
                finish[row] = Some(FinishReason::Length);
            }
        }
        steps += 1;
        on_step(steps);
        step_ids = Some(next);
    }

    let n = steps;
    let mut seq = Vec::with_capacity(b * (p + n));
    let mut resp_mask = Vec::with_capacity(b * n);
    let mut lp_flat = Vec::with_capacity(b * n);
    for row in 0..b {
        let r = &responses[row];
        seq.extend_from_slice(&ids[row]);
        seq.extend(r.iter().copied().chain(std::iter::repeat_n(cfg.pad_token_id, n - r.len())));
        resp_mask.extend(std::iter::repeat_n(1u32, r.len()).chain(std::iter::repeat_n(0, n - r.len())));
        lp_flat.extend(logprobs[row].iter().copied().chain(std::iter::repeat_n(0.0, n - r.len())));
    }
    let full_mask: Vec<Vec<u32>> = mask
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.resize(p + n, 0);
            m
        })
        .collect();
    Ok(Generated {
        prompt_len: p,
        sequences: Tensor::from_vec(seq, (b, p + n), &dev)?,
        attention_mask: to_tensor(&full_mask, &dev)?,
        response_mask: Tensor::from_vec(resp_mask, (b, n), &dev)?,
        logprobs: Tensor::from_vec(lp_flat, (b, n), &dev)?,
        response_ids: responses,
        response_logprobs: logprobs,
        response_top_logprobs: top,
        finish: finish.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect(),
    })
}
