//! Adapters on disk in PEFT's format: `adapter_config.json` and `adapter_model.safetensors`
//! with `base_model.model.<module>.lora_{A,B}.weight` tensors, `A: [r, in]`, `B: [out, r]`.
//! Python `PeftModel.from_pretrained(base, dir)` loads what `save_lora` writes and vice versa.

use super::{sites, LoraConfig, LLAMA_TARGET_MODULES};
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use candle_core::Var;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHTS_FILE: &str = "adapter_model.safetensors";

impl CausalLm {
    /// Writes this model's adapters as a PEFT LoRA folder.
    pub fn save_lora(&self, dir: &Path) -> Result<()> {
        let lora =
            self.lora().ok_or_else(|| ModelError::Invalid("save_lora: this model has no LoRA adapters".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, format!("cannot create directory: {e}")))?;
        let text = serde_json::to_string_pretty(&peft_config_json(&lora.cfg)).expect("adapter config serialises");
        crate::io::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())?;
        let tensors = lora
            .tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.detach().contiguous()?)))
            .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
        let path = dir.join(WEIGHTS_FILE);
        let tmp = crate::io::temp_path(&path);
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| ModelError::file(&tmp, format!("cannot write: {e}")))?;
        crate::io::set_default_mode(&tmp).map_err(|e| ModelError::file(&tmp, format!("cannot set its mode: {e}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| ModelError::file(&path, format!("cannot move into place: {e}")))
    }

    /// This (base) model with the adapters of a PEFT LoRA folder, trainable like
    /// [`Self::with_lora`]'s (call `detached()` for inference).
    pub fn load_lora(&self, dir: &Path) -> Result<(CausalLm, Vec<(String, Var)>)> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(ModelError::file(dir, format!("no {CONFIG_FILE}: not a PEFT LoRA adapter folder")));
        }
        let cfg = read_peft_config(&config_path)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.exists() {
            return Err(ModelError::file(dir, format!("no {WEIGHTS_FILE} (only safetensors adapters are read)")));
        }
        let mut loaded = candle_core::safetensors::load(&weights_path, self.device())
            .map_err(|e| ModelError::file(&weights_path, format!("cannot read safetensors: {e}")))?;
        let bad = |msg: String| ModelError::file(&weights_path, msg);
        let mut tensors = BTreeMap::new();
        for site in
            sites(self.config(), self.weights(), &cfg).map_err(|e| ModelError::file(&config_path, e.to_string()))?
        {
            let expected = [(&site.a_name, [cfg.r, site.in_features]), (&site.b_name, [site.out_features, cfg.r])];
            for (name, shape) in expected {
                let t = loaded.remove(name).ok_or_else(|| bad(format!("missing tensor `{name}` (shape {shape:?})")))?;
                if t.dims() != shape {
                    return Err(bad(format!(
                        "tensor `{name}` has shape {:?}, but r = {} and the base model imply {shape:?}",
                        t.dims(),
                        cfg.r
                    )));
                }
                tensors.insert(name.clone(), t.to_dtype(self.dtype())?);
            }
        }
        if let Some(extra) = loaded.keys().min() {
            return Err(bad(format!(
                "unexpected tensor `{extra}`: not an adapter of the configured target modules ({} in all)",
                loaded.len()
            )));
        }
        self.attach_adapters(cfg, tensors, 0)
    }
}

fn peft_config_json(cfg: &LoraConfig) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": cfg.base_model_name_or_path,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// Reads PEFT's `adapter_config.json`, rejecting the LoRA variants we do not implement.
fn read_peft_config(path: &Path) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("not valid JSON: {e}")))?;
    let bad = |msg: String| ModelError::file(path, msg);
    let field = |key: &str| v.get(key).filter(|x| !x.is_null());
    if let Some(t) = field("peft_type").and_then(Value::as_str).filter(|t| *t != "LORA") {
        return Err(bad(format!("peft_type is `{t}`, only LORA adapters are supported")));
    }
    let r = field("r").and_then(Value::as_u64).ok_or_else(|| bad("missing or invalid `r`".into()))? as usize;
    // PEFT's defaults for absent fields.
    let alpha =
        field("lora_alpha").map_or(Some(8.0), Value::as_f64).ok_or_else(|| bad("invalid `lora_alpha`".into()))?;
    let dropout =
        field("lora_dropout").map_or(Some(0.0), Value::as_f64).ok_or_else(|| bad("invalid `lora_dropout`".into()))?;
    let target_modules = match field("target_modules") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad("target_modules must hold strings".into())))
            .collect::<Result<Vec<_>>>()?,
        Some(Value::String(s)) if s == "all-linear" => LLAMA_TARGET_MODULES.iter().map(|s| s.to_string()).collect(),
        Some(other) => {
            return Err(bad(format!("target_modules {other} is not supported (give a list of module names)")))
        }
        None => return Err(bad("missing `target_modules`".into())),
    };
    for (key, ok) in [
        ("fan_in_fan_out", field("fan_in_fan_out").is_none_or(|x| x == &json!(false))),
        ("use_rslora", field("use_rslora").is_none_or(|x| x == &json!(false))),
        ("use_dora", field("use_dora").is_none_or(|x| x == &json!(false))),
        ("bias", field("bias").is_none_or(|x| x == &json!("none"))),
        ("modules_to_save", field("modules_to_save").is_none_or(|x| x == &json!([]))),
        ("layers_to_transform", field("layers_to_transform").is_none()),
        ("rank_pattern", field("rank_pattern").is_none_or(|x| x == &json!({}))),
        ("alpha_pattern", field("alpha_pattern").is_none_or(|x| x == &json!({}))),
        ("lora_bias", field("lora_bias").is_none_or(|x| x == &json!(false))),
        ("exclude_modules", field("exclude_modules").is_none()),
        ("layer_replication", field("layer_replication").is_none()),
        ("target_parameters", field("target_parameters").is_none_or(|x| x == &json!([]))),
    ] {
        if !ok {
            return Err(bad(format!("`{key}` = {} is not supported by rlhf's LoRA", v[key])));
        }
    }
    let base_model_name_or_path = field("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
    let cfg = LoraConfig { r, alpha, dropout, target_modules, base_model_name_or_path };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}
