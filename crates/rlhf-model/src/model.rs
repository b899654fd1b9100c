//! `CausalLm`: one handle over the implemented families, owning its named weights so it can be
//! detached for rollouts, turned into trainable `Var`s, or saved as an HF folder.

use crate::attention::AttnContext;
use crate::config::{Family, ModelConfig};
use crate::decode::DecodeWeights;
use crate::error::Result as ModelResult;
use crate::gpt2::Gpt2;
use crate::grads::{GradSink, Grads};
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::lora::Lora;
use crate::ops::Kernels;
use crate::weights::{self, Weights};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

enum Arch {
    Llama(Llama),
    Gpt2(Gpt2),
}

pub struct CausalLm {
    config: ModelConfig,
    weights: Weights,
    arch: Arch,
    kernels: Kernels,
    /// Weight gradients written by fused layers (see `grads.rs`).
    sink: Arc<GradSink>,
    /// LoRA adapters on top of (detached) `weights`, see `lora/`.
    lora: Option<Lora>,
    /// Activation checkpointing (see [`Self::set_activation_checkpointing`]).
    checkpoint: Arc<AtomicBool>,
    /// The bf16 decoding copy of the weights while anyone holds it, and a hold of our own on
    /// it when the weights are frozen (see [`Self::bf16_decoder`]).
    decoder: Mutex<(Weak<DecodeWeights>, Option<Arc<DecodeWeights>>)>,
}

impl CausalLm {
    pub fn new(config: ModelConfig, weights: Weights) -> Result<Self> {
        Self::from_parts(config, weights, Kernels::default(), None)
    }

    /// A model with optional LoRA adapters (built by `lora/`).
    pub(crate) fn from_parts(
        config: ModelConfig,
        weights: Weights,
        kernels: Kernels,
        lora: Option<Lora>,
    ) -> Result<Self> {
        let sink = Arc::new(GradSink::default());
        let checkpoint = Arc::new(AtomicBool::new(false));
        let arch = match config.family {
            Family::Llama => {
                let mut llama = Llama::new(&config, &weights, sink.clone(), checkpoint.clone())?;
                if let Some(lora) = &lora {
                    llama.attach_lora(lora);
                }
                Arch::Llama(llama)
            }
            Family::Gpt2 if lora.is_some() => candle_core::bail!("LoRA is implemented for the Llama family"),
            Family::Gpt2 => Arch::Gpt2(Gpt2::new(&config, &weights)?),
        };
        Ok(Self { config, weights, arch, kernels, sink, lora, checkpoint, decoder: Mutex::new((Weak::new(), None)) })
    }

    /// Activation checkpointing for training forwards: fused Llama layers keep only their input
    /// and recompute the rest in the backward pass (the same gradients, bit for bit, for one
    /// more forward; the activation memory of one layer instead of all). Composed paths (GPT-2,
    /// LoRA dropout, other devices) keep their activations either way.
    pub fn set_activation_checkpointing(&self, on: bool) {
        self.checkpoint.store(on, Ordering::Relaxed);
    }

