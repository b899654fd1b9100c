//! `rlhf ppo`: PPO with a critic against reward models and/or verifiers, KL-penalised per token
//! towards a frozen reference.

use super::common::DataConfig;
use super::common::{self, LoraSection, TrainBar};
use super::rl::{self, EvalSection};
use crate::commands::rewards::{build_all, RewardSpec};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rlhf_model::heads::{load_sequence_classifier, SCORE_WEIGHT};
use rlhf_reward::RewardSource;
use rlhf_train::online::RunInfo;
use rlhf_train::ppo::{train_ppo, Critic, PpoConfig, PpoSetup};
use rlhf_train::rollout::RolloutConfig;
use rlhf_train::TrainConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriticSection {
    /// Reward-model folder to start the critic from (trunk and head, as InstructGPT does);
    /// empty = the policy's starting weights with a zero value head.
    pub model: String,
    /// The critic's learning rate (0 = the policy's).
    pub learning_rate: f64,
    /// Start from the reward model's score head too. Off by default: the value head starts at 0
    /// (docs/ARCHITECTURE.md, detail 16), because the returns are built from normalised rewards while the RM
    /// head predicts raw scores — starting far off, with value clipping slowing the correction.
    pub keep_head: bool,
    /// Put a zero-initialised value head on the policy's own trunk (one model, one backward of
    /// pg + vf_coef·vf) instead of a separate critic model: half the memory.
    pub shared_trunk: bool,
}

impl Default for CriticSection {
    fn default() -> Self {
        Self { model: String::new(), learning_rate: 0.0, keep_head: false, shared_trunk: false }
    }
}

rl::online_command_config! {
    pub struct PpoCommandConfig {
        /// Reference for the KL penalty; empty = the starting model (LoRA: the base).
        pub reference: String,
        /// Held-out evaluation every this many steps (0 = before and after only).
        pub eval_steps: usize,
        pub critic: CriticSection,
        pub ppo: PpoConfig,
    }
}

impl Default for PpoCommandConfig {
    fn default() -> Self {
        Self {
            model: "default".into(),
            out: String::new(),
            reference: String::new(),
            eval_steps: 0,
            critic: CriticSection::default(),
            ppo: PpoConfig::default(),
            data: DataConfig::prompts(),
            rollout: RolloutConfig::default(),
            train: PpoConfig::train_defaults(),
            lora: LoraSection::default(),
            rewards: vec![RewardSpec::reward_model("")],
            eval: EvalSection::default(),
        }
    }
}

pub fn run(args: rl::RlArgs) -> Result<()> {
    let args = args.into_train("ppo");
    let cfg: PpoCommandConfig = args.load()?;
    let rl::Start { dir, base, tok, train: train_prompts, eval: eval_prompts, policy: mut t } =
        rl::start("ppo", args.resume.is_some(), &cfg, &cfg.out, &cfg.model, &cfg.data, &cfg.lora, &cfg.train)?;
    let shared = cfg.critic.shared_trunk;
    if shared && !cfg.critic.model.is_empty() {
        bail!("critic.shared_trunk = true puts the value head on the policy: leave critic.model empty");
    }
    let d = base.config().hidden_size;
    let (separate, head) = match (shared, cfg.critic.model.is_empty()) {
        (true, _) => (None, Tensor::zeros((1, d), DType::F32, &Device::Cpu)?),
        (false, true) => (Some(base.detached()?.trainable()?), Tensor::zeros((1, d), DType::F32, &Device::Cpu)?),
        (false, false) => {
            let critic = crate::loading::resolve_model(&cfg.critic.model)?;
            let (m, h, _) = load_sequence_classifier(&critic, DType::F32, &Device::Cpu)
                .with_context(|| format!("loading the critic from {}", cfg.critic.model))?;
            let head = if cfg.critic.keep_head { h } else { h.zeros_like()? };
            (Some(m.trainable()?), head)
        }
    };
    let head = Var::from_tensor(&head)?;
    let (critic_trunk, mut critic_params) = match separate {
        Some((m, p)) => (Some(m), p),
        None => (None, Vec::new()),
    };
    if shared {
        t.params.push((SCORE_WEIGHT.to_string(), head.clone()));
    } else {
        critic_params.push((SCORE_WEIGHT.to_string(), head.clone()));
    }
    let reference = rl::reference_model(true, &cfg.reference, &t, base)?.context("PPO always has a reference model")?;
    let prompts = rl::rl_prompts(&train_prompts);
    let sources: Vec<(Box<dyn RewardSource>, f64)> = build_all(&cfg.rewards, tok.pad_id())?;
    let mut setup = PpoSetup {
        policy: &t.model,
        params: &t.params,
        reference: &reference,
        critic: Critic { trunk: critic_trunk.as_ref().unwrap_or(&t.model), head: head.as_tensor() },
        critic_params: &critic_params,
        shared_trunk: shared,
        tokenizer: &tok,
        prompts: &prompts,
        sources,
        eval: rl::held_out(&eval_prompts, &cfg.eval, tok.pad_id())?,
    };
    let critic_lr = if cfg.critic.learning_rate > 0.0 { cfg.critic.learning_rate } else { cfg.train.learning_rate };
    let critic_train = TrainConfig { learning_rate: critic_lr, ..cfg.train.clone() };
    let run = RunInfo {
        dir: &dir,
        config: serde_json::to_value(&cfg)?,
        eval_steps: cfg.eval_steps,
        resume: args.resume.clone(),
    };
    let mut bar = TrainBar::labelled("score");
    let eval = train_ppo(&mut setup, &cfg.ppo, &cfg.rollout, &cfg.train, &critic_train, &run, &mut |r| bar.report(r))?;
    drop(setup);
    rl::print_eval("held-out evaluation after training", &eval);
    rl::print_curve(&dir)?;
    let out = common::save_final(&t, &tok, &dir)?;
    println!("ppo: model in {}", out.display());
    Ok(())
}
