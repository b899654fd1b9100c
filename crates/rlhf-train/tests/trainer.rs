//! The shared training loop on tiny models: accumulation equals the whole batch, resume is
//! bit-identical, non-finite values stop the run without a checkpoint, and each objective
//! overfits a tiny set.

use candle_core::{DType, Device, Var};
use rlhf_data::{Location, PairExample, PreferenceGroup, RecordIndex, SftExample};
use rlhf_model::grads::Grads;
use rlhf_model::heads::init_scalar_head;
use rlhf_model::{tiny, CausalLm};
use rlhf_train::dpo::{precompute_reference, response_logps, DpoLossConfig, DpoObjective};
use rlhf_train::reward::RewardObjective;
use rlhf_train::sft::SftObjective;
use rlhf_train::trainer::{accumulate_batch, MicroOutput};
use rlhf_train::{train, Objective, RunOptions, TrainConfig, TrainError};
use std::path::Path;

const VOCAB: usize = 61;
const PAD: u32 = 0;

fn base_model(seed: u64) -> CausalLm {
    let cfg = tiny::llama_config(VOCAB);
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

fn loc(i: usize) -> Location {
    Location { path: "mem.jsonl".into(), index: RecordIndex::Line(i + 1) }
}

/// Sequences of varied length whose completion follows a simple rule (next = prev + 1).
fn sft_set(n: usize) -> Vec<SftExample> {
    (0..n)
        .map(|i| {
            let prompt_len = 2 + i % 3;
            let completion_len = 3 + i % 4;
            let start = 1 + (i * 7) % 40;
            let ids: Vec<u32> = (0..prompt_len + completion_len).map(|k| (start + k) as u32).collect();
            let loss_mask = (0..ids.len()).map(|k| u8::from(k >= prompt_len)).collect();
            SftExample { input_ids: ids, loss_mask, source: loc(i) }
        })
        .collect()
}

fn pair_set(n: usize) -> Vec<PairExample> {
    (0..n)
        .map(|i| {
            let start = 1 + (i * 5) % 40;
            let prompt: Vec<u32> = (0..2 + i % 3).map(|k| (start + k) as u32).collect();
            let chosen: Vec<u32> = (0..3 + i % 2).map(|k| (50 + (k % 3)) as u32).collect();
            let rejected: Vec<u32> = (0..3 + (i + 1) % 2).map(|k| (55 + (k % 4)) as u32).collect();
            PairExample { prompt, chosen, rejected, source: loc(i) }
        })
        .collect()
}

fn grads_of(model: &CausalLm, params: &[(String, Var)]) -> Vec<Vec<f32>> {
    let store = candle_core::backprop::GradStore::default();
    let g: Grads = model.grads(&store);
    params
        .iter()
        .map(|(n, v)| {
            g.get(n, v).unwrap().map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap_or_default()
        })
        .collect()
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let scale = a.iter().flatten().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().flatten().zip(b.iter().flatten()).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn micro_batches_give_the_whole_batch_gradient() {
    let (model, params) = base_model(1).trainable().unwrap();
    let data = sft_set(8);
    let batch: Vec<&SftExample> = data.iter().collect();
    let mut obj = SftObjective { model: &model, pad_id: PAD, eval_batch_size: 4 };
    let whole = accumulate_batch(&mut obj, &batch, 8, &params).unwrap();
    let reference = grads_of(&model, &params);
    model.zero_grad();
    assert!(reference.iter().all(|g| !g.is_empty()), "every parameter gets a gradient");
    // 3 + 3 + 2: mixed micro-batch sizes.
    for micro in [1, 3, 4] {
        let parts = accumulate_batch(&mut obj, &batch, micro, &params).unwrap();
        let g = grads_of(&model, &params);
        model.zero_grad();
        assert!((parts.loss - whole.loss).abs() < 1e-5 * whole.loss.abs(), "micro {micro}: loss");
        let d = max_rel_diff(&reference, &g);
        assert!(d < 1e-5, "micro {micro}: gradient differs by {d:e} (relative)");
    }
}

fn snapshot(params: &[(String, Var)]) -> Vec<Vec<f32>> {
    params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

fn sft_run(dir: &Path, cfg: &TrainConfig, resume: Option<&Path>) -> Vec<Vec<f32>> {
    let (model, params) = base_model(2).trainable().unwrap();
    let data = sft_set(10);
    let mut obj = SftObjective { model: &model, pad_id: PAD, eval_batch_size: 4 };
    let run = RunOptions {
        dir,
        trainer: "sft",
        config: serde_json::to_value(cfg).unwrap(),
        resume: resume.map(Path::to_path_buf),
        checkpoints: true,
    };
    train(&mut obj, &data, &data[..3], &params, cfg, &run, &mut |_| {}).unwrap();
    snapshot(&params)
}

#[test]
fn resume_continues_bit_identically() {
    let tmp = tempdir("resume");
    let cfg = TrainConfig {
        batch_size: 4,
        micro_batch_size: 3,
        max_steps: 6,
        learning_rate: 1e-2,
        lr_scheduler: rlhf_train::schedule::ScheduleKind::Cosine,
        warmup_steps: 2,
        max_grad_norm: 0.5,
        weight_decay: 0.01,
        save_steps: 3,
        save_total_limit: 0,
        ..Default::default()
    };
    let straight = sft_run(&tmp.join("a"), &cfg, None);
    let stopped_at_3 = tmp.join("a/checkpoints/step-000003");
    assert!(stopped_at_3.join("state.json").exists());
    let resumed = sft_run(&tmp.join("b"), &cfg, Some(&stopped_at_3));
    let init = snapshot(&base_model(2).trainable().unwrap().1);
    assert_ne!(straight, init, "training changed the weights");
    assert!(straight == resumed, "resumed weights differ from the uninterrupted run");
    let lines = std::fs::read_to_string(tmp.join("b/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps[0], 4, "the resumed run continues at step 4: {lines}");
}

#[test]
fn checkpoint_from_a_different_model_is_refused() {
    let tmp = tempdir("other-model");
    let cfg = TrainConfig { batch_size: 2, max_steps: 1, ..Default::default() };
    sft_run(&tmp.join("a"), &cfg, None);
    let other_cfg = tiny::qwen2_config(VOCAB);
    let other =
        CausalLm::new(other_cfg.clone(), tiny::random_weights(&other_cfg, 1, 0.05, DType::F32).unwrap()).unwrap();
    let (model, params) = other.trainable().unwrap();
    let mut obj = SftObjective { model: &model, pad_id: PAD, eval_batch_size: 4 };
    let run = RunOptions {
        dir: &tmp.join("b"),
        trainer: "sft",
        config: serde_json::to_value(&cfg).unwrap(),
        resume: Some(tmp.join("a")),
        checkpoints: true,
    };
    let err = train(&mut obj, &sft_set(4), &[], &params, &cfg, &run, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("cannot resume") && err.contains("step-000001"), "{err}");
}

/// SFT whose loss becomes NaN from the second step on.
struct Poisoned<'m> {
    inner: SftObjective<'m>,
    calls: usize,
}

impl Objective for Poisoned<'_> {
    type Example = SftExample;
    fn model(&self) -> &CausalLm {
        self.inner.model
    }
    fn normaliser(&self, batch: &[&SftExample]) -> f64 {
        self.inner.normaliser(batch)
    }
    fn micro_loss(&mut self, micro: &[&SftExample], norm: f64) -> rlhf_train::Result<MicroOutput> {
        self.calls += 1;
        let mut out = self.inner.micro_loss(micro, norm)?;
        if self.calls > 1 {
            out.loss = (out.loss * f64::NAN).unwrap();
        }
        Ok(out)
    }
    fn evaluate(&mut self, eval: &[SftExample]) -> rlhf_train::Result<Vec<(String, f64)>> {
        self.inner.evaluate(eval)
    }
}

#[test]
fn non_finite_loss_stops_without_a_checkpoint() {
    let tmp = tempdir("nan");
    let (model, params) = base_model(3).trainable().unwrap();
    let cfg = TrainConfig { batch_size: 2, max_steps: 4, save_steps: 1, ..Default::default() };
    let mut obj = Poisoned { inner: SftObjective { model: &model, pad_id: PAD, eval_batch_size: 4 }, calls: 0 };
    let run = RunOptions { dir: &tmp, trainer: "sft", config: serde_json::json!({}), resume: None, checkpoints: true };
    let before = snapshot(&params);
    let err = train(&mut obj, &sft_set(6), &[], &params, &cfg, &run, &mut |_| {}).err().unwrap();
    assert!(matches!(err, TrainError::NonFinite { step: 2, .. }), "{err}");
    assert!(err.to_string().contains("without writing a checkpoint"), "{err}");
    assert!(tmp.join("checkpoints/step-000001").exists());
    assert!(!tmp.join("checkpoints/step-000002").exists(), "no checkpoint of the poisoned step");
    assert_ne!(snapshot(&params), before, "step 1 was applied");
}

#[test]
fn sft_overfits_a_tiny_set() {
    let tmp = tempdir("sft-overfit");
    let (model, params) = base_model(4).trainable().unwrap();
    let data = sft_set(6);
    let mut obj = SftObjective { model: &model, pad_id: PAD, eval_batch_size: 6 };
    let before = obj.evaluate(&data).unwrap()[0].1;
    let cfg = TrainConfig {
        batch_size: 6,
        max_steps: 40,
        learning_rate: 1e-2,
        lr_scheduler: rlhf_train::schedule::ScheduleKind::Constant,
        save_steps: 0,
        ..Default::default()
    };
    let run = RunOptions { dir: &tmp, trainer: "sft", config: serde_json::json!({}), resume: None, checkpoints: true };
    let out = train(&mut obj, &data, &data, &params, &cfg, &run, &mut |_| {}).unwrap();
    let after = out.eval[0].1;
    assert!(after < before / 10.0, "held-in loss {before:.3} → {after:.3}: expected a 10× drop");
    assert!(tmp.join("metrics.jsonl").exists() && tmp.join("tb").is_dir());
}

#[test]
fn dpo_starts_at_ln2_and_learns_the_preference() {
    let tmp = tempdir("dpo");
    let base = base_model(5);
    let (model, params) = base.trainable().unwrap();
    // Same batches for the reference pass and the evaluation: identical padding, so the policy's
    // logprobs equal the cached ones bit for bit and every pair is an exact tie.
    let data = precompute_reference(&base, PAD, pair_set(8), 8, |_| {}).unwrap();
    let mut obj = DpoObjective { policy: &model, pad_id: PAD, loss: DpoLossConfig::default(), eval_batch_size: 8 };
    let init = obj.evaluate(&data).unwrap();
    let get = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
    assert!((get(&init, "loss") - std::f64::consts::LN_2).abs() < 1e-6, "{init:?}");
    assert!((get(&init, "rewards/accuracy_ties_half") - 0.5).abs() < 1e-12);
    let cfg = TrainConfig {
        batch_size: 8,
        max_steps: 30,
        learning_rate: 5e-3,
        lr_scheduler: rlhf_train::schedule::ScheduleKind::Constant,
        save_steps: 0,
        ..Default::default()
    };
    let run = RunOptions { dir: &tmp, trainer: "dpo", config: serde_json::json!({}), resume: None, checkpoints: true };
    let out = train(&mut obj, &data, &data, &params, &cfg, &run, &mut |_| {}).unwrap();
    assert!(get(&out.eval, "loss") < 0.2, "{:?}", out.eval);
    assert_eq!(get(&out.eval, "rewards/accuracies"), 1.0);
}

#[test]
fn reward_model_learns_the_preference() {
    let tmp = tempdir("rm");
    let (model, mut params) = base_model(6).trainable().unwrap();
    let head = Var::from_tensor(&init_scalar_head(16, 0, DType::F32, &Device::Cpu).unwrap()).unwrap();
    params.push(("score.weight".into(), head.clone()));
    // Two prompts with a K = 3 ranking each (3 pairs per group) and two plain pairs.
    let mut groups: Vec<PreferenceGroup> = pair_set(2)
        .into_iter()
        .map(|p| PreferenceGroup { prompt: p.prompt, pairs: vec![(p.chosen, p.rejected)], source: p.source })
        .collect();
    for i in 0..2u32 {
        let (a, b, c) = (vec![50, 51, 52], vec![53, 54], vec![57, 58, 59, 56]);
        let pairs = vec![(a.clone(), b.clone()), (a, c.clone()), (b, c)];
        groups.push(PreferenceGroup { prompt: vec![10 + i, 11 + i], pairs, source: loc(10) });
    }
    let mut obj = RewardObjective {
        model: &model,
        head: head.as_tensor().clone(),
        pad_id: PAD,
        center_rewards_coefficient: Some(0.01),
        eval_batch_size: 4,
    };
    let cfg = TrainConfig {
        batch_size: 4,
        micro_batch_size: 1,
        max_steps: 30,
        learning_rate: 3e-3,
        lr_scheduler: rlhf_train::schedule::ScheduleKind::Constant,
        save_steps: 0,
        ..Default::default()
    };
    let run =
        RunOptions { dir: &tmp, trainer: "reward", config: serde_json::json!({}), resume: None, checkpoints: true };
    let out = train(&mut obj, &groups, &groups, &params, &cfg, &run, &mut |_| {}).unwrap();
    let get = |k: &str| out.eval.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(get("accuracy"), 1.0, "{:?}", out.eval);
    assert!(get("loss") < 0.1, "{:?}", out.eval);
    assert_eq!(get("pairs"), 8.0);
}

#[test]
fn sequence_logprobs_do_not_depend_on_padding() {
    let model = base_model(7);
    let pairs = pair_set(3);
    let alone = response_logps(&model, PAD, &[(&pairs[0].prompt, &pairs[0].chosen)]).unwrap();
    let long: Vec<u32> = (1..30).collect();
    let rows: Vec<(&[u32], &[u32])> =
        vec![(&long, &pairs[1].rejected), (&pairs[0].prompt, &pairs[0].chosen), (&pairs[2].prompt, &pairs[2].chosen)];
    let batched = response_logps(&model, PAD, &rows).unwrap();
    let (a, b): (f32, f32) =
        (alone.to_vec1::<f32>().unwrap()[0], batched.narrow(0, 1, 1).unwrap().to_vec1::<f32>().unwrap()[0]);
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    assert!(a < 0.0);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rlhf-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn dpo_with_lora_uses_the_base_as_reference_and_learns() {
    let tmp = tempdir("dpo-lora");
    let base = base_model(8);
    let lora = rlhf_model::LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, ..Default::default() };
    let (policy, params) = base.with_lora(&lora, 0).unwrap();
    assert!(params.iter().all(|(n, _)| n.contains("lora_")), "only adapters train");
    let reference = policy.without_adapters().unwrap();
    let data = precompute_reference(&reference, PAD, pair_set(6), 6, |_| {}).unwrap();
    let mut obj = DpoObjective { policy: &policy, pad_id: PAD, loss: DpoLossConfig::default(), eval_batch_size: 6 };
    let get = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
    assert!((get(&obj.evaluate(&data).unwrap(), "loss") - std::f64::consts::LN_2).abs() < 1e-6);
    let cfg = TrainConfig {
        batch_size: 6,
        max_steps: 30,
        learning_rate: 2e-2,
        lr_scheduler: rlhf_train::schedule::ScheduleKind::Constant,
        save_steps: 0,
        ..Default::default()
    };
    let run = RunOptions { dir: &tmp, trainer: "dpo", config: serde_json::json!({}), resume: None, checkpoints: true };
    let out = train(&mut obj, &data, &data, &params, &cfg, &run, &mut |_| {}).unwrap();
    // Tiny random embeddings (std 0.05) bound the logits the adapters can reach: the loss
    // settles near 0.47 here; full fine-tuning (above) goes further.
    assert!(get(&out.eval, "loss") < 0.5 && get(&out.eval, "rewards/accuracies") == 1.0, "{:?}", out.eval);
    // The reference view still computes the base model: its logprobs did not move.
    let again = precompute_reference(&reference, PAD, pair_set(6), 6, |_| {}).unwrap();
    assert!(again.iter().zip(&data).all(|(a, b)| a.ref_chosen == b.ref_chosen && a.ref_rejected == b.ref_rejected));
}
