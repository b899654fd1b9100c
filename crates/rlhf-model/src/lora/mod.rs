//! LoRA adapters (Hu et al., 2021) for the Llama family, laid out as PEFT lays them out so that
//! adapters move between `rlhf` and Python `peft` unchanged.
//!
//! Each targeted linear `W [out, in]` gets `A [r, in]` (PEFT's init: kaiming-uniform with
//! a = √5, i.e. U(−1/√in, 1/√in)) and `B [out, r]` (zeros), and computes
//! `y = x Wᵀ + s · dropout(x) Aᵀ Bᵀ` with `s = alpha / r`. Base weights stay detached tensors
//! sharing storage with the model they came from; only A and B are `Var`s.
//!
//! Where the low-rank term is computed:
//! * in the fused CPU layer (`llama_layer.rs` with [`fused::LowRank`]), unmerged; A and B
//!   gradients go to the model's `GradSink` under their PEFT names;
//! * in the composed layer, with candle ops; gradients land in candle's `GradStore`.
//!
//! Dropout is not part of the fused layer: a forward that applies dropout (p > 0, adapters
//! trainable, dropout active) takes the composed path automatically. RL phases switch dropout
//! off with `set_lora_dropout_active(false)`; detached views never apply it.

mod fused;
mod model;
mod peft;

pub(crate) use fused::LowRank;

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::ops::Kernels;
use crate::weights::Weights;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// PEFT's module names for the Llama family's linear layers (the default targets).
pub const LLAMA_TARGET_MODULES: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// LoRA hyper-parameters (PEFT's `LoraConfig` names in `adapter_config.json`: `lora_alpha`,
/// `lora_dropout`). Defaults: r = 16, alpha = 32, dropout = 0.05, all seven linear layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names as PEFT matches them: a name matches a module path ending in it
    /// (`q_proj`, `self_attn.q_proj`).
    pub target_modules: Vec<String>,
    /// Written to `adapter_config.json` so PEFT knows which base model the adapter belongs to.
    pub base_model_name_or_path: Option<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: LLAMA_TARGET_MODULES.iter().map(|s| s.to_string()).collect(),
            base_model_name_or_path: None,
        }
    }
}

