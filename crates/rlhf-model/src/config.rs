//! Model hyper-parameters, read from a Hugging Face `config.json` (or built from GGUF metadata)
//! and written back in the same format so Python `transformers` can load what we save.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The two transformer layouts we implement. Llama covers Llama, Qwen2, SmolLM and Mistral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Llama,
    Gpt2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU's gate activation (Llama family).
    Silu,
    /// GPT-2's `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
}

/// RoPE frequency scaling as HF's `rope_scaling` / `rope_parameters` describe it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    /// HF `model_type`: "llama", "qwen2", "mistral" or "gpt2".
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon (Llama) or LayerNorm epsilon (GPT-2).
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Bias on q/k/v projections (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub hidden_act: Activation,
    /// Mistral/Qwen2 sliding-window attention span, if enabled.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Reads config.json fields with errors that name the file and the key.
struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn usize(&self, key: &str) -> Result<usize> {
        match field(self.obj, key) {
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                ModelError::file(self.path, format!("`{key}` must be a non-negative integer, found {v}"))
            }),
            None => Err(ModelError::file(self.path, format!("missing required key `{key}`"))),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if field(self.obj, key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match field(self.obj, key) {
            Some(v) => {
                v.as_f64().ok_or_else(|| ModelError::file(self.path, format!("`{key}` must be a number, found {v}")))
            }
            None => Ok(default),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match field(self.obj, key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| ModelError::file(self.path, format!("`{key}` must be true or false, found {v}"))),
            None => Ok(default),
        }
    }
    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match field(self.obj, key) {
            Some(v) => {
                v.as_str().ok_or_else(|| ModelError::file(self.path, format!("`{key}` must be a string, found {v}")))
            }
            None => Ok(default),
        }
    }
    /// `eos_token_id` may be an integer or a list of integers.
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad =
            |v: &Value| ModelError::file(self.path, format!("`{key}` must be a token id or a list of them, found {v}"));
        match field(self.obj, key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_u64().map(|x| x as u32).ok_or_else(|| bad(v))).collect()
            }
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(|| bad(v)),
        }
    }
}

impl ModelConfig {
    /// Parses an HF `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, format!("cannot read: {e}")))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_hf_json(&value, path)
    }

    /// Parses the JSON of an HF `config.json`; `path` is used in error messages only.
    pub fn from_hf_json(value: &Value, path: &Path) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| ModelError::file(path, "expected a JSON object"))?;
        let r = Reader { path, obj };
        let model_type = match field(obj, "model_type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => {
                let arch = field(obj, "architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("");
                match arch {
                    a if a.starts_with("Llama") => "llama".into(),
                    a if a.starts_with("Qwen2") => "qwen2".into(),
                    a if a.starts_with("Mistral") => "mistral".into(),
                    a if a.starts_with("GPT2") => "gpt2".into(),
                    _ => {
                        return Err(ModelError::file(path, "missing `model_type` (and no known `architectures` entry)"))
                    }
                }
            }
        };
        match model_type.as_str() {
            "llama" | "qwen2" | "mistral" => Self::llama_from(&r, model_type),
            "gpt2" => Self::gpt2_from(&r),
            other => Err(ModelError::file(
                path,
                format!("unknown architecture `model_type: {other}`; supported: llama, qwen2, mistral (SmolLM uses llama), gpt2"),
            )),
        }
    }

    fn llama_from(r: &Reader, model_type: String) -> Result<Self> {
        let hidden_size = r.usize("hidden_size")?;
        let num_attention_heads = r.usize("num_attention_heads")?;
        let num_key_value_heads = r.usize_or("num_key_value_heads", num_attention_heads)?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 && field(r.obj, "head_dim").is_none() {
            return Err(ModelError::file(
                r.path,
                format!("hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"),
            ));
        }
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ModelError::file(
                r.path,
                format!("num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"),
            ));
        }
        // transformers 5 moved rope_theta and rope_scaling into `rope_parameters`.
        let rope_params = field(r.obj, "rope_parameters").and_then(Value::as_object);
        let rope_theta = match rope_params.and_then(|p| field(p, "rope_theta")).and_then(Value::as_f64) {
            Some(t) => t,
            None => r.f64_or("rope_theta", 10_000.0)?,
        };
        let scaling_obj = rope_params.or_else(|| field(r.obj, "rope_scaling").and_then(Value::as_object));
        let rope_scaling = match scaling_obj {
            Some(s) => parse_rope_scaling(s, r.path)?,
            None => None,
        };
        let qwen = model_type == "qwen2";
        let attention_bias = r.bool_or("attention_bias", false)?;
        let sliding_window = if model_type == "mistral" || (qwen && r.bool_or("use_sliding_window", false)?) {
            field(r.obj, "sliding_window").and_then(Value::as_u64).map(|w| w as usize)
        } else {
            None
        };
        let act = r.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(ModelError::file(
                r.path,
                format!("unsupported `hidden_act: {act}` for {model_type}; expected silu"),
            ));
        }
        Ok(Self {
            family: Family::Llama,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_hidden_layers: r.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim: r.usize_or("head_dim", hidden_size / num_attention_heads)?,
            max_position_embeddings: r.usize_or("max_position_embeddings", 2048)?,
            norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            qkv_bias: qwen || attention_bias,
            o_bias: attention_bias,
            mlp_bias: r.bool_or("mlp_bias", false)?,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            hidden_act: Activation::Silu,
            sliding_window,
            bos_token_id: r.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: r.token_ids("eos_token_id")?,
            pad_token_id: r.token_ids("pad_token_id")?.first().copied(),
            model_type,
        })
    }

    fn gpt2_from(r: &Reader) -> Result<Self> {
        let hidden_size = r.usize("n_embd")?;
        let heads = r.usize("n_head")?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(ModelError::file(r.path, format!("n_embd {hidden_size} is not divisible by n_head {heads}")));
        }
        let act = r.str_or("activation_function", "gelu_new")?;
        if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
            return Err(ModelError::file(
                r.path,
                format!("unsupported `activation_function: {act}`; expected gelu_new"),
            ));
        }
        Ok(Self {
            family: Family::Gpt2,
            model_type: "gpt2".into(),
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize_or("n_inner", 4 * hidden_size)?,
            num_hidden_layers: r.usize("n_layer")?,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim: hidden_size / heads,
            max_position_embeddings: r.usize_or("n_positions", 1024)?,
            norm_eps: r.f64_or("layer_norm_epsilon", 1e-5)?,
            rope_theta: 0.0,
            rope_scaling: None,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            tie_word_embeddings: true,
            hidden_act: Activation::GeluTanh,
            sliding_window: None,
            bos_token_id: r.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: r.token_ids("eos_token_id")?,
            pad_token_id: r.token_ids("pad_token_id")?.first().copied(),
        })
    }

    /// The `config.json` that Python `transformers` loads for this model.
    pub fn to_hf_json(&self) -> Value {
        let eos: Value = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        match self.family {
            Family::Gpt2 => json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_hidden_layers,
                "n_head": self.num_attention_heads,
                "n_inner": self.intermediate_size,
                "n_positions": self.max_position_embeddings,
                "n_ctx": self.max_position_embeddings,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": "gelu_new",
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                "tie_word_embeddings": true,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": eos,
                "pad_token_id": self.pad_token_id,
                "torch_dtype": "float32",
            }),
            Family::Llama => {
                let arch = match self.model_type.as_str() {
                    "qwen2" => "Qwen2ForCausalLM",
                    "mistral" => "MistralForCausalLM",
                    _ => "LlamaForCausalLM",
                };
                let mut v = json!({
                    "architectures": [arch],
                    "model_type": self.model_type,
                    "vocab_size": self.vocab_size,
                    "hidden_size": self.hidden_size,
                    "intermediate_size": self.intermediate_size,
                    "num_hidden_layers": self.num_hidden_layers,
                    "num_attention_heads": self.num_attention_heads,
                    "num_key_value_heads": self.num_key_value_heads,
                    "head_dim": self.head_dim,
                    "max_position_embeddings": self.max_position_embeddings,
                    "rms_norm_eps": self.norm_eps,
                    "rope_theta": self.rope_theta,
                    "hidden_act": "silu",
                    "attention_bias": self.o_bias,
                    "attention_dropout": 0.0,
                    "mlp_bias": self.mlp_bias,
                    "tie_word_embeddings": self.tie_word_embeddings,
                    "bos_token_id": self.bos_token_id,
                    "eos_token_id": eos,
                    "pad_token_id": self.pad_token_id,
                    "torch_dtype": "float32",
                });
                let obj = v.as_object_mut().expect("json! object");
                if let Some(s) = &self.rope_scaling {
                    obj.insert("rope_scaling".into(), rope_scaling_json(s));
                }
                if let Some(w) = self.sliding_window {
                    obj.insert("sliding_window".into(), json!(w));
                    if self.model_type == "qwen2" {
                        obj.insert("use_sliding_window".into(), json!(true));
                    }
                }
                v
            }
        }
    }

    /// Number of query heads that share one key/value head (grouped-query attention).
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

