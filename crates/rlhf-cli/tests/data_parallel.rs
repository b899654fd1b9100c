//! `mpirun -np 2 rlhf sft|grpo …` against one process running the same global batches: the same
//! parameters up to the order of the float additions, one run folder written by rank 0, and a
//! rank killed mid-run stopping the group, whose `--resume` then finishes the run.
//!
//! Needs the `mpi` feature and Open MPI's `mpirun` (scripts/setup-mpi.sh); the README's test
//! command builds with both.

#![cfg(feature = "mpi")]

mod common;

use candle_core::Tensor;
use common::{lines, ok, p};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The summation order is all that differs: rank sums of micro-batch gradients added across
/// ranks instead of one running sum. After a few AdamW steps at lr 1e-3 on the tiny model that
/// moves parameters by a few float ulps; measured here 3.7e-8 (SFT) and 6.0e-8 (GRPO), bounded at
/// 1e-6 — a missing or doubled gradient share moves them by more than 1e-4.
const TOLERANCE: f32 = 1e-6;

fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        // CI runs as root; 2 ranks on a 2-core machine need no more slots than it has, but a
        // busy or smaller machine should still run the test.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--bind-to", "none", "-x", "RAYON_NUM_THREADS=1", "-np", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_rlhf"))
        .args(args);
    cmd
}

fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("mpirun (scripts/setup-mpi.sh installs it)");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn load(file: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap()
}

/// The largest |x − y| over the parameters both sets name.
fn largest_change(xs: &HashMap<String, Tensor>, ys: &HashMap<String, Tensor>) -> f32 {
    xs.iter()
        .filter_map(|(n, x)| Some((x, ys.get(n)?)))
        .map(|(x, y)| {
            (x - y).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        })
        .fold(0.0, f32::max)
}

/// The largest |a − b| over every parameter of two runs' final models (the same names).
fn max_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (load(&a.join("final/model.safetensors")), load(&b.join("final/model.safetensors")));
    assert_eq!(a.len(), b.len());
    assert!(a.keys().all(|n| b.contains_key(n)), "the same parameters");
    largest_change(&a, &b)
}

/// How far a run's final model moved from the model it started from.
fn moved(run: &Path, model: &Path) -> f32 {
    largest_change(&load(&model.join("model.safetensors")), &load(&run.join("final/model.safetensors")))
}

fn column(run: &Path, key: &str) -> Vec<f64> {
    lines(&run.join("metrics.jsonl")).iter().filter_map(|m| m.get(key).and_then(|v| v.as_f64())).collect()
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{what}: {a:?} vs {b:?}");
    }
}

const SFT: [&str; 12] = [
    "--set",
    "train.max_steps=4",
    "--set",
    "train.batch_size=5",
    "--set",
    "train.micro_batch_size=2",
    "--set",
    "train.learning_rate=1e-3",
    "--set",
    "train.precision=\"fp32\"",
    "--set",
    "train.save_steps=2",
];

