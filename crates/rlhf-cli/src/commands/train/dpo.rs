//! `rlhf dpo`: Direct Preference Optimization (sigmoid, cDPO via label smoothing, IPO, robust)
//! against a frozen reference whose logprobs are computed once before training.

use super::common::{self, DataConfig, LoraSection, TrainArgs};
use crate::progress;
use anyhow::{Context, Result};
use rlhf_data::{PairExample, PreferenceGroup};
use rlhf_train::dpo::{precompute_reference, DpoLossConfig, DpoObjective};
use rlhf_train::{RunOptions, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoConfig {
    pub model: String,
    /// Reference model; empty = the starting model (with LoRA: the base with adapters off).
    pub reference: String,
    pub out: String,
    /// Pairs per forward pass for the reference pass and evaluation.
    pub eval_batch_size: usize,
    pub loss: DpoLossConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub lora: LoraSection,
}

impl Default for DpoConfig {
    /// TRL's `DPOConfig` defaults (β 0.1, sigmoid loss, learning rate 1e-6, max length 1024).
    fn default() -> Self {
        Self {
            model: "default".into(),
            reference: String::new(),
            out: String::new(),
            eval_batch_size: 4,
            loss: DpoLossConfig::default(),
            data: DataConfig::default(),
            train: TrainConfig { learning_rate: 1e-6, ..TrainConfig::default() },
            lora: LoraSection::default(),
        }
    }
}

fn flatten(groups: Vec<PreferenceGroup>) -> Vec<PairExample> {
    groups.iter().flat_map(|g| g.pair_examples().collect::<Vec<_>>()).collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg: DpoConfig = args.load()?;
    cfg.loss.validate().map_err(crate::config::usage)?;
    let dir = common::prepare_run_dir(&cfg.out, &cfg, args.resume.is_some())?;
    let loaded = common::load_model(&cfg.model)?;
    let tok = loaded.tokenizer;
    let (train_groups, eval_groups) = common::load_split(&cfg.data, cfg.train.seed, &tok, rlhf_data::load_preferences)?;
    let (train_pairs, eval_pairs) = (flatten(train_groups), flatten(eval_groups));
    eprintln!("dpo: {} training / {} held-out pairs", train_pairs.len(), eval_pairs.len());
    let t = common::trainable(&loaded.model, &cfg.lora, cfg.train.seed)?;
    // The reference: a separate model, the frozen starting weights, or the LoRA base.
    let separate = match cfg.reference.is_empty() {
        true => None,
        false => Some(common::load_model(&cfg.reference).context("loading `reference`")?.model),
    };
    let base_view;
    let reference = match (&separate, t.lora) {
        (Some(m), _) => m,
        (None, true) => {
            base_view = t.model.without_adapters()?;
            &base_view
        }
        (None, false) => &loaded.model,
    };
    let pad = tok.pad_id();
    let total = train_pairs.len() + eval_pairs.len();
    let bar = progress::bar(total as u64, "reference");
    let train_set =
        precompute_reference(reference, pad, train_pairs, cfg.eval_batch_size, |n| bar.set_position(n as u64))?;
    let done = train_set.len();
    let eval_set =
        precompute_reference(reference, pad, eval_pairs, cfg.eval_batch_size, |n| bar.set_position((done + n) as u64))?;
    bar.finish_and_clear();
    drop(separate);
    drop(loaded.model); // the reference is cached: its weights are no longer needed
    let mut objective =
        DpoObjective { policy: &t.model, pad_id: pad, loss: cfg.loss.clone(), eval_batch_size: cfg.eval_batch_size };
    let run = RunOptions {
        dir: &dir,
        trainer: "dpo",
        config: serde_json::to_value(&cfg)?,
        resume: args.resume.clone(),
        checkpoints: true,
    };
    let outcome = common::fit(&mut objective, &train_set, &eval_set, &t.params, &cfg.train, &run)?;
    let out = common::save_final(&t, &tok, &dir)?;
    println!("dpo: {} steps, final training loss {:.4}; model in {}", outcome.steps, outcome.last_loss, out.display());
    Ok(())
}
