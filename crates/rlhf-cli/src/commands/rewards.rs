//! Reward sources as the RL commands' configs name them (`[[rewards]]` tables).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rlhf_reward::format::{MatchMode, RegexReward, Target};
use rlhf_reward::math::MathVerifier;
use rlhf_reward::{RewardModel, RewardSource};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// Final answer (`\boxed{}`, `####`, "The answer is", last number) equals `answer`.
    Math,
    /// The last integer of the reply equals `answer`.
    LastInteger,
    /// The last line is exactly `The answer is N.` (the arithmetic set's format).
    Format,
    /// `pattern` matches the whole response (`target = "last_line"`: its last line).
    Regex,
    /// Python code in the response passes the prompt's `tests` in a sandbox.
    Code,
    /// A trained reward model folder (`path`), normalised by its saved statistics.
    RewardModel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardSpec {
    pub kind: RewardKind,
    pub weight: f64,
    /// Name in metrics (`reward/<name>`); empty = the kind's name.
    pub name: String,
    /// Reward-model folder.
    pub path: String,
    /// Regex pattern.
    pub pattern: String,
    /// `response` or `last_line` (regex).
    pub target: Target,
    /// Normalise reward-model scores to mean 0, std 1 with the saved statistics.
    pub normalize: bool,
}

impl Default for RewardSpec {
    fn default() -> Self {
        Self {
            kind: RewardKind::Math,
            weight: 1.0,
            name: String::new(),
            path: String::new(),
            pattern: String::new(),
            target: Target::Response,
            normalize: true,
        }
    }
}

impl RewardSpec {
    pub fn of(kind: RewardKind) -> Self {
        Self { kind, ..Self::default() }
    }

    /// Builds the source; `pad_id` is the policy tokenizer's (reward models score its ids).
    pub fn build(&self, pad_id: u32) -> Result<Box<dyn RewardSource>> {
        let named = |default: &str| if self.name.is_empty() { default.to_string() } else { self.name.clone() };
        Ok(match self.kind {
            RewardKind::Math => Box::new(MathVerifier::new(Default::default()).with_name(named("math"))),
            RewardKind::LastInteger => Box::new(MathVerifier::last_integer().with_name(named("last_integer"))),
            RewardKind::Format => Box::new(
                RegexReward::new(r"The answer is -?\d+\.", MatchMode::Full)?
                    .on(Target::LastLine)
                    .with_name(named("format")),
            ),
            RewardKind::Regex => {
                if self.pattern.is_empty() {
                    bail!("rewards: kind = \"regex\" needs `pattern`");
                }
                Box::new(RegexReward::new(&self.pattern, MatchMode::Full)?.on(self.target).with_name(named("regex")))
            }
            RewardKind::Code => Box::new(
                rlhf_reward::code::CodeVerifier::new(Default::default())
                    .context("starting the code sandbox")?
                    .with_name(named("code")),
            ),
            RewardKind::RewardModel => {
                if self.path.is_empty() {
                    bail!("rewards: kind = \"reward_model\" needs `path` (a folder written by `rlhf reward`)");
                }
                let rm = RewardModel::load(Path::new(&self.path), pad_id, DType::F32, &Device::Cpu)
                    .with_context(|| format!("loading reward model {}", self.path))?
                    .with_name(named("rm"));
                Box::new(rm.normalized(self.normalize)?)
            }
        })
    }
}

/// Builds every `(source, weight)`.
pub fn build_all(specs: &[RewardSpec], pad_id: u32) -> Result<Vec<(Box<dyn RewardSource>, f64)>> {
    if specs.is_empty() {
        bail!("no reward: add a [[rewards]] table (kind = \"math\" | \"last_integer\" | \"format\" | \"regex\" | \"code\" | \"reward_model\")");
    }
    specs.iter().map(|s| Ok((s.build(pad_id)?, s.weight))).collect()
}
