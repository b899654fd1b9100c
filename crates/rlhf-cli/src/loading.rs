//! Resolving model and dataset arguments and loading model + tokenizer. A model is `default`,
//! an HF folder, a `.gguf` file, or a Hub id `ORG/NAME[@REVISION]`; a dataset is a `.jsonl` /
//! `.parquet` file or a Hub id `ORG/NAME[@REVISION][:SPLIT]`. A local path always wins over an
//! id of the same spelling.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use rlhf_data::{LoadOptions, Loaded as Examples, Tokenizer};
use rlhf_hub::{DatasetRef, Hub, RepoRef, Resolved};
use rlhf_model::{default_model, CausalLm};
use std::path::{Path, PathBuf};

/// The local path of a model: the default model's file, the path itself, or the Hub snapshot
/// folder (downloaded into the shared cache when missing).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    if arg == "default" {
        return default_model::locate().map_err(anyhow::Error::msg);
    }
    let path = PathBuf::from(arg);
    if path.exists() {
        return Ok(path);
    }
    let id = RepoRef::parse(arg).filter(|_| !has_extension(arg, &["gguf", "safetensors"]));
    let Some(id) = id else {
        bail!("{arg}: no such file or folder (give an HF folder, a .gguf file, a Hub id ORG/NAME[@REVISION], or `default`)");
    };
    from_hub(arg, "file or folder", |hub| hub.model(&id))
}

/// The local files of a dataset: the path itself, or a Hub split's Parquet shards. A path
/// ending in a dataset extension is always a file, so a mistyped file name is reported as a
/// missing file rather than looked up on the Hub.
pub fn dataset_files(arg: &str) -> Result<Vec<PathBuf>> {
    let path = PathBuf::from(arg);
    let id = DatasetRef::parse(arg).filter(|_| !has_extension(arg, &["jsonl", "json", "parquet"]));
    let (false, Some(id)) = (path.exists(), id) else { return Ok(vec![path]) };
    from_hub(arg, "file", |hub| hub.dataset(&id))
}

/// Looks `arg` up on the Hub (it is no local `what`), printing the warning of a cached answer.
fn from_hub<T>(arg: &str, what: &str, look_up: impl FnOnce(&Hub) -> rlhf_hub::Result<Resolved<T>>) -> Result<T> {
    let resolved = Hub::from_env()
        .and_then(|hub| look_up(&hub))
        .map_err(|e| anyhow!("{arg}: not a local {what}, so it was looked up on the Hub: {e}"))?;
    if let Some(w) = resolved.warning {
        eprintln!("warning: {w}");
    }
    Ok(resolved.value)
}

/// Loads every file of a dataset argument with `loader` (one of `rlhf_data::load_*`), in order;
/// each example and bad record keeps the file it came from.
pub fn load_dataset<T>(
    arg: &str,
    tok: &Tokenizer,
    opts: &LoadOptions,
    loader: impl Fn(&Path, &Tokenizer, &LoadOptions) -> rlhf_data::Result<Examples<T>>,
) -> Result<Examples<T>> {
    let mut all = Examples { examples: Vec::new(), skipped: Vec::new() };
    for file in dataset_files(arg)? {
        let loaded = loader(&file, tok, opts)?;
        all.examples.extend(loaded.examples);
        all.skipped.extend(loaded.skipped);
    }
    Ok(all)
}

fn has_extension(arg: &str, extensions: &[&str]) -> bool {
    Path::new(arg)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
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
