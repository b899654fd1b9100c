//! What a careless or hostile user found (absurd settings, mistyped paths, resumes, environment):
//! each case refused with an error naming the setting, or handled without losing anything.

mod common;

use common::{fails, ok, p, setup};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn dpo_refuses_a_beta_that_is_not_positive() {
    let (dir, model, data) = setup("beta");
    for beta in ["-1", "0", "nan"] {
        let set = format!("loss.beta={beta}");
        let out = p(&dir.join(format!("run{beta}"))).to_string();
        let prefs = data.join("prefs_correctness.jsonl");
        let err = fails(&["dpo", "--model", p(&model), "--data", p(&prefs), "--out", &out, "--set", &set]);
        assert!(err.contains("loss.beta must be a positive number"), "β = {beta}: {err}");
        assert!(!Path::new(&out).join("metrics.jsonl").exists(), "nothing trained with β = {beta}");
    }
}

#[test]
fn a_zero_max_length_is_refused_not_read_as_no_limit() {
    let (dir, model, data) = setup("maxlen");
    let sft = data.join("sft.jsonl");
    let err = fails(&[
        "sft",
        "--model",
        p(&model),
        "--data",
        p(&sft),
        "--out",
        p(&dir.join("a")),
        "--set",
        "data.max_length=0",
    ]);
    assert!(err.contains("data.max_length must be at least 1"), "{err}");
    let prompts = data.join("prompts.jsonl");
    let grpo = ["grpo", "--config", "examples/grpo.toml", "--model", p(&model), "--data", p(&prompts)];
    let err = fails(&[&grpo[..], &["--out", p(&dir.join("b")), "--set", "data.max_prompt_length=0"]].concat());
    assert!(err.contains("data.max_prompt_length must be at least 1"), "{err}");
}

#[test]
fn a_missing_reference_is_blamed_on_reference() {
    let (dir, model, data) = setup("reference");
    let prefs = data.join("prefs_correctness.jsonl");
    let out = dir.join("r");
    let args = ["dpo", "--model", p(&model), "--data", p(&prefs), "--out", p(&out)];
    let err = fails(&[&args[..], &["--set", "reference=\"/nonexistent\""]].concat());
    assert!(err.contains("loading `reference`") && err.contains("/nonexistent"), "{err}");
    assert!(!err.contains("--model"), "{err}");
}

#[test]
fn resume_without_config_reads_the_runs_own_config() {
    let (dir, model, data) = setup("resume-config");
    let run = dir.join("run");
    let sft = data.join("sft.jsonl");
    let sets = ["--set", "train.max_steps=4", "--set", "train.batch_size=4", "--set", "train.save_steps=2"];
    ok(&[&["sft", "--model", p(&model), "--data", p(&sft), "--out", p(&run)][..], &sets[..]].concat());
    ok(&["sft", "--resume", p(&run.join("checkpoints/step-000002"))]);
    ok(&["sft", "--resume", p(&run)]);
    let steps: Vec<u64> = common::lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|m| m["loss"].is_number())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "each step once after two resumes");
    let err = fails(&["sft", "--resume", p(&dir.join("elsewhere"))]);
    assert!(err.contains("no config.toml") && err.contains("give --config"), "{err}");
}

#[test]
fn grpo_resumes_and_a_torn_first_checkpoint_does_not_block_a_fresh_start() {
    let (dir, model, data) = setup("grpo-resume");
    let (run, prompts) = (dir.join("run"), data.join("prompts.jsonl"));
    let grpo = ["grpo", "--config", "examples/grpo.toml", "--model", p(&model), "--data", p(&prompts)];
    let sets = [
        ["--set", "train.max_steps=3"],
        ["--set", "train.save_steps=1"],
        ["--set", "grpo.num_generations=2"],
        ["--set", "data.eval_path="],
    ]
    .concat();
    // Killed while writing its first checkpoint: only a partial folder is left.
    std::fs::create_dir_all(run.join("checkpoints/.step-000001.partial")).unwrap();
    // ... after logging its first step's samples (found by scripts/kill-campaign.sh ppo).
    std::fs::write(run.join("samples.jsonl"), "{\"step\":1,\"response\":\"stale\"}\n").unwrap();
    ok(&[&grpo[..], &["--out", p(&run)], &sets[..]].concat());
    std::fs::remove_dir_all(run.join("checkpoints/step-000003")).unwrap();
    ok(&["grpo", "--resume", p(&run)]);
    let steps: Vec<u64> = common::lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|m| m["reward/mean"].is_number())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3], "each step once after the resume");
    let samples = common::lines(&run.join("samples.jsonl"));
    let per_step = |s: u64| samples.iter().filter(|m| m["step"].as_u64() == Some(s)).count();
    assert_eq!((per_step(1), per_step(2), per_step(3)), (2, 2, 2), "samples of each step once");
    // With complete checkpoints, a fresh start is refused.
    let err = fails(&[&grpo[..], &["--out", p(&run)], &sets[..]].concat());
    assert!(err.contains("already holds a run") && err.contains("--resume"), "{err}");
}

#[test]
fn label_stats_and_export_never_create_a_database_or_clobber_the_output() {
    let dir = common::tempdir("label-typo");
    let typo = dir.join("lables.db");
    let out = dir.join("pairs.jsonl");
    std::fs::write(&out, "{\"kept\": true}\n").unwrap();
    let err = fails(&["label", "stats", "--db", p(&typo)]);
    assert!(err.contains("lables.db") && err.contains("no labelling database"), "{err}");
    let err = fails(&["label", "export", "--db", p(&typo), "--format", "pairs", "--out", p(&out)]);
    assert!(err.contains("no labelling database"), "{err}");
    assert!(!typo.exists(), "no empty database was created");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"kept\": true}\n", "the earlier export is intact");
}

