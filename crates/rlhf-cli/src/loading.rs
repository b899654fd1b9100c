//! Resolving `--model` (an HF folder, a `.gguf` file, or `default`) and loading model + tokenizer.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rlhf_data::Tokenizer;
use rlhf_model::{default_model, CausalLm};
use std::path::PathBuf;

pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    if arg == "default" {
        return default_model::locate().map_err(anyhow::Error::msg);
    }
    let p = PathBuf::from(arg);
    if !p.exists() {
        bail!("--model {arg}: no such file or folder (give an HF folder, a .gguf file, or `default`)");
    }
    Ok(p)
}

pub struct Loaded {
    pub model: CausalLm,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
}

pub fn load(arg: &str, device: &Device) -> Result<Loaded> {
    let path = resolve_model(arg)?;
    let model =
        CausalLm::load(&path, DType::F32, device).with_context(|| format!("loading model {}", path.display()))?;
    let tokenizer = Tokenizer::load(&path)
        .with_context(|| format!("loading tokenizer of {}", path.display()))?
        .with_model_config(model.config());
    Ok(Loaded { model, tokenizer, path })
}
