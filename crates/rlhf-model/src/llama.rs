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
use crate::llama_layer::{FusedLayer, LayerDims, LayerParams, Linear, Norm};
use crate::lora::{Dropout, Lora, Switches};
use crate::ops::Kernels;
use crate::weights::Weights;
use candle_core::{DType, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    let norm = |module: &str| -> Result<Norm> {
        let name = format!("model.layers.{i}.{module}.weight");
        let weight = w.get(&name)?.clone();
        Ok(Norm { requires_grad: weight.is_variable(), weight, name })
    };
    let linear = |module: &str, dropout_stream: usize| -> Result<Linear> {
        let (weight_name, bias_name) =
            (format!("model.layers.{i}.{module}.weight"), format!("model.layers.{i}.{module}.bias"));
        let weight = w.get(&weight_name)?.clone();
        let bias = w.opt(&bias_name).cloned();
        Ok(Linear {
            weight_grad: weight.is_variable(),
            bias_grad: bias.as_ref().is_some_and(Tensor::is_variable),
            weight,
            bias,
            weight_name,
            bias_name,
            adapter: None,
            dropout_stream,
        })
    };
    Ok(LayerParams {
        input_layernorm: norm("input_layernorm")?,
        q_proj: linear("self_attn.q_proj", 1)?,
        k_proj: linear("self_attn.k_proj", 3)?,
        v_proj: linear("self_attn.v_proj", 5)?,
        o_proj: linear("self_attn.o_proj", 7)?,
        post_attention_layernorm: norm("post_attention_layernorm")?,
        gate_proj: linear("mlp.gate_proj", 10)?,
        up_proj: linear("mlp.up_proj", 12)?,
        down_proj: linear("mlp.down_proj", 14)?,
    })
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
            for (module, linear) in layer.linears_mut() {
                linear.adapter = lora.adapter(li, module);
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
        let training = self
            .layers
            .iter()
            .flat_map(|l| l.linears())
            .filter_map(|(_, linear)| linear.adapter.as_ref())
            .any(|a| a.a.is_variable());
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
            params.linears_mut().into_iter().for_each(|(_, linear)| linear.adapter = None);
        }
        params.map_tensors(Tensor::contiguous)?;
        // The second input puts the node in the autograd graph even when `x` is not tracked:
        // a trainable adapter if there is one (LoRA), else a weight.
        let trainable_adapter =
            params.linears().into_iter().filter_map(|(_, linear)| linear.adapter.as_ref()).find(|a| a.a.is_variable());
        let anchor = match trainable_adapter {
            Some(a) => a.a.clone(),
            None => l.input_layernorm.weight.clone(),
        };
        let train = x.track_op() || anchor.is_variable() || l.tensors().any(Tensor::is_variable);
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
        let proj = |linear: &Linear, x: &Tensor| -> Result<Tensor> {
            let y = k.linear(x, &linear.weight, linear.bias.as_ref())?;
            match linear.adapter.as_ref().filter(|_| io.adapters_on) {
                None => Ok(y),
                Some(adapter) => {
                    let mask = io.dropout.as_ref().map(|d| d.mask(li, linear.dropout_stream, x)).transpose()?;
                    y + adapter.delta(k, x, mask.as_ref())?
                }
            }
        };
        let hn = k.rms_norm(x, &l.input_layernorm.weight, c.norm_eps)?;
        let q = k.rope(&proj(&l.q_proj, &hn)?.reshape((b, t, h, hd))?, cos, sin)?; // [B,H,T,D]
        let kk = k.rope(&proj(&l.k_proj, &hn)?.reshape((b, t, g, hd))?, cos, sin)?; // [B,G,T,D]
        let v = proj(&l.v_proj, &hn)?.reshape((b, t, g, hd))?.transpose(1, 2)?.contiguous()?;
        let (kk, v) = match cache {
            Some(cache) => cache.append(li, &kk, &v)?,
            None => (kk, v),
        };
        let a = attend(k, &q, &kk, &v, mask)?; // [N, H·D]
        let x = (x + proj(&l.o_proj, &a)?)?;
        let hn = k.rms_norm(&x, &l.post_attention_layernorm.weight, c.norm_eps)?;
        let m = k.swiglu(&proj(&l.gate_proj, &hn)?, &proj(&l.up_proj, &hn)?)?;
        x + proj(&l.down_proj, &m)?
    }
}
