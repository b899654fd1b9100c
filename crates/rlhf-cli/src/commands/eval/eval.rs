//! `rlhf eval`: several checkpoints side by side on held-out prompts. The measures are
//! `rlhf_eval::policy`'s; this file loads the models, builds the scorers, prints the table and
//! writes `eval.jsonl`.

use crate::commands::rewards::{self, RewardSpec, SourceSpec};
use crate::config::{require, CommandArgs};
use crate::loading;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rlhf_data::{load_prompts, LoadOptions};
use rlhf_eval::policy::{self, ModelEval, Scorers, Settings, Verifier, Versus};
use rlhf_train::PrecisionChoice;
use serde::{Deserialize, Serialize};

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`EvalConfig`].
#[derive(clap::Args, Serialize)]
pub struct Flags {
    /// `NAME=MODEL` (Hub id, HF folder, .gguf or `default`); repeat for each model to compare.
    #[arg(long = "model")]
    #[serde(rename = "models", skip_serializing_if = "Vec::is_empty")]
    models: Vec<String>,
    /// Held-out prompts with an `answer` column.
    #[arg(long)]
    prompts: Option<String>,
    /// Score only the first N prompts (0 = all; default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Verifier for accuracy: `math` (default) or `last_integer`.
    #[arg(long)]
    verifier: Option<String>,
    /// Reward model folder (from `rlhf reward`) to score the answers with (normalised).
    #[arg(long)]
    reward_model: Option<String>,
    /// Reference for the KL column (default: the first model).
    #[arg(long)]
    reference: Option<String>,
    /// Default 48.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Default 32.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also write the table as JSON lines.
    #[arg(long)]
    out: Option<String>,
    /// Model (by NAME) the win rates are against (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Sample K answers per prompt for Pass@1, Maj@K and RM–verifier divergence (0: skip, the default).
    #[arg(long)]
    samples: Option<usize>,
    /// Default 0.7.
    #[arg(long)]
    sample_temperature: Option<f64>,
    /// Held-out demonstrations (SFT format) for perplexity on their completion tokens.
    #[arg(long)]
    text: Option<String>,
    /// Arithmetic of the matrix products: auto (bf16 where the CPU has AMX, else fp32), bf16 or fp32.
    #[arg(long, value_parser = crate::precision::parse)]
    precision: Option<PrecisionChoice>,
}

/// `rlhf eval`'s settings (`--config` / `--set` / the flags); empty strings are "not given".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// `NAME=MODEL`, in table order; the first is the default baseline and KL reference.
    pub models: Vec<String>,
    pub prompts: String,
    pub limit: usize,
    pub verifier: Verifier,
    pub reward_model: String,
    pub reference: String,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub out: String,
    pub baseline: String,
    pub samples: usize,
    pub sample_temperature: f64,
    pub text: String,
    pub precision: PrecisionChoice,
}

