//! A scalar head on the LM trunk (reward models, later value heads) and its HF folder format
//! (`LlamaForSequenceClassification`: the trunk's weights plus `score.weight` `[1, d]`).

use crate::error::{ModelError, Result as ModelResult};
use crate::model::CausalLm;
use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// HF's name for the head of a sequence classifier.
pub const SCORE_WEIGHT: &str = "score.weight";
/// Reward statistics saved next to a reward model (docs/ARCHITECTURE.md, detail 12).
pub const REWARD_STATS_FILE: &str = "reward_stats.json";

/// Mean and standard deviation of raw scores over a reference set: RL normalises rewards with
/// them to mean 0, std 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    pub mean: f64,
    pub std: f64,
    /// How many scores the statistics were computed from.
    pub count: usize,
}

/// `[1, d]` head weight initialised N(0, 1/√(d+1)) (docs/ARCHITECTURE.md, detail 10; no bias, as HF's `score`).
pub fn init_scalar_head(d: usize, seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let std = 1.0 / ((d + 1) as f64).sqrt();
    let normal = Normal::new(0.0, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let w: Vec<f64> = (0..d).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_vec(w, (1, d), device)?.to_dtype(dtype)
}

/// Index of the last real token of each row of a `[B, T]` 0/1 mask (left or right padding).
pub fn last_real_positions(attention_mask: &Tensor) -> Result<Vec<usize>> {
    let rows = attention_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .rposition(|&m| m != 0)
                .ok_or_else(|| candle_core::Error::Msg(format!("row {r} has no real token")))
        })
        .collect()
}

/// Scores `[B]`: `head · h` at the last real token of each row (docs/ARCHITECTURE.md, detail 9).
pub fn score_last_token(model: &CausalLm, head: &Tensor, ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let hidden = model.hidden(ids, attention_mask, None)?; // [B, T, d]
    let d = hidden.dim(2)?;
    let rows: Vec<u32> =
        last_real_positions(attention_mask)?.iter().enumerate().map(|(r, &p)| (r * t + p) as u32).collect();
    let rows = Tensor::from_vec(rows, b, ids.device())?;
    let last = hidden.reshape((b * t, d))?.index_select(&rows, 0)?; // [B, d]
    last.matmul(&head.t()?)?.squeeze(1) // [B]
}

/// Writes an HF `LlamaForSequenceClassification`-style folder: trunk weights, `score.weight`,
/// config with `num_labels = 1` and a pad id (HF scores the last non-pad token), and the reward
/// statistics (also in the config as `rlhf_reward_mean` / `rlhf_reward_std`).
pub fn save_sequence_classifier(
    model: &CausalLm,
    head: &Tensor,
    stats: Option<RewardStats>,
    pad_token_id: u32,
    dir: &Path,
) -> ModelResult<()> {
    let mut weights = model.weights().detached();
    weights.tensors.insert(SCORE_WEIGHT.to_string(), head.detach());
    let mut cfg = model.config().clone();
    cfg.pad_token_id = Some(pad_token_id);
    crate::weights::save_hf(&cfg, &weights, dir)?;
    let path = dir.join("config.json");
    let mut json = cfg.to_hf_json();
    let arch = match cfg.family {
        crate::config::Family::Llama => "LlamaForSequenceClassification",
        crate::config::Family::Gpt2 => "GPT2ForSequenceClassification",
    };
    json["architectures"] = serde_json::json!([arch]);
    json["num_labels"] = serde_json::json!(1);
    json["id2label"] = serde_json::json!({"0": "LABEL_0"});
    json["label2id"] = serde_json::json!({"LABEL_0": 0});
    if let Some(s) = stats {
        json["rlhf_reward_mean"] = serde_json::json!(s.mean);
        json["rlhf_reward_std"] = serde_json::json!(s.std);
        let text = serde_json::to_string_pretty(&s).expect("stats serialise");
        crate::io::write_atomic(&dir.join(REWARD_STATS_FILE), text.as_bytes())?;
    }
    let text = serde_json::to_string_pretty(&json).expect("config serialises");
    crate::io::write_atomic(&path, text.as_bytes())
}

/// Loads a folder written by [`save_sequence_classifier`] (or by transformers): the trunk as a
/// `CausalLm`, the `[1, d]` head, and the reward statistics when present.
pub fn load_sequence_classifier(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> ModelResult<(CausalLm, Tensor, Option<RewardStats>)> {
    let loaded = crate::weights::load(dir, dtype, device)?;
    let Some(head) = loaded.weights.tensors.get(SCORE_WEIGHT).cloned() else {
        return Err(ModelError::file(dir, format!("no `{SCORE_WEIGHT}` tensor: not a reward model folder")));
    };
    let d = loaded.config.hidden_size;
    if head.dims() != [1, d] {
        return Err(ModelError::file(dir, format!("`{SCORE_WEIGHT}` has shape {:?}, expected [1, {d}]", head.dims())));
    }
    let stats_path = dir.join(REWARD_STATS_FILE);
    let stats = if stats_path.exists() {
        let text = std::fs::read_to_string(&stats_path).map_err(|e| ModelError::file(&stats_path, e.to_string()))?;
        Some(serde_json::from_str(&text).map_err(|e| ModelError::file(&stats_path, format!("invalid: {e}")))?)
    } else {
        None
    };
    let mut weights = loaded.weights;
    weights.tensors.remove(SCORE_WEIGHT);
    let model = CausalLm::new(loaded.config, weights).map_err(|e| ModelError::file(dir, e.to_string()))?;
    Ok((model, head, stats))
}
