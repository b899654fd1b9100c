//! `rlhf iterate` end to end on the tiny model: two rounds of collect → judge → reward model with
//! replay → PPO → eval, against a fake OpenAI-compatible judge written here (std::net) that
//! prefers the longer response, so every round has pairs whatever the tiny model samples.

mod common;

use common::{lines, p};
use serde_json::{json, Value};
use std::path::Path;

/// A judge endpoint answering every chat completion with `verdict(a, b)`; returns its API root.
fn fake_judge(verdict: fn(&str, &str) -> &'static str) -> String {
    common::fake_chat_endpoint(move |body, _| {
        let user = body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
        let between = |from: &str, to: &str| {
            user.split(from).nth(1).and_then(|rest| rest.split(to).next()).unwrap_or_default().to_string()
        };
        let (a, b) = (between("[Response A]\n", "\n[Response B]\n"), between("[Response B]\n", "\nWhich response"));
        format!("Verdict: {}", verdict(&a, &b))
    })
}

fn prefer_longer(a: &str, b: &str) -> &'static str {
    if a.len() > b.len() {
        "A"
    } else {
        "B"
    }
}

fn prefer_digits(a: &str, b: &str) -> &'static str {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
    match digits(a).cmp(&digits(b)) {
        std::cmp::Ordering::Greater => "A",
        std::cmp::Ordering::Less => "B",
        std::cmp::Ordering::Equal => "tie",
    }
}

/// The mean of the first and of the last `n` values of `key` in a metrics file.
fn first_and_last(metrics: &Path, key: &str, n: usize) -> (f64, f64) {
    let xs: Vec<f64> = lines(metrics).iter().filter_map(|r| r[key].as_f64()).collect();
    assert!(xs.len() >= 2 * n, "{}: {} values of {key}", metrics.display(), xs.len());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&xs[..n]), mean(&xs[xs.len() - n..]))
}

/// A judge that prefers answers with more digits (a taste the tiny model can acquire): round
/// 1's policy beats the original on held-out prompts under the reward model trained on the
/// judge's verdicts, and round 2 runs and is evaluated.
#[test]
fn each_round_raises_the_reward_the_judge_taught() {
    let (dir, model, data) = common::setup("iterate-learns");
    let url = fake_judge(prefer_digits);
    let run = dir.join("run");
    // The tiny settings of `config`, scaled up so a taste can be learned in two rounds.
    let cfg = config(&dir, &model, &data, &url, &run);
    let bigger = [
        "prompts_per_round=8",
        "k=4",
        "max_new_tokens=8",
        r#"reward.set=["train.max_steps=30", "train.learning_rate=1e-3", "train.batch_size=4", "stats_examples=16", "data.eval_fraction=0.2", "train.save_steps=0"]"#,
        r#"rl.set=["train.max_steps=30", "train.learning_rate=5e-3", "ppo.prompts_per_step=4", "rollout.max_new_tokens=8", "eval_steps=0", "train.save_steps=0"]"#,
        "eval.limit=8",
        "eval.max_new_tokens=8",
    ];
    let mut args = vec!["iterate", "--config", p(&cfg)];
    for set in &bigger {
        args.extend(["--set", set]);
    }
    common::ok(&args);
    // Per-step rewards of 4 prompts × 8 tokens are too noisy to compare (a 30-step round-2 run
    // went 1.78 → … → 1.45 while its policy rose on held-out prompts); the held-out eval under
    // the round's reward model is the measure. Round 1's policy beats the original by a wide
    // margin on every seed tried (1–5, 7: e.g. −0.33 → 0.99, 0.67 → 2.82). Round 2 at these
    // sizes is a coin flip against its start (seeds 1, 3 fell; 2, 5, 7 rose), so it is only
    // required to have run and been evaluated.
    let eval = lines(&run.join("eval.jsonl"));
    let rm = |round: i64, model: &str| {
        let row = eval.iter().find(|v| v["round"] == round && v["model"] == model);
        row.unwrap_or_else(|| panic!("eval.jsonl has no round {round} row for {model}"))["rm_reward"].as_f64().unwrap()
    };
    let (before, after) = (rm(1, "original"), rm(1, "round-1"));
    assert!(after > before, "held out, round 1: {after:.3} vs {before:.3} for the original policy");
    assert!(rm(2, "round-2").is_finite() && rm(2, "start").is_finite());
    // The reward models were trained too: PPO's per-step score is defined in every round.
    for r in 1..=2 {
        let (first, last) = first_and_last(&run.join(format!("round-{r}/policy/metrics.jsonl")), "reward/rm", 5);
        assert!(first.is_finite() && last.is_finite(), "round {r}: reward/rm {first} {last}");
    }
}

