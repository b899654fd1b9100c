//! What every training command shares: `--config` / `--set` / shortcut flags, the run folder,
//! dataset loading with bad-record reporting, trainable parameters (full or LoRA), and the
//! progress bar fed by the training loop.

use crate::config::{load_config, to_toml_string};
use crate::loading;
use crate::progress::TrainProgress;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Var};
use rlhf_data::{split_train_eval, EvalSplit, LoadOptions, Loaded, OnBadRecord, Tokenizer};
use rlhf_model::lora::LoraConfig;
use rlhf_model::CausalLm;
use rlhf_train::trainer::RunOutcome;
use rlhf_train::{train, Objective, RunOptions, StepReport, TrainConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// TOML configuration (see `examples/`); keys not given keep their defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set train.learning_rate=1e-5` (repeatable; wins over --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Shortcut for `--set model=…`: Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    #[arg(long)]
    pub model: Option<String>,
    /// Shortcut for `--set data.path=…`: a .jsonl / .parquet file or a Hub dataset ORG/NAME[:SPLIT].
    #[arg(long)]
    pub data: Option<String>,
    /// Shortcut for `--set data.eval_path=…`.
    #[arg(long)]
    pub eval_data: Option<String>,
    /// Shortcut for `--set out=…`: the run folder.
    #[arg(long)]
    pub out: Option<String>,
    /// Shortcut for `--set data.on_bad_record=…` (`fail` or `skip`).
    #[arg(long)]
    pub on_bad_record: Option<String>,
    /// Continue from a checkpoint folder or the newest checkpoint of a run folder.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

impl TrainArgs {
    /// Shortcut flags first, then `--set`, so an explicit `--set` wins.
    fn overrides(&self) -> Vec<String> {
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = Vec::new();
        for (key, value) in [
            ("model", &self.model),
            ("data.path", &self.data),
            ("data.eval_path", &self.eval_data),
            ("out", &self.out),
            ("data.on_bad_record", &self.on_bad_record),
        ] {
            if let Some(v) = value {
                out.push(format!("{key}={}", quote(v)));
            }
        }
        out.extend(self.sets.iter().cloned());
        out
    }

    /// The settings: `--config` (or, resuming without one, the run's own `config.toml`), then
    /// the shortcut flags and `--set`.
    pub fn load<T: Serialize + DeserializeOwned + Default>(&self) -> Result<T> {
        let config = match (&self.config, &self.resume) {
            (Some(c), _) => Some(c.clone()),
            // Settings given as flags stand alone; with none at all, the run's own are needed.
            (None, Some(resume)) => match run_config_of(resume) {
                Ok(found) => Some(found),
                Err(_) if !self.overrides().is_empty() => None,
                Err(e) => return Err(e),
            },
            (None, None) => None,
        };
        load_config(config.as_deref(), &self.overrides())
    }
}

/// The `config.toml` of the run a `--resume` path belongs to: the run folder itself or one of
/// its `checkpoints/step-N` folders.
fn run_config_of(resume: &Path) -> Result<PathBuf> {
    let candidates = [resume.join("config.toml"), resume.join("../../config.toml")];
    candidates.into_iter().find(|c| c.is_file()).with_context(|| {
        format!(
            "--resume {}: no config.toml in that run folder (or two levels above a checkpoint); give --config",
            resume.display()
        )
    })
}

/// The `[data]` section of every trainer: demonstrations, preferences or prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training file (.jsonl or .parquet) or Hub dataset `ORG/NAME[:SPLIT]`.
    pub path: String,
    /// Held-out file or Hub dataset; when empty, `eval_fraction` of the training data is held out.
    pub eval_path: String,
    pub eval_fraction: f64,
    /// Longest record (prompt + response) in tokens (TRL: 1024); longer records are bad records.
    pub max_length: usize,
    /// Longest prompt in tokens (0: only `max_length`); the online trainers need one (TRL: 512).
    pub max_prompt_length: usize,
    pub on_bad_record: OnBadRecord,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            eval_path: String::new(),
            eval_fraction: 0.0,
            max_length: 1024,
            max_prompt_length: 0,
            on_bad_record: OnBadRecord::Fail,
        }
    }
}

impl DataConfig {
    /// The defaults of the online trainers, whose records are prompts.
    pub fn prompts() -> Self {
        Self { max_prompt_length: 512, ..Self::default() }
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_length: self.max_length,
            max_prompt_length: self.max_prompt_length,
            on_bad_record: self.on_bad_record,
        }
    }
}

/// LoRA settings of a trainer; `enabled = false` trains every weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    pub enabled: bool,
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        let base = LoraConfig::default();
        // PEFT's default dropout (0) keeps LoRA on the fused CPU layers; dropout > 0 runs composed ops.
        Self { enabled: false, r: base.r, alpha: base.alpha, dropout: 0.0, target_modules: base.target_modules }
    }
}

impl LoraSection {
    pub fn config(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.target_modules.clone(),
            ..LoraConfig::default()
        }
    }
}

