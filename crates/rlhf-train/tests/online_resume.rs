//! Online runs continue bit for bit from a checkpoint: GRPO (β > 0, μ = 2, linear decay) and PPO
//! (its own critic, adaptive KL) stopped after step 2 and resumed end with the parameters,
//! metrics and samples of one uninterrupted run (this caught AdamW's bias correction restarting
//! from the trainer's step where a step makes several optimiser steps). RAFT stopped in its third
//! round, with that round's folder half written, redoes the round and ends where an
//! uninterrupted run does. A changed configuration is refused, and so is a checkpoint of one
//! round's fine-tuning passed as RAFT's.

use candle_core::{DType, Tensor, Var};
use rlhf_model::{tiny, CausalLm};
use rlhf_train::grpo::{train_grpo, GrpoConfig, GrpoSetup};
use rlhf_train::kl::{KlControl, KlControllerConfig};
use rlhf_train::online::{RlPrompt, RunInfo};
use rlhf_train::ppo::{train_ppo, Critic, PpoConfig, PpoSetup};
use rlhf_train::raft::{train_raft, RaftConfig, RaftHooks, RaftSetup};
use rlhf_train::rollout::{PromptRef, RolloutConfig};
use rlhf_train::{ScheduleKind, TrainConfig};
use std::path::{Path, PathBuf};

mod common;
use common::DigitShare;

const STEPS: usize = 4;

fn tiny_model(seed: u64) -> CausalLm {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

fn train_cfg() -> TrainConfig {
    TrainConfig {
        learning_rate: 1e-2,
        lr_scheduler: ScheduleKind::Linear,
        max_steps: STEPS,
        save_steps: 2,
        ..TrainConfig::default()
    }
}

fn rollout_cfg() -> RolloutConfig {
    RolloutConfig { max_new_tokens: 6, temperature: 1.0, ..RolloutConfig::default() }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-online-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(params: &[(String, Var)]) -> Vec<Vec<f32>> {
    params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

/// metrics.jsonl without wall-clock fields, and samples.jsonl.
fn logs(dir: &Path) -> (Vec<serde_json::Value>, String) {
    let timing = ["time", "elapsed_seconds", "train_seconds", "step_time", "update/seconds"];
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.retain(|k, _| !timing.contains(&k.as_str()) && !k.ends_with("per_sec") && !k.starts_with("eval/"));
            v
        })
        .collect();
    (metrics, std::fs::read_to_string(dir.join("samples.jsonl")).unwrap())
}

/// A GRPO run in `dir` from fresh models; `resume` continues from a checkpoint. The parameters.
fn grpo(dir: &Path, resume: Option<PathBuf>, config: serde_json::Value) -> rlhf_train::Result<Vec<Vec<f32>>> {
    let tok = rlhf_data::tiny::tokenizer();
    let base = tiny_model(3);
    let (policy, params) = base.trainable().unwrap();
    let ids: Vec<Vec<u32>> = ["ab", "hello", "xyz", "q"].iter().map(|p| tok.encode(p, false).unwrap()).collect();
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let mut setup = GrpoSetup {
        policy: &policy,
        params: &params,
        reference: Some(&base),
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(DigitShare::new(&tok), 1.0)],
        eval: None,
    };
    let cfg =
        GrpoConfig { num_generations: 4, prompts_per_step: 2, beta: 0.01, num_iterations: 2, ..GrpoConfig::default() };
    let run = RunInfo { dir, config, eval_steps: 0, resume };
    train_grpo(&mut setup, &cfg, &rollout_cfg(), &train_cfg(), &run, &mut |_| {})?;
    Ok(values(&params))
}

/// A PPO run with its own critic and an adaptive KL coefficient; policy then critic parameters.
fn ppo(dir: &Path, resume: Option<PathBuf>) -> Vec<Vec<f32>> {
    let tok = rlhf_data::tiny::tokenizer();
    let base = tiny_model(5);
    let (policy, params) = base.trainable().unwrap();
    let (critic_trunk, mut critic_params) = tiny_model(6).trainable().unwrap();
    let head = Var::from_tensor(&Tensor::zeros((1, 16), DType::F32, &candle_core::Device::Cpu).unwrap()).unwrap();
    critic_params.push(("score.weight".into(), head.clone()));
    let ids: Vec<Vec<u32>> = ["ab", "hello", "xyz", "q"].iter().map(|p| tok.encode(p, false).unwrap()).collect();
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let mut setup = PpoSetup {
        policy: &policy,
        params: &params,
        reference: &base,
        critic: Critic { trunk: &critic_trunk, head: head.as_tensor() },
        critic_params: &critic_params,
        shared_trunk: false,
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(DigitShare::new(&tok), 1.0)],
        eval: None,
    };
    let kl = KlControllerConfig { kind: KlControl::Adaptive, init_kl_coef: 0.05, target: 0.01, horizon: 10.0 };
    let cfg = PpoConfig { prompts_per_step: 4, ppo_epochs: 2, num_minibatches: 2, kl, ..PpoConfig::default() };
    let run = RunInfo { dir, config: serde_json::json!({"ppo": 1}), eval_steps: 0, resume };
    train_ppo(&mut setup, &cfg, &rollout_cfg(), &train_cfg(), &train_cfg(), &run, &mut |_| {}).unwrap();
    let mut all = values(&params);
    all.extend(values(&critic_params));
    all
}

