//! A trained reward model as a reward source: `head · h` at the last real token of
//! prompt ++ response, in right-padded batches on detached weights (no autograd graph is kept).

use crate::error::{Result, RewardError};
use crate::source::{RewardSource, Sample, Score};
use candle_core::{DType, Device, Tensor};
use rlhf_model::heads::{load_sequence_classifier, score_last_token, RewardStats};
use rlhf_model::CausalLm;
use std::path::Path;

/// Scores with a sequence classifier. Samples are sorted by length before batching, so padding
/// is small; scores do not depend on batch composition (the head reads the last real token and
/// padding is masked).
pub struct RewardModel {
    name: String,
    model: CausalLm,
    head: Tensor,
    stats: Option<RewardStats>,
    normalize: bool,
    pad_id: u32,
    batch_size: usize,
}

impl RewardModel {
    /// Over a model in memory; its weights are detached (the caller's copy keeps training).
    pub fn new(model: &CausalLm, head: &Tensor, stats: Option<RewardStats>, pad_id: u32) -> Result<Self> {
        let d = model.config().hidden_size;
        if head.dims() != [1, d] {
            return Err(RewardError::Config(format!(
                "reward model: head has shape {:?}, expected [1, {d}] (the trunk's hidden size)",
                head.dims()
            )));
        }
        Ok(Self {
            name: "reward_model".into(),
            model: model.detached()?,
            head: head.detach(),
            stats,
            normalize: false,
            pad_id,
            batch_size: 8,
        })
    }

    /// From a folder written by `rlhf_model::heads::save_sequence_classifier` (or transformers).
    pub fn load(dir: &Path, pad_id: u32, dtype: DType, device: &Device) -> Result<Self> {
        let (model, head, stats) = load_sequence_classifier(dir, dtype, device)?;
        Ok(Self::new(&model, &head, stats, pad_id)?.with_name(format!("rm:{}", dir.display())))
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `(r − mean) / std` with the saved statistics; an error when the model has none.
    pub fn normalized(mut self, on: bool) -> Result<Self> {
        match self.stats {
            None if on => Err(RewardError::Config(format!(
                "reward model `{}`: normalisation asked for, but it has no reward statistics (reward_stats.json)",
                self.name
            ))),
            Some(s) if on && !(s.std.is_finite() && s.std > 0.0) => Err(RewardError::Config(format!(
                "reward model `{}`: saved reward std {} cannot normalise",
                self.name, s.std
            ))),
            _ => {
                self.normalize = on;
                Ok(self)
            }
        }
    }

    /// Sequences per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn stats(&self) -> Option<RewardStats> {
        self.stats
    }

    /// Raw scores of token sequences, one forward pass per `batch_size` of them.
    pub fn score_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<f64>> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut out = vec![0.0; seqs.len()];
        for chunk in order.chunks(self.batch_size) {
            let t = chunk.iter().map(|&i| seqs[i].len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * t);
            let mut mask = Vec::with_capacity(chunk.len() * t);
            for &i in chunk {
                let s = &seqs[i];
                ids.extend(s.iter().copied().chain(std::iter::repeat_n(self.pad_id, t - s.len())));
                mask.extend((0..t).map(|p| u32::from(p < s.len())));
            }
            let dev = self.model.device();
            let ids = Tensor::from_vec(ids, (chunk.len(), t), dev)?; // [B, T]
            let mask = Tensor::from_vec(mask, (chunk.len(), t), dev)?; // [B, T]
            let scores = score_last_token(&self.model, &self.head, &ids, &mask)?.to_dtype(DType::F64)?.to_vec1()?;
            for (&i, s) in chunk.iter().zip(scores) {
                out[i] = s;
            }
        }
        Ok(out)
    }
}

impl RewardSource for RewardModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        let max = self.model.config().max_position_embeddings;
        let seqs: Vec<Vec<u32>> = samples.iter().map(|s| [s.prompt_ids, s.response_ids].concat()).collect();
        if let Some((i, s)) = seqs.iter().enumerate().find(|(_, s)| s.len() > max) {
            return Err(RewardError::Config(format!(
                "reward model `{}`: sample {i} has {} tokens, more than the model's {max} positions",
                self.name,
                s.len()
            )));
        }
        let scorable: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
        let raw = self.score_ids(&scorable.iter().map(|&i| seqs[i].clone()).collect::<Vec<_>>())?;
        let mut out: Vec<Score> =
            (0..seqs.len()).map(|_| Score { note: Some("empty sequence".into()), ..Score::default() }).collect();
        for (&i, r) in scorable.iter().zip(raw) {
            let value = match (self.normalize, self.stats) {
                (true, Some(s)) => (r - s.mean) / s.std,
                _ => r,
            };
            out[i] = Score::value(value);
        }
        Ok(out)
    }
}