impl Default for EvalConfig {
    fn default() -> Self {
        let s = Settings::default();
        Self {
            models: Vec::new(),
            prompts: String::new(),
            limit: 100,
            verifier: s.verifier,
            reward_model: String::new(),
            reference: String::new(),
            max_new_tokens: s.max_new_tokens,
            batch_size: s.batch_size,
            out: String::new(),
            baseline: String::new(),
            samples: s.samples,
            sample_temperature: s.sample_temperature,
            text: String::new(),
            precision: PrecisionChoice::Auto,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let a: EvalConfig = args.load()?;
    crate::precision::apply(a.precision);
    require(a.models.is_empty(), "--model NAME=MODEL", "models")?;
    require(a.prompts.is_empty(), "--prompts FILE", "prompts")?;
    let named: Vec<(String, String)> = a
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
            _ => bail!("--model {m}: expected NAME=MODEL, e.g. sft=runs/sft/final"),
        })
        .collect::<Result<_>>()?;
    let verifier = a.verifier;
    let settings = Settings {
        verifier,
        max_new_tokens: a.max_new_tokens,
        batch_size: a.batch_size,
        samples: a.samples,
        sample_temperature: a.sample_temperature,
    };
    let reference_path = if a.reference.is_empty() { named[0].1.clone() } else { a.reference.clone() };
    let reference = loading::load(&reference_path, &Device::Cpu)?;
    let tok = &reference.tokenizer;
    let mut prompts =
        loading::load_dataset(&a.prompts, tok, &LoadOptions { max_length: 0, ..Default::default() }, load_prompts)?
            .examples;
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    let mut scorers = Scorers {
        verifier: rewards::build(&verifier.spec(), tok.pad_id())?,
        format: rewards::build(&RewardSpec::of(SourceSpec::Format {}), tok.pad_id())?,
        reward_model: (!a.reward_model.is_empty())
            .then(|| rewards::build(&RewardSpec::reward_model(&a.reward_model), tok.pad_id()))
            .transpose()?,
    };
    let baseline = match a.baseline.as_str() {
        "" => 0,
        b => named
            .iter()
            .position(|(n, _)| n == b)
            .with_context(|| format!("--baseline {b}: not one of the --model names"))?,
    };
    let text = match Some(&a.text).filter(|t| !t.is_empty()) {
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
        let mut row = policy::evaluate(name, &loaded.model, &reference.model, &prompts, &mut scorers, &settings, tok)?;
        if !text.is_empty() {
            row.perplexity = policy::perplexity(&loaded.model, &text, tok.pad_id(), a.batch_size)?;
        }
        rows.push(row);
    }
    let versus = policy::against(&rows, baseline);
    print_table(&rows, &versus, &named[baseline].0, !a.reward_model.is_empty(), &a, &reference_path);
    print_significance(&rows, &versus, baseline, prompts.len());
    if !a.out.is_empty() {
        let out = &a.out;
        let text: String = rows
            .iter()
            .zip(&versus)
            .map(|(r, v)| format!("{}\n", policy::json_row(r, v, &named[baseline].0, prompts.len(), a.samples)))
            .collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out))?;
    }
    Ok(())
}

fn print_significance(rows: &[ModelEval], versus: &[Versus], baseline: usize, n: usize) {
    println!(
        "accuracy vs {} on the same {n} problems (difference, 95% interval of a paired bootstrap, McNemar's exact p):",
        rows[baseline].name
    );
    for (i, (r, vs)) in rows.iter().zip(versus).enumerate() {
        let Some((d, p)) = vs.accuracy.filter(|_| i != baseline) else { continue };
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

fn print_table(rows: &[ModelEval], versus: &[Versus], baseline: &str, with_rm: bool, a: &EvalConfig, reference: &str) {
    let rm_head = if with_rm { format!(" {:>10} {:>8}", "RM reward", "win(RM)") } else { String::new() };
    let k_head =
        if a.samples > 0 { format!(" {:>7} {:>7}", "pass@1", format!("maj@{}", a.samples)) } else { String::new() };
    let ppl_head = if !a.text.is_empty() { format!(" {:>8}", "ppl") } else { String::new() };
    println!(
        "{:<12} {:>9} {:>9} {:>8}{rm_head} {:>9} {:>8}{k_head}{ppl_head} {:>7}",
        "model", "accuracy", "format", "win(ver)", "KL (nats)", "length", "repeat"
    );
    for (r, v) in rows.iter().zip(versus) {
        let rm = if with_rm { format!(" {} {}", opt(r.rm, 10), opt(v.win_rate_rm, 8)) } else { String::new() };
        let k = if a.samples > 0 { format!(" {} {}", opt(r.pass_at_1, 7), opt(r.maj_at_k, 7)) } else { String::new() };
        let ppl = if !a.text.is_empty() { format!(" {}", opt(r.perplexity, 8)) } else { String::new() };
        println!(
            "{:<12} {:>9.3} {:>9.3} {}{rm} {:>9.3} {:>8.1}{k}{ppl} {:>7.3}",
            r.name,
            r.accuracy,
            r.format,
            opt(Some(v.win_rate_verifier), 8),
            r.kl,
            r.length,
            r.repetition
        );
    }
    println!("(accuracy: {} verifier on greedy answers; win rates vs {baseline}, ties half; KL to {reference} on sampled answers; repeat: share of answers with a 4-token loop ×3)", a.verifier.name());
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