impl LoraConfig {
    /// `alpha / r`, the factor on the low-rank term.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(ModelError::Invalid("LoRA rank r must be at least 1".into()));
        }
        if !self.alpha.is_finite() {
            return Err(ModelError::Invalid(format!("LoRA alpha must be finite, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Invalid(format!("LoRA dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.target_modules.is_empty() {
            return Err(ModelError::Invalid("LoRA target_modules is empty".into()));
        }
        Ok(())
    }
}

/// PEFT's tensor name for an adapter matrix (`which` is `A` or `B`) of `module` in `layer`.
pub fn peft_name(layer: usize, module: &str, which: char) -> String {
    format!("base_model.model.model.layers.{layer}.{module}.lora_{which}.weight")
}

/// One adapted linear layer of the model.
pub(crate) struct Site {
    /// The frozen weight's HF name.
    pub base: String,
    pub a_name: String,
    pub b_name: String,
    pub out_features: usize,
    pub in_features: usize,
}

/// Every linear layer `cfg` targets, in layer order. Errors name a target that matches nothing.
pub(crate) fn sites(model: &ModelConfig, weights: &Weights, cfg: &LoraConfig) -> Result<Vec<Site>> {
    if model.family != Family::Llama {
        return Err(ModelError::Invalid(format!(
            "LoRA is implemented for the Llama family (Llama, Qwen2, Mistral, SmolLM), not `{}`",
            model.model_type
        )));
    }
    cfg.validate()?;
    let linear = crate::llama::LINEAR_MODULES;
    let matches = |module: &str, target: &str| module == target || module.ends_with(&format!(".{target}"));
    for target in &cfg.target_modules {
        if !linear.iter().any(|m| matches(m, target)) {
            return Err(ModelError::Invalid(format!(
                "LoRA target module `{target}` does not exist in a Llama-family model (linear layers: {})",
                LLAMA_TARGET_MODULES.join(", ")
            )));
        }
    }
    let mut out = Vec::new();
    for layer in 0..model.num_hidden_layers {
        for module in linear.iter().copied().filter(|m| cfg.target_modules.iter().any(|t| matches(m, t))) {
            let base = format!("model.layers.{layer}.{module}.weight");
            let (out_features, in_features) = weights.get(&base)?.dims2()?;
            out.push(Site {
                a_name: peft_name(layer, module, 'A'),
                b_name: peft_name(layer, module, 'B'),
                base,
                out_features,
                in_features,
            });
        }
    }
    Ok(out)
}

/// Fresh adapters: A ~ U(−1/√in, 1/√in) from `seed`, B = 0 (so the model starts as the base).
pub(crate) fn init_adapters(
    sites: &[Site],
    r: usize,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<BTreeMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for s in sites {
        let bound = 1.0 / (s.in_features as f64).sqrt();
        let a: Vec<f64> = (0..r * s.in_features).map(|_| rng.random_range(-bound..bound)).collect();
        out.insert(s.a_name.clone(), Tensor::from_vec(a, (r, s.in_features), device)?.to_dtype(dtype)?);
        out.insert(s.b_name.clone(), Tensor::zeros((s.out_features, r), dtype, device)?);
    }
    Ok(out)
}

/// One adapter as a decoder layer sees it.
#[derive(Clone)]
pub(crate) struct Adapter {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    pub scale: f64,
    pub a_name: String,
    pub b_name: String,
}

impl Adapter {
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// `s · (x ⊙ mask) Aᵀ Bᵀ`: `[N, out]` for `x: [N, in]` (`mask` is the scaled dropout mask).
    pub fn delta(&self, k: Kernels, x: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let x = match mask {
            Some(m) => x.mul(m)?,
            None => x.clone(),
        };
        let down = k.linear(&x, &self.a, None)?; // [N, r]
        k.linear(&(down * self.scale)?, &self.b, None)
    }
}

/// A model's adapters: tensors by PEFT name (`Var`-backed when trainable) and its switches.
pub(crate) struct Lora {
    pub cfg: LoraConfig,
    pub tensors: BTreeMap<String, Tensor>,
    pub switches: Switches,
}

impl Lora {
    pub fn new(cfg: LoraConfig, tensors: BTreeMap<String, Tensor>, seed: u64) -> Self {
        let switches = Switches::new(cfg.dropout, seed);
        Self { cfg, tensors, switches }
    }

    /// The same adapters without autograd tracking, with a copy of the current switches.
    pub fn detached(&self) -> Self {
        let tensors = self.tensors.iter().map(|(k, t)| (k.clone(), t.detach())).collect();
        Self { cfg: self.cfg.clone(), tensors, switches: self.switches.snapshot() }
    }

    /// The layer-level adapter for `module` in `layer`, if that linear layer is adapted.
    pub fn adapter(&self, layer: usize, module: &str) -> Option<Adapter> {
        let (a_name, b_name) = (peft_name(layer, module, 'A'), peft_name(layer, module, 'B'));
        let a = self.tensors.get(&a_name)?.clone();
        let b = self.tensors.get(&b_name)?.clone();
        Some(Adapter { a, b, scale: self.cfg.scale(), a_name, b_name })
    }
}

/// Per-model switches, shared (through an `Arc`) with the layers that read them each forward.
#[derive(Clone)]
pub(crate) struct Switches(Arc<SwitchState>);

pub(crate) struct SwitchState {
    enabled: AtomicBool,
    dropout_active: AtomicBool,
    dropout: f64,
    seed: u64,
    /// Forwards that drew dropout masks so far: each draws fresh ones, reproducibly.
    forwards: AtomicU64,
}

impl Switches {
    fn new(dropout: f64, seed: u64) -> Self {
        Self(Arc::new(SwitchState {
            enabled: AtomicBool::new(true),
            dropout_active: AtomicBool::new(true),
            dropout,
            seed,
            forwards: AtomicU64::new(0),
        }))
    }

    fn snapshot(&self) -> Self {
        let s = &self.0;
        Self(Arc::new(SwitchState {
            enabled: AtomicBool::new(s.enabled.load(Ordering::Relaxed)),
            dropout_active: AtomicBool::new(s.dropout_active.load(Ordering::Relaxed)),
            dropout: s.dropout,
            seed: s.seed,
            forwards: AtomicU64::new(s.forwards.load(Ordering::Relaxed)),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.0.enabled.store(on, Ordering::Relaxed);
    }

    pub fn set_dropout_active(&self, on: bool) {
        self.0.dropout_active.store(on, Ordering::Relaxed);
    }

    /// The dropout of one forward pass, or `None` when this forward applies none: adapters
    /// off, p = 0, dropout switched off, or adapters not trainable (`training` false).
    pub fn dropout_for_forward(&self, training: bool) -> Option<Dropout> {
        let s = &self.0;
        if !training || !self.enabled() || s.dropout == 0.0 || !s.dropout_active.load(Ordering::Relaxed) {
            return None;
        }
        let forward = s.forwards.fetch_add(1, Ordering::Relaxed);
        Some(Dropout { p: s.dropout, seed: mix(s.seed, forward) })
    }
}

/// Inverted dropout masks of one forward pass.
pub(crate) struct Dropout {
    p: f64,
    seed: u64,
}

impl Dropout {
    /// `[N, in]` mask for the input of `module` (index into the layer's params) in `layer`:
    /// 0 with probability p, else 1/(1 − p). Each adapter draws its own mask, as in PEFT.
    pub fn mask(&self, layer: usize, module: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, ((layer as u64) << 8) | module as u64));
        let keep = 1.0 / (1.0 - self.p);
        let data: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.random::<f64>() < self.p { 0.0 } else { keep as f32 }).collect();
        Tensor::from_vec(data, x.shape(), x.device())?.to_dtype(x.dtype())
    }
}

/// SplitMix64 of `a` and `b`: independent seeds from a counter.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
