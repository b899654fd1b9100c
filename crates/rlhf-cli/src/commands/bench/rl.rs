//! Online-RL steps for `rlhf bench`: whole GRPO and PPO steps (rollout, scoring, reference /
//! old / value passes, update) through `train_grpo` / `train_ppo`, at the shapes of TRL's GRPO
//! benchmark: the addition prompt, `completions` responses of exactly 32 tokens per step.

use crate::loading;
use anyhow::Result;
use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rlhf_data::Message;
use rlhf_model::heads::SCORE_WEIGHT;
use rlhf_reward::{RewardSource, Sample, Score};
use rlhf_train::grpo::{train_grpo, GrpoConfig, GrpoSetup};
use rlhf_train::metric_keys as keys;
use rlhf_train::online::{RlPrompt, RunInfo};
use rlhf_train::ppo::{train_ppo, Critic, PpoConfig, PpoSetup};
use rlhf_train::rollout::{PromptRef, RolloutConfig};
use rlhf_train::{ScheduleKind, TrainConfig};
use serde_json::{json, Value};

/// Seeded random rewards: every group has variance, so every step runs a full update.
struct RandomReward(rand_chacha::ChaCha8Rng);

impl RewardSource for RandomReward {
    fn name(&self) -> &str {
        "random"
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> rlhf_reward::Result<Vec<Score>> {
        Ok(samples.iter().map(|_| Score::value(self.0.random_range(0.0..1.0))).collect())
    }
}

/// `which` = "grpo" (1 prompt × `completions`) or "ppo" (`completions` prompts, 1 epoch).
pub fn rl_step(model_arg: &str, which: &str, steps: usize, completions: usize, checkpointing: bool) -> Result<Value> {
    let loaded = loading::load(model_arg, &candle_core::Device::Cpu)?;
    let tok = &loaded.tokenizer;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..completions)
        .map(|_| {
            let (a, b) = (rng.random_range(10..=99), rng.random_range(10..=99));
            let q = format!("What is {a} + {b}? Reply with the number only.");
            tok.encode_chat(&[Message::user(&q)], true)
        })
        .collect::<rlhf_data::Result<_>>()?;
    let rl_prompts: Vec<RlPrompt> = prompts.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let roll = RolloutConfig { max_new_tokens: 32, ignore_eos: true, ..RolloutConfig::default() };
    let train = TrainConfig {
        learning_rate: 1e-6,
        lr_scheduler: ScheduleKind::Constant,
        max_steps: steps + 1,
        save_steps: 0,
        gradient_checkpointing: checkpointing,
        ..TrainConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("rlhf-bench-{which}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let run = RunInfo { dir: &dir, config: json!({}), eval_steps: 0, resume: None };
    let mut times = Vec::new();
    let mut record = |r: &rlhf_train::StepReport| {
        if r.step > 1 {
            let get = |k: &str| r.stats.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v);
            times.push((get(keys::STEP_TIME), get(keys::STEP_TIME) - get(keys::UPDATE_SECONDS)));
        }
    };
    let (model, params) = loaded.model.trainable()?;
    let reward: Box<dyn RewardSource> = Box::new(RandomReward(rand_chacha::ChaCha8Rng::seed_from_u64(1)));
    match which {
        "grpo" => {
            drop(loaded.model); // β = 0 (TRL's default): no reference model is kept
            let mut setup = GrpoSetup {
                policy: &model,
                params: &params,
                reference: None,
                tokenizer: tok,
                prompts: &rl_prompts[..1],
                sources: vec![(reward, 1.0)],
                eval: None,
            };
            let cfg = GrpoConfig { num_generations: completions, prompts_per_step: 1, ..GrpoConfig::default() };
            train_grpo(&mut setup, &cfg, &roll, &train, &run, &mut record)?;
        }
        _ => {
            // Policy, frozen reference, critic (trunk + head); the reward is scored on the host.
            let reference = loaded.model;
            let (trunk, mut critic_params) = reference.detached()?.trainable()?;
            let d = trunk.config().hidden_size;
            let head = Var::from_tensor(&Tensor::zeros((1, d), DType::F32, trunk.device())?)?;
            critic_params.push((SCORE_WEIGHT.into(), head.clone()));
            let mut setup = PpoSetup {
                policy: &model,
                params: &params,
                reference: &reference,
                critic: Critic { trunk: &trunk, head: head.as_tensor() },
                critic_params: &critic_params,
                shared_trunk: false,
                tokenizer: tok,
                prompts: &rl_prompts,
                sources: vec![(reward, 1.0)],
                eval: None,
            };
            let cfg = PpoConfig { prompts_per_step: completions, ppo_epochs: 1, ..PpoConfig::default() };
            train_ppo(&mut setup, &cfg, &roll, &train, &train, &run, &mut record)?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let step: Vec<f64> = times.iter().map(|t| t.0).collect();
    let rollout: Vec<f64> = times.iter().map(|t| t.1).collect();
    Ok(json!({
        "trainer": which, "completions": completions, "new_tokens": 32, "gradient_checkpointing": checkpointing,
        "step_s": super::bench::median(&step), "rollout_s": super::bench::median(&rollout), "samples_s": step,
        "peak_rss_mb": super::bench::peak_rss_mb(),
    }))
}
