//! `rlhf bench`: the numbers we compare against PyTorch (scripts/bench_torch.py measures the same
//! shapes): f32 matmul GFLOP/s, greedy decoding tokens/s at batch 1 and 8 (128 new tokens, no
//! early stop), and one training step (forward + backward + AdamW) at batch 4 × 128.
//! Each section runs in its own process so its peak RSS is its own.

use crate::{loading, progress};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rlhf_data::Message;
use rlhf_model::{generate, token_logprobs, GenerationConfig, SamplingParams};
use rlhf_train::{AdamW, AdamWConfig};
use serde_json::{json, Value};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "default")]
    model: String,
    /// Run one section in this process: matmul, decode, train, sft, reward, dpo, grpo or ppo.
    #[arg(long)]
    only: Option<String>,
    /// Timed training steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    train_steps: usize,
    /// Timed decoding runs per batch size.
    #[arg(long, default_value_t = 3)]
    decode_runs: usize,
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Responses per GRPO/PPO step (32 tokens each).
    #[arg(long, default_value_t = 4)]
    completions: usize,
    /// Comma-separated sections to run, each in its own process (default: all but grpo and ppo).
    #[arg(long)]
    sections: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Trainer sections: recompute layer activations in the backward pass (TRL's
    /// `gradient_checkpointing`, its SFT/reward/DPO default).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Arithmetic of the matrix products: auto, bf16, fp32, or both (every section in each,
    /// side by side; the default where the CPU has AMX).
    #[arg(long)]
    precision: Option<String>,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in MB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Products at the shapes of training on the default model (rows = batch × tokens, hidden 576,
/// MLP 1536, vocabulary 49152) and the two square ones PyTorch is usually quoted at, through
/// the product every linear layer runs.
const MATMUL_SHAPES: [(usize, usize, usize); 5] =
    [(1024, 1024, 1024), (512, 1536, 576), (512, 576, 1536), (512, 49152, 576), (2048, 2048, 2048)];

fn matmul() -> Result<Value> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut out = serde_json::Map::new();
    for (m, n, k) in MATMUL_SHAPES {
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let flop = 2.0 * (m * n * k) as f64;
        let runs = ((2e10 / flop) as usize).clamp(3, 20);
        for _ in 0..2 {
            std::hint::black_box(rlhf_model::ops::linear::matmul(&a, &b, (m, n, k)));
        }
        let mut gflops = vec![];
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(rlhf_model::ops::linear::matmul(&a, &b, (m, n, k)));
            gflops.push(flop / t.elapsed().as_secs_f64() / 1e9);
        }
        out.insert(format!("{m}x{k}x{n}"), json!({"gflops": median(&gflops), "samples": gflops}));
    }
    Ok(Value::Object(out))
}

fn decode(a: &Args) -> Result<Value> {
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let tok = &loaded.tokenizer;
    let prompt = tok.encode_chat(&[Message::user("Tell me a story about a robot.")], true)?;
    let mut out = json!({"prompt_tokens": prompt.len(), "new_tokens": a.new_tokens});
    for batch in [1usize, 8] {
        let cfg = GenerationConfig {
            max_new_tokens: a.new_tokens,
            sampling: SamplingParams::greedy(),
            eos_token_ids: vec![], // exactly new_tokens tokens per row
            pad_token_id: tok.pad_id(),
        };
        let mut rates = vec![];
        for run in 0..a.decode_runs {
            let pb = progress::bar(a.new_tokens as u64, &format!("decode b{batch} #{}", run + 1));
            let t = Instant::now();
            let g =
                generate(&loaded.model, &vec![prompt.clone(); batch], &cfg, None, &mut |s| pb.set_position(s as u64))?;
            let secs = t.elapsed().as_secs_f64();
            pb.finish_and_clear();
            let n: usize = g.response_ids.iter().map(Vec::len).sum();
            rates.push(n as f64 / secs);
        }
        out[format!("decode_tokens_per_s_b{batch}")] = json!(median(&rates));
        out[format!("decode_samples_b{batch}")] = json!(rates);
    }
    out["peak_rss_mb"] = json!(peak_rss_mb());
    Ok(out)
}

fn train(a: &Args) -> Result<Value> {
    let (batch, len) = (4usize, 128usize);
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let vocab = loaded.model.config().vocab_size;
    let (model, vars) = loaded.model.trainable()?;
    drop(loaded.model);
    let mut opt = AdamW::new(vars, AdamWConfig::default())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch * len).map(|_| rng.random_range(0..vocab as u32)).collect();
    let ids = Tensor::from_vec(ids, (batch, len), &Device::Cpu)?;
    let mask = Tensor::ones((batch, len), DType::U32, &Device::Cpu)?;
    let (mut fwd, mut bwd, mut step, mut total, mut losses) = (vec![], vec![], vec![], vec![], vec![]);
    let pb = progress::bar(a.train_steps as u64 + 1, "train step");
    for i in 0..=a.train_steps {
        let t0 = Instant::now();
        let loss = token_logprobs(&model, &ids, &mask, 1.0)?.mean_all()?.neg()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&model.grads(&grads), 1e-5)?;
        model.zero_grad();
        drop(grads);
        let t3 = Instant::now();
        losses.push(loss.to_scalar::<f32>()?);
        pb.inc(1);
        if i > 0 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            step.push((t3 - t2).as_secs_f64());
            total.push((t3 - t0).as_secs_f64());
        }
    }
    pb.finish_and_clear();
    Ok(json!({
        "batch": batch, "seq_len": len,
        "train_step_s": median(&total), "forward_s": median(&fwd), "backward_s": median(&bwd), "optimizer_s": median(&step),
        "samples_s": total, "losses": losses, "peak_rss_mb": peak_rss_mb(),
    }))
}

