//! `rlhf eval`: several checkpoints side by side on held-out prompts — verifier accuracy, format
//! rate, reward-model score and length of greedy answers, and the KL to a reference measured on
//! sampled answers (E_{y∼π}[log π(y) − log π_ref(y)], the quantity the RL leash bounds).

use super::rewards::{RewardKind, RewardSpec};
use crate::loading;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rlhf_data::{load_prompts, LoadOptions, PromptExample};
use rlhf_model::CausalLm;
use rlhf_reward::RewardSource;
use rlhf_train::online::{mean, mean_len};
use rlhf_train::rollout::{decode_rows, response_logprobs_rows, rollout, score_rows, PromptRef, RolloutConfig};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `NAME=MODEL` (HF folder, .gguf or `default`); repeat for each model to compare.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Held-out prompts with an `answer` column.
    #[arg(long)]
    prompts: PathBuf,
    /// Score only the first N prompts (0 = all).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Verifier for accuracy: `math` or `last_integer`.
    #[arg(long, default_value = "math")]
    verifier: String,
    /// Reward model folder (from `rlhf reward`) to score the answers with (normalised).
    #[arg(long)]
    reward_model: Option<String>,
    /// Reference for the KL column (default: the first model).
    #[arg(long)]
    reference: Option<String>,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Also write the table as JSON lines.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Row {
    name: String,
    accuracy: f64,
    format: f64,
    rm: Option<f64>,
    kl: f64,
    length: f64,
}

pub fn run(a: Args) -> Result<()> {
    let named: Vec<(String, String)> = a
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
            _ => bail!("--model {m}: expected NAME=MODEL, e.g. sft=runs/sft/final"),
        })
        .collect::<Result<_>>()?;
    let verifier = match a.verifier.as_str() {
        "math" => RewardSpec::of(RewardKind::Math),
        "last_integer" => RewardSpec::of(RewardKind::LastInteger),
        v => bail!("--verifier {v}: use `math` or `last_integer`"),
    };
    let reference_path = a.reference.clone().unwrap_or_else(|| named[0].1.clone());
    let reference = loading::load(&reference_path, &Device::Cpu)?;
    let tok = &reference.tokenizer;
    let mut prompts = load_prompts(&a.prompts, tok, &LoadOptions { max_length: 0, ..Default::default() })?.examples;
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    let mut sources: Vec<Box<dyn RewardSource>> =
        vec![verifier.build(tok.pad_id())?, RewardSpec::of(RewardKind::Format).build(tok.pad_id())?];
    if let Some(rm) = &a.reward_model {
        sources.push(RewardSpec { path: rm.clone(), ..RewardSpec::of(RewardKind::RewardModel) }.build(tok.pad_id())?);
    }
    let mut rows = Vec::new();
    for (name, path) in &named {
        let loaded = loading::load(path, &Device::Cpu).with_context(|| format!("model `{name}`"))?;
        eprintln!("eval: {name} ({path}) on {} prompts", prompts.len());
        rows.push(evaluate(name, &loaded.model, &reference.model, &prompts, &mut sources, &a, tok)?);
    }
    print_table(&rows, a.reward_model.is_some(), &a.verifier, &reference_path);
    if let Some(out) = &a.out {
        let text: String = rows
            .iter()
            .map(|r| {
                let v = json!({"model": r.name, "accuracy": r.accuracy, "well_formatted": r.format,
                    "rm_reward": r.rm, "kl_to_reference": r.kl, "mean_length": r.length, "prompts": prompts.len()});
                format!("{v}\n")
            })
            .collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn evaluate(
    name: &str,
    model: &CausalLm,
    reference: &CausalLm,
    prompts: &[PromptExample],
    sources: &mut [Box<dyn RewardSource>],
    a: &Args,
    tok: &rlhf_data::Tokenizer,
) -> Result<Row> {
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.prompt_ids.as_slice()).collect();
    let refs: Vec<PromptRef> = prompts.iter().map(|p| PromptRef { answer: p.answer.as_deref(), tests: None }).collect();
    let greedy = RolloutConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: 0.0,
        generation_batch_size: a.batch_size,
        ..RolloutConfig::default()
    };
    let answers = rollout(model, &ids, 1, &greedy, tok, 0, &mut |_| {})?;
    let texts = decode_rows(tok, &answers)?;
    let mut means = Vec::new();
    for s in sources.iter_mut() {
        let scores = score_rows(s.as_mut(), &answers, &texts, &refs)?;
        means.push(mean(&scores.iter().filter_map(|x| x.value).collect::<Vec<_>>()));
    }
    let sampled_cfg = RolloutConfig { temperature: 1.0, ..greedy };
    let sampled = rollout(model, &ids, 1, &sampled_cfg, tok, 1, &mut |_| {})?;
    let pairs: Vec<(&[u32], &[u32])> =
        sampled.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
    let ref_lp = response_logprobs_rows(reference, &pairs, tok.pad_id(), 1.0, a.batch_size)?;
    let kl: Vec<f64> = sampled
        .iter()
        .zip(&ref_lp)
        .map(|(r, l)| r.sampler_logprobs.iter().zip(l).map(|(&p, q)| p as f64 - q).sum())
        .collect();
    Ok(Row {
        name: name.to_string(),
        accuracy: means[0],
        format: means[1],
        rm: means.get(2).copied(),
        kl: mean(&kl),
        length: mean_len(&answers),
    })
}

fn print_table(rows: &[Row], with_rm: bool, verifier: &str, reference: &str) {
    let rm_head = if with_rm { format!("{:>10}", "RM reward") } else { String::new() };
    println!("{:<12} {:>9} {:>9} {rm_head} {:>9} {:>8}", "model", "accuracy", "format", "KL (nats)", "length");
    for r in rows {
        let rm = match (with_rm, r.rm) {
            (true, Some(v)) => format!("{v:>10.3}"),
            _ => String::new(),
        };
        println!("{:<12} {:>9.3} {:>9.3} {rm} {:>9.3} {:>8.1}", r.name, r.accuracy, r.format, r.kl, r.length);
    }
    println!("(accuracy: {verifier} verifier on greedy answers; KL to {reference} on sampled answers)");
}