#[test]
fn sft_on_two_ranks_trains_the_model_one_process_does() {
    let (dir, model, data) = common::setup("dp-sft");
    let sft = data.join("sft.jsonl");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let mut args = vec!["sft", "--model", p(&model), "--data", p(&sft), "--out", p(&one)];
    args.extend(SFT);
    ok(&args);
    args[6] = p(&two);
    let out = run_ok(mpirun(2, &args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("sft: 4 steps").count(), 1, "rank 0 alone prints:\n{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("data-parallel: 2 ranks (mpi)"));

    assert!(moved(&one, &model) > 1e-3, "the runs train");
    let diff = max_difference(&one, &two);
    eprintln!("2 ranks vs 1 process: max |Δ| = {diff:e}");
    assert!(diff <= TOLERANCE, "2 ranks vs 1 process: max |Δ| = {diff}");
    // The batch of 5 splits 3 + 2: the loss and the gradient norm are the global batch's.
    assert_close(&column(&two, "loss"), &column(&one, "loss"), "loss");
    assert_close(&column(&two, "grad_norm"), &column(&one, "grad_norm"), "grad_norm");
    assert_eq!(lines(&two.join("metrics.jsonl")).len(), lines(&one.join("metrics.jsonl")).len(), "one writer");
    let ckpts: Vec<_> = std::fs::read_dir(two.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(ckpts.len(), 2, "{ckpts:?}");
}

/// [`common::TINY_GRPO`] with a checkpoint every step and two minibatches a step. Each rank
/// samples 3 of a step's 6 rows, in batches other than one process's (rows 0–3 and 4–5 there,
/// of `generation_batch_size` 4), each row with its own random stream.
fn grpo_args<'a>(model: &'a Path, prompts: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["grpo", "--model", p(model), "--data", p(prompts), "--out", p(out)];
    args.extend(common::TINY_GRPO);
    args.extend(["--set", "train.save_steps=1", "--set", "grpo.num_minibatches=2"]);
    args
}

#[test]
fn grpo_on_two_ranks_samples_and_trains_as_one_process_does() {
    let (dir, model, data) = common::setup("dp-grpo");
    let prompts = data.join("prompts.jsonl");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let mut args = grpo_args(&model, &prompts, &one);
    ok(&args);
    args[6] = p(&two);
    run_ok(mpirun(2, &args));

    // Every row drawn with the random stream it has in one process: the same responses.
    let rows = |run: &Path| -> Vec<(u64, String)> {
        lines(&run.join("samples.jsonl"))
            .iter()
            .map(|r| (r["step"].as_u64().unwrap(), r["response"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(rows(&two), rows(&one), "the same samples");
    assert!(column(&one, "rows_trained").iter().any(|&n| n > 0.0), "some steps train");
    assert!(moved(&one, &model) > 1e-4, "the runs train");
    let diff = max_difference(&one, &two);
    eprintln!("2 ranks vs 1 process: max |Δ| = {diff:e}");
    assert!(diff <= TOLERANCE, "2 ranks vs 1 process: max |Δ| = {diff}");
    assert_close(&column(&two, "reward/mean"), &column(&one, "reward/mean"), "reward");
    assert_close(&column(&two, "clip_ratio/region_mean"), &column(&one, "clip_ratio/region_mean"), "clip ratio");
}

/// The ranks' processes under `mpirun` (its children), by rank.
fn rank_pids(mpirun_pid: u32) -> HashMap<usize, u32> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let parent = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        if parent != Some(mpirun_pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            out.insert(rank, pid);
        }
    }
    out
}

#[test]
fn a_killed_rank_stops_the_group_which_resumes_from_the_last_checkpoint() {
    let (dir, model, data) = common::setup("dp-kill");
    let prompts = data.join("prompts.jsonl");
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    let mut args = grpo_args(&model, &prompts, &whole);
    args.extend(["--set", "train.max_steps=40"]);
    run_ok(mpirun(2, &args));

    args[6] = p(&cut);
    let mut group = mpirun(2, &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(cut.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the run never logged three steps");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pids = rank_pids(group.id());
    let victim = pids.get(&1).copied().unwrap_or_else(|| panic!("no rank 1 among mpirun's children: {pids:?}"));
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    let killed_at = Instant::now();
    let status = group.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(group.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the group fails");
    assert!(killed_at.elapsed() < Duration::from_secs(60), "the others stop at once, not at a timeout");
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "mpirun names the lost rank:\n{stderr}");
    let logged = lines(&cut.join("metrics.jsonl")).len();
    assert!(logged < 40, "killed mid-run ({logged} steps logged)");

    let mut resume = args.clone();
    resume.extend(["--resume", p(&cut)]);
    let out = run_ok(mpirun(2, &resume));
    assert!(String::from_utf8_lossy(&out.stdout).contains("grpo: model in"));
    assert_eq!(column(&cut, "reward/mean").len(), 40, "every step logged once");
    assert_eq!(
        std::fs::read(cut.join("final/model.safetensors")).unwrap(),
        std::fs::read(whole.join("final/model.safetensors")).unwrap(),
        "the resumed group ends where the uninterrupted one does"
    );
}

/// `args` (whose `--out` value is at `out_at`) once as one process and once on two ranks; the
/// largest parameter difference of their final models (after checking that `model` trained).
fn one_and_two(dir: &Path, model: &Path, name: &str, args: &[&str], out_at: usize) -> f32 {
    let (one, two) = (dir.join(format!("{name}-one")), dir.join(format!("{name}-two")));
    let mut args = args.to_vec();
    args[out_at] = p(&one);
    ok(&args);
    args[out_at] = p(&two);
    run_ok(mpirun(2, &args));
    let diff = max_difference(&one, &two);
    let moved = moved(&one, model);
    eprintln!("{name}: 2 ranks vs 1 process: max |Δ| = {diff:e}; parameters moved by up to {moved:e}");
    assert!(moved > 1e-4, "{name} trains");
    diff
}

#[test]
fn reward_dpo_and_ppo_on_two_ranks_train_as_one_process_does() {
    let (dir, model, data) = common::setup("dp-rm-dpo-ppo");
    let fp32 = ["--set", "train.precision=\"fp32\"", "--set", "train.learning_rate=1e-3"];
    let rankings = data.join("rankings.jsonl");
    let mut rm = vec!["reward", "--model", p(&model), "--data", p(&rankings), "--out", ""];
    rm.extend(["--set", "train.max_steps=3", "--set", "train.batch_size=3", "--set", "stats_examples=8"]);
    rm.extend(fp32);
    assert!(one_and_two(&dir, &model, "reward", &rm, 6) <= TOLERANCE);

    let prefs = data.join("prefs_correctness.jsonl");
    let mut dpo = vec!["dpo", "--model", p(&model), "--data", p(&prefs), "--out", ""];
    dpo.extend(["--set", "train.max_steps=3", "--set", "train.batch_size=3", "--set", "train.micro_batch_size=1"]);
    dpo.extend(fp32);
    assert!(one_and_two(&dir, &model, "dpo", &dpo, 6) <= TOLERANCE);

    // PPO with its own critic (the reward model just trained) and the reward model as reward.
    let rm_final = dir.join("reward-one/final");
    let critic = format!("critic.model=\"{}\"", p(&rm_final));
    let reward = format!("rewards=[{{kind=\"reward_model\", path=\"{}\"}}]", p(&rm_final));
    let prompts = data.join("prompts.jsonl");
    let mut ppo = vec!["ppo", "--config", "examples/ppo.toml", "--model", p(&model), "--data", p(&prompts)];
    ppo.extend(["--out", "", "--set", &critic, "--set", &reward, "--set", "train.max_steps=3"]);
    ppo.extend([
        "--set",
        "ppo.prompts_per_step=4",
        "--set",
        "ppo.num_minibatches=2",
        "--set",
        "rollout.max_new_tokens=5",
    ]);
    let eval = data.join("prompts_eval.jsonl");
    ppo.extend(["--eval-data", p(&eval), "--set", "eval.limit=2", "--set", "eval.max_new_tokens=4"]);
    ppo.extend(fp32);
    assert!(one_and_two(&dir, &model, "ppo", &ppo, 8) <= TOLERANCE);
}
