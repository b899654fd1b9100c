//! `rollout.engine = "openai"`: GRPO sampling on `rlhf serve` workers (two live ones and one
//! that is not there), with the policy loaded into them before every step, against the same run
//! sampling in-process.

mod common;

use common::{fails, lines, ok, p};
use serde_json::Value;
use std::path::Path;

fn grpo(model: &Path, data: &Path, run: &Path, extra: &[&str]) -> String {
    let prompts = data.join("prompts.jsonl");
    let mut args = vec!["grpo", "--model", p(model), "--out", p(run), "--data", p(&prompts)];
    args.extend(common::TINY_GRPO);
    args.extend_from_slice(extra);
    ok(&args)
}

fn without_clock(rows: Vec<Value>) -> Vec<Value> {
    rows.into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                // The sampler's own logprobs (entropy, mismatch) carry its batch's rounding.
                o.retain(|k, _| {
                    !(k.contains("time")
                        || k.contains("per_sec")
                        || k.contains("seconds")
                        || k.starts_with("logprob_mismatch")
                        || k.starts_with("rollout/")
                        || k == "entropy")
                });
            }
            v
        })
        .collect()
}

/// The rows of `samples.jsonl` without the weight version the servers add, checking it first:
/// step s's rows were drawn with the weights after `s - 1 - lag` updates.
fn samples_drawn(run: &Path, lag: u64) -> Vec<Value> {
    lines(&run.join("samples.jsonl"))
        .into_iter()
        .map(|mut row| {
            let step = row["step"].as_u64().unwrap();
            let want = (step - 1).saturating_sub(if step > 1 { lag } else { 0 });
            assert_eq!(row["weight_version"], want, "{row}");
            row.as_object_mut().unwrap().remove("weight_version");
            row
        })
        .collect()
}

/// Starts `rlhf args` (a run writing to `run_dir`) and returns once it has logged two steps.
fn start_and_wait_for_two_steps(args: &[&str], run_dir: &Path) -> std::process::Child {
    let run = common::spawn(args);
    let started = std::time::Instant::now();
    while std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(started.elapsed().as_secs() < 120, "the run never logged two steps");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    run
}

fn get(base: &str, path: &str) -> Value {
    let out = std::process::Command::new("curl").args(["-sf", &format!("{base}{path}")]).output().expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn grpo_samples_on_serve_workers_as_it_does_in_process() {
    let (dir, model, data) = common::setup("remote-grpo");
    let workers: Vec<common::Background> = (0..2)
        .map(|_| common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]))
        .collect();
    let local = dir.join("local");
    grpo(&model, &data, &local, &[]);

    // The third server is not there: its rows go to the others.
    let servers =
        format!("rollout.servers=[\"{}/v1\", \"{}/v1\", \"http://127.0.0.1:9/v1\"]", workers[0].base, workers[1].base);
    let remote = dir.join("remote");
    grpo(&model, &data, &remote, &["--set", "rollout.engine=\"openai\"", "--set", &servers]);

    assert_eq!(samples_drawn(&remote, 0), lines(&local.join("samples.jsonl")), "the same rows");
    let (a, b) = (lines(&remote.join("metrics.jsonl")), lines(&local.join("metrics.jsonl")));
    assert!(a.iter().any(|m| m["rows_trained"].as_f64() > Some(0.0)), "some steps train: {a:?}");
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x["entropy"].as_f64().unwrap(), y["entropy"].as_f64().unwrap());
        assert!((x - y).abs() < 1e-6 * y.abs(), "entropy of the sampled tokens: {x} vs {y}");
    }
    assert_eq!(without_clock(a.clone()), without_clock(b), "the same updates");
    let weights = |run: &Path| std::fs::read(run.join("final/model.safetensors")).unwrap();
    assert_eq!(weights(&remote), weights(&local), "the same final weights");
    // Our own server in fp32 samples with the trainer's arithmetic.
    assert!(a.iter().any(|m| m.get("logprob_mismatch/mean_abs").is_some()), "{a:?}");
    for m in a.iter().filter(|m| m.get("logprob_mismatch/mean_abs").is_some()) {
        assert!(m["logprob_mismatch/mean_abs"].as_f64().unwrap() < 1e-4, "{m}");
    }
    // The workers were given the policy before every step: after 2 updates, before step 3.
    for w in &workers {
        assert_eq!(get(&w.base, "/get_weight_version")["weight_version"], "2", "{}", w.log());
    }
    let left = std::fs::read_dir(remote.join("rollout-weights")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "weight folders go once the workers have loaded them");

    // With every server gone the run stops with an error naming them.
    drop(workers);
    let err = fails(&[
        "grpo",
        "--model",
        p(&model),
        "--out",
        p(&dir.join("gone")),
        "--data",
        p(&data.join("prompts.jsonl")),
        "--set",
        "rollout.engine=\"openai\"",
        "--set",
        "rollout.servers=[\"http://127.0.0.1:9/v1\"]",
        "--set",
        "train.max_steps=2",
    ]);
    assert!(err.contains("no rollout server left") && err.contains("127.0.0.1:9"), "{err}");
}