#[test]
fn grpo_resumes_bit_identically() {
    let (whole, cut) = (fresh_dir("grpo-whole"), fresh_dir("grpo-cut"));
    let config = serde_json::json!({"grpo": 1});
    let expected = grpo(&whole, None, config.clone()).unwrap();
    // The same run, "killed" after its step-4 checkpoint was lost: resume from step 2.
    grpo(&cut, None, config.clone()).unwrap();
    std::fs::remove_dir_all(cut.join("checkpoints/step-000004")).unwrap();
    let resumed = grpo(&cut, Some(cut.clone()), config.clone()).unwrap();
    assert!(expected == resumed, "parameters differ after resuming");
    let (m, s) = logs(&cut);
    assert_eq!(m.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4], "each step once");
    assert_eq!((m, s), logs(&whole), "metrics and samples differ after resuming");
    // A different configuration is refused, naming the checkpoint.
    let err = grpo(&cut, Some(cut.clone()), serde_json::json!({"grpo": 2})).unwrap_err().to_string();
    assert!(err.contains("cannot resume") && err.contains("step-000004"), "{err}");
    for d in [whole, cut] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn ppo_resumes_bit_identically_with_its_critic_and_kl_coefficient() {
    let (whole, cut) = (fresh_dir("ppo-whole"), fresh_dir("ppo-cut"));
    let expected = ppo(&whole, None);
    ppo(&cut, None);
    for sub in ["checkpoints", "critic_checkpoints"] {
        std::fs::remove_dir_all(cut.join(sub).join("step-000004")).unwrap();
    }
    let resumed = ppo(&cut, Some(cut.join("checkpoints/step-000002")));
    assert!(expected == resumed, "parameters differ after resuming");
    let (m, s) = logs(&cut);
    let coef: Vec<f64> = m.iter().map(|v| v["kl/coef"].as_f64().unwrap()).collect();
    assert!(coef[3] != coef[0], "the adaptive coefficient moved: {coef:?}");
    assert_eq!((m, s), logs(&whole), "metrics and samples differ after resuming");
    for d in [whole, cut] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A RAFT run of `rounds` rounds (best of 4, two prompts a round, two SFT steps a round) with
/// the configuration of a 3-round run; the parameters.
fn raft(dir: &Path, rounds: usize, resume: Option<PathBuf>) -> rlhf_train::Result<Vec<Vec<f32>>> {
    let tok = rlhf_data::tiny::tokenizer();
    let (policy, params) = tiny_model(7).trainable().unwrap();
    let ids: Vec<Vec<u32>> = ["ab", "hello", "xyz", "q"].iter().map(|p| tok.encode(p, false).unwrap()).collect();
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let mut setup = RaftSetup {
        policy: &policy,
        params: &params,
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(DigitShare::new(&tok), 1.0)],
        eval: None,
    };
    let cfg = RaftConfig { rounds, samples_per_prompt: 4, prompts_per_round: 2, ..Default::default() };
    let sft = TrainConfig { learning_rate: 1e-2, batch_size: 1, epochs: 1.0, ..TrainConfig::default() };
    let run = RunInfo { dir, config: serde_json::json!({"raft": 3}), eval_steps: 1, resume };
    let mut save_round = |_: u64, round_dir: &Path| Ok(round_dir.to_path_buf());
    let hooks = &mut RaftHooks { save_round: &mut save_round, on_sft_step: &mut |_, _| {}, on_round: &mut |_| {} };
    train_raft(&mut setup, &cfg, &rollout_cfg(), &sft, &run, hooks)?;
    Ok(values(&params))
}

#[test]
fn raft_resumes_after_the_last_complete_round() {
    let (whole, cut) = (fresh_dir("raft-whole"), fresh_dir("raft-cut"));
    let expected = raft(&whole, 3, None).unwrap();
    // Stopped during round 3: two rounds done, round 3's folder and samples half written.
    raft(&cut, 2, None).unwrap();
    std::fs::create_dir_all(cut.join("round-3")).unwrap();
    std::fs::write(cut.join("round-3/metrics.jsonl"), "{\"step\":1,\"loss\":9.0}\n").unwrap();
    let stale = std::fs::read_to_string(cut.join("samples.jsonl"))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .replace("\"step\":2", "\"step\":3");
    std::fs::write(
        cut.join("samples.jsonl"),
        std::fs::read_to_string(cut.join("samples.jsonl")).unwrap() + &stale + "\n",
    )
    .unwrap();
    let resumed = raft(&cut, 3, Some(cut.clone())).unwrap();
    assert!(expected == resumed, "parameters differ after resuming");
    assert!(expected != values(&tiny_model(7).trainable().unwrap().1), "the rounds trained");
    let (m, s) = logs(&cut);
    assert_eq!(m.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "each round once");
    assert_eq!((m, s), logs(&whole), "metrics and samples differ after resuming");
    let round3 = |d: &Path| std::fs::read_to_string(d.join("round-3/metrics.jsonl")).unwrap();
    assert_eq!(logs_without_time(&round3(&cut)), logs_without_time(&round3(&whole)), "round 3 was redone afresh");
    // Only the run's own checkpoints: a round's fine-tuning writes none (its model is in final/).
    for r in 1..=3 {
        assert!(!cut.join(format!("round-{r}/checkpoints")).exists(), "round {r} left checkpoints");
        assert!(cut.join(format!("round-{r}/metrics.jsonl")).exists());
    }
    for d in [whole, cut] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A metrics file's lines without the wall-clock fields.
fn logs_without_time(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !["time", "step_time", "tokens_per_sec"].contains(&k.as_str()));
            v
        })
        .collect()
}
