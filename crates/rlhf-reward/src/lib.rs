//! `rlhf-reward`: everything an RL trainer can score responses with, behind one trait,
//! [`RewardSource`].
//!
//! - [`RewardModel`]: a trained sequence classifier (`rlhf_model::heads`), batched, optionally
//!   normalised with its saved statistics.
//! - [`MathVerifier`]: final-answer extraction (`\boxed{}`, `#### N`, "The answer is N", last
//!   number) with numeric equivalence, or the exact "last integer" rule.
//! - [`CodeVerifier`]: Python solutions run against unit tests in a [`Sandbox`] (Linux only);
//!   [`humaneval`] turns the HumanEval tasks into such prompts.
//! - [`RegexReward`], [`LengthPenalty`]: format rewards and penalties.
//! - [`Weighted`], [`Ensemble`]: combinations of sources.
//! - [`RewardSpec`]: a source as a config names it, and the one builder of sources from configs.
//!
//! A score's `value` is `None` when a source cannot judge a sample (no reference answer, no
//! tests); its `note` says why a verifier gave what it gave.

pub mod combine;
pub mod error;
pub mod format;
pub mod humaneval;
pub mod math;
pub mod reward_model;
pub mod source;
pub mod spec;

#[cfg(target_os = "linux")]
pub mod code;
#[cfg(target_os = "linux")]
pub mod sandbox;

pub use combine::{Ensemble, EnsembleMode, Weighted};
pub use error::{Result, RewardError};
pub use format::{overlong_penalty, LengthPenalty, MatchMode, RegexReward, Target};
pub use humaneval::{load_human_eval, write_prompts_jsonl, HumanEvalTask};
pub use math::{extract_final_answer, EquationSteps, MathConfig, MathMode, MathVerifier, Verdict};
pub use reward_model::RewardModel;
pub use source::{RewardSource, Sample, Score};
pub use spec::{build_all, BuildContext, RewardSpec, SourceSpec};

#[cfg(target_os = "linux")]
pub use code::{extract_code, CodeAssembly, CodeConfig, CodeVerifier};
#[cfg(target_os = "linux")]
pub use sandbox::{Outcome, Printed, Protections, RunReport, Sandbox, SandboxConfig};