/// `max_staleness = 1`: the workers draw step s + 1 during step s's update, with the weights
/// from before it, so every step after the first trains on rows one update behind.
#[test]
fn rows_drawn_during_the_update_are_one_update_behind() {
    let (dir, model, data) = common::setup("remote-ahead");
    let workers: Vec<common::Background> = (0..2)
        .map(|_| common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]))
        .collect();
    let local = dir.join("local");
    grpo(&model, &data, &local, &[]);
    let servers = format!("rollout.servers=[\"{}/v1\", \"{}/v1\"]", workers[0].base, workers[1].base);
    let ahead = dir.join("ahead");
    let sets = ["--set", "rollout.engine=\"openai\"", "--set", &servers, "--set", "rollout.max_staleness=1"];
    grpo(&model, &data, &ahead, &sets);
    let metrics = lines(&ahead.join("metrics.jsonl"));
    let lags: Vec<f64> = metrics.iter().filter_map(|m| m["rollout/weight_lag"].as_f64()).collect();
    assert_eq!(lags, [0.0, 1.0, 1.0], "{metrics:?}");
    let (a, b) = (samples_drawn(&ahead, 1), lines(&local.join("samples.jsonl")));
    let step = |rows: &[Value], s: u64| -> Vec<Value> { rows.iter().filter(|r| r["step"] == s).cloned().collect() };
    assert_eq!(step(&a, 1), step(&b, 1), "step 1 samples the starting weights either way");
    // The trainer's logprobs of step 2's rows differ from the sampler's by the first update.
    let mismatch = |rows: &[Value], s: usize| rows[s - 1]["logprob_mismatch/mean_abs"].as_f64().unwrap();
    let local_metrics = lines(&local.join("metrics.jsonl"));
    assert!(mismatch(&local_metrics, 2) < 1e-5, "in process, on-policy: {}", mismatch(&local_metrics, 2));
    assert!(mismatch(&metrics, 2) > 1e-4, "one update behind: {}", mismatch(&metrics, 2));
    // The last update drew nothing ahead: the workers hold the weights after one update.
    for w in &workers {
        assert_eq!(get(&w.base, "/get_weight_version")["weight_version"], "1", "{}", w.log());
    }
}

/// A worker killed while the run is going: its rows go to the other worker, whose draws are the
/// same (the seeds travel with the rows), so the run ends as the in-process one does.
#[test]
fn a_worker_killed_mid_run_is_survived() {
    let (dir, model, data) = common::setup("remote-kill");
    let mut workers: Vec<common::Background> = (0..2)
        .map(|_| common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]))
        .collect();
    let long = ["--set", "train.max_steps=100"];
    let local = dir.join("local");
    grpo(&model, &data, &local, &long);
    let servers = format!("rollout.servers=[\"{}/v1\", \"{}/v1\"]", workers[0].base, workers[1].base);
    let remote = dir.join("remote");
    let prompts = data.join("prompts.jsonl");
    let mut args = vec!["grpo", "--model", p(&model), "--out", p(&remote), "--data", p(&prompts)];
    args.extend(common::TINY_GRPO);
    args.extend(long);
    args.extend(["--set", "rollout.engine=\"openai\"", "--set", &servers]);
    // Kill the first worker once two steps are logged.
    let run = start_and_wait_for_two_steps(&args, &remote);
    drop(workers.remove(0));
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dropped"), "the killed worker was noticed: {stderr}");
    let steps = lines(&remote.join("metrics.jsonl")).iter().filter(|m| m.get("step").is_some()).count();
    assert!(steps >= 100, "{steps} steps");
    let weights = |run: &Path| std::fs::read(run.join("final/model.safetensors")).unwrap();
    assert_eq!(weights(&remote), weights(&local), "the same final weights");
}

/// Every worker gone mid-run: the run keeps what it trained (a checkpoint of the last complete
/// step) and stops with an error naming the servers.
#[test]
fn with_every_worker_gone_the_run_checkpoints_and_stops() {
    let (dir, model, data) = common::setup("remote-all-gone");
    let worker = common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]);
    let servers = format!("rollout.servers=[\"{}/v1\"]", worker.base);
    let (run_dir, prompts) = (dir.join("run"), data.join("prompts.jsonl"));
    let mut args = vec!["grpo", "--model", p(&model), "--out", p(&run_dir), "--data", p(&prompts)];
    args.extend(common::TINY_GRPO);
    args.extend(["--set", "train.max_steps=100", "--set", "rollout.engine=\"openai\"", "--set", &servers]);
    let run = start_and_wait_for_two_steps(&args, &run_dir);
    drop(worker);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run goes on without servers: {stderr}");
    assert!(stderr.contains("no rollout server left"), "{stderr}");
    let logged = lines(&run_dir.join("metrics.jsonl")).iter().filter(|m| m.get("step").is_some()).count();
    let checkpoint = run_dir.join(format!("checkpoints/step-{logged:06}/state.json"));
    assert!(checkpoint.exists(), "a checkpoint of the last logged step ({logged}): {stderr}");
}

