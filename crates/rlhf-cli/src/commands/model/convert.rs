//! `rlhf convert`: write any model we can load as a standard HF folder.

use crate::loading;
use anyhow::{Context, Result};
use candle_core::Device;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    /// Output folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    loaded.model.save_hf(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    loaded.tokenizer.save_hf(&a.out)?;
    let cfg = loaded.model.config();
    let gen = json!({
        "bos_token_id": loaded.tokenizer.bos_id(),
        "eos_token_id": loaded.tokenizer.eos_ids(),
        "pad_token_id": loaded.tokenizer.pad_id(),
    });
    let path = a.out.join("generation_config.json");
    rlhf_model::io::write_atomic(&path, serde_json::to_string_pretty(&gen)?.as_bytes())?;
    println!(
        "wrote {} ({} {}, {:.1} M parameters)",
        a.out.display(),
        cfg.model_type,
        if cfg.tie_word_embeddings { "tied" } else { "untied" },
        loaded.model.weights().num_parameters() as f64 / 1e6
    );
    Ok(())
}
