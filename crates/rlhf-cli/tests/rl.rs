//! `rlhf grpo`, `rlhf ppo` and `rlhf eval` end to end on a tiny model with the shipped example
//! configs: run folders, metrics, samples, held-out curves, and clear errors.

use serde_json::Value;
use std::path::PathBuf;

mod common;

use common::{fails, lines, ok, p};

fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    common::setup(&format!("rl-{name}"))
}

#[test]
fn grpo_with_the_example_config_writes_a_complete_run() {
    let (dir, model, data) = setup("grpo");
    let run = dir.join("grpo");
    let out = ok(&[
        "grpo",
        "--config",
        "examples/grpo.toml",
        "--model",
        p(&model),
        "--out",
        p(&run),
        "--data",
        p(&data.join("prompts.jsonl")),
        "--eval-data",
        p(&data.join("prompts_eval.jsonl")),
        "--set",
        "rewards=[{kind=\"math\"}, {kind=\"format\", weight=0.5}]",
        "--set",
        "eval.reward.kind=\"math\"",
        "--set",
        "train.max_steps=3",
        "--set",
        "grpo.num_generations=3",
        "--set",
        "grpo.prompts_per_step=2",
        "--set",
        "grpo.beta=0.04",
        "--set",
        "rollout.max_new_tokens=5",
        "--set",
        "eval_steps=2",
        "--set",
        "eval.limit=3",
        "--set",
        "eval.max_new_tokens=4",
    ]);
    assert!(out.contains("held-out curve"), "{out}");
    assert!(run.join("final/model.safetensors").exists() && run.join("config.toml").exists());
    assert!(run.join("checkpoints/step-000003/state.json").exists());
    let metrics = lines(&run.join("metrics.jsonl"));
    let train: Vec<&Value> = metrics.iter().filter(|m| m.get("reward/mean").is_some()).collect();
    assert_eq!(train.len(), 3);
    for key in ["reward/math", "reward/format", "kl/sequence", "entropy", "truncation_rate", "rollout/tokens_per_sec"] {
        assert!(train[0].get(key).is_some(), "no `{key}` in {}", train[0]);
    }
    let eval_steps: Vec<u64> =
        metrics.iter().filter(|m| m.get("eval/reward/math").is_some()).map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(eval_steps, vec![0, 2, 3]);
    assert_eq!(lines(&run.join("samples.jsonl")).len(), 3 * 2 * 3);
}

