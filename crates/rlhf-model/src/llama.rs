//! The Llama family (Llama, Qwen2, SmolLM, Mistral): RMSNorm, RoPE (rotate-half), grouped-query
//! attention with optional q/k/v (and o) biases, SwiGLU MLP, optionally tied embeddings.

use crate::attention::{attend, rope_inv_freq, rope_tables, AttnContext};
use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::ops::Kernels;
use crate::weights::Weights;
use candle_core::{Result, Tensor};

struct Proj {
    w: Tensor,
    b: Option<Tensor>,
}

impl Proj {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            w: w.get(&format!("{name}.weight"))?.clone(),
            b: w.opt(&format!("{name}.bias")).cloned(),
        })
    }
    fn fwd(&self, k: Kernels, x: &Tensor) -> Result<Tensor> {
        k.linear(x, &self.w, self.b.as_ref())
    }
}

struct Layer {
    input_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    post_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Vec<f64>,
}

impl Llama {
    pub fn new(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Layer {
                    input_norm: w.get(&format!("{p}.input_layernorm.weight"))?.clone(),
                    q: Proj::load(w, &format!("{p}.self_attn.q_proj"))?,
                    k: Proj::load(w, &format!("{p}.self_attn.k_proj"))?,
                    v: Proj::load(w, &format!("{p}.self_attn.v_proj"))?,
                    o: Proj::load(w, &format!("{p}.self_attn.o_proj"))?,
                    post_norm: w
                        .get(&format!("{p}.post_attention_layernorm.weight"))?
                        .clone(),
                    gate: Proj::load(w, &format!("{p}.mlp.gate_proj"))?,
                    up: Proj::load(w, &format!("{p}.mlp.up_proj"))?,
                    down: Proj::load(w, &format!("{p}.mlp.down_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = w.get("model.embed_tokens.weight")?.clone();
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            w.get("lm_head.weight")?.clone()
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: w.get("model.norm.weight")?.clone(),
            lm_head,
            inv_freq: rope_inv_freq(cfg),
        })
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
        let c = &self.cfg;
        let (b, t) = ids.dims2()?;
        let (h, g, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let mut x = self.embed.embedding(&ids.flatten_all()?)?; // [N, d]
        let (cos, sin) = rope_tables(&self.inv_freq, &ctx.positions, x.dtype(), x.device())?;
        for (li, l) in self.layers.iter().enumerate() {
            let hn = k.rms_norm(&x, &l.input_norm, c.norm_eps)?;
            let q = k.rope(&l.q.fwd(k, &hn)?.reshape((b, t, h, hd))?, &cos, &sin)?; // [B,H,T,D]
            let kk = k.rope(&l.k.fwd(k, &hn)?.reshape((b, t, g, hd))?, &cos, &sin)?; // [B,G,T,D]
            let v =
                l.v.fwd(k, &hn)?
                    .reshape((b, t, g, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
            let (kk, v) = match cache.as_deref_mut() {
                Some(cache) => cache.append(li, &kk, &v)?,
                None => (kk, v),
            };
            let a = attend(k, &q, &kk, &v, &ctx.mask)?; // [N, H·D]
            x = (x + l.o.fwd(k, &a)?)?;
            let hn = k.rms_norm(&x, &l.post_norm, c.norm_eps)?;
            let m = k.swiglu(&l.gate.fwd(k, &hn)?, &l.up.fwd(k, &hn)?)?;
            x = (x + l.down.fwd(k, &m)?)?;
        }
        k.rms_norm(&x, &self.norm, c.norm_eps)
    }
}