/// Tiny settings: 3 prompts a round, K = 3, a few tokens, 2 reward-model steps, 2 PPO steps.
fn config(dir: &Path, model: &Path, data: &Path, url: &str, out: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"policy = "{model}"
out = "{out}"
rounds = 2
prompts = "{prompts}"
prompts_per_round = 3
k = 3
temperatures = [1.0, 1.3]
max_new_tokens = 6
replay_share = 1.0
seed = 7

[preferences]
source = "judge"
url = "{url}"
model = "fake"
max_tokens = 16

[reward]
set = ["train.max_steps=2", "train.batch_size=2", "stats_examples=8", "data.eval_fraction=0.3", "train.save_steps=0"]

[rl]
algorithm = "ppo"
set = ["train.max_steps=2", "ppo.prompts_per_step=2", "rollout.max_new_tokens=4", "eval_steps=0", "train.save_steps=0"]

[eval]
prompts = "{eval}"
limit = 2
verifier = "math"
max_new_tokens = 4
"#,
        model = p(model),
        out = p(out),
        prompts = p(&data.join("prompts.jsonl")),
        eval = p(&data.join("prompts_eval.jsonl")),
    );
    let path = dir.join(format!("{}.toml", out.file_name().unwrap().to_str().unwrap()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_rounds_retrain_with_replay_and_start_from_the_last_policy() {
    let start = std::time::Instant::now();
    let (dir, model, data) = common::setup("iterate");
    let url = fake_judge(prefer_longer);
    let run = dir.join("run");
    let cfg = config(&dir, &model, &data, &url, &run);
    let stdout = common::ok(&["iterate", "--config", p(&cfg)]);

    for r in 1..=2 {
        let round = run.join(format!("round-{r}"));
        for f in ["prompts.jsonl", "candidates.jsonl", "pairs.jsonl", "rm_data.jsonl", "eval.jsonl"] {
            assert!(round.join(f).exists(), "round {r}: no {f}");
        }
        assert!(round.join("reward/final/model.safetensors").exists(), "round {r}: no reward model");
        assert!(round.join("policy/final/model.safetensors").exists(), "round {r}: no policy");
        assert_eq!(lines(&round.join("prompts.jsonl")).len(), 3);
        for c in lines(&round.join("candidates.jsonl")) {
            assert!(c["responses"].as_array().unwrap().len() >= 2, "{c}");
        }
    }
    // Rounds take consecutive prompt slices.
    let first: Vec<Value> = lines(&run.join("round-1/prompts.jsonl"));
    let second: Vec<Value> = lines(&run.join("round-2/prompts.jsonl"));
    let all = lines(&data.join("prompts.jsonl"));
    assert_eq!((&first[..], &second[..]), (&all[0..3], &all[3..6]));

    // Round 2's reward-model data: its own pairs plus every round-1 pair (replay_share = 1).
    let pairs1 = lines(&run.join("round-1/pairs.jsonl"));
    let pairs2 = lines(&run.join("round-2/pairs.jsonl"));
    assert!(!pairs1.is_empty() && !pairs2.is_empty());
    let rm2 = lines(&run.join("round-2/rm_data.jsonl"));
    assert_eq!(rm2.len(), pairs1.len() + pairs2.len());
    let replayed: Vec<&Value> = rm2.iter().filter(|v| v["round"] == 1).collect();
    assert_eq!(replayed.len(), pairs1.len());
    for (row, pair) in replayed.iter().zip(&pairs1) {
        assert_eq!((&row["chosen"], &row["rejected"]), (&pair["chosen"], &pair["rejected"]));
    }
    // The judge preferred the longer response.
    for row in &pairs1 {
        assert!(row["chosen"].as_str().unwrap().len() > row["rejected"].as_str().unwrap().len(), "{row}");
    }
    assert_eq!(lines(&run.join("round-1/rm_data.jsonl")).len(), pairs1.len(), "nothing to replay in round 1");

    // PPO changed the weights each round.
    let weights = |m: &Path| std::fs::read(m.join("model.safetensors")).unwrap();
    assert_ne!(weights(&run.join("round-1/policy/final")), weights(&model));
    assert_ne!(weights(&run.join("round-2/policy/final")), weights(&run.join("round-1/policy/final")));

    // Round 2 started from round 1's policy, which was also its frozen reference.
    let ppo2 = std::fs::read_to_string(run.join("round-2/policy/config.toml")).unwrap();
    let policy1 = p(&run.join("round-1/policy/final")).to_string();
    let ppo2: toml::Table = ppo2.parse().unwrap();
    assert_eq!(ppo2["model"].as_str(), Some(policy1.as_str()));
    assert_eq!(ppo2["reference"].as_str(), Some(policy1.as_str()));
    let ppo1: toml::Table = std::fs::read_to_string(run.join("round-1/policy/config.toml")).unwrap().parse().unwrap();
    assert_eq!((ppo1["model"].as_str(), ppo1["reference"].as_str()), (Some(p(&model)), Some(p(&model))));
    let rm2_cfg: toml::Table =
        std::fs::read_to_string(run.join("round-2/reward/config.toml")).unwrap().parse().unwrap();
    assert_eq!(rm2_cfg["model"].as_str(), Some(policy1.as_str()));

    // eval.jsonl: round 1 compares the original with the new policy; round 2 adds its start.
    let eval = lines(&run.join("eval.jsonl"));
    let models = |r: u64| -> Vec<&str> {
        eval.iter().filter(|v| v["round"] == r).map(|v| v["model"].as_str().unwrap()).collect()
    };
    assert_eq!(models(1), ["original", "round-1"]);
    assert_eq!(models(2), ["original", "start", "round-2"]);
    assert!(eval.iter().all(|v| v["baseline"] == "original"), "win rates are against the original policy");

    let rounds = lines(&run.join("rounds.jsonl"));
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0]["pairs"], pairs1.len());
    assert_eq!((&rounds[0]["replayed"], &rounds[1]["replayed"]), (&json!(0), &json!(pairs1.len())));
    assert_eq!(rounds[1]["replayed_from"], json!({"1": pairs1.len()}));
    assert_eq!(rounds[1]["start_policy"].as_str(), Some(policy1.as_str()));
    for r in &rounds {
        for key in ["rm_eval_accuracy", "rl_reward", "rl_kl", "accuracy", "win_rate_rm_vs_original"] {
            assert!(r[key].is_number(), "no {key} in {r}");
        }
    }
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("round-2"), "the report names round 2's models");
    assert!(stdout.contains("RL reward") && stdout.lines().filter(|l| l.trim_start().starts_with('2')).count() >= 1);
    eprintln!("two rounds took {:.1} s", start.elapsed().as_secs_f64());

    // A run folder is never reused.
    let err = common::fails(&["iterate", "--config", p(&cfg)]);
    assert!(err.contains("already holds an iterate run"), "{err}");
}

