//! Training batches: rows padded on the right with the tokenizer's pad id (never EOS, so an EOS
//! target is never mistaken for padding), with attention and loss masks.
//!
//! Right padding is safe in training because the model derives positions from the attention
//! mask (`cumsum − 1`); generation pads on the left instead (docs/ARCHITECTURE.md, detail 2).

use crate::dataset::{PairExample, SftExample};
use candle_core::{Device, Tensor};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `[B * T]` row-major token ids, padded with the pad id.
    pub input_ids: Vec<u32>,
    /// `[B * T]`: 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u8>,
    /// `[B * T]`: 1 where the token is a training target. Column 0 is never one; drop it to line
    /// up with `token_logprobs`' `[B, T − 1]` (which scores tokens 1..T).
    pub loss_mask: Vec<u8>,
    pub batch: usize,
    pub seq_len: usize,
}

impl Batch {
    /// Pads `rows` of (ids, loss mask) to the longest row, rounded up to a multiple of
    /// `pad_to_multiple` (0 or 1: no rounding).
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = (&'a [u32], &'a [u8])>,
        pad_id: u32,
        pad_to_multiple: usize,
    ) -> Self {
        let rows: Vec<(&[u32], &[u8])> = rows.into_iter().collect();
        let longest = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let multiple = pad_to_multiple.max(1);
        let seq_len = longest.div_ceil(multiple) * multiple;
        let total = rows.len() * seq_len;
        let (mut input_ids, mut attention_mask, mut loss_mask) =
            (Vec::with_capacity(total), Vec::with_capacity(total), Vec::with_capacity(total));
        for (ids, mask) in &rows {
            debug_assert_eq!(ids.len(), mask.len(), "loss mask must cover every token");
            let pad = seq_len - ids.len();
            input_ids.extend(ids.iter().copied().chain(std::iter::repeat_n(pad_id, pad)));
            attention_mask.extend(std::iter::repeat_n(1u8, ids.len()).chain(std::iter::repeat_n(0u8, pad)));
            loss_mask.extend(mask.iter().copied().chain(std::iter::repeat_n(0u8, pad)));
        }
        Self { input_ids, attention_mask, loss_mask, batch: rows.len(), seq_len }
    }

    pub fn from_sft(examples: &[SftExample], pad_id: u32, pad_to_multiple: usize) -> Self {
        Self::from_rows(
            examples.iter().map(|e| (e.input_ids.as_slice(), e.loss_mask.as_slice())),
            pad_id,
            pad_to_multiple,
        )
    }

    /// One row per (prompt, response), the loss mask covering the response tokens.
    pub fn from_prompt_responses<'a>(
        rows: impl IntoIterator<Item = (&'a [u32], &'a [u32])>,
        pad_id: u32,
        pad_to_multiple: usize,
    ) -> Self {
        let joined: Vec<(Vec<u32>, Vec<u8>)> = rows
            .into_iter()
            .map(|(prompt, response)| {
                let mask = [vec![0u8; prompt.len()], vec![1u8; response.len()]].concat();
                ([prompt, response].concat(), mask)
            })
            .collect();
        Self::from_rows(joined.iter().map(|(ids, mask)| (ids.as_slice(), mask.as_slice())), pad_id, pad_to_multiple)
    }

    /// DPO / reward-model layout: rows `0..P` are the chosen sequences, rows `P..2P` the rejected
    /// ones in the same order.
    pub fn from_pairs(pairs: &[PairExample], pad_id: u32, pad_to_multiple: usize) -> Self {
        let chosen = pairs.iter().map(|p| (p.prompt.as_slice(), p.chosen.as_slice()));
        let rejected = pairs.iter().map(|p| (p.prompt.as_slice(), p.rejected.as_slice()));
        Self::from_prompt_responses(chosen.chain(rejected), pad_id, pad_to_multiple)
    }

    pub fn num_loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m != 0).count()
    }

    /// `(row, t)` of every loss token that has context (`t ≥ 1`): the targets whose
    /// `log p(ids[row, t] | ids[row, <t])` a loss needs (see `rlhf_model::token_logprobs_at`).
    pub fn loss_positions(&self) -> Vec<(usize, usize)> {
        let t = self.seq_len.max(1);
        self.loss_mask.iter().enumerate().filter(|&(i, &m)| m != 0 && i % t != 0).map(|(i, _)| (i / t, i % t)).collect()
    }

    pub fn num_real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// Real tokens per row; `len − 1` is the last real token a reward head reads (docs/ARCHITECTURE.md, detail 9).
    pub fn row_lengths(&self) -> Vec<usize> {
        self.attention_mask
            .chunks(self.seq_len.max(1))
            .take(self.batch)
            .map(|row| row.iter().filter(|&&m| m != 0).count())
            .collect()
    }

    /// `(ids u32 [B, T], attention_mask u32 [B, T], loss_mask f32 [B, T])`, the dtypes
    /// `CausalLm::hidden` and `token_logprobs` take.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let shape = (self.batch, self.seq_len);
        let ids = Tensor::from_slice(&self.input_ids, shape, device)?;
        let attention: Vec<u32> = self.attention_mask.iter().map(|&m| u32::from(m)).collect();
        let attention = Tensor::from_vec(attention, shape, device)?;
        let loss: Vec<f32> = self.loss_mask.iter().map(|&m| f32::from(m)).collect();
        let loss = Tensor::from_vec(loss, shape, device)?;
        Ok((ids, attention, loss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Location, RecordIndex};

    fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PairExample {
        let source = Location { path: "p.jsonl".into(), index: RecordIndex::Line(1) };
        PairExample { prompt: prompt.to_vec(), chosen: chosen.to_vec(), rejected: rejected.to_vec(), source }
    }

    #[test]
    fn right_padding_with_masks() {
        let pad = crate::tiny::tokenizer().pad_id();
        assert_ne!(pad, 2, "pad must differ from EOS");
        let b = Batch::from_rows([(&[5u32, 6, 2][..], &[0u8, 1, 1][..]), (&[7u32][..], &[0u8][..])], pad, 1);
        assert_eq!((b.batch, b.seq_len), (2, 3));
        assert_eq!(b.input_ids, vec![5, 6, 2, 7, pad, pad]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(b.loss_mask, vec![0, 1, 1, 0, 0, 0]);
        assert_eq!((b.num_loss_tokens(), b.row_lengths()), (2, vec![3, 1]));
        assert_eq!(Batch::from_rows([(&[5u32, 6, 2][..], &[0u8, 1, 1][..])], pad, 8).seq_len, 8);
    }

    #[test]
    fn pairs_give_chosen_rows_then_rejected_rows() {
        let pairs = [pair(&[10, 11], &[20, 2], &[30, 31, 2]), pair(&[12], &[21, 2], &[32, 2])];
        let b = Batch::from_pairs(&pairs, 0, 1);
        assert_eq!((b.batch, b.seq_len), (4, 5));
        let row = |r: usize| &b.input_ids[r * 5..(r + 1) * 5];
        assert_eq!(row(0), &[10, 11, 20, 2, 0]);
        assert_eq!(row(1), &[12, 21, 2, 0, 0]);
        assert_eq!(row(2), &[10, 11, 30, 31, 2]);
        assert_eq!(row(3), &[12, 32, 2, 0, 0]);
        assert_eq!(&b.loss_mask[10..15], &[0, 0, 1, 1, 1]);
        assert_eq!(b.num_loss_tokens(), 2 + 2 + 3 + 2);
    }

    #[test]
    fn tensors_have_the_model_dtypes() {
        let b = Batch::from_rows([(&[5u32, 6][..], &[0u8, 1][..]), (&[7u32][..], &[0u8][..])], 0, 1);
        let (ids, attn, loss) = b.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(ids.dims(), &[2, 2]);
        assert_eq!(
            (ids.dtype(), attn.dtype(), loss.dtype()),
            (candle_core::DType::U32, candle_core::DType::U32, candle_core::DType::F32)
        );
        assert_eq!(attn.to_vec2::<u32>().unwrap(), vec![vec![1, 1], vec![1, 0]]);
        assert_eq!(loss.to_vec2::<f32>().unwrap(), vec![vec![0.0, 1.0], vec![0.0, 0.0]]);
    }
}
