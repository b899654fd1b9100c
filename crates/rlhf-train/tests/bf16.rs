//! bf16 mode (docs/ARCHITECTURE.md, "Precision") on a model wide enough for the bf16 products
//! (hidden 64, MLP 128: every projection sums ≥ 64 terms): the loss curves of SFT and DPO and the
//! reward curve of GRPO track fp32 within stated bands, DPO still starts at ln 2, resume is
//! bit-identical in bf16, and bf16 really ran (the curves are not bit-identical to fp32's).
//!
//! The precision is one per process; `precision::with` takes turns.

use candle_core::DType;
use rlhf_data::{Location, PairExample, RecordIndex, SftExample};
use rlhf_model::ops::precision::{self, Precision};
use rlhf_model::{tiny, CausalLm, ModelConfig};
use rlhf_train::dpo::{precompute_reference, DpoLossConfig, DpoObjective};
use rlhf_train::grpo::{train_grpo, GrpoConfig, GrpoSetup};
use rlhf_train::online::{RlPrompt, RunInfo};
use rlhf_train::rollout::{PromptRef, RolloutConfig};
use rlhf_train::sft::SftObjective;
use rlhf_train::{train, Objective, RunOptions, ScheduleKind, TrainConfig};
use std::path::{Path, PathBuf};

mod common;

const VOCAB: usize = 96;
const PAD: u32 = 0;

fn wide(vocab: usize) -> ModelConfig {
    ModelConfig {
        hidden_size: 64,
        intermediate_size: 128,
        head_dim: 16,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        ..tiny::llama_config(vocab)
    }
}

fn model(vocab: usize, seed: u64) -> CausalLm {
    let cfg = wide(vocab);
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

fn loc(i: usize) -> Location {
    Location { path: "mem.jsonl".into(), index: RecordIndex::Line(i + 1) }
}

fn sft_set(n: usize) -> Vec<SftExample> {
    (0..n)
        .map(|i| {
            let prompt_len = 3 + i % 3;
            let completion_len = 6 + i % 5;
            let start = 1 + (i * 7) % 60;
            let ids: Vec<u32> = (0..prompt_len + completion_len).map(|k| (start + 2 * k) as u32 % 95 + 1).collect();
            let loss_mask = (0..ids.len()).map(|k| u8::from(k >= prompt_len)).collect();
            SftExample { input_ids: ids, loss_mask, source: loc(i) }
        })
        .collect()
}

fn pair_set(n: usize) -> Vec<PairExample> {
    (0..n)
        .map(|i| {
            let start = 1 + (i * 5) % 40;
            let prompt: Vec<u32> = (0..4 + i % 3).map(|k| (start + k) as u32).collect();
            let chosen: Vec<u32> = (0..6 + i % 2).map(|k| (60 + (k % 3)) as u32).collect();
            let rejected: Vec<u32> = (0..6 + (i + 1) % 2).map(|k| (70 + (k % 4)) as u32).collect();
            PairExample { prompt, chosen, rejected, source: loc(i) }
        })
        .collect()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rlhf-bf16-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sft_cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        micro_batch_size: 4,
        max_steps: steps,
        learning_rate: 3e-3,
        lr_scheduler: ScheduleKind::Constant,
        save_steps: 0,
        ..Default::default()
    }
}

/// The per-step training losses and the final weights of an SFT run.
fn sft_curve(dir: &Path, cfg: &TrainConfig, resume: Option<&Path>) -> (Vec<f64>, Vec<Vec<f32>>) {
    let (m, params) = model(VOCAB, 2).trainable().unwrap();
    let data = sft_set(16);
    let mut obj = SftObjective { model: &m, pad_id: PAD, eval_batch_size: 8 };
    let run = RunOptions {
        dir,
        trainer: "sft",
        config: serde_json::to_value(cfg).unwrap(),
        resume: resume.map(Path::to_path_buf),
        checkpoints: true,
    };
    let mut losses = vec![];
    train(&mut obj, &data, &data[..4], &params, cfg, &run, &mut |r| losses.push(r.loss)).unwrap();
    let weights = params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    (losses, weights)
}

/// Each step's loss within 2% (+0.01) of fp32's; the runs differ (bf16 ran) and both learn.
fn assert_tracks(what: &str, fp32: &[f64], bf16: &[f64], rel: f64) {
    assert_eq!(fp32.len(), bf16.len());
    assert_ne!(fp32, bf16, "{what}: bf16 gave fp32's numbers bit for bit: the bf16 products did not run");
    for (step, (a, b)) in fp32.iter().zip(bf16).enumerate() {
        assert!((a - b).abs() <= rel * a.abs() + 0.01, "{what} step {}: fp32 {a:.4}, bf16 {b:.4}", step + 1);
    }
}

#[test]
fn sft_in_bf16_tracks_fp32() {
    let cfg = sft_cfg(30);
    let tmp = tempdir("sft");
    let (fp32, _) = precision::with(Precision::Fp32, || sft_curve(&tmp.join("fp32"), &cfg, None));
    let (bf16, _) = precision::with(Precision::Bf16, || sft_curve(&tmp.join("bf16"), &cfg, None));
    eprintln!("sft fp32 {:.4?}\nsft bf16 {:.4?}", fp32, bf16);
    assert!(fp32[29] < fp32[0] / 3.0, "fp32 learns: {:.3} → {:.3}", fp32[0], fp32[29]);
    assert_tracks("sft", &fp32, &bf16, 0.02);
}

