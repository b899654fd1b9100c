//! The Llama family (Llama, Qwen2, SmolLM, Mistral): RMSNorm, RoPE (rotate-half), grouped-query
//! attention with optional q/k/v (and o) biases, SwiGLU MLP, optionally tied embeddings.
//!
//! Two ways through a decoder layer, same maths: on the CPU without a KV cache each layer is one
//! fused autograd node with a hand-written backward (`llama_layer.rs`); with a cache (decoding),
//! on other devices, or with composed kernels, it is built from candle ops. LoRA adapters
//! (`lora/`) add their low-rank term on either path; a forward with LoRA dropout is composed.

use crate::attention::{attend, rope_inv_freq, rope_tables, AttnContext};
use crate::config::ModelConfig;
use crate::grads::GradSink;
use crate::kv_cache::KvCache;
use crate::llama_layer::{self as fused, FusedLayer, LayerDims, LayerParams};
use crate::lora::{Dropout, Lora, Switches};
use crate::ops::Kernels;
use crate::weights::Weights;
use candle_core::{DType, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// HF module names in [`LayerParams`] order (each weight followed by its optional bias).
const MODULES: [(usize, &str); 9] = [
    (fused::IN_NORM, "input_layernorm"),
    (fused::Q, "self_attn.q_proj"),
    (fused::K, "self_attn.k_proj"),
    (fused::V, "self_attn.v_proj"),
    (fused::O, "self_attn.o_proj"),
    (fused::POST_NORM, "post_attention_layernorm"),
    (fused::GATE, "mlp.gate_proj"),
    (fused::UP, "mlp.up_proj"),
    (fused::DOWN, "mlp.down_proj"),
];

/// The linear layers of a decoder layer (HF module paths), the modules LoRA can target.
pub(crate) const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

fn layer_params(w: &Weights, i: usize) -> Result<LayerParams> {
    let mut tensors: [Option<Tensor>; fused::NUM] = Default::default();
    let mut names: [String; fused::NUM] = Default::default();
    for (idx, module) in MODULES {
        let name = format!("model.layers.{i}.{module}.weight");
        tensors[idx] = Some(w.get(&name)?.clone());
        names[idx] = name;
        if idx != fused::IN_NORM && idx != fused::POST_NORM {
            let bias = format!("model.layers.{i}.{module}.bias");
            tensors[idx + 1] = w.opt(&bias).cloned();
            names[idx + 1] = bias;
        }
    }
    let requires_grad = tensors.each_ref().map(|t| t.as_ref().is_some_and(Tensor::is_variable));
    Ok(LayerParams { tensors, names, requires_grad, adapters: Default::default() })
}

/// What every layer of one forward pass shares: batch shape, rotary tables, attention mask.
struct LayerInputs {
    b: usize,
    t: usize,
    /// `[B, T, D/2]`
    cos: Tensor,
    sin: Tensor,
    /// `[B, 1, T, Tk]`
    mask: Tensor,
    /// Whether LoRA adapters take part in this forward, and its dropout masks if any.
    adapters_on: bool,
    dropout: Option<Dropout>,
}

pub struct Llama {
    pub(crate) cfg: ModelConfig,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<LayerParams>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Tensor,
    pub(crate) inv_freq: Vec<f64>,
    sink: Arc<GradSink>,
    lora: Option<Switches>,
    /// Activation checkpointing of the fused layers (see `llama_layer.rs`), set by the owner.
    checkpoint: Arc<AtomicBool>,
}

impl Llama {
    pub fn new(cfg: &ModelConfig, w: &Weights, sink: Arc<GradSink>, checkpoint: Arc<AtomicBool>) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers).map(|i| layer_params(w, i)).collect::<Result<Vec<_>>>()?;
        let embed = w.get("model.embed_tokens.weight")?.clone();
        let lm_head = if cfg.tie_word_embeddings { embed.clone() } else { w.get("lm_head.weight")?.clone() };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: w.get("model.norm.weight")?.clone(),
            lm_head,
            inv_freq: rope_inv_freq(cfg),
            sink,
            lora: None,
            checkpoint,
        })
    }

    /// Puts `lora`'s adapters on the linear layers they target.
    pub(crate) fn attach_lora(&mut self, lora: &Lora) {
        for (li, layer) in self.layers.iter_mut().enumerate() {
            for (idx, module) in MODULES {
                layer.adapters[idx] = lora.adapter(li, module);
            }
        }
        self.lora = Some(lora.switches.clone());
    }

    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// `ids: [B, T]` → final-norm hidden states `[B·T, d]`.
    pub fn hidden(
        &self,
        k: Kernels,
        ids: &Tensor,
        ctx: &AttnContext,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut x = self.embed.embedding(&ids.flatten_all()?)?; // [N, d]
        let (cos, sin) = rope_tables(&self.inv_freq, &ctx.positions, x.dtype(), x.device())?;
        let adapters_on = self.lora.as_ref().is_some_and(Switches::enabled);
        let training = self.layers.iter().flat_map(|l| l.adapters.iter().flatten()).any(|a| a.a.is_variable());
        let dropout = self.lora.as_ref().filter(|_| adapters_on).and_then(|s| s.dropout_for_forward(training));
        let fused = k == Kernels::Fused
            && dropout.is_none()
            && cache.is_none()
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64);
        let io = LayerInputs { b, t, cos, sin, mask: ctx.mask.clone(), adapters_on, dropout };
        for (li, l) in self.layers.iter().enumerate() {
            x = if fused {
                self.fused_layer(l, &x, &io)?
            } else {
                self.composed_layer(k, li, l, &x, &io, cache.as_deref_mut())?
            };
        }
        k.rms_norm(&x, &self.norm, self.cfg.norm_eps)
    }

    fn fused_layer(&self, l: &LayerParams, x: &Tensor, io: &LayerInputs) -> Result<Tensor> {
        let c = &self.cfg;
        let dims = LayerDims {
            b: io.b,
            t: io.t,
            d: c.hidden_size,
            h: c.num_attention_heads,
            g: c.num_key_value_heads,
            hd: c.head_dim,
            f: c.intermediate_size,
            eps: c.norm_eps,
        };
        let mut params = l.clone();
        if !io.adapters_on {
            params.adapters = Default::default();
        }
        for t in params.tensors.iter_mut().flatten() {
            *t = t.contiguous()?;
        }
        for a in params.adapters.iter_mut().flatten() {
            a.a = a.a.contiguous()?;
            a.b = a.b.contiguous()?;
        }
        // The second input puts the node in the autograd graph even when `x` is not tracked:
        // a trainable adapter if there is one (LoRA), else a weight.
        let anchor = match params.adapters.iter().flatten().find(|a| a.a.is_variable()) {
            Some(a) => a.a.clone(),
            None => l.tensors[fused::IN_NORM].clone().expect("norm weight present"),
        };
        let train = x.track_op() || anchor.is_variable() || l.tensors.iter().flatten().any(Tensor::is_variable);
        let op = FusedLayer::new(
            dims,
            params,
            io.cos.contiguous()?,
            io.sin.contiguous()?,
            io.mask.contiguous()?,
            self.sink.clone(),
            train,
            train && self.checkpoint.load(Ordering::Relaxed),
        );
        x.contiguous()?.apply_op2(&anchor, op)
    }

    fn composed_layer(
        &self,
        k: Kernels,
        li: usize,
        l: &LayerParams,
        x: &Tensor,
        io: &LayerInputs,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, cos, sin, mask) = (io.b, io.t, &io.cos, &io.sin, &io.mask);
        let (h, g, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let w = |i: usize| l.tensors[i].as_ref().expect("weight present");
        let proj = |i: usize, x: &Tensor| -> Result<Tensor> {
            let y = k.linear(x, w(i), l.tensors[i + 1].as_ref())?;
            match l.adapters[i].as_ref().filter(|_| io.adapters_on) {
                None => Ok(y),
                Some(adapter) => {
                    let mask = io.dropout.as_ref().map(|d| d.mask(li, i, x)).transpose()?;
                    y + adapter.delta(k, x, mask.as_ref())?
                }
            }
        };
        let hn = k.rms_norm(x, w(fused::IN_NORM), c.norm_eps)?;
        let q = k.rope(&proj(fused::Q, &hn)?.reshape((b, t, h, hd))?, cos, sin)?; // [B,H,T,D]
        let kk = k.rope(&proj(fused::K, &hn)?.reshape((b, t, g, hd))?, cos, sin)?; // [B,G,T,D]
        let v = proj(fused::V, &hn)?.reshape((b, t, g, hd))?.transpose(1, 2)?.contiguous()?;
        let (kk, v) = match cache {
            Some(cache) => cache.append(li, &kk, &v)?,
            None => (kk, v),
        };
        let a = attend(k, &q, &kk, &v, mask)?; // [N, H·D]
        let x = (x + proj(fused::O, &a)?)?;
        let hn = k.rms_norm(&x, w(fused::POST_NORM), c.norm_eps)?;
        let m = k.swiglu(&proj(fused::GATE, &hn)?, &proj(fused::UP, &hn)?)?;
        x + proj(fused::DOWN, &m)?
    }
}
