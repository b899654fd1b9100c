//! Named model tensors in Hugging Face naming, and loading them from an HF folder
//! (`model.safetensors` or sharded with `model.safetensors.index.json`) or a GGUF file.

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A counter of in-place weight updates in this process. Copies derived from weights (the bf16
/// decoding copy, [`crate::decode`]) remember it and are rebuilt once it moves, so a copy is
/// never used after the storage it came from was written.
pub fn epoch() -> u64 {
    EPOCH.load(std::sync::atomic::Ordering::SeqCst)
}

/// Called by whatever writes weights in place (the optimiser, after each step).
pub fn note_in_place_update() {
    EPOCH.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Tensors by HF name. Tied models hold no `lm_head.weight`.
#[derive(Clone, Default)]
pub struct Weights {
    pub tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub fn get(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| candle_core::Error::Msg(format!("model weights have no tensor `{name}`")))
    }

    pub fn opt(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The same storage without autograd tracking: rollouts and the reference model run on these
    /// so no decode graph is kept alive, yet in-place optimiser updates stay visible.
    pub fn detached(&self) -> Weights {
        Weights { tensors: self.tensors.iter().map(|(k, t)| (k.clone(), t.detach())).collect() }
    }

    /// Trainable copies: every tensor becomes a `Var` (sorted by name for a stable order).
    pub fn to_vars(&self) -> candle_core::Result<(Weights, Vec<(String, Var)>)> {
        let sorted: BTreeMap<&String, &Tensor> = self.tensors.iter().collect();
        let mut vars = Vec::with_capacity(sorted.len());
        let mut tensors = HashMap::with_capacity(sorted.len());
        for (name, t) in sorted {
            let v = Var::from_tensor(t)?;
            tensors.insert(name.clone(), v.as_tensor().clone());
            vars.push((name.clone(), v));
        }
        Ok((Weights { tensors }, vars))
    }

    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Weights> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_dtype(dtype)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Weights { tensors })
    }

    pub fn num_parameters(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// Checks that every tensor the architecture needs is present with the right shape.
    pub fn validate(&self, cfg: &ModelConfig, source: &Path) -> Result<()> {
        // Every layer holds at least one tensor: an absurd layer count in the config is refused
        // here, before the list of expected names (one entry per tensor) is built.
        if cfg.num_hidden_layers > self.tensors.len() {
            return Err(ModelError::file(
                source,
                format!(
                    "the config says num_hidden_layers = {}, but the weights hold only {} tensors",
                    cfg.num_hidden_layers,
                    self.tensors.len()
                ),
            ));
        }
        for (name, shape) in expected_shapes(cfg) {
            match self.tensors.get(&name) {
                None => {
                    return Err(ModelError::file(source, format!("missing tensor `{name}` (expected shape {shape:?})")))
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(ModelError::file(
                        source,
                        format!("tensor `{name}` has shape {:?}, but the config implies {shape:?}", t.dims()),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Every tensor of the architecture in HF naming with its shape.
pub fn expected_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v, f) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |n: String, s: Vec<usize>| out.push((n, s));
    match cfg.family {
        Family::Llama => {
            let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
            add("model.embed_tokens.weight".into(), vec![v, d]);
            add("model.norm.weight".into(), vec![d]);
            if !cfg.tie_word_embeddings {
                add("lm_head.weight".into(), vec![v, d]);
            }
            for i in 0..cfg.num_hidden_layers {
                let p = format!("model.layers.{i}");
                add(format!("{p}.input_layernorm.weight"), vec![d]);
                add(format!("{p}.post_attention_layernorm.weight"), vec![d]);
                for (n, o) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    add(format!("{p}.self_attn.{n}.weight"), vec![o, d]);
                    if cfg.qkv_bias {
                        add(format!("{p}.self_attn.{n}.bias"), vec![o]);
                    }
                }
                add(format!("{p}.self_attn.o_proj.weight"), vec![d, q]);
                if cfg.o_bias {
                    add(format!("{p}.self_attn.o_proj.bias"), vec![d]);
                }
                for (n, o, i_) in [("gate_proj", f, d), ("up_proj", f, d), ("down_proj", d, f)] {
                    add(format!("{p}.mlp.{n}.weight"), vec![o, i_]);
                    if cfg.mlp_bias {
                        add(format!("{p}.mlp.{n}.bias"), vec![o]);
                    }
                }
            }
        }
        Family::Gpt2 => {
            add("wte.weight".into(), vec![v, d]);
            add("wpe.weight".into(), vec![cfg.max_position_embeddings, d]);
            add("ln_f.weight".into(), vec![d]);
            add("ln_f.bias".into(), vec![d]);
            for i in 0..cfg.num_hidden_layers {
                let p = format!("h.{i}");
                for ln in ["ln_1", "ln_2"] {
                    add(format!("{p}.{ln}.weight"), vec![d]);
                    add(format!("{p}.{ln}.bias"), vec![d]);
                }
                // HF GPT-2 uses Conv1D: weights are [in, out].
                for (n, i_, o) in
                    [("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, f), ("mlp.c_proj", f, d)]
                {
                    add(format!("{p}.{n}.weight"), vec![i_, o]);
                    add(format!("{p}.{n}.bias"), vec![o]);
                }
            }
        }
    }
    out
}

/// Where a model came from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    HfDir(PathBuf),
    Gguf(PathBuf),
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::HfDir(p) | ModelSource::Gguf(p) => p,
        }
    }
}

pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: Weights,
    pub source: ModelSource,
}

/// Loads config and weights from an HF folder or a `.gguf` file, converted to `dtype`.
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(ModelError::file(path, "no such file or directory"));
    }
    let loaded = if path.is_dir() {
        load_hf_dir(path, dtype, device)?
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        crate::gguf::load(path, dtype, device)?
    } else {
        return Err(ModelError::file(
            path,
            "not a model: expected an HF folder (config.json + *.safetensors) or a .gguf file",
        ));
    };
    loaded.weights.validate(&loaded.config, loaded.source.path())?;
    Ok(loaded)
}

fn load_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedModel> {
    let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        shard_files(&index)?
    } else {
        return Err(ModelError::file(
            dir,
            "no model.safetensors or model.safetensors.index.json (only safetensors weights are read)",
        ));
    };
    let mut tensors = HashMap::new();
    for file in &files {
        let loaded = candle_core::safetensors::load(file, device)
            .map_err(|e| ModelError::file(file, format!("cannot read safetensors: {e}")))?;
        for (name, t) in loaded {
            // GPT2LMHeadModel saves under `transformer.`; the bare GPT2Model layout has no prefix.
            let name = name.strip_prefix("transformer.").map(str::to_string).unwrap_or(name);
            let t = t.to_dtype(dtype).map_err(|e| ModelError::file(file, format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t);
        }
    }
    if config.family == Family::Gpt2 {
        tensors.remove("lm_head.weight"); // tied to wte
    }
    Ok(LoadedModel { config, weights: Weights { tensors }, source: ModelSource::HfDir(dir.to_path_buf()) })
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::file(index, format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::file(index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::file(index, "missing `weight_map` object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| ModelError::file(index, format!("weight_map entry for `{tensor}` is not a file name")))?;
        let p = dir.join(file);
        if !files.contains(&p) {
            if !p.exists() {
                return Err(ModelError::file(index, format!("shard `{file}` (for `{tensor}`) does not exist")));
            }
            files.push(p);
        }
    }
    Ok(files)
}

/// Writes `config.json` and `model.safetensors` into `dir` (HF layout; tied heads not stored).
pub fn save_hf(config: &ModelConfig, weights: &Weights, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, format!("cannot create directory: {e}")))?;
    let cfg_text = serde_json::to_string_pretty(&config.to_hf_json()).expect("config serialises");
    crate::io::write_atomic(&dir.join("config.json"), cfg_text.as_bytes())?;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &weights.tensors {
        let name = match config.family {
            Family::Gpt2 => format!("transformer.{name}"),
            Family::Llama => name.clone(),
        };
        out.insert(name, t.detach().contiguous()?);
    }
    let path = dir.join("model.safetensors");
    let tmp = crate::io::temp_path(&path);
    candle_core::safetensors::save(&out, &tmp).map_err(|e| ModelError::file(&tmp, format!("cannot write: {e}")))?;
    crate::io::set_default_mode(&tmp).map_err(|e| ModelError::file(&tmp, format!("cannot set its mode: {e}")))?;
    std::fs::rename(&tmp, &path).map_err(|e| ModelError::file(&path, format!("cannot move into place: {e}")))?;
    Ok(())
}
