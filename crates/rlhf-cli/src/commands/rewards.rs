//! Reward sources as the commands' configs name them (`[[rewards]]` tables): the specs and
//! their builder live in `rlhf_reward::spec`; this is what the CLI supplies to it.

use anyhow::Result;
use rlhf_reward::{BuildContext, RewardError, RewardSource};
use std::path::PathBuf;

pub use rlhf_reward::{RewardSpec, SourceSpec};

/// Model names resolve as `--model` does (folder, .gguf, hub id, `default`); warnings go to stderr.
struct Cli;

impl BuildContext for Cli {
    fn resolve_model(&self, name: &str) -> rlhf_reward::Result<PathBuf> {
        crate::loading::resolve_model(name).map_err(|e| RewardError::Config(format!("{e:#}")))
    }

    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

/// Builds one source; `pad_id` is the policy tokenizer's.
pub fn build(spec: &RewardSpec, pad_id: u32) -> Result<Box<dyn RewardSource>> {
    Ok(spec.build(pad_id, &Cli)?)
}

/// Builds every `(source, weight)`.
pub fn build_all(specs: &[RewardSpec], pad_id: u32) -> Result<Vec<(Box<dyn RewardSource>, f64)>> {
    Ok(rlhf_reward::build_all(specs, pad_id, &Cli)?)
}
