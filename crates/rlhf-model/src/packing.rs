//! Shared-prompt packing. Rows `(prompt, response)` with equal prompts become one sequence
//! `[prompt | response_1 | … | response_G]`: each response attends to the prompt and to its own
//! earlier tokens only, at the positions it would have alone, so its logprobs and hidden states
//! are those of the unpacked row (up to float rounding) while the prompt goes through the model
//! once per group instead of once per row. GRPO's G samples of a prompt, a preference pair's
//! chosen and rejected, and a K-wise ranking's K responses all share their prompt; rows with a
//! prompt of their own pack to an ordinary right-padded row.

use crate::attention::AttnContext;
use crate::model::CausalLm;
use candle_core::{bail, Device, Result, Tensor, D};
use std::collections::HashMap;

/// Segment id of padding; the prompt is segment 0 and response k of a row is segment k + 1.
const PAD_SEGMENT: u32 = u32::MAX;

/// A packed batch of `(prompt, response)` rows and where each input row's tokens landed.
#[derive(Debug)]
pub struct PackedRows {
    /// `[P, L]` packed rows, right-padded with the pad id.
    pub ids: Vec<u32>,
    pub rows: usize,
    pub len: usize,
    positions: Vec<Vec<u32>>,
    segments: Vec<Vec<u32>>,
    /// For every response token of every input row (input order, then token order): the flat
    /// index `row · L + t` of the position that predicts it, and the token.
    predict: Vec<u32>,
    targets: Vec<u32>,
    /// Flat index of each input row's last token (its prompt's last when the response is empty).
    last: Vec<u32>,
    real_tokens: usize,
}

