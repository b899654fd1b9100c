//! `rlhf merge`: fold LoRA adapters (PEFT format) into their base model and write an HF folder.

use crate::loading;
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The base model the adapters were trained on: Hub id, HF folder, .gguf file, or `default`.
    #[arg(long)]
    model: String,
    /// Adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// Output HF folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = loading::load(&args.model, &Device::Cpu)?;
    let (adapted, _) = loaded
        .model
        .load_lora(&args.adapter)
        .with_context(|| format!("loading adapters from {}", args.adapter.display()))?;
    let merged = adapted.merge_lora().context("merging adapters")?;
    merged.save_hf(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    loaded.tokenizer.save_hf(&args.out).with_context(|| format!("writing tokenizer to {}", args.out.display()))?;
    println!("merged {} into {}", args.adapter.display(), args.out.display());
    Ok(())
}
