//! LoRA on a [`CausalLm`]: adding adapters, switching them, merging them into the weights.

use super::{init_adapters, sites, Lora, LoraConfig};
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;

impl CausalLm {
    /// A LoRA model over this model's weights: base weights are shared (detached, no copy, no
    /// gradients); fresh adapters (A from `seed`, B = 0, so logits start equal to the base) are
    /// the only parameters, returned as `Var`s named as PEFT names them, in name order.
    /// Dropout starts active; RL phases switch it off with [`Self::set_lora_dropout_active`].
    pub fn with_lora(&self, cfg: &LoraConfig, seed: u64) -> Result<(CausalLm, Vec<(String, Var)>)> {
        let sites = sites(self.config(), self.weights(), cfg)?;
        let tensors = init_adapters(&sites, cfg.r, seed, self.dtype(), self.device())?;
        self.attach_adapters(cfg.clone(), tensors, seed)
    }

    /// Builds the LoRA model with `tensors` (validated by the caller) turned into `Var`s.
    pub(super) fn attach_adapters(
        &self,
        cfg: LoraConfig,
        tensors: BTreeMap<String, Tensor>,
        seed: u64,
    ) -> Result<(CausalLm, Vec<(String, Var)>)> {
        if self.lora().is_some() {
            return Err(ModelError::Invalid(
                "this model already has LoRA adapters: merge_lora() or without_adapters() first".into(),
            ));
        }
        let mut vars = Vec::with_capacity(tensors.len());
        let mut trainable = BTreeMap::new();
        for (name, t) in tensors {
            let var = Var::from_tensor(&t)?;
            trainable.insert(name.clone(), var.as_tensor().clone());
            vars.push((name, var));
        }
        let lora = Lora::new(cfg, trainable, seed);
        let model = CausalLm::from_parts(self.config().clone(), self.weights().detached(), self.kernels(), Some(lora))?;
        Ok((model, vars))
    }

    /// The LoRA configuration, if this model has adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora().map(|l| &l.cfg)
    }

    /// Switches the adapters of this model (not of views made from it) on or off. Off, the
    /// forward is exactly the base model's: the DPO/PPO reference without a second copy.
    /// No effect on a model without adapters.
    pub fn set_adapters_enabled(&self, on: bool) {
        if let Some(l) = self.lora() {
            l.switches.set_enabled(on);
        }
    }

    pub fn adapters_enabled(&self) -> bool {
        self.lora().is_some_and(|l| l.switches.enabled())
    }

    /// Whether training forwards apply LoRA dropout (default: on; switch off for RL and
    /// evaluation). Detached models never apply it.
    pub fn set_lora_dropout_active(&self, on: bool) {
        if let Some(l) = self.lora() {
            l.switches.set_dropout_active(on);
        }
    }

    /// The base model alone, detached, over the same storage: no copy of any weight.
    pub fn without_adapters(&self) -> candle_core::Result<CausalLm> {
        CausalLm::from_parts(self.config().clone(), self.weights().detached(), self.kernels(), None)
    }

    /// A plain model with each adapted weight replaced by `W + s·B·A` (new storage for those;
    /// the others are shared). Merges regardless of [`Self::set_adapters_enabled`].
    pub fn merge_lora(&self) -> Result<CausalLm> {
        let lora =
            self.lora().ok_or_else(|| ModelError::Invalid("merge_lora: this model has no LoRA adapters".into()))?;
        let mut weights = self.weights().detached();
        for site in sites(self.config(), self.weights(), &lora.cfg)? {
            let tensor = |name: &str| {
                lora.tensors
                    .get(name)
                    .ok_or_else(|| ModelError::Invalid(format!("merge_lora: no adapter tensor `{name}`")))
            };
            let (a, b) = (tensor(&site.a_name)?, tensor(&site.b_name)?);
            let delta = (b.detach().matmul(&a.detach())? * lora.cfg.scale())?; // [out, in]
            let merged = (weights.get(&site.base)? + delta.to_dtype(self.dtype())?)?;
            weights.tensors.insert(site.base, merged);
        }
        Ok(CausalLm::from_parts(self.config().clone(), weights, self.kernels(), None)?)
    }
}
