//! What `rlhf grpo` and `rlhf ppo` share: prompt files, the held-out evaluation, the reference
//! model, and the progress bar / summary around the run.

use super::common::{DataConfig, LoraSection, TrainArgs, Trainable};
use crate::commands::rewards::RewardSpec;
use anyhow::{bail, Context, Result};
use rlhf_data::{load_prompts, PromptExample, Tokenizer};
use rlhf_model::CausalLm;
use rlhf_train::metric_keys as keys;
use rlhf_train::online::HeldOutEval;
use rlhf_train::online::RlPrompt;
use rlhf_train::rollout::{PromptRef, RolloutConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The training flags plus what only online trainers have.
#[derive(clap::Args)]
pub struct RlArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Stop when the mean sequence KL to the reference exceeds this many nats (shortcut for
    /// `--set grpo.max_kl=…` / `ppo.max_kl=…`).
    #[arg(long)]
    pub max_kl: Option<f64>,
}

impl RlArgs {
    /// The training flags with `--max-kl` folded in as a `--set` on `section`.
    pub fn into_train(self, section: &str) -> TrainArgs {
        let mut train = self.train;
        if let Some(k) = self.max_kl {
            train.sets.insert(0, format!("{section}.max_kl={k}"));
        }
        train
    }
}

/// Declares an online command's settings: the fields every online trainer has, written once here,
/// then the command's own. A shared struct under `#[serde(flatten)]` would do the same but switch
/// off `deny_unknown_fields`, and with it the unknown-key errors of `--config` and `--set`.
macro_rules! online_command_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
            pub model: String,
            /// Run folder: config.toml, metrics.jsonl, samples.jsonl, checkpoints/, final/.
            pub out: String,
            $($(#[$field_meta])* pub $field: $ty,)*
            pub data: $crate::commands::train::common::DataConfig,
            /// How responses are sampled (and the temperature every logprob is computed at).
            pub rollout: rlhf_train::rollout::RolloutConfig,
            pub train: rlhf_train::TrainConfig,
            pub lora: $crate::commands::train::common::LoraSection,
            /// Weighted sum of sources.
            pub rewards: Vec<$crate::commands::rewards::RewardSpec>,
            /// Held-out evaluation of `data.eval_path` (or `data.eval_fraction` of the prompts).
            pub eval: $crate::commands::train::rl::EvalSection,
        }
    };
}
pub(crate) use online_command_config;

/// Held-out evaluation: greedy answers to `data.eval_path` scored by `reward`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    pub reward: RewardSpec,
    /// Score only the first N held-out prompts (0 = all).
    pub limit: usize,
    pub max_new_tokens: usize,
    /// Prompts per generation batch.
    pub batch_size: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self { reward: RewardSpec::default(), limit: 200, max_new_tokens: 32, batch_size: 64 }
    }
}

/// What the online commands (grpo, ppo, raft) start from: the run folder (with the effective config), the
/// model and tokenizer, training and held-out prompts, and the trainable policy.
pub struct Start {
    pub dir: std::path::PathBuf,
    pub base: CausalLm,
    pub tok: Tokenizer,
    pub train: Vec<PromptExample>,
    pub eval: Vec<PromptExample>,
    pub policy: Trainable,
}

#[allow(clippy::too_many_arguments)]
pub fn start<T: Serialize>(
    command: &str,
    resume: bool,
    cfg: &T,
    out: &str,
    model: &str,
    data: &DataConfig,
    lora: &LoraSection,
    train_cfg: &rlhf_train::TrainConfig,
) -> Result<Start> {
    crate::precision::apply(train_cfg.precision);
    check_no_dropout(lora)?;
    let dir = super::common::prepare_run_dir(out, cfg, resume)?;
    let loaded = super::common::load_model(model)?;
    let tok = loaded.tokenizer;
    let (train, eval) = prompts(data, train_cfg.seed, &tok)?;
    eprintln!("{command}: {} training / {} held-out prompts", train.len(), eval.len());
    let policy = super::common::trainable(&loaded.model, lora, train_cfg.seed)?;
    Ok(Start { dir, base: loaded.model, tok, train, eval, policy })
}

