//! The one per-token log-probability function (docs/ARCHITECTURE.md, "The one logprob path"). Sampling
//! bookkeeping, reference models, every policy update and evaluation go through it.

use crate::model::CausalLm;
use candle_core::{Result, Tensor, D};

/// `log p(ids[:, t] | ids[:, <t])` at `temperature` for t = 1..T, as `[B, T−1]`.
/// Logits are divided by the sampling temperature before the log-softmax. Positions that are
/// padding get a value too; callers mask them.
pub fn token_logprobs(model: &CausalLm, ids: &Tensor, attention_mask: &Tensor, temperature: f64) -> Result<Tensor> {
    let t = ids.dim(1)?;
    token_logprobs_tail(model, ids, attention_mask, temperature, t.saturating_sub(1))
}

/// Like [`token_logprobs`] but only for the last `n` tokens (`[B, n]`): the LM head runs only
/// where a logprob is wanted, e.g. over the response of a prompt+response batch.
pub fn token_logprobs_tail(
    model: &CausalLm,
    ids: &Tensor,
    attention_mask: &Tensor,
    temperature: f64,
    n: usize,
) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    if n == 0 || n >= t {
        candle_core::bail!("token_logprobs: need 1 ≤ n < T, got n = {n} with T = {t}");
    }
    if temperature <= 0.0 {
        candle_core::bail!("token_logprobs: temperature must be > 0, got {temperature}");
    }
    let hidden = model.hidden(ids, attention_mask, None)?; // [B, T, d]
    let d = hidden.dim(D::Minus1)?;
    // Positions t-1-n .. t-2 predict tokens t-n .. t-1.
    let h = hidden.narrow(1, t - 1 - n, n)?.contiguous()?.reshape((b * n, d))?;
    let logits = model.logits_2d(&h)?; // [B·n, V]
    let targets = ids.narrow(1, t - n, n)?.contiguous()?.flatten_all()?;
    let lp = model.kernels().gather_log_softmax(&logits, &targets, temperature)?;
    lp.reshape((b, n))
}

/// Logprobs of chosen tokens only: `targets` lists `(row, t)` with `t ≥ 1`, and the result `[N]`
/// holds `log p(ids[row, t] | ids[row, <t])`. The LM head (the largest matmul and the largest
/// activation, `[N, V]`) runs only on those rows, e.g. the completion tokens of an SFT batch or
/// the responses of a DPO batch, whatever their padding.
pub fn token_logprobs_at(
    model: &CausalLm,
    ids: &Tensor,
    attention_mask: &Tensor,
    temperature: f64,
    targets: &[(usize, usize)],
) -> Result<Tensor> {
    Ok(token_logprobs_and_states_at(model, ids, attention_mask, temperature, targets)?.0)
}

/// [`token_logprobs_at`] that also returns the hidden states `[N, d]` the logprobs were
/// computed from: the state *before* each target token, which is what a value head reads
/// (PPO's V_t estimates the return from the state that samples token t).
pub fn token_logprobs_and_states_at(
    model: &CausalLm,
    ids: &Tensor,
    attention_mask: &Tensor,
    temperature: f64,
    targets: &[(usize, usize)],
) -> Result<(Tensor, Tensor)> {
    let (b, t) = ids.dims2()?;
    if temperature <= 0.0 {
        candle_core::bail!("token_logprobs_at: temperature must be > 0, got {temperature}");
    }
    let (rows, flat) = target_rows(targets, b, t)?;
    let device = ids.device();
    let hidden = model.hidden(ids, attention_mask, None)?; // [B, T, d]
    let d = hidden.dim(D::Minus1)?;
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, device)?;
    let h = hidden.reshape((b * t, d))?.index_select(&rows, 0)?; // [N, d]
    let logits = model.logits_2d(&h)?; // [N, V]
    let target_ids = ids.flatten_all()?.index_select(&Tensor::from_vec(flat, n, device)?, 0)?;
    Ok((model.kernels().gather_log_softmax(&logits, &target_ids, temperature)?, h))
}

/// Flat indices of the positions that predict each target, and of the targets themselves.
fn target_rows(targets: &[(usize, usize)], b: usize, t: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    if targets.is_empty() {
        candle_core::bail!("token_logprobs_at: no target positions");
    }
    let mut rows = Vec::with_capacity(targets.len());
    let mut flat = Vec::with_capacity(targets.len());
    for &(r, p) in targets {
        if r >= b || p == 0 || p >= t {
            candle_core::bail!("token_logprobs_at: target ({r}, {p}) outside [0, {b}) × [1, {t})");
        }
        rows.push((r * t + p - 1) as u32); // the position that predicts token p
        flat.push((r * t + p) as u32);
    }
    Ok((rows, flat))
}