    pub(crate) fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// Loads an HF folder or GGUF file (see [`weights::load`]).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> ModelResult<Self> {
        let loaded = weights::load(path, dtype, device)?;
        Ok(Self::new(loaded.config, loaded.weights)?)
    }

    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn dtype(&self) -> DType {
        self.lm_head().dtype()
    }

    pub fn device(&self) -> &Device {
        self.lm_head().device()
    }

    /// A model over the same storage with no autograd tracking (for sampling and references).
    /// LoRA adapters stay on (detached too), with a copy of this model's adapter switches.
    pub fn detached(&self) -> Result<Self> {
        let lora = self.lora.as_ref().map(Lora::detached);
        Self::from_parts(self.config.clone(), self.weights.detached(), self.kernels, lora)
    }

    /// A trainable copy: the returned vars are the parameters, in name order.
    pub fn trainable(&self) -> Result<(Self, Vec<(String, Var)>)> {
        if self.lora.is_some() {
            candle_core::bail!("trainable() on a LoRA model: train the adapters from with_lora, or merge_lora() first");
        }
        let (w, vars) = self.weights.to_vars()?;
        Ok((Self::new(self.config.clone(), w)?.with_kernels(self.kernels), vars))
    }

    /// All parameter gradients of the last backward pass(es): `store` from `loss.backward()`
    /// plus what fused layers accumulated (LoRA adapters: under their PEFT names). Gradients accumulate until [`Self::zero_grad`].
    pub fn grads<'a>(&'a self, store: &'a GradStore) -> Grads<'a> {
        Grads { store, sink: Some(&self.sink) }
    }

    /// Forgets accumulated fused-layer gradients (call after each optimiser step).
    pub fn zero_grad(&self) {
        self.sink.clear();
    }

    #[cfg(test)]
    pub(crate) fn llama(&self) -> Option<&Llama> {
        match &self.arch {
            Arch::Llama(l) => Some(l),
            _ => None,
        }
    }

    /// The bf16 copy of the weights that decoding steps read in bf16 precision (Llama family on
    /// the CPU with fused kernels and no LoRA adapters; `None` elsewhere, and in fp32, where
    /// decoding runs through the model itself). Made on first use and again whenever weights
    /// were written in place since ([`weights::epoch`]): after every optimiser step. A frozen
    /// model (serving, evaluation) keeps its copy; a trainable one keeps it only while a
    /// generation holds it — it is stale after the next step anyway, and the update phase then
    /// runs without its 2 bytes per parameter.
    pub fn bf16_decoder(&self) -> Result<Option<Arc<DecodeWeights>>> {
        let eligible = crate::ops::precision::current() == crate::ops::precision::Precision::Bf16
            && self.kernels == Kernels::Fused
            && self.lora.is_none()
            && self.device().is_cpu()
            && self.dtype() == DType::F32;
        let Arch::Llama(llama) = &self.arch else { return Ok(None) };
        if !eligible {
            return Ok(None);
        }
        // Frozen weights (no `Var`) cannot be written in place: their copy never goes stale,
        // whatever other models in the process train.
        let frozen = !self.weights.tensors.values().any(Tensor::is_variable);
        let epoch = weights::epoch();
        let mut slot = self.decoder.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(d) = slot.0.upgrade().filter(|d| frozen || d.epoch == epoch) {
            return Ok(Some(d));
        }
        slot.1 = None; // a stale copy goes before the new one is made
        let fresh = Arc::new(DecodeWeights::new(llama, epoch)?);
        slot.0 = Arc::downgrade(&fresh);
        if frozen {
            slot.1 = Some(fresh.clone());
        }
        Ok(Some(fresh))
    }

    pub fn save_hf(&self, dir: &Path) -> ModelResult<()> {
        weights::save_hf(&self.config, &self.weights, dir)
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, capacity)
    }

    fn lm_head(&self) -> &Tensor {
        match &self.arch {
            Arch::Llama(m) => m.lm_head(),
            Arch::Gpt2(m) => m.lm_head(),
        }
    }

    /// Final hidden states `[B, T, d]` for `ids: [B, T]`. `attention_mask: [B, past + T]` marks
    /// real tokens (1) and padding (0), including tokens already in `cache`.
    pub fn hidden(&self, ids: &Tensor, attention_mask: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        if attention_mask.dims2()? != (b, past + t) {
            candle_core::bail!(
                "attention mask {:?} must be [batch {b}, cached {past} + new {t}]",
                attention_mask.dims()
            );
        }
        let ctx = AttnContext::new(attention_mask, t, self.config.sliding_window, self.dtype())?;
        self.hidden_in(ids, &ctx, cache)
    }

    fn hidden_in(&self, ids: &Tensor, ctx: &AttnContext, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = match &self.arch {
            Arch::Llama(m) => m.hidden(self.kernels, ids, ctx, cache)?,
            Arch::Gpt2(m) => m.hidden(self.kernels, ids, ctx, cache)?,
        };
        h.reshape((b, t, self.config.hidden_size))
    }

    /// Final hidden states `[B, T, d]` under a prepared attention context (packed rows, see
    /// [`crate::packing`]): no KV cache, positions and mask as `ctx` gives them.
    pub fn hidden_with_context(&self, ids: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if ctx.batch() != b || ctx.new_tokens() != t || ctx.mask.dims() != [b, 1, t, t] {
            candle_core::bail!("attention context {:?} does not fit ids [{b}, {t}]", ctx.mask.dims());
        }
        self.hidden_in(ids, ctx, None)
    }

    /// `hidden: [N, d]` → logits `[N, V]` (no reshape of the large output: in training every
    /// reshape of the logits would cost an extra gradient buffer of the same size).
    pub fn logits_2d(&self, hidden: &Tensor) -> Result<Tensor> {
        self.kernels.linear(hidden, self.lm_head(), None)
    }

    /// `hidden: [..., d]` → logits `[..., V]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let flat = hidden.reshape(((), d))?;
        let logits = self.kernels.linear(&flat, self.lm_head(), None)?;
        let mut out = dims;
        *out.last_mut().expect("hidden has a last dim") = self.config.vocab_size;
        logits.reshape(out)
    }

    /// Logits `[B, T, V]` for every position.
    pub fn forward(&self, ids: &Tensor, attention_mask: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.logits(&self.hidden(ids, attention_mask, cache)?)
    }
}