/// Creates the run folder and writes the effective config there (kept as it is on a resume,
/// which must use the same settings). A folder that already holds checkpoints is only reused
/// with `--resume`.
pub fn prepare_run_dir<T: Serialize>(out: &str, config: &T, resume: bool) -> Result<PathBuf> {
    if out.is_empty() {
        bail!("no run folder: give --out DIR (or `out = \"…\"` in the config)");
    }
    let dir = PathBuf::from(out);
    // Complete checkpoints only: a run killed while writing its first one starts again.
    let has_checkpoints = !rlhf_train::checkpoint::list(&dir.join("checkpoints"))?.is_empty();
    if !resume && has_checkpoints {
        bail!(
            "{} already holds a run (checkpoints/); pass --resume {} to continue it, or choose another --out",
            dir.display(),
            dir.display()
        );
    }
    if !rlhf_dist::world().is_writer() {
        return Ok(dir); // rank 0 writes the folder
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating run folder {}", dir.display()))?;
    let path = dir.join("config.toml");
    if !(resume && path.exists()) {
        std::fs::write(&path, to_toml_string(config)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// Loads the training and held-out examples with `loader`, printing how many records were
/// skipped (with `on_bad_record = "skip"`).
pub fn load_split<T>(
    data: &DataConfig,
    seed: u64,
    tok: &Tokenizer,
    loader: impl Fn(&Path, &Tokenizer, &LoadOptions) -> rlhf_data::Result<Loaded<T>>,
) -> Result<(Vec<T>, Vec<T>)> {
    if data.path.is_empty() {
        bail!("no training data: give --data FILE (or `data.path` in the config)");
    }
    if data.max_length == 0 {
        return Err(crate::config::usage(
            "data.max_length must be at least 1: the longest prompt + response in tokens (TRL's default is 1024)",
        ));
    }
    let opts = data.load_options();
    let report = |what: &str, l: &Loaded<T>| {
        if !l.skipped.is_empty() {
            eprintln!("skipped {} bad record(s) in the {what} data:", l.skipped.len());
            for bad in l.skipped.iter().take(5) {
                eprintln!("  {bad}");
            }
        }
    };
    let train = loading::load_dataset(&data.path, tok, &opts, &loader)?;
    report("training", &train);
    if !data.eval_path.is_empty() {
        let eval = loading::load_dataset(&data.eval_path, tok, &opts, &loader)?;
        report("eval", &eval);
        return Ok((train.examples, eval.examples));
    }
    if data.eval_fraction > 0.0 {
        return Ok(split_train_eval(train.examples, EvalSplit::Fraction(data.eval_fraction), seed)?);
    }
    Ok((train.examples, Vec::new()))
}

/// The model to train and its trainable parameters: every weight, or LoRA adapters over a base
/// that stays frozen (and serves as the reference with adapters off).
pub struct Trainable {
    pub model: CausalLm,
    pub params: Vec<(String, Var)>,
    pub lora: bool,
}

pub fn trainable(base: &CausalLm, lora: &LoraSection, seed: u64) -> Result<Trainable> {
    if lora.enabled {
        let (model, params) = base.with_lora(&lora.config(), seed).context("adding LoRA adapters")?;
        Ok(Trainable { model, params, lora: true })
    } else {
        let (model, params) = base.trainable()?;
        Ok(Trainable { model, params, lora: false })
    }
}

pub fn load_model(model: &str) -> Result<loading::Loaded> {
    loading::load(model, &Device::Cpu)
}

/// The training progress bar, created at the first step report (when the total and the
/// resumed-from step are known).
pub struct TrainBar(Option<TrainProgress>, &'static str);

impl Default for TrainBar {
    fn default() -> Self {
        Self(None, "loss")
    }
}

impl TrainBar {
    /// A bar whose headline number (`StepReport::loss`) is called `label` (RL: "reward").
    pub fn labelled(label: &'static str) -> Self {
        Self(None, label)
    }

    pub fn report(&mut self, r: &StepReport) {
        let bar = self.0.get_or_insert_with(|| TrainProgress::new(r.total_steps, r.step.saturating_sub(1)));
        bar.update_labelled(r.step, self.1, r.loss, r.lr, r.tokens_per_sec);
        if r.step == r.total_steps {
            bar.finish();
        }
    }
}

/// What every trainer command does around the loop: held-out metrics before a fresh run, the
/// training loop with its progress bar, held-out metrics after.
pub fn fit<O: Objective>(
    objective: &mut O,
    train_set: &[O::Example],
    eval_set: &[O::Example],
    params: &[(String, Var)],
    cfg: &TrainConfig,
    run: &RunOptions,
) -> Result<RunOutcome> {
    crate::precision::apply(cfg.precision);
    if !eval_set.is_empty() && run.resume.is_none() {
        print_metrics("eval before training", &objective.evaluate(eval_set)?);
    }
    let mut bar = TrainBar::default();
    let outcome = train(objective, train_set, eval_set, params, cfg, run, &mut |r| bar.report(r))?;
    print_metrics("eval after training", &outcome.eval);
    Ok(outcome)
}

/// Prints evaluation metrics as `name value` lines.
pub fn print_metrics(title: &str, metrics: &[(String, f64)]) {
    if metrics.is_empty() {
        return;
    }
    println!("{title}:");
    for (k, v) in metrics {
        println!("  {k:<28} {v:.6}");
    }
}

/// Saves the trained weights under `dir/final`: an HF folder (full fine-tuning) or a PEFT
/// adapter folder (LoRA), with the tokenizer either way.
pub fn save_final(t: &Trainable, tok: &Tokenizer, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("final");
    if !rlhf_dist::world().is_writer() {
        return Ok(out);
    }
    if t.lora {
        t.model.save_lora(&out).with_context(|| format!("saving adapters to {}", out.display()))?;
    } else {
        t.model.save_hf(&out).with_context(|| format!("saving model to {}", out.display()))?;
    }
    tok.save_hf(&out).with_context(|| format!("saving tokenizer to {}", out.display()))?;
    Ok(out)
}