/// PPO and RAFT sample through the same loop: on a worker they draw the in-process rows too.
#[test]
fn ppo_and_raft_sample_on_workers_too() {
    let (dir, model, data) = common::setup("remote-ppo-raft");
    let worker = common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]);
    let servers = format!("rollout.servers=[\"{}/v1\"]", worker.base);
    let prompts = data.join("prompts.jsonl");
    let reward = "rewards=[{kind=\"regex\", pattern=\"(?s).*[a-z].*\"}]";
    let common = [
        "--set",
        reward,
        "--set",
        "train.precision=\"fp32\"",
        "--set",
        "rollout.max_new_tokens=6",
        "--set",
        "rollout.generation_batch_size=4",
    ];
    let remote = ["--set", "rollout.engine=\"openai\"", "--set", &servers];
    for (command, own) in [
        ("ppo", vec!["--set", "train.max_steps=2", "--set", "train.save_steps=0", "--set", "ppo.prompts_per_step=3"]),
        (
            "raft",
            vec!["--set", "raft.rounds=2", "--set", "raft.prompts_per_round=3", "--set", "raft.samples_per_prompt=2"],
        ),
    ] {
        let run = |name: &str, extra: &[&str]| {
            let out = dir.join(format!("{command}-{name}"));
            let mut args = vec![command, "--model", p(&model), "--data", p(&prompts), "--out"];
            let out_s = p(&out).to_string();
            args.push(&out_s);
            args.extend(common);
            args.extend(own.iter().copied());
            args.extend_from_slice(extra);
            ok(&args);
            out
        };
        let (local, remote) = (run("local", &[]), run("remote", &remote));
        assert_eq!(samples_drawn(&remote, 0), lines(&local.join("samples.jsonl")), "{command}: the same rows");
    }
}

/// A LoRA run with `sync = "vllm-lora"`: the workers get the PEFT adapter (in place, under one
/// name that the rows ask for) instead of full weights.
#[test]
fn a_lora_run_syncs_its_adapter() {
    let (dir, model, data) = common::setup("remote-lora");
    let worker = common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]);
    let lora = ["--set", "lora.enabled=true", "--set", "lora.r=4"];
    let local = dir.join("local");
    grpo(&model, &data, &local, &lora);
    let servers = format!("rollout.servers=[\"{}/v1\"]", worker.base);
    let remote = dir.join("remote");
    let sync = ["--set", "rollout.engine=\"openai\"", "--set", &servers, "--set", "rollout.sync=\"vllm-lora\""];
    grpo(&model, &data, &remote, &[&lora[..], &sync[..]].concat());
    assert_eq!(samples_drawn(&remote, 0), lines(&local.join("samples.jsonl")), "the same rows");
    let metrics = lines(&remote.join("metrics.jsonl"));
    for m in metrics.iter().filter(|m| m.get("logprob_mismatch/max_abs").is_some()) {
        // The worker samples with the adapter merged into the weights, the trainer with it apart.
        assert!(m["logprob_mismatch/max_abs"].as_f64().unwrap() < 1e-3, "{m}");
    }
    let models = get(&worker.base, "/v1/models");
    assert_eq!(models["data"][1]["id"], "rlhf-policy", "{models}");
    assert!(remote.join("final/adapter_model.safetensors").exists());
}

#[test]
fn remote_settings_are_checked_before_anything_runs() {
    let (dir, model, data) = common::setup("remote-settings");
    let (out, prompts) = (dir.join("r"), data.join("prompts.jsonl"));
    let base = ["grpo", "--model", p(&model), "--out", p(&out), "--data", p(&prompts)];
    let with = |set: &str| fails(&[&base[..], &["--set", "rollout.engine=\"openai\"", "--set", set]].concat());
    assert!(with("rollout.servers=[]").contains("rollout.servers"));
    assert!(with("rollout.servers=[\"localhost:8000\"]").contains("must start with http://"));
    let one = "rollout.servers=[\"http://127.0.0.1:9/v1\"]";
    let err = fails(&[&base[..], &["--set", "rollout.max_staleness=1"]].concat());
    assert!(err.contains("max_staleness applies to rollouts on servers"), "{err}");
    let err =
        fails(&[&base[..], &["--set", "rollout.engine=\"openai\"", "--set", one, "--set", "rollout.top_k=5"]].concat());
    assert!(err.contains("top_k"), "{err}");
}
