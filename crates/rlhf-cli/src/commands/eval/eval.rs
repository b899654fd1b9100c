//! `rlhf eval`: several checkpoints side by side on held-out prompts — verifier accuracy, format
//! rate, reward-model score and length of greedy answers, win rates against a baseline (by the
//! verifier and by the reward model), the KL to a reference measured on sampled answers
//! (E_{y∼π}[log π(y) − log π_ref(y)], the quantity the RL leash bounds), Pass@1 / Maj@K over K
//! samples, perplexity on held-out text, and reward-hacking signals: length–reward correlation,
//! repetition, and how often the reward model prefers a wrong answer to a right one.

use crate::commands::rewards::{self, RewardSpec, SourceSpec};
use crate::loading;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rlhf_data::{load_prompts, LoadOptions, PromptExample};
use rlhf_eval::metrics::{majority, pearson, repeats, rm_verifier_disagreements, win_rate};
use rlhf_eval::significance::{discordant, mcnemar_exact, paired_bootstrap, PairedDifference, RESAMPLES};
use rlhf_model::CausalLm;
use rlhf_reward::math::{extract_final_answer, last_integer};
use rlhf_reward::RewardSource;
use rlhf_train::online::mean_len;
use rlhf_train::rollout::{decode_rows, response_logprobs_rows, rollout, score_rows, PromptRef, RolloutConfig};
use rlhf_train::stats::mean;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `NAME=MODEL` (Hub id, HF folder, .gguf or `default`); repeat for each model to compare.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Held-out prompts with an `answer` column.
    #[arg(long)]
    prompts: String,
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
    /// Model (by NAME) the win rates are against (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Sample K answers per prompt for Pass@1, Maj@K and RM–verifier divergence (0: skip).
    #[arg(long, default_value_t = 0)]
    samples: usize,
    #[arg(long, default_value_t = 0.7)]
    sample_temperature: f64,
    /// Held-out demonstrations (SFT format) for perplexity on their completion tokens.
    #[arg(long)]
    text: Option<String>,
    #[command(flatten)]
    precision: crate::precision::PrecisionArg,
}