#[test]
fn errors_stay_short_with_rust_backtrace_set() {
    let (_, bad, _) = setup("backtrace");
    // A model whose vocabulary is smaller than its tokenizer's: the embedding lookup fails inside
    // candle, whose errors record a backtrace.
    let weights = bad.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    for t in tensors.values_mut() {
        if t.dims().len() == 2 && t.dims()[0] > 100 {
            *t = t.narrow(0, 0, 8).unwrap().contiguous().unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let cfg_path = bad.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = 8.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["generate", "--model", p(&bad), "--prompt", "zzzz"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The start-up line saying which precision runs comes first.
    let err: String = stderr.lines().filter(|l| !l.starts_with("precision: ")).map(|l| format!("{l}\n")).collect();
    assert!(!out.status.success() && err.starts_with("error: "), "{stderr}");
    assert!(err.lines().count() <= 3, "no backtrace under the message:\n{stderr}");
}

#[test]
fn saved_weights_and_checkpoints_are_as_readable_as_their_configs() {
    let (dir, model, data) = setup("modes");
    let run = dir.join("run");
    let sft = data.join("sft.jsonl");
    let sets = ["--set", "train.max_steps=1", "--set", "train.batch_size=2", "--set", "train.save_steps=1"];
    ok(&[&["sft", "--model", p(&model), "--data", p(&sft), "--out", p(&run)][..], &sets[..]].concat());
    let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    let config_mode = mode(&run.join("final/config.json"));
    for file in [
        "final/model.safetensors",
        "checkpoints/step-000001/params.safetensors",
        "checkpoints/step-000001/optimizer.safetensors",
    ] {
        assert_eq!(mode(&run.join(file)), config_mode, "{file}");
    }
    assert_ne!(config_mode & 0o044, 0, "readable by others under the usual umask");
}

#[test]
fn exit_codes_tell_usage_from_failure() {
    let (dir, model, data) = setup("exit-codes");
    let sft = data.join("sft.jsonl");
    let out = dir.join("run");
    let base = ["sft", "--model", p(&model), "--data", p(&sft), "--out", p(&out)];
    let code = |extra: &[&str]| common::rlhf(&[&base[..], extra].concat()).status.code();
    assert_eq!(code(&["--bogus-flag"]), Some(2), "an unknown flag");
    assert_eq!(code(&["--set", "train.lerning_rate=1"]), Some(2), "an unknown key");
    assert_eq!(code(&["--set", "train.learning_rate=\"fast\""]), Some(2), "a value of the wrong type");
    assert_eq!(code(&["--set", "data.max_length=0"]), Some(2), "a setting out of range");
    let prefs = data.join("prefs_correctness.jsonl");
    let dpo = ["dpo", "--model", p(&model), "--data", p(&prefs), "--out", p(&out), "--set", "loss.beta=-1"];
    assert_eq!(common::rlhf(&dpo).status.code(), Some(2), "β ≤ 0");
    let missing = dir.join("missing.jsonl");
    let out2 = dir.join("run2");
    let run = ["sft", "--model", p(&model), "--data", p(&missing), "--out", p(&out2)];
    assert_eq!(common::rlhf(&run).status.code(), Some(1), "a missing file is a failure while running");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let (_, model, _) = setup("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["logprobs", "--model", p(&model), "--text", "1 + 1 = 2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line, as after `| head -0`
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(result.status.code(), Some(141));
}

/// Every command with settings takes `--config` / `--set` through the one loader: an unknown key
/// is a usage error (exit 2) naming it and the nearest known key, and a config file gives the
/// same run as the flags it replaces.
#[test]
fn every_command_with_settings_takes_config_and_set() {
    for (command, typo, known) in [
        ("generate", "max_new_token", "max_new_tokens"),
        ("serve", "max_bach", "max_batch"),
        ("eval", "sample_temprature", "sample_temperature"),
        ("collect", "sampling.max_trys", "sampling.max_tries"),
        ("judge", "endpoint.ur", "endpoint.url"),
        ("constitution", "critique_temprature", "critique_temperature"),
    ] {
        let out = common::rlhf(&[command, "--set", &format!("{typo}=1")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains(&format!("unknown key `{typo}` in --set; did you mean `{known}`?")), "{command}: {err}");
    }

    let (dir, model, data) = setup("eval-config");
    let prompts = data.join("prompts_eval.jsonl");
    let by_flags = dir.join("flags.jsonl");
    let model_arg = format!("tiny={}", p(&model));
    ok(&[
        "eval",
        "--model",
        &model_arg,
        "--prompts",
        p(&prompts),
        "--limit",
        "3",
        "--max-new-tokens",
        "4",
        "--out",
        p(&by_flags),
    ]);
    let cfg = dir.join("eval.toml");
    std::fs::write(
        &cfg,
        format!("models = [{model_arg:?}]\nprompts = {:?}\nlimit = 5\nmax_new_tokens = 4\n", p(&prompts)),
    )
    .unwrap();
    let by_config = dir.join("config.jsonl");
    // The flag wins over the file's `limit = 5`.
    ok(&["eval", "--config", p(&cfg), "--limit", "3", "--set", &format!("out={:?}", p(&by_config))]);
    let (a, b) = (std::fs::read_to_string(&by_flags).unwrap(), std::fs::read_to_string(&by_config).unwrap());
    assert!(a.contains("\"prompts\":3"), "{a}");
    assert_eq!(a, b, "a config file gives the same evaluation as the flags");
}
