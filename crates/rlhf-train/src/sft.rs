//! Supervised fine-tuning: next-token negative log-likelihood on completion tokens only (the
//! prompt is context, not a target), token-mean over the whole batch so micro-batching is exact.

use crate::error::Result;
use crate::trainer::{MicroOutput, Objective};
use rlhf_data::{Batch, SftExample};
use rlhf_model::{token_logprobs_at, CausalLm};

pub struct SftObjective<'m> {
    pub model: &'m CausalLm,
    pub pad_id: u32,
    /// Rows per forward pass during evaluation.
    pub eval_batch_size: usize,
}

/// Completion tokens that are predicted (position ≥ 1: the first token has no context).
fn targets(e: &SftExample) -> usize {
    e.loss_mask.iter().skip(1).filter(|&&m| m != 0).count()
}

impl SftObjective<'_> {
    /// Summed NLL (as a graph node) and the number of target tokens of `rows`.
    fn nll(&self, model: &CausalLm, rows: &[&SftExample]) -> Result<(candle_core::Tensor, usize, usize)> {
        let batch =
            Batch::from_rows(rows.iter().map(|e| (e.input_ids.as_slice(), e.loss_mask.as_slice())), self.pad_id, 1);
        let (ids, mask, _) = batch.to_tensors(model.device())?;
        let pos = batch.loss_positions();
        let lp = token_logprobs_at(model, &ids, &mask, 1.0, &pos)?; // [N]
        Ok((lp.sum_all()?.neg()?, pos.len(), batch.num_real_tokens()))
    }
}

impl Objective for SftObjective<'_> {
    type Example = SftExample;

    fn model(&self) -> &CausalLm {
        self.model
    }

    fn normaliser(&self, batch: &[&SftExample]) -> f64 {
        batch.iter().map(|e| targets(e)).sum::<usize>().max(1) as f64
    }

    fn micro_loss(&mut self, micro: &[&SftExample], normaliser: f64) -> Result<MicroOutput> {
        let rows: Vec<&SftExample> = micro.iter().copied().filter(|e| targets(e) > 0).collect();
        if rows.is_empty() {
            let zero = candle_core::Tensor::zeros((), self.model.dtype(), self.model.device())?;
            return Ok(MicroOutput { loss: zero, stats: Vec::new(), tokens: 0 });
        }
        let (nll, n, tokens) = self.nll(self.model, &rows)?;
        let loss = (nll / normaliser)?;
        Ok(MicroOutput { loss, stats: vec![("completion_tokens".into(), n as f64, 1.0)], tokens })
    }

    fn evaluate(&mut self, eval: &[SftExample]) -> Result<Vec<(String, f64)>> {
        let model = self.model.detached()?;
        let (mut nll, mut count) = (0f64, 0usize);
        let rows: Vec<&SftExample> = eval.iter().filter(|e| targets(e) > 0).collect();
        for chunk in rows.chunks(self.eval_batch_size.max(1)) {
            let (s, n, _) = self.nll(&model, chunk)?;
            nll += s.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            count += n;
        }
        let loss = nll / count.max(1) as f64;
        Ok(vec![("loss".into(), loss), ("perplexity".into(), loss.exp()), ("tokens".into(), count as f64)])
    }
}