/// The training and held-out prompts of `[data]` (a held-out file, or `eval_fraction` of the
/// training prompts). Online trainers need a prompt limit: it bounds every rollout's length.
fn prompts(data: &DataConfig, seed: u64, tok: &Tokenizer) -> Result<(Vec<PromptExample>, Vec<PromptExample>)> {
    if data.max_prompt_length == 0 {
        return Err(crate::config::usage(
            "data.max_prompt_length must be at least 1: the longest prompt in tokens (TRL's default is 512)",
        ));
    }
    let (train, eval) = super::common::load_split(data, seed, tok, load_prompts)?;
    if train.is_empty() {
        bail!("{}: no prompts", data.path);
    }
    if eval.is_empty() && !data.eval_path.is_empty() {
        bail!("{}: no prompts", data.eval_path);
    }
    Ok((train, eval))
}

pub fn rl_prompts(examples: &[PromptExample]) -> Vec<RlPrompt<'_>> {
    examples.iter().map(|e| RlPrompt { ids: &e.prompt_ids, refs: prompt_ref(e) }).collect()
}

fn prompt_ref(e: &PromptExample) -> PromptRef<'_> {
    PromptRef { answer: e.answer.as_deref(), tests: e.tests.as_deref() }
}

/// The held-out evaluation, when `data.eval_path` is set.
pub fn held_out<'a>(examples: &'a [PromptExample], eval: &EvalSection, pad_id: u32) -> Result<Option<HeldOutEval<'a>>> {
    if examples.is_empty() {
        return Ok(None);
    }
    let n = if eval.limit == 0 { examples.len() } else { eval.limit.min(examples.len()) };
    let rollout = RolloutConfig {
        max_new_tokens: eval.max_new_tokens,
        temperature: 0.0,
        generation_batch_size: eval.batch_size,
        ..RolloutConfig::default()
    };
    Ok(Some(HeldOutEval {
        prompts: examples[..n].iter().map(|e| e.prompt_ids.clone()).collect(),
        refs: examples[..n].iter().map(prompt_ref).collect(),
        source: crate::commands::rewards::build(&eval.reward, pad_id)?,
        rollout,
    }))
}

/// RL phases run without dropout (docs/ARCHITECTURE.md, "Phases without dropout"): a LoRA dropout setting is refused.
pub fn check_no_dropout(lora: &LoraSection) -> Result<()> {
    if lora.enabled && lora.dropout != 0.0 {
        bail!("lora.dropout = {}: RL phases run without dropout (set it to 0)", lora.dropout);
    }
    Ok(())
}

/// The frozen reference when `needed`: the model at `path`, else the LoRA base with adapters
/// off (a view, no copy), else `base` — the starting weights, which full fine-tuning has copied
/// into trainable variables. `base` is dropped when no reference is needed.
pub fn reference_model(needed: bool, path: &str, t: &Trainable, base: CausalLm) -> Result<Option<CausalLm>> {
    Ok(match (needed, path.is_empty(), t.lora) {
        (false, _, _) => None,
        (true, false, _) => Some(super::common::load_model(path).context("loading `reference`")?.model),
        (true, true, true) => Some(t.model.without_adapters()?),
        (true, true, false) => Some(base),
    })
}

/// Prints the evaluation as `name value` lines.
pub fn print_eval(title: &str, rows: &[(String, f64)]) {
    super::common::print_metrics(title, rows);
}

/// Prints the held-out curve of a run from its `metrics.jsonl`: step, minutes of training
/// (without evaluation time), wall minutes, and every `eval/reward/…` value.
pub fn print_curve(dir: &Path) -> Result<()> {
    if !rlhf_dist::world().is_writer() {
        return Ok(()); // only rank 0 has the metrics file
    }
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut printed_header = false;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(obj) = v.as_object() else { continue };
        let Some(train) = obj.get(keys::EVAL_TRAIN_SECONDS).and_then(|x| x.as_f64()) else { continue };
        let rewards: Vec<(String, f64)> = obj
            .iter()
            .filter(|(k, _)| k.starts_with(keys::EVAL_REWARD_PREFIX))
            .filter_map(|(k, x)| Some((k.trim_start_matches("eval/").to_string(), x.as_f64()?)))
            .collect();
        if !printed_header {
            let names: Vec<&str> = rewards.iter().map(|(k, _)| k.as_str()).collect();
            println!("held-out curve:\n  {:>6} {:>10} {:>10}  {}", "step", "train min", "wall min", names.join("  "));
            printed_header = true;
        }
        let wall = obj.get(keys::EVAL_ELAPSED_SECONDS).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
        let step = obj.get("step").and_then(|x| x.as_u64()).unwrap_or(0);
        let values: Vec<String> = rewards.iter().map(|(_, x)| format!("{x:.4}")).collect();
        println!("  {step:>6} {:>10.2} {:>10.2}  {}", train / 60.0, wall / 60.0, values.join("  "));
    }
    Ok(())
}
