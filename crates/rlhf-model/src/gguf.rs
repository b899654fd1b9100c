//! GGUF files (llama.cpp's format): metadata access, and weights dequantised and renamed to HF
//! names, with llama.cpp's Q/K row permutation undone so the tensors equal HF's.

use crate::config::{Activation, Family, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::weights::{LoadedModel, ModelSource, Weights};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open GGUF file: header and metadata parsed, tensors read on demand.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut f = File::open(path).map_err(|e| ModelError::file(path, format!("cannot open: {e}")))?;
        let content =
            Content::read(&mut f).map_err(|e| ModelError::file(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self { path: path.to_path_buf(), content })
    }

    fn err(&self, msg: impl Into<String>) -> ModelError {
        ModelError::file(&self.path, msg)
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .to_string()
                .map(|s| Some(s.as_str()))
                .map_err(|_| self.err(format!("metadata `{key}` is not a string"))),
        }
    }

    /// Any integer-typed metadata value.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            _ => return Err(self.err(format!("metadata `{key}` is not a non-negative integer: {v:?}"))),
        };
        Ok(Some(n))
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(_) => self.uint(key).map(|v| v.map(|x| x as f64)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(format!("metadata `{key}` is not a bool: {v:?}"))),
        }
    }

    pub fn required_uint(&self, key: &str) -> Result<u64> {
        self.uint(key)?.ok_or_else(|| self.err(format!("missing metadata `{key}`")))
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let arr = v.to_vec().map_err(|_| self.err(format!("metadata `{key}` is not an array")))?;
        arr.iter()
            .enumerate()
            .map(|(i, x)| {
                x.to_string().cloned().map_err(|_| self.err(format!("metadata `{key}[{i}]` is not a string")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let arr = v.to_vec().map_err(|_| self.err(format!("metadata `{key}` is not an array")))?;
        arr.iter()
            .map(|x| match x {
                Value::I32(n) => Ok(*n as i64),
                Value::U32(n) => Ok(*n as i64),
                Value::I8(n) => Ok(*n as i64),
                Value::U8(n) => Ok(*n as i64),
                Value::I64(n) => Ok(*n),
                Value::U64(n) => Ok(*n as i64),
                other => Err(self.err(format!("metadata `{key}` holds a non-integer: {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor dequantised to f32 on the CPU, in candle's (row-major, HF-order) shape.
    pub fn dequantized(&self, name: &str) -> Result<Tensor> {
        self.check_tensor_info(name)?;
        let mut f = File::open(&self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        let q =
            self.content.tensor(&mut f, name, &Device::Cpu).map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
        q.dequantize(&Device::Cpu).map_err(|e| self.err(format!("tensor `{name}`: cannot dequantise: {e}")))
    }

    /// The shape a tensor's header declares must describe data that can be read: no zero or
    /// overflowing dimension (candle's reader reinterprets the bytes of an empty or wrapped-around
    /// size without checking alignment, which is undefined behaviour).
    fn check_tensor_info(&self, name: &str) -> Result<()> {
        let info =
            self.content.tensor_infos.get(name).ok_or_else(|| self.err(format!("no tensor `{name}` in the file")))?;
        let dims = info.shape.dims();
        let elems = dims.iter().try_fold(1usize, |acc, &d| if d == 0 { None } else { acc.checked_mul(d) });
        let bytes = elems.and_then(|n| (n / info.ggml_dtype.block_size()).checked_mul(info.ggml_dtype.type_size()));
        if bytes.is_none() {
            return Err(self.err(format!("tensor `{name}`: shape {dims:?} is empty or too large to read")));
        }
        Ok(())
    }

    /// The model architecture (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.str("general.architecture")?.ok_or_else(|| self.err("missing metadata `general.architecture`"))
    }
}

/// Builds the HF-equivalent config from GGUF metadata.
pub fn config_from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch = g.architecture()?.to_string();
    let k = |s: &str| format!("{arch}.{s}");
    let (family, model_type) = match arch.as_str() {
        "llama" => (Family::Llama, "llama"),
        "qwen2" => (Family::Llama, "qwen2"),
        "mistral" => (Family::Llama, "mistral"),
        "gpt2" => (Family::Gpt2, "gpt2"),
        other => return Err(g.err(format!("unknown architecture `{other}`; supported: llama, qwen2, mistral, gpt2"))),
    };
    if g.has_tensor("rope_freqs.weight") {
        return Err(g.err("per-frequency RoPE factors (`rope_freqs.weight`, Llama 3.1 scaling) are not supported in GGUF yet; use the HF folder"));
    }
    let hidden = g.required_uint(&k("embedding_length"))? as usize;
    let heads = g.required_uint(&k("attention.head_count"))? as usize;
    let kv_heads = g.uint(&k("attention.head_count_kv"))?.map_or(heads, |x| x as usize);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(g.err(format!("head_count {heads} is not a multiple of head_count_kv {kv_heads}")));
    }
    let emb =
        g.content.tensor_infos.get("token_embd.weight").ok_or_else(|| g.err("missing tensor `token_embd.weight`"))?;
    let vocab_size = emb.shape.dims().first().copied().unwrap_or(0);
    let head_dim = g.uint(&k("attention.key_length"))?.map_or(hidden / heads.max(1), |x| x as usize);
    let rope_scaling = match g.str(&k("rope.scaling.type"))? {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: g.float(&k("rope.scaling.factor"))?.ok_or_else(|| g.err("linear rope scaling without a factor"))?,
        }),
        Some(other) => return Err(g.err(format!("unsupported rope scaling `{other}`"))),
    };
    let eos = g.uint("tokenizer.ggml.eos_token_id")?.map(|x| x as u32);
    let eps_key =
        if family == Family::Gpt2 { "attention.layer_norm_epsilon" } else { "attention.layer_norm_rms_epsilon" };
    Ok(ModelConfig {
        family,
        model_type: model_type.into(),
        vocab_size,
        hidden_size: hidden,
        intermediate_size: g.uint(&k("feed_forward_length"))?.map_or(4 * hidden, |x| x as usize),
        num_hidden_layers: g.required_uint(&k("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        max_position_embeddings: g.uint(&k("context_length"))?.map_or(2048, |x| x as usize),
        norm_eps: g.float(&k(eps_key))?.unwrap_or(1e-5),
        rope_theta: g.float(&k("rope.freq_base"))?.unwrap_or(10_000.0),
        rope_scaling,
        qkv_bias: family == Family::Gpt2 || g.has_tensor("blk.0.attn_q.bias"),
        o_bias: family == Family::Gpt2 || g.has_tensor("blk.0.attn_output.bias"),
        mlp_bias: family == Family::Gpt2 || g.has_tensor("blk.0.ffn_up.bias"),
        tie_word_embeddings: !g.has_tensor("output.weight"),
        hidden_act: if family == Family::Gpt2 { Activation::GeluTanh } else { Activation::Silu },
        sliding_window: None,
        bos_token_id: g.uint("tokenizer.ggml.bos_token_id")?.map(|x| x as u32),
        eos_token_ids: eos.into_iter().collect(),
        pad_token_id: g.uint("tokenizer.ggml.padding_token_id")?.map(|x| x as u32),
    })
}

/// GGUF tensor name → (HF name, transform).
#[derive(Clone, Copy, PartialEq)]
enum Fix {
    None,
    /// Undo llama.cpp's interleaving of q/k rows for rotary embeddings, with this many heads.
    Unpermute(usize),
    /// GPT-2 Conv1D weights are stored transposed in GGUF.
    Transpose,
}

fn hf_name(gguf: &str, cfg: &ModelConfig, arch: &str) -> Option<(String, Fix)> {
    let permute = arch == "llama" || arch == "mistral";
    let (q_fix, k_fix) = if permute {
        (Fix::Unpermute(cfg.num_attention_heads), Fix::Unpermute(cfg.num_key_value_heads))
    } else {
        (Fix::None, Fix::None)
    };
    if cfg.family == Family::Gpt2 {
        let top = match gguf {
            "token_embd.weight" => Some("wte.weight"),
            "position_embd.weight" => Some("wpe.weight"),
            "output_norm.weight" => Some("ln_f.weight"),
            "output_norm.bias" => Some("ln_f.bias"),
            _ => None,
        };
        if let Some(t) = top {
            return Some((t.into(), Fix::None));
        }
        let rest = gguf.strip_prefix("blk.")?;
        let (layer, tail) = rest.split_once('.')?;
        let (name, fix) = match tail {
            "attn_norm.weight" => ("ln_1.weight", Fix::None),
            "attn_norm.bias" => ("ln_1.bias", Fix::None),
            "ffn_norm.weight" => ("ln_2.weight", Fix::None),
            "ffn_norm.bias" => ("ln_2.bias", Fix::None),
            "attn_qkv.weight" => ("attn.c_attn.weight", Fix::Transpose),
            "attn_qkv.bias" => ("attn.c_attn.bias", Fix::None),
            "attn_output.weight" => ("attn.c_proj.weight", Fix::Transpose),
            "attn_output.bias" => ("attn.c_proj.bias", Fix::None),
            "ffn_up.weight" => ("mlp.c_fc.weight", Fix::Transpose),
            "ffn_up.bias" => ("mlp.c_fc.bias", Fix::None),
            "ffn_down.weight" => ("mlp.c_proj.weight", Fix::Transpose),
            "ffn_down.bias" => ("mlp.c_proj.bias", Fix::None),
            _ => return None,
        };
        return Some((format!("h.{layer}.{name}"), fix));
    }
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some((t.into(), Fix::None));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let (module, kind) = tail.rsplit_once('.')?;
    let (name, fix) = match module {
        "attn_norm" => ("input_layernorm", Fix::None),
        "ffn_norm" => ("post_attention_layernorm", Fix::None),
        "attn_q" => ("self_attn.q_proj", q_fix),
        "attn_k" => ("self_attn.k_proj", k_fix),
        "attn_v" => ("self_attn.v_proj", Fix::None),
        "attn_output" => ("self_attn.o_proj", Fix::None),
        "ffn_gate" => ("mlp.gate_proj", Fix::None),
        "ffn_up" => ("mlp.up_proj", Fix::None),
        "ffn_down" => ("mlp.down_proj", Fix::None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{name}.{kind}"), fix))
}

/// Inverse of llama.cpp's `permute`: rows (head, j, half) → (head, half, j).
fn unpermute(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    t.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

/// Llama.cpp's `permute` (HF → GGUF row order); used by tests that write GGUF files.
pub fn permute_for_gguf(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    t.reshape((heads, 2, rows / heads / 2, cols))?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<LoadedModel> {
    let g = GgufFile::open(path)?;
    let config = config_from_gguf(&g)?;
    let arch = g.architecture()?.to_string();
    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = g.content.tensor_infos.keys().collect();
    names.sort();
    for gname in names {
        let Some((name, fix)) = hf_name(gname, &config, &arch) else {
            continue;
        };
        let t = g.dequantized(gname)?;
        let t = match fix {
            Fix::None => t,
            Fix::Unpermute(heads) => unpermute(&t, heads).map_err(|e| g.err(format!("tensor `{gname}`: {e}")))?,
            Fix::Transpose => t.t()?.contiguous()?,
        };
        tensors.insert(name, t.to_dtype(dtype)?.to_device(device)?);
    }
    Ok(LoadedModel { config, weights: Weights { tensors }, source: ModelSource::Gguf(path.to_path_buf()) })
}