#[test]
fn a_round_without_preference_pairs_stops_with_a_clear_error() {
    let (dir, model, data) = common::setup("iterate-ties");
    // Always "A": both orders disagree, so every pair is a tie and no pair survives.
    let url = fake_judge(|_, _| "A");
    let run = dir.join("run");
    let cfg = config(&dir, &model, &data, &url, &run);
    let err = common::fails(&["iterate", "--config", p(&cfg), "--rounds", "1"]);
    assert!(err.contains("round 1: 0 preference pairs"), "{err}");
    assert!(run.join("round-1/candidates.jsonl").exists(), "the round's data is kept");
    assert!(!run.join("round-1/reward").exists(), "no reward model without pairs");

    // Human labels: the round's candidates are queued, but nobody has labelled anything yet.
    let run = dir.join("labels");
    let cfg = config(&dir, &model, &data, &url, &run);
    let db = dir.join("labels.db");
    let set = format!("preferences.db={:?}", p(&db));
    let err = common::fails(&[
        "iterate",
        "--config",
        p(&cfg),
        "--rounds",
        "1",
        "--set",
        "preferences.source=\"labels\"",
        "--set",
        &set,
    ]);
    assert!(err.contains("round 1: 0 preference pairs (no newly labelled items"), "{err}");
    assert!(db.exists() && run.join("round-1/labels_export.jsonl").exists());
}

