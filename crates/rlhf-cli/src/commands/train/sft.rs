//! `rlhf sft`: supervised fine-tuning on demonstrations (loss on completion tokens only).

use super::common::{self, DataConfig, LoraSection, TrainArgs};
use anyhow::Result;
use rlhf_train::sft::SftObjective;
use rlhf_train::{RunOptions, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    pub model: String,
    /// Run folder: config.toml, metrics.jsonl, tb/, checkpoints/, final/.
    pub out: String,
    /// Rows per forward pass when evaluating.
    pub eval_batch_size: usize,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub lora: LoraSection,
}

impl Default for SftConfig {
    /// TRL's `SFTConfig` defaults (learning rate 2e-5, max length 1024).
    fn default() -> Self {
        Self {
            model: "default".into(),
            out: String::new(),
            eval_batch_size: 8,
            data: DataConfig::default(),
            train: TrainConfig { learning_rate: 2e-5, ..TrainConfig::default() },
            lora: LoraSection::default(),
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg: SftConfig = args.load()?;
    let dir = common::prepare_run_dir(&cfg.out, &cfg, args.resume.is_some())?;
    let loaded = common::load_model(&cfg.model)?;
    let tok = loaded.tokenizer;
    let (train_set, eval_set) = common::load_split(&cfg.data, cfg.train.seed, &tok, rlhf_data::load_sft)?;
    eprintln!("sft: {} training / {} held-out examples", train_set.len(), eval_set.len());
    let t = common::trainable(&loaded.model, &cfg.lora, cfg.train.seed)?;
    drop(loaded.model); // full fine-tuning trains a copy; LoRA shares the base's storage
    let mut objective = SftObjective { model: &t.model, pad_id: tok.pad_id(), eval_batch_size: cfg.eval_batch_size };
    let run = RunOptions {
        dir: &dir,
        trainer: "sft",
        config: serde_json::to_value(&cfg)?,
        resume: args.resume.clone(),
        checkpoints: true,
    };
    let outcome = common::fit(&mut objective, &train_set, &eval_set, &t.params, &cfg.train, &run)?;
    let out = common::save_final(&t, &tok, &dir)?;
    println!("sft: {} steps, final training loss {:.4}; model in {}", outcome.steps, outcome.last_loss, out.display());
    Ok(())
}
