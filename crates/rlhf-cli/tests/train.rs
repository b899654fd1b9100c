//! `rlhf data make`, `sft`, `reward`, `dpo`, `merge`, `verify` end to end on a tiny model written
//! as an HF folder with a byte-level tokenizer: run folders, resume, LoRA, and clear errors.

use candle_core::DType;
use serde_json::Value;
use std::path::Path;

mod common;

use common::{fails, ok, p, rlhf, setup};

fn metric_lines(run: &Path) -> Vec<Value> {
    common::lines(&run.join("metrics.jsonl"))
}

#[test]
fn sft_runs_resumes_and_explains_bad_input() {
    let (dir, model, data) = setup("sft");
    let run = dir.join("run");
    let (train_file, eval_file) = (data.join("sft.jsonl"), data.join("sft_eval.jsonl"));
    let base = ["sft", "--model", p(&model), "--data", p(&train_file), "--eval-data", p(&eval_file), "--out", p(&run)];
    let mut args = base.to_vec();
    args.extend(["--set", "train.max_steps=4", "--set", "train.batch_size=4", "--set", "train.save_steps=2"]);
    ok(&args);
    assert!(run.join("final/model.safetensors").exists() && run.join("final/tokenizer.json").exists());
    assert!(run.join("config.toml").exists() && run.join("tb").is_dir());
    assert!(run.join("checkpoints/step-000004/state.json").exists());
    let steps: Vec<u64> =
        metric_lines(&run).iter().filter_map(|m| m["loss"].as_f64().map(|_| m["step"].as_u64().unwrap())).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    let evals: Vec<f64> = metric_lines(&run).iter().filter_map(|m| m["eval/perplexity"].as_f64()).collect();
    assert_eq!(evals.len(), 1);

    // Re-running into the same folder without --resume is refused; with it, the run continues.
    assert!(fails(&args).contains("--resume"));
    let mut more = args.clone();
    let cfg = run.join("config.toml");
    more.extend(["--resume", p(&run)]);
    // A resume must use the same settings: changing max_steps is refused, naming the checkpoint.
    let mut changed = more.clone();
    changed.extend(["--set", "train.max_steps=6"]);
    assert!(fails(&changed).contains("different configuration"));
    ok(&["sft", "--config", p(&cfg), "--resume", p(&run.join("checkpoints/step-000002"))]);
    let steps: Vec<u64> =
        metric_lines(&run).iter().filter_map(|m| m["loss"].as_f64().map(|_| m["step"].as_u64().unwrap())).collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "resumed from step 2: the lines after it are replaced, not repeated");

    // Unknown key: named, with the nearest suggestion.
    let err = fails(&["sft", "--config", p(&cfg), "--out", p(&dir.join("x")), "--set", "train.lerning_rate=1"]);
    assert!(err.contains("lerning_rate") && err.contains("learning_rate"), "{err}");
    // Missing dataset file.
    let err = fails(&["sft", "--model", p(&model), "--data", p(&dir.join("nope.jsonl")), "--out", p(&dir.join("y"))]);
    assert!(err.contains("nope.jsonl"), "{err}");
    // A bad record names file, line and field; `skip` leaves it out and says so.
    let bad = dir.join("bad.jsonl");
    let good = std::fs::read_to_string(data.join("sft.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&bad, format!("{first}\n{{\"messages\": 3}}\n{first}\n")).unwrap();
    let err = fails(&["sft", "--model", p(&model), "--data", p(&bad), "--out", p(&dir.join("z"))]);
    assert!(err.contains("bad.jsonl:2") && err.contains("messages"), "{err}");
    let z = dir.join("z2");
    let out = rlhf(&[
        "sft",
        "--model",
        p(&model),
        "--data",
        p(&bad),
        "--out",
        p(&z),
        "--on-bad-record",
        "skip",
        "--set",
        "train.max_steps=1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 bad record"));
}

#[test]
fn reward_model_folder_and_lora_dpo_with_merge() {
    let (dir, model, data) = setup("rm-dpo");
    let rm = dir.join("rm");
    let out = ok(&[
        "reward",
        "--model",
        p(&model),
        "--data",
        p(&data.join("rankings.jsonl")),
        "--eval-data",
        p(&data.join("prefs_format_eval.jsonl")),
        "--out",
        p(&rm),
        "--set",
        "train.max_steps=3",
        "--set",
        "train.batch_size=2",
    ]);
    assert!(out.contains("reward mean"), "{out}");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(rm.join("final/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForSequenceClassification");
    assert!(rm.join("final/reward_stats.json").exists());
    let (_, head, stats) =
        rlhf_model::heads::load_sequence_classifier(&rm.join("final"), DType::F32, &candle_core::Device::Cpu).unwrap();
    assert_eq!(head.dims(), &[1, 16]);
    assert!(stats.unwrap().std > 0.0);
    let metrics: Value = serde_json::from_str(
        ok(&["reward-eval", "--model", p(&rm.join("final")), "--data", p(&data.join("prefs_correctness_eval.jsonl"))])
            .trim(),
    )
    .unwrap();
    assert_eq!(metrics["pairs"], 4.0);
    assert!((0.0..=1.0).contains(&metrics["accuracy"].as_f64().unwrap()));

    let dpo = dir.join("dpo");
    ok(&[
        "dpo",
        "--model",
        p(&model),
        "--data",
        p(&data.join("prefs_correctness.jsonl")),
        "--out",
        p(&dpo),
        "--set",
        "lora.enabled=true",
        "--set",
        "lora.r=4",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.batch_size=2",
        "--set",
        "loss.loss_type=\"ipo\"",
    ]);
    assert!(dpo.join("final/adapter_config.json").exists() && dpo.join("final/adapter_model.safetensors").exists());
    let merged = dir.join("merged");
    ok(&["merge", "--model", p(&model), "--adapter", p(&dpo.join("final")), "--out", p(&merged)]);
    assert!(merged.join("model.safetensors").exists());
    let v: Value = serde_json::from_str(
        ok(&[
            "verify",
            "--model",
            p(&merged),
            "--prompts",
            p(&data.join("prompts_eval.jsonl")),
            "--max-new-tokens",
            "4",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(v["prompts"], 4);
    assert!(v["accuracy"].as_f64().unwrap() <= 1.0);
}
