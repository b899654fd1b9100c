//! `rlhf raft`: rejection-sampling fine-tuning (RAFT / best-of-n): each round samples n
//! responses per prompt from the current model, keeps the best by the `[[rewards]]`, and
//! fine-tunes on them with SFT; the next round samples from the fine-tuned model.

use super::common::DataConfig;
use super::common::{self, LoraSection, TrainArgs, TrainBar};
use super::rl::{self, EvalSection};
use crate::commands::rewards::build_all;
use anyhow::{bail, Context, Result};
use rlhf_reward::RewardSource;
use rlhf_train::metric_keys as keys;
use rlhf_train::online::RunInfo;
use rlhf_train::raft::{train_raft, RaftConfig, RaftHooks, RaftSetup};
use rlhf_train::{StepReport, TrainError};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Shortcut for `--set raft.rounds=…`.
    #[arg(long)]
    pub rounds: Option<usize>,
}

rl::online_command_config! {
    /// The run folder also holds round-<r>/{metrics.jsonl,tb,final}; `checkpoints/` keeps the
    /// policy after the newest round (for --resume). `[train]` is the SFT of every round (a fresh
    /// optimiser each round, on that round's kept samples); a sample no reward source scores is
    /// never kept; `[eval]` runs before the first round and after each.
    pub struct RaftCommandConfig {
        pub raft: RaftConfig,
    }
}

impl Default for RaftCommandConfig {
    /// No default reward: what counts as "best" must be said.
    fn default() -> Self {
        Self {
            model: "default".into(),
            out: String::new(),
            raft: RaftConfig::default(),
            data: DataConfig::prompts(),
            rollout: RaftConfig::rollout_defaults(),
            train: RaftConfig::train_defaults(),
            lora: LoraSection::default(),
            rewards: Vec::new(),
            eval: EvalSection::default(),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut train_args = args.train;
    if let Some(r) = args.rounds {
        train_args.sets.insert(0, format!("raft.rounds={r}"));
    }
    let cfg: RaftCommandConfig = train_args.load()?;
    // Settings errors before the model loads.
    cfg.raft.validate()?;
    cfg.rollout.validate()?;
    cfg.train.validate()?;
    if cfg.rewards.is_empty() {
        build_all(&cfg.rewards, 0)?; // fails, naming the reward kinds
    }
    if !cfg.out.is_empty() && Path::new(&cfg.out).join("rounds.jsonl").exists() {
        bail!("{} already holds a run with rounds (rounds.jsonl); choose another --out", cfg.out);
    }
    let rl::Start { dir, base, tok, train: train_prompts, eval: eval_prompts, policy: t } =
        rl::start("raft", train_args.resume.is_some(), &cfg, &cfg.out, &cfg.model, &cfg.data, &cfg.lora, &cfg.train)?;
    drop(base); // full fine-tuning trains a copy; LoRA shares the base's storage
    let prompts = rl::rl_prompts(&train_prompts);
    let sources: Vec<(Box<dyn RewardSource>, f64)> = build_all(&cfg.rewards, tok.pad_id())?;
    let mut setup = RaftSetup {
        policy: &t.model,
        params: &t.params,
        tokenizer: &tok,
        prompts: &prompts,
        sources,
        eval: rl::held_out(&eval_prompts, &cfg.eval, tok.pad_id())?,
    };
    // Evaluated before the first round and after every round.
    let resume = train_args.resume.clone();
    let run = RunInfo { dir: &dir, config: serde_json::to_value(&cfg)?, eval_steps: 1, resume };
    let mut save_round = |_: u64, round_dir: &Path| {
        common::save_final(&t, &tok, round_dir).map_err(|e| TrainError::file(round_dir, format!("{e:#}")))
    };
    let mut bar = TrainBar::default();
    let mut on_sft_step = |_: u64, r: &StepReport| {
        if r.step == 1 {
            bar = TrainBar::default(); // a new bar for each round's SFT
        }
        bar.report(r)
    };
    let mut on_round = |r: &StepReport| {
        eprintln!(
            "raft round {}/{}: mean reward {:.4} ({:.1} s)",
            r.step,
            r.total_steps,
            r.loss,
            stat(r, keys::STEP_TIME)
        )
    };
    let hooks = &mut RaftHooks { save_round: &mut save_round, on_sft_step: &mut on_sft_step, on_round: &mut on_round };
    train_raft(&mut setup, &cfg.raft, &cfg.rollout, &cfg.train, &run, hooks)?;
    drop(setup);
    print_rounds(&dir.join("metrics.jsonl"))?;
    let last = dir.join(format!("round-{}", cfg.raft.rounds)).join("final");
    println!(
        "raft: {} rounds; per-round metrics in {}; last model in {}",
        cfg.raft.rounds,
        dir.join("metrics.jsonl").display(),
        last.display()
    );
    Ok(())
}

fn stat(r: &StepReport, name: &str) -> f64 {
    r.stats.iter().find(|(k, _)| k == name).map_or(f64::NAN, |(_, v)| *v)
}

/// The per-round table from the run's `metrics.jsonl` (so a resumed run shows every round):
/// rewards of all and of kept samples, what was kept, length, SFT loss, and the held-out reward
/// when there is an evaluation (round 0 = the starting model).
fn print_rounds(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // A round's training line and its evaluation line, merged.
    let mut rounds: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else { continue };
        let Some(step) = obj.get("step").and_then(|s| s.as_u64()) else { continue };
        let round = rounds.entry(step).or_default();
        round.extend(obj.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN))));
    }
    let eval_key = rounds.values().flat_map(|r| r.keys()).find(|k| k.starts_with(keys::EVAL_REWARD_PREFIX)).cloned();
    let eval_head = eval_key.as_deref().map(|k| k.trim_start_matches("eval/")).unwrap_or("");
    println!(
        "{:>5} {:>10} {:>10} {:>6} {:>8} {:>8} {:>9}  {}",
        "round", "reward", "kept rew.", "kept", "prompt%", "length", "SFT loss", eval_head
    );
    let f = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{x:.4}") };
    for (&round, r) in &rounds {
        let get = |k: &str| r.get(k).copied().unwrap_or(f64::NAN);
        let eval = eval_key.as_deref().map(|k| f(get(k))).unwrap_or_default();
        if round == 0 {
            println!("{:>5} {:>10} {:>10} {:>6} {:>8} {:>8} {:>9}  {eval}", "base", "", "", "", "", "", "");
            continue;
        }
        println!(
            "{:>5} {:>10} {:>10} {:>6} {:>7.0}% {:>8.1} {:>9}  {eval}",
            round,
            f(get(keys::REWARD_MEAN)),
            f(get(keys::KEPT_REWARD_MEAN)),
            get(keys::KEPT),
            100.0 * get(keys::KEPT_PROMPT_SHARE),
            get(keys::RESPONSE_LENGTH),
            f(get(keys::SFT_LOSS)),
        );
    }
    Ok(())
}