#[test]
fn resume_is_bit_identical_in_bf16() {
    let tmp = tempdir("resume");
    let cfg = TrainConfig { max_steps: 6, save_steps: 3, save_total_limit: 0, ..sft_cfg(6) };
    let (straight, resumed) = precision::with(Precision::Bf16, || {
        let (_, straight) = sft_curve(&tmp.join("a"), &cfg, None);
        let (_, resumed) = sft_curve(&tmp.join("b"), &cfg, Some(&tmp.join("a/checkpoints/step-000003")));
        (straight, resumed)
    });
    assert!(straight == resumed, "resumed bf16 weights differ from the uninterrupted bf16 run");
    let (_, again) = precision::with(Precision::Bf16, || sft_curve(&tmp.join("c"), &cfg, None));
    assert!(straight == again, "two bf16 runs differ");
}

fn dpo_curve(dir: &Path) -> (f64, Vec<f64>) {
    let base = model(VOCAB, 5);
    let (m, params) = base.trainable().unwrap();
    let data = precompute_reference(&base, PAD, pair_set(8), 8, |_| {}).unwrap();
    let mut obj = DpoObjective { policy: &m, pad_id: PAD, loss: DpoLossConfig::default(), eval_batch_size: 8 };
    let init = obj.evaluate(&data).unwrap().iter().find(|(n, _)| n == "loss").unwrap().1;
    let cfg = TrainConfig { batch_size: 8, max_steps: 20, learning_rate: 2e-3, save_steps: 0, ..sft_cfg(20) };
    let run = RunOptions { dir, trainer: "dpo", config: serde_json::json!({}), resume: None, checkpoints: true };
    let mut losses = vec![];
    train(&mut obj, &data, &data, &params, &cfg, &run, &mut |r| losses.push(r.loss)).unwrap();
    (init, losses)
}

#[test]
fn dpo_in_bf16_starts_at_ln2_and_tracks_fp32() {
    let tmp = tempdir("dpo");
    let (init32, fp32) = precision::with(Precision::Fp32, || dpo_curve(&tmp.join("fp32")));
    let (init16, bf16) = precision::with(Precision::Bf16, || dpo_curve(&tmp.join("bf16")));
    eprintln!("dpo fp32 {:.4?}\ndpo bf16 {:.4?}", fp32, bf16);
    // The reference pass and the policy run the same bf16 products on the same batches.
    assert!((init16 - std::f64::consts::LN_2).abs() < 1e-6 && (init32 - std::f64::consts::LN_2).abs() < 1e-6);
    assert!(fp32[19] < 0.3, "fp32 learns the preference: {:.3}", fp32[19]);
    assert_tracks("dpo", &fp32, &bf16, 0.05);
}

fn grpo_rewards(dir: &Path) -> (Vec<f64>, Vec<f64>) {
    std::fs::create_dir_all(dir).unwrap();
    let tok = rlhf_data::tiny::tokenizer();
    let base = model(tok.vocab_size(), 3);
    let (policy, params) = base.trainable().unwrap();
    let ids: Vec<Vec<u32>> = ["ab", "hello", "xyz", "q"].iter().map(|p| tok.encode(p, false).unwrap()).collect();
    let prompts: Vec<RlPrompt> = ids.iter().map(|p| RlPrompt { ids: p, refs: PromptRef::default() }).collect();
    let mut setup = GrpoSetup {
        policy: &policy,
        params: &params,
        reference: Some(&base),
        tokenizer: &tok,
        prompts: &prompts,
        sources: vec![(common::DigitShare::new(&tok), 1.0)],
        eval: None,
    };
    let cfg = GrpoConfig { num_generations: 8, prompts_per_step: 4, beta: 0.01, ..GrpoConfig::default() };
    let rollout = RolloutConfig { max_new_tokens: 6, temperature: 1.0, ..RolloutConfig::default() };
    let train_cfg = TrainConfig { learning_rate: 1e-2, max_steps: 30, ..sft_cfg(30) };
    let run = RunInfo { dir, config: serde_json::json!({}), eval_steps: 0, resume: None };
    train_grpo(&mut setup, &cfg, &rollout, &train_cfg, &run, &mut |_| {}).unwrap();
    let metric = |key: &str| -> Vec<f64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().get(key)?.as_f64())
            .collect()
    };
    (metric("reward/mean"), metric("logprob_mismatch/mean_abs"))
}

#[test]
fn grpo_in_bf16_learns_like_fp32_and_reports_the_sampler_mismatch() {
    let tmp = tempdir("grpo");
    let (fp32, _) = precision::with(Precision::Fp32, || grpo_rewards(&tmp.join("fp32")));
    let (bf16, mismatch) = precision::with(Precision::Bf16, || grpo_rewards(&tmp.join("bf16")));
    eprintln!("grpo reward fp32 {:.3?}\ngrpo reward bf16 {:.3?}\nmismatch {:?}", fp32, bf16, mismatch);
    let tail = |r: &[f64]| r[r.len() - 5..].iter().sum::<f64>() / 5.0;
    // Sampling turns any numeric difference into different samples, so the curves are
    // compared by what they reach, not step by step.
    assert!(tail(&fp32) > 0.6, "fp32 GRPO learns the toy task: {:.3}", tail(&fp32));
    assert!((tail(&bf16) - tail(&fp32)).abs() < 0.2, "bf16 reaches {:.3}, fp32 {:.3}", tail(&bf16), tail(&fp32));
    assert!(!mismatch.is_empty(), "the sampler/trainer mismatch is reported in bf16");
    assert!(
        mismatch.iter().all(|m| m.is_finite() && *m < 5e-3),
        "sampler/trainer logprobs agree to bf16 accuracy: {mismatch:?}"
    );
}
