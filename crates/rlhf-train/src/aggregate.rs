//! Loss aggregation as per-token weights (docs/ARCHITECTURE.md, details 7 and 23).
//!
//! Every aggregation of GRPO/PPO is linear in the per-token losses, so it can be written as
//! loss = Σ_t w_t·l_t. Weights are computed once from the WHOLE batch; a micro-batch then
//! contributes Σ over its own tokens, and summing micro-batch losses gives exactly the
//! whole-batch loss and gradient, whatever the split (the bug of TRL #3021 and kin was
//! normalising each micro-batch by its own token count).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// TRL "grpo" (original GRPO): the mean over rows of each row's token mean. Length-biased:
    /// a token of a short response weighs more than one of a long response.
    SequenceMean,
    /// TRL "dapo" (TRL's default): Σ l / the token count of the whole generation batch.
    #[default]
    TokenMean,
    /// TRL "bnpo": Σ l / the token count of the rows given (the local batch).
    Bnpo,
    /// TRL "dr_grpo" (Dr. GRPO): Σ l / (B · max_completion_length), a constant divisor that adds no
    /// length bias.
    ConstantDivisor,
}

/// A weight per token per row (`[B][lengths[i]]`). `lengths` are the token counts of every row of
/// the batch the loss is normalised over; `max_completion_length` is the configured cap (not the
/// padded width), used by `ConstantDivisor`; `global_tokens` is dapo's `num_items_in_batch` (the
/// token count over all ranks and accumulation steps), `None` meaning Σ lengths. A zero-length
/// row gets no weights but still counts in B of `SequenceMean` and `ConstantDivisor`.
pub fn token_weights(
    mode: LossAggregation,
    lengths: &[usize],
    max_completion_length: usize,
    global_tokens: Option<usize>,
) -> Vec<Vec<f64>> {
    let rows = lengths.len().max(1) as f64;
    let local_tokens = lengths.iter().sum::<usize>();
    let flat = |divisor: f64| lengths.iter().map(|&n| vec![1.0 / divisor; n]).collect();
    match mode {
        LossAggregation::SequenceMean => lengths.iter().map(|&n| vec![1.0 / (rows * n.max(1) as f64); n]).collect(),
        LossAggregation::TokenMean => flat(global_tokens.unwrap_or(local_tokens).max(1) as f64),
        LossAggregation::Bnpo => flat(local_tokens.max(1) as f64),
        LossAggregation::ConstantDivisor => flat(rows * max_completion_length.max(1) as f64),
    }
}

/// `token_weights` flattened row after row, the `[N]` layout of the trainers' tensors.
pub fn flat_token_weights(
    mode: LossAggregation,
    lengths: &[usize],
    max_completion_length: usize,
    global_tokens: Option<usize>,
) -> Vec<f64> {
    token_weights(mode, lengths, max_completion_length, global_tokens).concat()
}
