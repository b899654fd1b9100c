//! `rlhf reward`: a scalar head on the LM trunk trained with the Bradley–Terry loss on pairs
//! and K-wise rankings; saved as an HF sequence-classification folder with reward statistics.

use super::common::{self, DataConfig, LoraSection, TrainArgs};
use anyhow::{Context, Result};
use candle_core::Var;
use rlhf_model::heads::{init_scalar_head, save_sequence_classifier, SCORE_WEIGHT};
use rlhf_train::reward::{reward_stats, RewardObjective};
use rlhf_train::{RunOptions, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    pub model: String,
    pub out: String,
    /// Preference groups per forward pass when evaluating.
    pub eval_batch_size: usize,
    /// Reward centring (Eisenstein et al.; TRL suggests 0.01); 0 disables.
    pub center_rewards_coefficient: f64,
    /// Training groups scored for the saved reward mean / std (RL normalises with them).
    pub stats_examples: usize,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub lora: LoraSection,
}

impl Default for RewardConfig {
    /// TRL's `RewardConfig` defaults (learning rate 1e-4, max length 1024, no centring).
    fn default() -> Self {
        Self {
            model: "default".into(),
            out: String::new(),
            eval_batch_size: 4,
            center_rewards_coefficient: 0.0,
            stats_examples: 256,
            data: DataConfig::default(),
            train: TrainConfig { learning_rate: 1e-4, ..TrainConfig::default() },
            lora: LoraSection::default(),
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg: RewardConfig = args.load()?;
    let dir = common::prepare_run_dir(&cfg.out, &cfg, args.resume.is_some())?;
    let loaded = common::load_model(&cfg.model)?;
    let tok = loaded.tokenizer;
    let (train_set, eval_set) = common::load_split(&cfg.data, cfg.train.seed, &tok, rlhf_data::load_preferences)?;
    let pairs = |s: &[rlhf_data::PreferenceGroup]| s.iter().map(|g| g.pairs.len()).sum::<usize>();
    eprintln!(
        "reward: {} training groups ({} pairs) / {} held-out groups ({} pairs)",
        train_set.len(),
        pairs(&train_set),
        eval_set.len(),
        pairs(&eval_set)
    );
    let mut t = common::trainable(&loaded.model, &cfg.lora, cfg.train.seed)?;
    drop(loaded.model); // full fine-tuning trains a copy; LoRA shares the base's storage
    let d = t.model.config().hidden_size;
    let head = Var::from_tensor(&init_scalar_head(d, cfg.train.seed, t.model.dtype(), t.model.device())?)?;
    t.params.push((SCORE_WEIGHT.to_string(), head.clone()));
    let center = (cfg.center_rewards_coefficient > 0.0).then_some(cfg.center_rewards_coefficient);
    let mut objective = RewardObjective {
        model: &t.model,
        head: head.as_tensor().clone(),
        pad_id: tok.pad_id(),
        center_rewards_coefficient: center,
        eval_batch_size: cfg.eval_batch_size,
    };
    let run = RunOptions {
        dir: &dir,
        trainer: "reward",
        config: serde_json::to_value(&cfg)?,
        resume: args.resume.clone(),
        checkpoints: true,
    };
    let outcome = common::fit(&mut objective, &train_set, &eval_set, &t.params, &cfg.train, &run)?;
    let reference = &train_set[..train_set.len().min(cfg.stats_examples)];
    let stats = reward_stats(&t.model, head.as_tensor(), tok.pad_id(), reference, cfg.eval_batch_size)?;
    let trunk = if t.lora { t.model.merge_lora().context("merging LoRA adapters")? } else { t.model.detached()? };
    let out = dir.join("final");
    if rlhf_dist::world().is_writer() {
        save_sequence_classifier(&trunk, head.as_tensor(), Some(stats), tok.pad_id(), &out)?;
        tok.save_hf(&out)?;
    }
    println!(
        "reward: {} steps; reward mean {:.4} std {:.4} over {} responses; model in {}",
        outcome.steps,
        stats.mean,
        stats.std,
        stats.count,
        out.display()
    );
    Ok(())
}