#[test]
fn a_failing_stage_is_named_with_its_round() {
    let (dir, model, data) = common::setup("iterate-stage");
    let url = fake_judge(prefer_longer);
    let run = dir.join("run");
    let cfg = config(&dir, &model, &data, &url, &run);
    let err = common::fails(&["iterate", "--config", p(&cfg), "--set", r#"reward.set=["train.bogus=1"]"#]);
    assert!(err.contains("round 1: the reward stage (`rlhf reward`) failed"), "{err}");
    assert!(err.contains("train.bogus"), "the stage's own error is streamed through: {err}");
    assert!(run.join("round-1/rm_data.jsonl").exists() && !run.join("round-1/policy").exists());
}

#[test]
fn a_grpo_round_uses_the_reward_model_and_resets_the_reference() {
    let (dir, model, data) = common::setup("iterate-grpo");
    let url = fake_judge(prefer_longer);
    let run = dir.join("run");
    let cfg = config(&dir, &model, &data, &url, &run);
    common::ok(&[
        "iterate",
        "--config",
        p(&cfg),
        "--rounds",
        "1",
        "--set",
        "rl.algorithm=\"grpo\"",
        "--set",
        r#"rl.set=["train.max_steps=1", "grpo.num_generations=2", "grpo.prompts_per_step=2", "grpo.beta=0.04", "rollout.max_new_tokens=4", "eval_steps=0", "train.save_steps=0"]"#,
    ]);
    let grpo: toml::Table = std::fs::read_to_string(run.join("round-1/policy/config.toml")).unwrap().parse().unwrap();
    assert_eq!(grpo["reference"].as_str(), Some(p(&model)));
    let rewards = grpo["rewards"].as_array().unwrap();
    assert_eq!(rewards.len(), 1);
    assert_eq!(rewards[0]["kind"].as_str(), Some("reward_model"));
    assert_eq!(rewards[0]["path"].as_str(), Some(p(&run.join("round-1/reward/final"))));
    let metrics = lines(&run.join("round-1/policy/metrics.jsonl"));
    assert!(metrics.iter().any(|m| m.get("reward/rm").is_some()), "GRPO scored with the reward model");
    let rounds = lines(&run.join("rounds.jsonl"));
    assert!(rounds[0]["rl_reward"].is_number(), "{}", rounds[0]);
    assert!(run.join("report.html").exists());
}

#[test]
fn bad_configs_are_refused_before_any_stage_runs() {
    let (dir, model, data) = common::setup("iterate-bad");
    let run = dir.join("run");
    let cfg = config(&dir, &model, &data, "http://127.0.0.1:9/v1", &run);
    let with = |set: &str| common::fails(&["iterate", "--config", p(&cfg), "--set", set]);
    let err = with("replay_shares=0.5");
    assert!(err.contains("replay_shares") && err.contains("replay_share"), "suggests the nearest key: {err}");
    assert!(with("k=1").contains("k = 1: use 2 to 9"));
    assert!(with("replay_share=1.5").contains("replay_share = 1.5"));
    assert!(with("preferences.url=\"\"").contains("`preferences.url` is not set"));
    assert!(with("preferences.source=\"labels\"").contains("`preferences.db` is not set"));
    assert!(with("rl.algorithm=\"dpo\"").contains("rl.algorithm"));
    assert!(with("eval.verifier=\"exact\"").contains("eval.verifier"));
    assert!(common::fails(&["iterate", "--config", p(&cfg), "--rounds", "0"]).contains("rounds = 0"));
    let err = common::fails(&["iterate", "--set", "out=\"x\""]);
    assert!(err.contains("`policy` is not set"), "{err}");
    assert!(!run.exists(), "nothing was written");
    // `collect` writes to exactly one of a label database and a candidates file.
    let (prompts, db, out) = (data.join("prompts.jsonl"), dir.join("x.db"), dir.join("c.jsonl"));
    let base = ["collect", "--model", p(&model), "--prompts", p(&prompts)];
    let err = common::fails(&[&base[..], &["--db", p(&db), "--out", p(&out)]].concat());
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(common::fails(&base).contains("--db <DB>|--out <OUT>"));
    // The shipped example parses (it fails only at the value check after loading).
    let err = common::fails(&["iterate", "--config", "examples/iterate.toml", "--rounds", "0"]);
    assert!(err.contains("rounds = 0"), "{err}");
}