fn rope_scaling_json(s: &RopeScaling) -> Value {
    match s {
        RopeScaling::Linear { factor } => {
            json!({"rope_type": "linear", "type": "linear", "factor": factor})
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

fn parse_rope_scaling(s: &Map<String, Value>, path: &Path) -> Result<Option<RopeScaling>> {
    let kind = field(s, "rope_type").or_else(|| field(s, "type")).and_then(Value::as_str).unwrap_or("default");
    let num = |key: &str| {
        field(s, key)
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::file(path, format!("rope scaling `{kind}` needs a numeric `{key}`")))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: num("factor")? })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        })),
        other => Err(ModelError::file(
            path,
            format!("unsupported rope scaling type `{other}`; supported: default, linear, llama3"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_hf_json(&v, Path::new("config.json"))
    }

    #[test]
    fn round_trips_through_hf_json() {
        let cfg = parse(json!({
            "model_type": "qwen2", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_theta": 1e6, "tie_word_embeddings": true, "eos_token_id": [3, 4],
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        }))
        .unwrap();
        assert!(cfg.qkv_bias && !cfg.o_bias);
        assert_eq!(cfg.head_dim, 8);
        assert_eq!(cfg.eos_token_ids, vec![3, 4]);
        let again = parse(cfg.to_hf_json()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn transformers5_rope_parameters() {
        let cfg = parse(json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4,
            "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}
        }))
        .unwrap();
        assert_eq!(cfg.rope_theta, 100000.0);
        assert_eq!(cfg.rope_scaling, None);
        assert_eq!(cfg.num_key_value_heads, 4);
    }

    #[test]
    fn errors_name_the_key() {
        let err = parse(json!({"model_type": "llama", "vocab_size": 10})).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("hidden_size"), "{err}");
        let err = parse(json!({"model_type": "bert"})).unwrap_err().to_string();
        assert!(err.contains("unknown architecture") && err.contains("bert"), "{err}");
        let err = parse(json!({"model_type": "llama", "vocab_size": "x", "hidden_size": 8,
            "num_attention_heads": 2, "intermediate_size": 4, "num_hidden_layers": 1}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`vocab_size` must be a non-negative integer"), "{err}");
    }
}