#[test]
fn reward_model_then_ppo_then_eval() {
    let (dir, model, data) = setup("ppo");
    let rm = dir.join("rm");
    ok(&[
        "reward",
        "--model",
        p(&model),
        "--data",
        p(&data.join("rankings.jsonl")),
        "--out",
        p(&rm),
        "--set",
        "train.max_steps=2",
        "--set",
        "train.batch_size=2",
        "--set",
        "stats_examples=8",
    ]);
    let run = dir.join("ppo");
    let rm_final = rm.join("final");
    let reward = format!("rewards=[{{kind=\"reward_model\", path=\"{}\"}}]", p(&rm_final));
    ok(&[
        "ppo",
        "--config",
        "examples/ppo.toml",
        "--model",
        p(&model),
        "--out",
        p(&run),
        "--data",
        p(&data.join("prompts.jsonl")),
        "--eval-data",
        p(&data.join("prompts_eval.jsonl")),
        "--set",
        &format!("critic.model=\"{}\"", p(&rm_final)),
        "--set",
        &reward,
        "--set",
        "train.max_steps=2",
        "--set",
        "ppo.prompts_per_step=4",
        "--set",
        "rollout.max_new_tokens=5",
        "--set",
        "eval.limit=2",
        "--set",
        "eval.max_new_tokens=4",
        "--set",
        "eval_steps=0",
    ]);
    assert!(run.join("final/model.safetensors").exists());
    assert!(run.join("critic_checkpoints/step-000002/params.safetensors").exists());
    let metrics = lines(&run.join("metrics.jsonl"));
    let first = metrics.iter().find(|m| m.get("reward/score").is_some()).unwrap();
    for key in
        ["reward/rm", "kl/sequence", "kl/coef", "value/explained_variance", "value/loss", "ratio/first_minibatch"]
    {
        assert!(first.get(key).is_some(), "no `{key}` in {first}");
    }
    assert!((first["ratio/first_minibatch"].as_f64().unwrap() - 1.0).abs() < 1e-4);

    // The value head on the policy's own trunk: no separate critic; refused with a critic model.
    let (shared, bad, prompts) = (dir.join("ppo-shared"), dir.join("ppo-bad"), data.join("prompts.jsonl"));
    let common = [
        "ppo",
        "--config",
        "examples/ppo.toml",
        "--model",
        p(&model),
        "--data",
        p(&prompts),
        "--set",
        &reward,
        "--set",
        "train.max_steps=1",
        "--set",
        "ppo.prompts_per_step=2",
        "--set",
        "rollout.max_new_tokens=4",
        "--set",
        "eval_steps=0",
        "--set",
        "critic.shared_trunk=true",
        "--set",
        "data.eval_path=\"\"",
    ];
    let mut args = common.to_vec();
    args.extend(["--out", p(&shared), "--set", "critic.model=\"\""]);
    ok(&args);
    assert!(shared.join("final/model.safetensors").exists() && !shared.join("critic_checkpoints").exists());
    let mut args = common.to_vec();
    args.extend(["--out", p(&bad)]);
    assert!(fails(&args).contains("leave critic.model empty"));

    let table = ok(&[
        "eval",
        "--model",
        &format!("base={}", p(&model)),
        "--model",
        &format!("ppo={}", p(&run.join("final"))),
        "--prompts",
        p(&data.join("prompts_eval.jsonl")),
        "--limit",
        "3",
        "--max-new-tokens",
        "4",
        "--reward-model",
        p(&rm_final),
        "--out",
        p(&dir.join("eval.jsonl")),
        "--samples",
        "3",
        "--baseline",
        "base",
        "--text",
        p(&data.join("sft_eval.jsonl")),
    ]);
    assert!(table.contains("RM reward") && table.contains("base") && table.contains("ppo"), "{table}");
    assert!(table.contains("maj@3") && table.contains("reward-hacking signals"), "{table}");
    let rows = lines(&dir.join("eval.jsonl"));
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["kl_to_reference"].as_f64().unwrap().abs() < 1e-4, "the reference against itself: {}", rows[0]);
    // The baseline against itself ties on every prompt.
    assert_eq!((rows[0]["win_rate_verifier"].as_f64(), rows[0]["win_rate_rm"].as_f64()), (Some(0.5), Some(0.5)));
    for r in &rows {
        for key in ["pass_at_1", "maj_at_k", "repetition_rate", "win_rate_verifier", "win_rate_rm"] {
            assert!((0.0..=1.0).contains(&r[key].as_f64().unwrap()), "{key}: {r}");
        }
        assert!(r["perplexity"].as_f64().unwrap() > 1.0, "{r}");
    }
    // Paired significance against the baseline: none against itself, an interval around the
    // difference for the other row, and the verdict line in the table.
    assert_eq!((rows[0]["accuracy_diff"].as_f64(), rows[0]["mcnemar_p"].as_f64()), (Some(0.0), Some(1.0)));
    assert_eq!(rows[0]["accuracy_diff_ci95"], serde_json::json!([0.0, 0.0]));
    let (d, ci) = (rows[1]["accuracy_diff"].as_f64().unwrap(), &rows[1]["accuracy_diff_ci95"]);
    assert!(ci[0].as_f64().unwrap() <= d && d <= ci[1].as_f64().unwrap(), "{}", rows[1]);
    assert!(table.contains("McNemar") && table.contains("  ppo "), "{table}");
}

#[test]
fn online_trainers_explain_bad_settings() {
    let (dir, model, data) = setup("errors");
    let prompts = data.join("prompts.jsonl");
    let base = ["grpo", "--model", p(&model), "--data", p(&prompts)];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = dir.join("x");
    let err = run(with(&["--out", p(&out), "--set", "rewards=[{kind=\"reward_model\"}]"]));
    assert!(err.contains("needs `path`"), "{err}");
    let err = run(with(&["--out", p(&dir.join("y")), "--set", "rewards=[{kind=\"telepathy\"}]"]));
    assert!(err.contains("telepathy") && err.contains("rewards"), "{err}");
    let err = run(with(&["--out", p(&dir.join("z")), "--set", "grpo.num_generation=4"]));
    assert!(err.contains("num_generations"), "the nearest key is suggested: {err}");
    let err = run(with(&["--out", p(&dir.join("w")), "--set", "grpo.num_generations=1"]));
    assert!(err.contains("num_generations must be ≥ 2"), "{err}");
    // Online runs resume now; a folder without a checkpoint is named.
    let err = run(with(&["--out", p(&dir.join("v")), "--resume", p(&dir)]));
    assert!(err.contains("no checkpoint here") && err.contains(p(&dir)), "{err}");
    let err =
        fails(&["ppo", "--model", p(&model), "--data", p(&dir.join("missing.jsonl")), "--out", p(&dir.join("u"))]);
    assert!(err.contains("missing.jsonl"), "{err}");
}