impl PackedRows {
    /// Packs `rows`; prompts are grouped by equality wherever they occur in the list.
    pub fn new(rows: &[(&[u32], &[u32])], pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            bail!("packing: no rows");
        }
        if let Some(i) = rows.iter().position(|(p, _)| p.is_empty()) {
            bail!("packing: row {i} has an empty prompt (its first token would have no context)");
        }
        let (distinct, owner) = distinct_rows(rows.iter().map(|(p, _)| *p));
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); distinct.len()];
        for (i, &g) in owner.iter().enumerate() {
            groups[g as usize].push(i);
        }
        let packed_len =
            |members: &[usize]| rows[members[0]].0.len() + members.iter().map(|&i| rows[i].1.len()).sum::<usize>();
        let len = groups.iter().map(|m| packed_len(m)).max().unwrap_or(0);
        let n_groups = groups.len();
        let mut ids = Vec::with_capacity(n_groups * len);
        let (mut positions, mut segments) = (Vec::with_capacity(n_groups), Vec::with_capacity(n_groups));
        // Where each input row's response starts: (flat index of its predictor for token 0,
        // flat index of its first token).
        let mut starts = vec![(0u32, 0u32); rows.len()];
        for (g, members) in groups.iter().enumerate() {
            let prompt = rows[members[0]].0;
            let base = (g * len) as u32;
            let (mut pos, mut seg): (Vec<u32>, Vec<u32>) = ((0..prompt.len() as u32).collect(), vec![0; prompt.len()]);
            ids.extend_from_slice(prompt);
            for (k, &i) in members.iter().enumerate() {
                let response = rows[i].1;
                starts[i] = (base + prompt.len() as u32 - 1, ids.len() as u32);
                ids.extend_from_slice(response);
                pos.extend((0..response.len()).map(|j| (prompt.len() + j) as u32));
                seg.extend(std::iter::repeat_n(k as u32 + 1, response.len()));
            }
            let pad = len - pos.len();
            ids.extend(std::iter::repeat_n(pad_id, pad));
            pos.extend(std::iter::repeat_n(0, pad));
            seg.extend(std::iter::repeat_n(PAD_SEGMENT, pad));
            positions.push(pos);
            segments.push(seg);
        }
        let (mut predict, mut targets, mut last) = (Vec::new(), Vec::new(), Vec::with_capacity(rows.len()));
        for (i, (_, response)) in rows.iter().enumerate() {
            let (before, first) = starts[i];
            for (j, &tok) in response.iter().enumerate() {
                predict.push(if j == 0 { before } else { first + j as u32 - 1 });
                targets.push(tok);
            }
            last.push(if response.is_empty() { before } else { first + response.len() as u32 - 1 });
        }
        let real_tokens = segments.iter().flatten().filter(|&&s| s != PAD_SEGMENT).count();
        Ok(Self { ids, rows: n_groups, len, positions, segments, predict, targets, last, real_tokens })
    }

    /// Tokens the model runs on, padding excluded (the unpacked batch would run
    /// Σ (prompt + response) of them).
    pub fn real_tokens(&self) -> usize {
        self.real_tokens
    }

    /// Response tokens over all input rows: the length of the flat `[N]` outputs.
    pub fn num_targets(&self) -> usize {
        self.targets.len()
    }

    /// The attention context: a query sees keys at or before it in its own row that are prompt
    /// tokens or tokens of its own response (and within the sliding window, counted in
    /// positions); a padded query sees only itself, so no softmax row is empty.
    pub fn context(&self, window: Option<usize>, dtype: candle_core::DType, device: &Device) -> Result<AttnContext> {
        let l = self.len;
        let mut mask = Vec::with_capacity(self.rows * l * l);
        for (pos, seg) in self.positions.iter().zip(&self.segments) {
            for q in 0..l {
                for k in 0..l {
                    let allowed = if seg[q] == PAD_SEGMENT {
                        k == q
                    } else {
                        k <= q
                            && (seg[k] == 0 || seg[k] == seg[q])
                            && window.is_none_or(|w| (pos[q] - pos[k]) < w as u32)
                    };
                    mask.push(if allowed { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (self.rows, 1, l, l), device)?.to_dtype(dtype)?;
        Ok(AttnContext { positions: self.positions.clone(), mask })
    }

    fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.ids.clone(), (self.rows, self.len), device)
    }

    fn index(v: &[u32], device: &Device) -> Result<Tensor> {
        Tensor::from_vec(v.to_vec(), v.len(), device)
    }
}

/// The first index of each distinct row, in order of appearance, and for every row the index
/// of its distinct value (shared by packing and by generation's once-per-prompt prefill).
pub(crate) fn distinct_rows<'a>(rows: impl Iterator<Item = &'a [u32]>) -> (Vec<usize>, Vec<u32>) {
    let mut first: HashMap<&[u32], u32> = HashMap::new();
    let mut distinct = Vec::new();
    let owner = rows
        .enumerate()
        .map(|(r, row)| {
            *first.entry(row).or_insert_with(|| {
                distinct.push(r);
                distinct.len() as u32 - 1
            })
        })
        .collect();
    (distinct, owner)
}

/// Final hidden states `[P·L, d]` of a packed batch.
pub fn packed_hidden(model: &CausalLm, packed: &PackedRows) -> Result<Tensor> {
    let device = model.device().clone();
    let ctx = packed.context(model.config().sliding_window, model.dtype(), &device)?;
    let h = model.hidden_with_context(&packed.ids_tensor(&device)?, &ctx)?; // [P, L, d]
    let d = h.dim(D::Minus1)?;
    h.reshape((packed.rows * packed.len, d))
}

/// Per-token logprobs `[N]` of every response token of `rows` (input order, then token order)
/// at `temperature`, and the hidden states `[N, d]` that predicted them (what a value head
/// reads). The LM head runs only on those states.
pub fn response_logprobs_packed(
    model: &CausalLm,
    rows: &[(&[u32], &[u32])],
    pad_id: u32,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    if temperature <= 0.0 {
        bail!("response logprobs: temperature must be > 0, got {temperature}");
    }
    let packed = PackedRows::new(rows, pad_id)?;
    if packed.num_targets() == 0 {
        bail!("response logprobs: every response is empty");
    }
    let device = model.device().clone();
    let h = packed_hidden(model, &packed)?.index_select(&PackedRows::index(&packed.predict, &device)?, 0)?;
    let logits = model.logits_2d(&h)?; // [N, V]
    let targets = PackedRows::index(&packed.targets, &device)?;
    Ok((model.kernels().gather_log_softmax(&logits, &targets, temperature)?, h))
}