struct Row {
    name: String,
    accuracy: f64,
    format: f64,
    rm: Option<f64>,
    kl: f64,
    length: f64,
    /// Per prompt, greedy answers: verifier score and RM score (for win rates).
    verifier_scores: Vec<f64>,
    rm_scores: Option<Vec<f64>>,
    pass_at_1: Option<f64>,
    maj_at_k: Option<f64>,
    length_rm_correlation: Option<f64>,
    repetition: f64,
    rm_prefers_wrong: Option<f64>,
    perplexity: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    crate::precision::apply(a.precision.choice);
    let named: Vec<(String, String)> = a
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
            _ => bail!("--model {m}: expected NAME=MODEL, e.g. sft=runs/sft/final"),
        })
        .collect::<Result<_>>()?;
    let verifier = match a.verifier.as_str() {
        "math" => RewardSpec::of(SourceSpec::Math {}),
        "last_integer" => RewardSpec::of(SourceSpec::LastInteger {}),
        v => bail!("--verifier {v}: use `math` or `last_integer`"),
    };
    let reference_path = a.reference.clone().unwrap_or_else(|| named[0].1.clone());
    let reference = loading::load(&reference_path, &Device::Cpu)?;
    let tok = &reference.tokenizer;
    let mut prompts =
        loading::load_dataset(&a.prompts, tok, &LoadOptions { max_length: 0, ..Default::default() }, load_prompts)?
            .examples;
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    let mut sources: Vec<Box<dyn RewardSource>> = vec![
        rewards::build(&verifier, tok.pad_id())?,
        rewards::build(&RewardSpec::of(SourceSpec::Format {}), tok.pad_id())?,
    ];
    if let Some(rm) = &a.reward_model {
        sources.push(rewards::build(&RewardSpec::reward_model(rm), tok.pad_id())?);
    }
    let baseline = match &a.baseline {
        None => 0,
        Some(b) => named
            .iter()
            .position(|(n, _)| n == b)
            .with_context(|| format!("--baseline {b}: not one of the --model names"))?,
    };
    let text = match &a.text {
        Some(path) => {
            loading::load_dataset(path, tok, &LoadOptions { max_length: 0, ..Default::default() }, rlhf_data::load_sft)?
                .examples
        }
        None => vec![],
    };
    let mut rows = Vec::new();
    for (name, path) in &named {
        let loaded = loading::load(path, &Device::Cpu).with_context(|| format!("model `{name}`"))?;
        eprintln!("eval: {name} ({path}) on {} prompts", prompts.len());
        let mut row = evaluate(name, &loaded.model, &reference.model, &prompts, &mut sources, &a, tok)?;
        if !text.is_empty() {
            let mut sft = rlhf_train::sft::SftObjective {
                model: &loaded.model,
                pad_id: tok.pad_id(),
                eval_batch_size: a.batch_size,
            };
            let stats = rlhf_train::Objective::evaluate(&mut sft, &text)?;
            row.perplexity = stats.iter().find(|(k, _)| k == "perplexity").map(|(_, v)| *v);
        }
        rows.push(row);
    }
    let base = &rows[baseline];
    let wins: Vec<(f64, Option<f64>)> = rows
        .iter()
        .map(|r| {
            let by_verifier = win_rate(&r.verifier_scores, &base.verifier_scores, 1e-9).unwrap_or(f64::NAN);
            let by_rm = r.rm_scores.as_ref().zip(base.rm_scores.as_ref()).and_then(|(x, y)| win_rate(x, y, 1e-6));
            (by_verifier, by_rm)
        })
        .collect();
    // Accuracy against the baseline on the same problems: the difference, its paired-bootstrap
    // interval and McNemar's exact p.
    let versus: Vec<Option<(PairedDifference, f64)>> = rows
        .iter()
        .map(|r| {
            let d = paired_bootstrap(&r.verifier_scores, &base.verifier_scores, RESAMPLES, 0)?;
            let (only_r, only_base) = discordant(&r.verifier_scores, &base.verifier_scores);
            Some((d, mcnemar_exact(only_r, only_base)))
        })
        .collect();
    print_table(&rows, &wins, &named[baseline].0, a.reward_model.is_some(), &a, &reference_path);
    print_significance(&rows, &versus, baseline, prompts.len());
    if let Some(out) = &a.out {
        let text: String = rows
            .iter()
            .zip(&wins)
            .zip(&versus)
            .map(|((r, (wv, wr)), vs)| {
                let v = json!({"model": r.name, "accuracy": r.accuracy, "well_formatted": r.format,
                    "rm_reward": r.rm, "kl_to_reference": r.kl, "mean_length": r.length, "prompts": prompts.len(),
                    "baseline": named[baseline].0, "win_rate_verifier": wv, "win_rate_rm": wr,
                    "pass_at_1": r.pass_at_1, "maj_at_k": r.maj_at_k, "samples": a.samples,
                    "length_rm_correlation": r.length_rm_correlation, "repetition_rate": r.repetition,
                    "rm_prefers_wrong": r.rm_prefers_wrong, "perplexity": r.perplexity,
                    "accuracy_diff": vs.map(|(d, _)| d.diff), "accuracy_diff_ci95": vs.map(|(d, _)| [d.lo, d.hi]),
                    "mcnemar_p": vs.map(|(_, p)| p)});
                format!("{v}\n")
            })
            .collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The verifier's final answer of a reply, for majority voting.
fn final_answer(verifier: &str, text: &str) -> Option<String> {
    if verifier == "last_integer" {
        last_integer(text).map(|n| n.to_string())
    } else {
        extract_final_answer(text).map(|a| a.text)
    }
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
    let mut per_source = Vec::new();
    for s in sources.iter_mut() {
        let scores = score_rows(s.as_mut(), &answers, &texts, &refs)?;
        per_source.push(scores.iter().map(|x| x.value.unwrap_or(f64::NAN)).collect::<Vec<f64>>());
    }
    let finite_mean = |v: &[f64]| mean(&v.iter().copied().filter(|x| x.is_finite()).collect::<Vec<_>>());
    let rm_scores = per_source.get(2).cloned();
    let lengths: Vec<f64> = answers.iter().map(|r| r.response_ids.len() as f64).collect();
    let length_rm_correlation = rm_scores.as_ref().and_then(|rm| pearson(&lengths, rm));
    let repetition =
        answers.iter().filter(|r| repeats(&r.response_ids, 4, 3)).count() as f64 / answers.len().max(1) as f64;

    let (mut pass_at_1, mut maj_at_k, mut rm_prefers_wrong) = (None, None, None);
    if a.samples > 0 {
        let cfg = RolloutConfig { temperature: a.sample_temperature, ..greedy.clone() };
        let samples = rollout(model, &ids, a.samples, &cfg, tok, 2, &mut |_| {})?;
        let sample_texts = decode_rows(tok, &samples)?;
        let correct: Vec<f64> = score_rows(sources[0].as_mut(), &samples, &sample_texts, &refs)?
            .iter()
            .map(|x| x.value.unwrap_or(0.0))
            .collect();
        let rm: Option<Vec<f64>> = match sources.get_mut(2) {
            Some(s) => Some(
                score_rows(s.as_mut(), &samples, &sample_texts, &refs)?
                    .iter()
                    .map(|x| x.value.unwrap_or(f64::NAN))
                    .collect(),
            ),
            None => None,
        };
        pass_at_1 = Some(mean(&correct));
        let (mut maj_right, mut against, mut apart) = (0usize, 0usize, 0usize);
        for p in 0..prompts.len() {
            let rows: Vec<usize> = (0..samples.len()).filter(|&r| samples[r].prompt_index == p).collect();
            let extracted: Vec<Option<String>> =
                rows.iter().map(|&r| final_answer(&a.verifier, &sample_texts[r].response)).collect();
            let votes: Vec<Option<&str>> = extracted.iter().map(|x| x.as_deref()).collect();
            if let Some(top) = majority(&votes) {
                // Samples with the same final answer get the same verdict.
                maj_right += rows.iter().zip(&votes).any(|(&r, v)| *v == Some(top) && correct[r] > 0.5) as usize;
            }
            if let Some(rm) = &rm {
                let (x, y) = rm_verifier_disagreements(
                    &rows.iter().map(|&r| rm[r]).collect::<Vec<_>>(),
                    &rows.iter().map(|&r| correct[r] > 0.5).collect::<Vec<_>>(),
                );
                (against, apart) = (against + x, apart + y);
            }
        }
        maj_at_k = Some(maj_right as f64 / prompts.len().max(1) as f64);
        if rm.is_some() && apart > 0 {
            rm_prefers_wrong = Some(against as f64 / apart as f64);
        }
    }

    let sampled_cfg = RolloutConfig { temperature: 1.0, ..greedy };
    let sampled = rollout(model, &ids, 1, &sampled_cfg, tok, 1, &mut |_| {})?;
    let pairs: Vec<(&[u32], &[u32])> =
        sampled.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
    // Both sides scored the same way (whole sequences), not the sampler's logprobs against the
    // reference's: in bf16 the two differ by ~1e-3 nats a token, which a model would show as
    // KL to itself.
    let policy_lp = response_logprobs_rows(model, &pairs, tok.pad_id(), 1.0, a.batch_size)?;
    let ref_lp = response_logprobs_rows(reference, &pairs, tok.pad_id(), 1.0, a.batch_size)?;
    let kl: Vec<f64> = policy_lp.iter().zip(&ref_lp).map(|(p, q)| p.iter().zip(q).map(|(p, q)| p - q).sum()).collect();
    Ok(Row {
        name: name.to_string(),
        accuracy: finite_mean(&per_source[0]),
        format: finite_mean(&per_source[1]),
        rm: rm_scores.as_deref().map(finite_mean),
        kl: mean(&kl),
        length: mean_len(&answers),
        verifier_scores: per_source[0].iter().map(|x| if x.is_finite() { *x } else { 0.0 }).collect(),
        rm_scores,
        pass_at_1,
        maj_at_k,
        length_rm_correlation,
        repetition,
        rm_prefers_wrong,
        perplexity: None,
    })
}

fn print_significance(rows: &[Row], versus: &[Option<(PairedDifference, f64)>], baseline: usize, n: usize) {
    println!(
        "accuracy vs {} on the same {n} problems (difference, 95% interval of a paired bootstrap, McNemar's exact p):",
        rows[baseline].name
    );
    for (i, (r, vs)) in rows.iter().zip(versus).enumerate() {
        let Some((d, p)) = vs.filter(|_| i != baseline) else { continue };
        let verdict = match d.sign() {
            1 => "better",
            -1 => "worse",
            _ => "within the noise",
        };
        println!("  {:<12} {:+.3} [{:+.3}, {:+.3}]  p = {p:.4}  {verdict}", r.name, d.diff, d.lo, d.hi);
    }
}

fn opt(v: Option<f64>, width: usize) -> String {
    v.filter(|x| x.is_finite()).map_or(format!("{:>width$}", "–"), |x| format!("{x:>width$.3}"))
}

fn print_table(rows: &[Row], wins: &[(f64, Option<f64>)], baseline: &str, with_rm: bool, a: &Args, reference: &str) {
    let rm_head = if with_rm { format!(" {:>10} {:>8}", "RM reward", "win(RM)") } else { String::new() };
    let k_head =
        if a.samples > 0 { format!(" {:>7} {:>7}", "pass@1", format!("maj@{}", a.samples)) } else { String::new() };
    let ppl_head = if a.text.is_some() { format!(" {:>8}", "ppl") } else { String::new() };
    println!(
        "{:<12} {:>9} {:>9} {:>8}{rm_head} {:>9} {:>8}{k_head}{ppl_head} {:>7}",
        "model", "accuracy", "format", "win(ver)", "KL (nats)", "length", "repeat"
    );
    for (r, (wv, wr)) in rows.iter().zip(wins) {
        let rm = if with_rm { format!(" {} {}", opt(r.rm, 10), opt(*wr, 8)) } else { String::new() };
        let k = if a.samples > 0 { format!(" {} {}", opt(r.pass_at_1, 7), opt(r.maj_at_k, 7)) } else { String::new() };
        let ppl = if a.text.is_some() { format!(" {}", opt(r.perplexity, 8)) } else { String::new() };
        println!(
            "{:<12} {:>9.3} {:>9.3} {}{rm} {:>9.3} {:>8.1}{k}{ppl} {:>7.3}",
            r.name,
            r.accuracy,
            r.format,
            opt(Some(*wv), 8),
            r.kl,
            r.length,
            r.repetition
        );
    }
    println!("(accuracy: {} verifier on greedy answers; win rates vs {baseline}, ties half; KL to {reference} on sampled answers; repeat: share of answers with a 4-token loop ×3)", a.verifier);
    if with_rm {
        for r in rows {
            println!(
                "{:<12} reward-hacking signals: corr(length, RM) = {}, RM prefers the wrong answer in {} of verifier-separated sample pairs",
                r.name,
                opt(r.length_rm_correlation, 0).trim(),
                opt(r.rm_prefers_wrong, 0).trim()
            );
        }
    }
}
