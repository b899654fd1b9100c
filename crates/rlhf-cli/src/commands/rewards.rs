//! Reward sources as the RL commands' configs name them (`[[rewards]]` tables).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rlhf_reward::format::{MatchMode, RegexReward, Target};
use rlhf_reward::math::MathVerifier;
use rlhf_reward::{Ensemble, EnsembleMode, EquationSteps, RewardModel, RewardSource};
use serde::{Deserialize, Serialize};

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
    /// Several reward models (`paths`) reduced by `mode`: min, mean, or {mean_minus_std = k}.
    Ensemble,
    /// Process supervision: each line's `a op b = c` is a step, rewarded 1 if it holds (with
    /// `grpo.process_supervision = true` the steps become per-token advantages).
    Steps,
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
    /// Reward-model folders of an ensemble.
    pub paths: Vec<String>,
    pub mode: EnsembleMode,
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
            paths: Vec::new(),
            mode: EnsembleMode::Mean,
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
            RewardKind::Code => {
                let verifier =
                    rlhf_reward::code::CodeVerifier::new(Default::default()).context("starting the code sandbox")?;
                let sandbox = verifier.sandbox();
                let missing = sandbox.protections().missing(sandbox.config());
                if !missing.is_empty() {
                    eprintln!(
                        "warning: the code sandbox runs without: {} (see the README's threat model)",
                        missing.join(", ")
                    );
                }
                Box::new(verifier.with_name(named("code")))
            }
            RewardKind::RewardModel => {
                if self.path.is_empty() {
                    bail!("rewards: kind = \"reward_model\" needs `path` (a folder written by `rlhf reward`)");
                }
                Box::new(self.reward_model(&self.path, pad_id)?.with_name(named("rm")))
            }
            RewardKind::Ensemble => {
                if self.paths.len() < 2 {
                    bail!("rewards: kind = \"ensemble\" needs `paths` with at least two reward-model folders");
                }
                let members = self
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        Ok(Box::new(self.reward_model(p, pad_id)?.with_name(format!("rm{i}"))) as Box<dyn RewardSource>)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Ensemble::new(members, self.mode)?.with_name(named("ensemble")))
            }
            RewardKind::Steps => Box::new(EquationSteps::default().with_name(named("steps"))),
        })
    }
}

impl RewardSpec {
    fn reward_model(&self, path: &str, pad_id: u32) -> Result<RewardModel> {
        let rm = RewardModel::load(&crate::loading::resolve_model(path)?, pad_id, DType::F32, &Device::Cpu)
            .with_context(|| format!("loading reward model {path}"))?;
        Ok(rm.normalized(self.normalize)?)
    }
}

/// Builds every `(source, weight)`.
pub fn build_all(specs: &[RewardSpec], pad_id: u32) -> Result<Vec<(Box<dyn RewardSource>, f64)>> {
    if specs.is_empty() {
        bail!("no reward: add a [[rewards]] table (kind = \"math\" | \"last_integer\" | \"format\" | \"regex\" | \"code\" | \"reward_model\" | \"ensemble\" | \"steps\")");
    }
    specs.iter().map(|s| Ok((s.build(pad_id)?, s.weight))).collect()
}