/// Hidden states `[N, d]` before every response token of `rows`, without the LM head (critics).
pub fn response_states_packed(model: &CausalLm, rows: &[(&[u32], &[u32])], pad_id: u32) -> Result<Tensor> {
    let packed = PackedRows::new(rows, pad_id)?;
    if packed.num_targets() == 0 {
        bail!("response states: every response is empty");
    }
    let idx = PackedRows::index(&packed.predict, model.device())?;
    packed_hidden(model, &packed)?.index_select(&idx, 0)
}

/// Hidden states `[R, d]` at the last token of each row (what a reward head scores), and the
/// number of tokens the model ran on.
pub fn last_states_packed(model: &CausalLm, rows: &[(&[u32], &[u32])], pad_id: u32) -> Result<(Tensor, usize)> {
    let packed = PackedRows::new(rows, pad_id)?;
    let idx = PackedRows::index(&packed.last, model.device())?;
    Ok((packed_hidden(model, &packed)?.index_select(&idx, 0)?, packed.real_tokens()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prompts_share_one_row_and_keep_their_positions() {
        let (a, b) = ([1u32, 2, 3], [7u32, 8]);
        let rows: Vec<(&[u32], &[u32])> = vec![(&a, &[4, 5]), (&b, &[9]), (&a, &[6])];
        let p = PackedRows::new(&rows, 0).unwrap();
        assert_eq!((p.rows, p.len), (2, 6));
        assert_eq!(p.ids, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0]);
        assert_eq!(p.positions[0], vec![0, 1, 2, 3, 4, 3]);
        assert_eq!(p.segments[0], vec![0, 0, 0, 1, 1, 2]);
        // Row 0's tokens 4, 5 are predicted at 2 (prompt end) and 3; row 1's 9 at 6 + 1; row 2's
        // 6 at the shared prompt end 2.
        assert_eq!(p.predict, vec![2, 3, 7, 2]);
        assert_eq!(p.targets, vec![4, 5, 9, 6]);
        assert_eq!(p.last, vec![4, 8, 5]);
        assert_eq!(p.real_tokens(), 9);
        let ctx = p.context(None, candle_core::DType::F32, &Device::Cpu).unwrap();
        let m = ctx.mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let sees = |r: usize, q: usize, k: usize| m[(r * 6 + q) * 6 + k] == 0.0;
        assert!(sees(0, 5, 0) && sees(0, 5, 2) && sees(0, 5, 5), "response 2 sees the prompt and itself");
        assert!(!sees(0, 5, 3) && !sees(0, 5, 4), "response 2 never sees response 1");
        assert!(sees(0, 4, 3) && !sees(0, 3, 4), "causal within a response");
        assert!(sees(1, 4, 4) && !sees(1, 4, 2) && !sees(1, 2, 3), "padding sees itself; nobody sees padding");
    }

    #[test]
    fn the_window_counts_positions_not_packed_offsets() {
        let a = [1u32, 2];
        let rows: Vec<(&[u32], &[u32])> = vec![(&a, &[3, 4]), (&a, &[5, 6])];
        let p = PackedRows::new(&rows, 0).unwrap();
        let m = p.context(Some(3), candle_core::DType::F32, &Device::Cpu).unwrap().mask;
        let m = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Token 6 is at position 3: it sees positions 1..=3, i.e. prompt token 2 and its own 5.
        let sees = |q: usize, k: usize| m[q * 6 + k] == 0.0;
        assert!(sees(5, 1) && sees(5, 4) && sees(5, 5) && !sees(5, 0));
    }

    #[test]
    fn empty_prompts_are_refused() {
        let rows: Vec<(&[u32], &[u32])> = vec![(&[], &[1])];
        assert!(PackedRows::new(&rows, 0).unwrap_err().to_string().contains("row 0 has an empty prompt"));
    }
}