fn section(a: &Args, name: &str) -> Result<Value> {
    match name {
        "matmul" => matmul(),
        "decode" => decode(a),
        "train" => train(a),
        "sft" | "reward" | "dpo" => {
            super::trainers::trainer_step(&a.model, name, a.train_steps, a.gradient_checkpointing)
        }
        "grpo" | "ppo" => super::rl::rl_step(&a.model, name, a.train_steps, a.completions, a.gradient_checkpointing),
        other => bail!("--only {other}: expected matmul, decode, train, sft, reward, dpo, grpo or ppo"),
    }
}

/// The precisions to run: `--precision` (or both where the CPU has AMX, fp32 elsewhere).
fn precisions(a: &Args) -> Result<Vec<&'static str>> {
    Ok(match a.precision.as_deref() {
        Some("both") => vec!["fp32", "bf16"],
        Some("bf16") => vec!["bf16"],
        Some("fp32") => vec!["fp32"],
        Some("auto") | None if rlhf_model::ops::precision::units().amx_bf16 => vec!["fp32", "bf16"],
        Some("auto") | None => vec!["fp32"],
        Some(other) => bail!(crate::config::usage(format!("--precision {other}: expected auto, bf16, fp32 or both"))),
    })
}

pub fn run(a: Args) -> Result<()> {
    let threads = candle_core::utils::get_num_threads();
    if let Some(name) = &a.only {
        let choice = match a.precision.as_deref() {
            None => rlhf_train::PrecisionChoice::Auto,
            Some(p) => crate::precision::parse(p).map_err(crate::config::usage)?,
        };
        let p = crate::precision::apply(choice);
        let mut v = section(&a, name)?;
        v["threads"] = json!(threads);
        v["precision"] = json!(p.to_string());
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    loading::resolve_model(&a.model)?;
    let exe = std::env::current_exe().context("locating the rlhf binary")?;
    let precisions = precisions(&a)?;
    let mut all = json!({"threads": threads, "model": a.model});
    let sections: Vec<&str> = match &a.sections {
        Some(list) => list.split(',').collect(),
        None => vec!["matmul", "decode", "train", "sft", "reward", "dpo"],
    };
    for name in sections {
        for &prec in &precisions {
            let out = std::process::Command::new(&exe)
                .args(["bench", "--model", &a.model, "--only", name, "--precision", prec])
                .args(["--train-steps", &a.train_steps.to_string(), "--decode-runs", &a.decode_runs.to_string()])
                .args(["--new-tokens", &a.new_tokens.to_string(), "--completions", &a.completions.to_string()])
                .args(a.gradient_checkpointing.then_some("--gradient-checkpointing"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running bench section {name} in {prec}"))?;
            if !out.status.success() {
                bail!("bench section {name} failed in {prec}");
            }
            let v: Value =
                serde_json::from_slice(&out.stdout).with_context(|| format!("bench section {name} printed no JSON"))?;
            all[prec][name] = v;
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print_table(&a, &all, &precisions, threads);
    Ok(())
}

/// One line per measurement, a column per precision, and bf16's speed-up where both ran.
fn print_table(a: &Args, all: &Value, precisions: &[&str], threads: usize) {
    let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    println!("rlhf bench — model {}, {threads} threads", a.model);
    let header: String = precisions.iter().map(|p| format!("{p:>11}")).collect();
    println!("  {:<34}{header}", "");
    // (label, section, path into the section, unit, higher is better)
    let mut rows: Vec<(String, &str, Vec<String>, &str, bool)> = vec![];
    if let Some(shapes) = all[precisions[0]]["matmul"].as_object() {
        for key in shapes.keys() {
            rows.push((format!("matmul {key}"), "matmul", vec![key.clone(), "gflops".into()], "GFLOP/s", true));
        }
    }
    let p = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    rows.push(("decode batch 1".into(), "decode", p(&["decode_tokens_per_s_b1"]), "tokens/s", true));
    rows.push(("decode batch 8".into(), "decode", p(&["decode_tokens_per_s_b8"]), "tokens/s", true));
    rows.push(("decode peak RSS".into(), "decode", p(&["peak_rss_mb"]), "MB", false));
    rows.push(("train step 4×128".into(), "train", p(&["train_step_s"]), "s", false));
    rows.push(("train peak RSS".into(), "train", p(&["peak_rss_mb"]), "MB", false));
    for name in ["sft", "reward", "dpo"] {
        rows.push((format!("{name} step 4×128"), name, p(&["step_s"]), "s", false));
        rows.push((format!("{name} peak RSS"), name, p(&["peak_rss_mb"]), "MB", false));
    }
    for name in ["grpo", "ppo"] {
        rows.push((format!("{name} step {}×32", a.completions), name, p(&["step_s"]), "s", false));
        rows.push((format!("{name} rollout"), name, p(&["rollout_s"]), "s", false));
        rows.push((format!("{name} peak RSS"), name, p(&["peak_rss_mb"]), "MB", false));
    }
    for (label, section, path, unit, higher_better) in rows {
        let values: Vec<&Value> =
            precisions.iter().map(|prec| path.iter().fold(&all[*prec][section], |v, key| &v[key.as_str()])).collect();
        if values.iter().all(|v| v.is_null()) {
            continue;
        }
        let cells: String = values.iter().map(|v| format!("{:>11}", f(v))).collect();
        let speedup = match (values.first().and_then(|v| v.as_f64()), values.get(1).and_then(|v| v.as_f64())) {
            (Some(fp32), Some(bf16)) if unit != "MB" => {
                let r = if higher_better { bf16 / fp32 } else { fp32 / bf16 };
                format!("  bf16 {r:.2}×")
            }
            _ => String::new(),
        };
        println!("  {label:<34}{cells} {unit}{speedup}");
    }
}
