//! `rlhf reward-eval`: held-out metrics of a saved reward model on any preference file
//! (accuracy, mean margin, BT loss, calibration), e.g. a format-trained RM on correctness pairs.

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use rlhf_data::{load_preferences, LoadOptions, Tokenizer};
use rlhf_model::heads::{load_sequence_classifier, score_last_token};

#[derive(clap::Args)]
pub struct Args {
    /// Reward-model folder written by `rlhf reward` (or any HF *ForSequenceClassification
    /// folder), or its Hub id ORG/NAME[@REVISION].
    #[arg(long)]
    model: String,
    /// Pairs or rankings (.jsonl / .parquet), or a Hub dataset ORG/NAME[:SPLIT].
    #[arg(long)]
    data: String,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

pub fn run(a: Args) -> Result<()> {
    let path = crate::loading::resolve_model(&a.model)?;
    let (model, head, _) = load_sequence_classifier(&path, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading reward model {}", path.display()))?;
    let tok = Tokenizer::load(&path)
        .with_context(|| format!("loading the tokenizer of {}", path.display()))?
        .with_model_config(model.config());
    let groups = crate::loading::load_dataset(
        &a.data,
        &tok,
        &LoadOptions { max_length: 0, ..Default::default() },
        load_preferences,
    )?
    .examples;
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    let pairs: Vec<_> = groups.iter().flat_map(|g| g.pair_examples().collect::<Vec<_>>()).collect();
    for chunk in pairs.chunks(a.batch_size.max(1)) {
        let batch = rlhf_data::Batch::from_pairs(chunk, tok.pad_id(), 1);
        let (ids, mask, _) = batch.to_tensors(&Device::Cpu)?;
        let s = score_last_token(&model, &head, &ids, &mask)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        chosen.extend_from_slice(&s[..chunk.len()]);
        rejected.extend_from_slice(&s[chunk.len()..]);
    }
    let metrics = rlhf_train::reward::pair_metrics(&chosen, &rejected);
    let obj: serde_json::Map<String, serde_json::Value> =
        metrics.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
    println!("{}", serde_json::Value::Object(obj));
    Ok(())
}
