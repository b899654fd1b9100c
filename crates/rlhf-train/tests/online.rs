//! Online RL on tiny models: GRPO and PPO learn a toy verifiable task, the first minibatch has
//! ratio 1 and KL 0, and every loss aggregation gives the same gradient under micro-batching.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rlhf_data::Tokenizer;
use rlhf_model::grads::Grads;
use rlhf_model::{tiny, CausalLm};
use rlhf_reward::{RewardSource, Sample, Score};
use rlhf_train::aggregate::{token_weights, LossAggregation};
use rlhf_train::grpo::{train_grpo, GrpoConfig, GrpoSetup};
use rlhf_train::kl::{KlControllerConfig, KlPlacement};
use rlhf_train::online::{PolicyObjective, PolicyRow};
use rlhf_train::online::{RlPrompt, RunInfo};
use rlhf_train::policy_loss::ClipConfig;
use rlhf_train::ppo::{train_ppo, Critic, PpoConfig, PpoSetup};
use rlhf_train::rollout::{PromptRef, RolloutConfig};
use rlhf_train::trainer::accumulate_batch;
use rlhf_train::{ScheduleKind, TrainConfig};
use std::path::Path;

mod common;
use common::DigitShare;

fn tiny_model(seed: u64) -> CausalLm {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

fn prompt_ids(tok: &Tokenizer) -> Vec<Vec<u32>> {
    ["ab", "hello", "xyz", "q"].iter().map(|p| tok.encode(p, false).unwrap()).collect()
}

fn rollout_cfg() -> RolloutConfig {
    RolloutConfig { max_new_tokens: 6, temperature: 1.0, ..RolloutConfig::default() }
}

fn read_metric(dir: &Path, key: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v.get(key)?.as_f64()?))
        })
        .collect()
}

