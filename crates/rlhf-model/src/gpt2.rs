//! GPT-2: learned positions, pre-LayerNorm blocks, fused qkv projection, GELU (tanh) MLP,
//! LM head tied to the token embedding. Conv1D weights keep HF's `[in, out]` layout.

use crate::attention::{attend, AttnContext};
use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::ops::Kernels;
use crate::weights::Weights;
use candle_core::{Result, Tensor};

struct Conv1D {
    w: Tensor,
    b: Tensor,
}

impl Conv1D {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{name}.weight"))?.clone(), b: w.get(&format!("{name}.bias"))?.clone() })
    }
    fn fwd(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w)?.broadcast_add(&self.b)
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{name}.weight"))?.clone(), b: w.get(&format!("{name}.bias"))?.clone() })
    }
}

struct Block {
    ln1: Norm,
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln2: Norm,
    fc: Conv1D,
    proj: Conv1D,
}

pub struct Gpt2 {
    cfg: ModelConfig,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
}

impl Gpt2 {
    pub fn new(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("h.{i}");
                Ok(Block {
                    ln1: Norm::load(w, &format!("{p}.ln_1"))?,
                    c_attn: Conv1D::load(w, &format!("{p}.attn.c_attn"))?,
                    c_proj: Conv1D::load(w, &format!("{p}.attn.c_proj"))?,
                    ln2: Norm::load(w, &format!("{p}.ln_2"))?,
                    fc: Conv1D::load(w, &format!("{p}.mlp.c_fc"))?,
                    proj: Conv1D::load(w, &format!("{p}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            wte: w.get("wte.weight")?.clone(),
            wpe: w.get("wpe.weight")?.clone(),
            blocks,
            ln_f: Norm::load(w, "ln_f")?,
        })
    }

    pub fn lm_head(&self) -> &Tensor {
        &self.wte
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
        let (h, hd, d) = (c.num_attention_heads, c.head_dim, c.hidden_size);
        let pos = ctx.positions_tensor(ids.device())?;
        if let Some(&max) = ctx.positions.iter().flatten().max() {
            if max as usize >= c.max_position_embeddings {
                candle_core::bail!("position {max} exceeds GPT-2's {} learned positions", c.max_position_embeddings);
            }
        }
        let mut x = (self.wte.embedding(&ids.flatten_all()?)? + self.wpe.embedding(&pos.flatten_all()?)?)?; // [N, d]
        for (li, blk) in self.blocks.iter().enumerate() {
            let hn = k.layer_norm(&x, &blk.ln1.w, &blk.ln1.b, c.norm_eps)?;
            let qkv = blk.c_attn.fwd(&hn)?; // [N, 3d]
            let split = |i: usize| -> Result<Tensor> {
                qkv.narrow(1, i * d, d)?.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()
            };
            let (q, kk, v) = (split(0)?, split(1)?, split(2)?);
            let (kk, v) = match cache.as_deref_mut() {
                Some(cache) => cache.append(li, &kk, &v)?,
                None => (kk, v),
            };
            let a = attend(k, &q, &kk, &v, &ctx.mask)?;
            x = (x + blk.c_proj.fwd(&a)?)?;
            let hn = k.layer_norm(&x, &blk.ln2.w, &blk.ln2.b, c.norm_eps)?;
            x = (x + blk.proj.fwd(&blk.fc.fwd(&hn)?.gelu()?)?)?;
        }
        k.layer_norm(&x, &self.ln_f.w, &self.ln_f.b, c.norm_eps)
    }
}
