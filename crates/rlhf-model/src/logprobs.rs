//! The one per-token log-probability function (ARCHITECTURE.md "Shared contracts"). Sampling
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
