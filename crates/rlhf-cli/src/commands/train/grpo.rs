//! `rlhf grpo`: Group Relative Policy Optimization against verifiers and/or reward models.

use super::common::DataConfig;
use super::common::{self, LoraSection, TrainBar};
use super::rl::{self, EvalSection};
use crate::commands::rewards::{build_all, RewardSpec, SourceSpec};
use anyhow::Result;
use rlhf_reward::RewardSource;
use rlhf_train::grpo::{train_grpo, GrpoConfig, GrpoSetup};
use rlhf_train::online::RunInfo;
use rlhf_train::rollout::RolloutConfig;

rl::online_command_config! {
    pub struct GrpoCommandConfig {
        /// Reference model for the KL term; empty = the starting model (LoRA: the base).
        pub reference: String,
        /// Held-out evaluation every this many steps (0 = before and after only).
        pub eval_steps: usize,
        pub grpo: GrpoConfig,
    }
}

impl Default for GrpoCommandConfig {
    fn default() -> Self {
        Self {
            model: "default".into(),
            out: String::new(),
            reference: String::new(),
            eval_steps: 0,
            grpo: GrpoConfig::default(),
            data: DataConfig::prompts(),
            rollout: RolloutConfig::default(),
            train: GrpoConfig::train_defaults(),
            lora: LoraSection::default(),
            rewards: vec![RewardSpec::of(SourceSpec::Math {})],
            eval: EvalSection::default(),
        }
    }
}

pub fn run(args: rl::RlArgs) -> Result<()> {
    let args = args.into_train("grpo");
    let cfg: GrpoCommandConfig = args.load()?;
    let rl::Start { dir, base, tok, train: train_prompts, eval: eval_prompts, policy: t } =
        rl::start("grpo", args.resume.is_some(), &cfg, &cfg.out, &cfg.model, &cfg.data, &cfg.lora, &cfg.train)?;
    let needs_reference = cfg.grpo.beta != 0.0 || cfg.grpo.max_kl > 0.0;
    let reference = rl::reference_model(needs_reference, &cfg.reference, &t, base)?;
    let prompts = rl::rl_prompts(&train_prompts);
    let sources: Vec<(Box<dyn RewardSource>, f64)> = build_all(&cfg.rewards, tok.pad_id())?;
    let mut setup = GrpoSetup {
        policy: &t.model,
        params: &t.params,
        reference: reference.as_ref(),
        tokenizer: &tok,
        prompts: &prompts,
        sources,
        eval: rl::held_out(&eval_prompts, &cfg.eval, tok.pad_id())?,
    };
    let run = RunInfo {
        dir: &dir,
        config: serde_json::to_value(&cfg)?,
        eval_steps: cfg.eval_steps,
        resume: args.resume.clone(),
    };
    let mut bar = TrainBar::labelled("reward");
    let eval = train_grpo(&mut setup, &cfg.grpo, &cfg.rollout, &cfg.train, &run, &mut |r| bar.report(r))?;
    drop(setup);
    rl::print_eval("held-out evaluation after training", &eval);
    rl::print_curve(&dir)?;
    let out = common::save_final(&t, &tok, &dir)?;
    println!("grpo: model in {}", out.display());
    Ok(())
}