#[test]
fn grpo_learns_a_toy_task_with_ratio_one_and_zero_kl_at_first() {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = GrpoConfig { num_generations: 8, prompts_per_step: 4, beta: 0.01, ..GrpoConfig::default() };
    let t0 = std::time::Instant::now();
    let dir = toy_grpo("grpo", cfg, DigitShare::new(&tok), 40);
    let reward = read_metric(&dir, "reward/mean");
    let ratio = read_metric(&dir, "ratio/mean");
    let kl = read_metric(&dir, "kl/sequence");
    eprintln!(
        "grpo toy: {:?} in {:.1}s",
        reward.iter().map(|(_, r)| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
        t0.elapsed().as_secs_f64()
    );
    assert!(reward[0].1 < 0.2, "a random model rarely writes digits: {}", reward[0].1);
    let last: f64 = reward[reward.len() - 5..].iter().map(|(_, r)| r).sum::<f64>() / 5.0;
    assert!(last > 0.8, "GRPO should raise the digit share past 0.8, got {last}");
    assert!((ratio[0].1 - 1.0).abs() < 1e-12, "on-policy ratio is exactly 1: {}", ratio[0].1);
    assert!(kl[0].1.abs() < 1e-4, "KL to the reference at init: {}", kl[0].1);
    assert!(kl.last().unwrap().1 > 1e-3, "the policy moved away from the reference");
    assert!(dir.join("checkpoints").exists());
}

/// PPO on the toy task; `shared` puts the value head on the policy's trunk.
fn toy_ppo(name: &str, shared: bool, kl_placement: KlPlacement) -> std::path::PathBuf {
    let tok = rlhf_data::tiny::tokenizer();
    let base = tiny_model(5);
    let (policy, mut params) = base.trainable().unwrap();
    let (separate, mut critic_params) = tiny_model(6).trainable().unwrap();
    let head = Var::from_tensor(&Tensor::zeros((1, 16), DType::F32, &candle_core::Device::Cpu).unwrap()).unwrap();
    if shared {
        params.push(("score.weight".into(), head.clone()));
        critic_params.clear();
    } else {
        critic_params.push(("score.weight".into(), head.clone()));
    }
    let ids = prompt_ids(&tok);
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let dir = tempdir(name);
    let mut setup = PpoSetup {
        policy: &policy,
        params: &params,
        reference: &base,
        critic: Critic { trunk: if shared { &policy } else { &separate }, head: head.as_tensor() },
        critic_params: &critic_params,
        shared_trunk: shared,
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(DigitShare::new(&tok), 1.0)],
        eval: None,
    };
    let cfg = PpoConfig {
        prompts_per_step: 16,
        ppo_epochs: 4,
        num_minibatches: 2,
        kl: KlControllerConfig { init_kl_coef: 0.005, ..KlControllerConfig::default() },
        kl_placement,
        ..PpoConfig::default()
    };
    let train = TrainConfig {
        learning_rate: 1e-2,
        lr_scheduler: ScheduleKind::Constant,
        max_steps: 40,
        save_steps: 0,
        ..TrainConfig::default()
    };
    let run = RunInfo { dir: &dir, config: serde_json::json!({}), eval_steps: 0, resume: None };
    let t0 = std::time::Instant::now();
    train_ppo(&mut setup, &cfg, &rollout_cfg(), &train, &train, &run, &mut |_| {}).unwrap();
    let reward = read_metric(&dir, "reward/score");
    eprintln!(
        "ppo toy ({name}): {:?} in {:.1}s",
        reward.iter().map(|(_, r)| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
        t0.elapsed().as_secs_f64()
    );
    dir
}

#[test]
fn ppo_learns_a_toy_task_and_starts_at_ratio_one() {
    let dir = toy_ppo("ppo", false, KlPlacement::Reward);
    let reward = read_metric(&dir, "reward/score");
    let ratio = read_metric(&dir, "ratio/first_minibatch");
    let kl = read_metric(&dir, "kl/sequence");
    assert!(reward[0].1 < 0.2, "{}", reward[0].1);
    let last = tail_mean(&dir, "reward/score", 5);
    assert!(last > 0.8, "PPO should raise the digit share past 0.8, got {last}");
    assert!((ratio[0].1 - 1.0).abs() < 1e-5, "first minibatch ratio {}", ratio[0].1);
    assert!(kl[0].1.abs() < 1e-4, "KL at init {}", kl[0].1);
    assert!(dir.join("critic_checkpoints").exists());
}

#[test]
fn ppo_with_a_shared_trunk_and_kl_in_the_loss_learns_too() {
    let dir = toy_ppo("ppo-shared", true, KlPlacement::Loss);
    let last = tail_mean(&dir, "reward/score", 5);
    assert!(last > 0.8, "shared-trunk PPO should raise the digit share past 0.8, got {last}");
    assert!(read_metric(&dir, "value/loss").iter().all(|(_, v)| v.is_finite()));
    assert!(!dir.join("critic_checkpoints").exists(), "a shared trunk has no separate critic");
    let values = read_metric(&dir, "value/mean");
    assert_eq!(values[0].1, 0.0, "the value head starts at zero");
    let last = tail_mean(&dir, "value/mean", 5);
    assert!(last > 0.5, "the shared value head tracks the returns (≈ 1 at the end): {values:?}");
}

fn grads(model: &CausalLm, params: &[(String, Var)]) -> Vec<Vec<f32>> {
    let store = GradStore::default();
    let g: Grads = model.grads(&store);
    let out = params
        .iter()
        .map(|(n, v)| g.get(n, v).unwrap().map_or(vec![], |t| t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    model.zero_grad();
    out
}

#[test]
fn every_loss_aggregation_gives_the_whole_batch_gradient_in_micro_batches() {
    let base = tiny_model(9);
    let (policy, params) = base.trainable().unwrap();
    let rows: Vec<PolicyRow> = (0..5)
        .map(|i| {
            let response: Vec<u32> = (0..2 + i % 3).map(|k| (60 + 7 * i + k) as u32).collect();
            let n = response.len();
            PolicyRow {
                prompt: vec![1, 40 + i as u32],
                response,
                old_logp: Some((0..n).map(|k| -5.6 + 0.1 * k as f64).collect()),
                ref_logp: Some(vec![-5.5; n]),
                sampler_logp: vec![-5.5; n],
                advantages: (0..n).map(|k| if i % 2 == 0 { 1.0 + k as f64 } else { -0.7 }).collect(),
                weights: Vec::new(),
            }
        })
        .collect();
    for mode in [
        LossAggregation::SequenceMean,
        LossAggregation::TokenMean,
        LossAggregation::Bnpo,
        LossAggregation::ConstantDivisor,
    ] {
        let lengths: Vec<usize> = rows.iter().map(|r| r.response.len()).collect();
        let mut rows = rows.clone();
        for (r, w) in rows.iter_mut().zip(token_weights(mode, &lengths, 6, None)) {
            r.weights = w;
        }
        let refs: Vec<&PolicyRow> = rows.iter().collect();
        let clip = ClipConfig { epsilon_low: 0.2, epsilon_high: 0.28, dual_clip: None };
        let mut obj = PolicyObjective::new(&policy, 0, 1.0, clip);
        obj.kl_coef = 0.04;
        accumulate_batch(&mut obj, &refs, 5, &params).unwrap();
        let whole = grads(&policy, &params);
        accumulate_batch(&mut obj, &refs, 2, &params).unwrap();
        let micro = grads(&policy, &params);
        let (mut num, mut den) = (0f64, 0f64);
        for (a, b) in whole.iter().flatten().zip(micro.iter().flatten()) {
            num += ((a - b) as f64).powi(2);
            den += (*a as f64).powi(2);
        }
        assert!(den > 0.0, "{mode:?}: the loss has a gradient");
        assert!(
            (num / den).sqrt() < 1e-5,
            "{mode:?}: micro-batches differ from the whole batch by {}",
            (num / den).sqrt()
        );
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-online-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs every response as `solution` (so the prompt's hostile `tests` really execute) through
/// the sandboxed code verifier.
struct FixedSolution(rlhf_reward::CodeVerifier);

impl RewardSource for FixedSolution {
    fn name(&self) -> &str {
        "code"
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> rlhf_reward::Result<Vec<Score>> {
        let fixed: Vec<Sample> =
            samples.iter().map(|s| Sample { response: "def solution():\n    return 1\n", ..*s }).collect();
        self.0.score(&fixed)
    }
}

#[test]
fn grpo_keeps_training_when_sandboxed_programs_misbehave() {
    // Not under /tmp: the sandbox's /tmp is a private one of its own (and CI clones under /tmp).
    let outside = std::path::Path::new("/var/tmp").join(format!("rlhf_outside_{}", std::process::id()));
    let hostile = [
        "while True:\n    pass\n".to_string(),
        "import os\nwhile True:\n    os.fork()\n".to_string(),
        "import socket\nsocket.create_connection(('127.0.0.1', 9))\n".to_string(),
        format!("open({:?}, 'w').write('escaped')\n", outside.display().to_string()),
        "print('x' * 100_000_000)\n".to_string(),
        "assert solution() == 1\n".to_string(),
    ];
    let tok = rlhf_data::tiny::tokenizer();
    let base = tiny_model(11);
    let (policy, params) = base.trainable().unwrap();
    let ids = prompt_ids(&tok);
    let prompts: Vec<RlPrompt> = hostile
        .iter()
        .enumerate()
        .map(|(i, t)| RlPrompt { ids: &ids[i % ids.len()], refs: PromptRef { answer: None, tests: Some(t) } })
        .collect();
    let sandbox = rlhf_reward::SandboxConfig { wall_seconds: 2.0, cpu_seconds: 2, ..Default::default() };
    let verifier = rlhf_reward::CodeVerifier::new(rlhf_reward::CodeConfig { sandbox, ..Default::default() }).unwrap();
    let dir = tempdir("hostile");
    let mut setup = GrpoSetup {
        policy: &policy,
        params: &params,
        reference: None,
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(Box::new(FixedSolution(verifier)), 1.0)],
        eval: None,
    };
    let cfg = GrpoConfig { num_generations: 2, prompts_per_step: 6, ..GrpoConfig::default() };
    let train = TrainConfig { max_steps: 2, save_steps: 0, ..TrainConfig::default() };
    let run = RunInfo { dir: &dir, config: serde_json::json!({}), eval_steps: 0, resume: None };
    train_grpo(&mut setup, &cfg, &rollout_cfg(), &train, &run, &mut |_| {}).unwrap();
    assert!(!outside.exists(), "a program wrote outside its sandbox directory");
    let samples: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 2 * 12, "every response of both steps is logged");
    for s in &samples {
        let reward = s["rewards"]["code"].as_f64().unwrap();
        assert!(reward == 0.0 || reward == 1.0, "{s}");
        if reward == 0.0 {
            assert!(s["notes"]["code"].as_str().is_some_and(|n| !n.is_empty()), "a failed program is reported: {s}");
        }
    }
    let notes: Vec<&str> = samples.iter().filter_map(|s| s["notes"]["code"].as_str()).collect();
    for kind in ["timeout", "blocked", "output"] {
        assert!(notes.iter().any(|n| n.contains(kind)), "no `{kind}` outcome among {notes:?}");
    }
    let passed = samples.iter().filter(|s| s["rewards"]["code"].as_f64() == Some(1.0)).count();
    assert_eq!(passed, 4, "the well-behaved program passes in both steps (2 samples each)");
    assert!(dir.join("checkpoints").exists(), "training went on to the end");
}

/// Process supervision on the toy task: every response byte is a step, rewarded 1 when it is
/// a digit, so each token gets its own (cumulative) advantage.
struct DigitSteps;

impl RewardSource for DigitSteps {
    fn name(&self) -> &str {
        "digit_steps"
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> rlhf_reward::Result<Vec<Score>> {
        Ok(samples
            .iter()
            .map(|s| {
                let steps: Vec<(usize, f64)> = s
                    .response
                    .bytes()
                    .enumerate()
                    .map(|(i, b)| (i + 1, f64::from(u8::from(b.is_ascii_digit()))))
                    .collect();
                let share = steps.iter().map(|(_, r)| r).sum::<f64>() / steps.len().max(1) as f64;
                Score { value: Some(share), steps, note: None }
            })
            .collect())
    }
}

fn toy_grpo(name: &str, cfg: GrpoConfig, source: Box<dyn RewardSource>, steps: usize) -> std::path::PathBuf {
    let tok = rlhf_data::tiny::tokenizer();
    let base = tiny_model(3);
    let (policy, params) = base.trainable().unwrap();
    let ids = prompt_ids(&tok);
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let dir = tempdir(name);
    let mut setup = GrpoSetup {
        policy: &policy,
        params: &params,
        reference: Some(&base),
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(source, 1.0)],
        eval: None,
    };
    let train = TrainConfig {
        learning_rate: 3e-2,
        lr_scheduler: ScheduleKind::Constant,
        max_steps: steps,
        save_steps: 0,
        ..TrainConfig::default()
    };
    let run = RunInfo { dir: &dir, config: serde_json::json!({}), eval_steps: 0, resume: None };
    train_grpo(&mut setup, &cfg, &rollout_cfg(), &train, &run, &mut |_| {}).unwrap();
    dir
}

fn tail_mean(dir: &Path, key: &str, n: usize) -> f64 {
    let v = read_metric(dir, key);
    v[v.len() - n..].iter().map(|(_, x)| x).sum::<f64>() / n as f64
}

#[test]
fn grpo_learns_from_step_rewards_with_process_supervision() {
    let cfg =
        GrpoConfig { num_generations: 8, prompts_per_step: 4, process_supervision: true, ..GrpoConfig::default() };
    let dir = toy_grpo("process", cfg, Box::new(DigitSteps), 40);
    let reward = read_metric(&dir, "reward/mean");
    assert!(reward[0].1 < 0.2);
    let last = tail_mean(&dir, "reward/mean", 5);
    assert!(last > 0.6, "process-supervised GRPO should raise the digit share past 0.6, got {last}");
}

#[test]
fn a_larger_kl_coefficient_keeps_grpo_closer_to_the_reference() {
    let tok = rlhf_data::tiny::tokenizer();
    let run = |name: &str, beta: f64, placement: KlPlacement| {
        let cfg = GrpoConfig {
            num_generations: 8,
            prompts_per_step: 4,
            beta,
            max_kl: 1e9, // measure the KL at every step
            kl_placement: placement,
            ..GrpoConfig::default()
        };
        let dir = toy_grpo(name, cfg, DigitShare::new(&tok), 30);
        (tail_mean(&dir, "kl/sequence", 5), tail_mean(&dir, "reward/mean", 5))
    };
    let (kl_free, reward_free) = run("kl0", 0.0, KlPlacement::Loss);
    let (kl_loss, _) = run("kl-loss", 1.0, KlPlacement::Loss);
    let (kl_reward, _) = run("kl-reward", 1.0, KlPlacement::Reward);
    eprintln!("KL after 30 steps: β=0 {kl_free:.3} (reward {reward_free:.2}), β=1 in loss {kl_loss:.3}, in reward {kl_reward:.3}");
    assert!(kl_free > 1.0, "unconstrained GRPO moves away from the reference: {kl_free}");
    assert!(kl_loss < 0.5 * kl_free, "β in the loss leashes the policy: {kl_loss} vs {kl_free}");
    assert!(kl_reward < 0.5 * kl_free, "β in the reward leashes the policy: {kl_reward} vs {kl_free}");
}

/// `rollout.tis_cap`: on the first pass (ratio 1) each token's loss −A·w is scaled by
/// min(exp(π_trainer − π_sampler), cap), and the weights are reported.
#[test]
fn truncated_importance_sampling_weights_tokens_by_the_capped_sampler_ratio() {
    let policy = tiny_model(1);
    let logp = [-1.0f64, -2.0, -0.5];
    let sampler = [-1.0f32, -2.5, 0.5]; // ratios 1, e^0.5, e^-1
    let row = PolicyRow {
        prompt: vec![5],
        response: vec![6, 7, 8],
        old_logp: None,
        ref_logp: None,
        sampler_logp: sampler.to_vec(),
        advantages: vec![1.0, 2.0, -1.0],
        weights: vec![0.5, 0.25, 1.0],
    };
    let current = Tensor::new(&logp[..], &candle_core::Device::Cpu).unwrap();
    let clip = ClipConfig::default();
    let loss = |cap: f64| {
        let mut obj = PolicyObjective::new(&policy, 0, 1.0, clip.clone()).with_tis_cap(cap);
        let l = obj.loss_given(&[&row], &current).unwrap().to_scalar::<f64>().unwrap();
        (l, obj.take_stats())
    };
    let (plain, _) = loss(0.0);
    assert!((plain - -(0.5 * 1.0 + 0.25 * 2.0 - 1.0)).abs() < 1e-12, "{plain}");
    let (tis, stats) = loss(1.2);
    let want = -(0.5 * 1.0 + 0.25 * 2.0 * 1.2 - (-1.0f64).exp());
    assert!((tis - want).abs() < 1e-12, "{tis} vs {want}");
    let get = |k: &str| stats.iter().find(|(n, _)| n == k).unwrap().1;
    assert!((get("tis/mean_weight") - (1.0 + 1.2 + (-1.0f64).exp()) / 3.0).abs() < 1e-12);
    assert!((get("tis/capped_frac") - 1.0 / 3.0).abs() < 1e-12);
}
