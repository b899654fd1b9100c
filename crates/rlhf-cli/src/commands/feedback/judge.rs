//! `rlhf judge`: RLAIF preference pairs from an LLM judge behind any OpenAI-compatible endpoint
//! (ours, vLLM, llama.cpp, a hosted API). Each pair is judged in both orders; replies are cached
//! on disk as they arrive, so rerunning the same command after a failure resumes it.

use super::endpoint::{EndpointFlags, EndpointSettings};
use crate::config::{require, CommandArgs};
use crate::output::{with_suffix, write_jsonl_atomically};
use crate::progress;
use anyhow::{bail, Context, Result};
use rlhf_feedback::judge::{
    judge_with_progress, read_items, JudgeConfig, JudgeReport, Outcome, ReplyCache, Verdict, VerdictMode,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`JudgeCommandConfig`].
#[derive(clap::Args, Serialize)]
pub struct Flags {
    /// Print the counts as one JSON object instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointFlags,
    /// JSONL of candidate sets {"prompt", "responses": [...]} or pairs {"prompt", "chosen", "rejected"}.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Preference pairs out (JSONL, the format of `rlhf label export --format pairs`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Text file with the judge's system prompt (default: a short built-in one).
    #[arg(long)]
    guidelines: Option<PathBuf>,
    /// Reply cache (JSONL, appended to; default: <out>.cache.jsonl).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Requests in flight at once (default 4).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Room for the judge's reasoning before its verdict line (default 512).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// How the verdict is read: `text` (the reply's last line, any endpoint; the default) or
    /// `logprobs` (a one-token answer whose top_logprobs give P(A) and P(B) in both orders; the
    /// difference of the two orders' log-odds cancels a judge's position bias).
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Logprob verdicts: debiased log-odds (nats) within ± this are ties (default 0.05).
    #[arg(long)]
    tie_margin: Option<f64>,
}

/// `rlhf judge`'s settings (`--config` / `--set` / the flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeCommandConfig {
    pub json: bool,
    pub data: PathBuf,
    pub out: PathBuf,
    pub guidelines: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub concurrency: usize,
    pub max_tokens: u32,
    pub verdict: VerdictArg,
    pub tie_margin: f64,
    pub endpoint: EndpointSettings,
}

impl Default for JudgeCommandConfig {
    fn default() -> Self {
        Self {
            json: false,
            data: PathBuf::new(),
            out: PathBuf::new(),
            guidelines: None,
            cache: None,
            concurrency: 4,
            max_tokens: 512,
            verdict: VerdictArg::Text,
            tie_margin: 0.05,
            endpoint: EndpointSettings::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictArg {
    Text,
    Logprobs,
}

/// The first line of a reply, shortened, for the note about unreadable verdicts.
fn preview(reply: &str) -> String {
    let one_line = reply.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// The judge's client settings from the command's, checked.
fn judge_config(a: &JudgeCommandConfig) -> Result<JudgeConfig> {
    require(a.data.as_os_str().is_empty(), "--data FILE", "data")?;
    require(a.out.as_os_str().is_empty(), "--out FILE", "out")?;
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let mut config = a.endpoint.config()?;
    config.max_tokens = a.max_tokens;
    config.concurrency = a.concurrency;
    if a.verdict == VerdictArg::Logprobs {
        if !(a.tie_margin >= 0.0 && a.tie_margin.is_finite()) {
            bail!("--tie-margin must be ≥ 0 (nats), got {}", a.tie_margin);
        }
        config.verdict = VerdictMode::Logprobs { tie_margin: a.tie_margin };
    }
    if let Some(path) = &a.guidelines {
        let text = std::fs::read_to_string(path).with_context(|| format!("--guidelines {}", path.display()))?;
        if text.trim().is_empty() {
            bail!("--guidelines {}: the file is empty", path.display());
        }
        config.guidelines = text;
    }
    Ok(config)
}

pub fn run(args: Args) -> Result<()> {
    let a: JudgeCommandConfig = args.load()?;
    let config = judge_config(&a)?;

    let items = read_items(&a.data)?;
    if items.is_empty() {
        bail!("{}: no candidate sets or pairs to judge", a.data.display());
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cache_path = a.cache.clone().unwrap_or_else(|| with_suffix(&a.out, ".cache.jsonl"));
    let (cache, load) = ReplyCache::open(&cache_path)?;
    for w in &load.warnings {
        eprintln!("warning: {w}");
    }
    let pairs: usize = items.iter().map(|i| i.pairs().count()).sum();
    eprintln!(
        "judging {pairs} pairs from {} lines of {} in both orders with {} at {} ({} cached replies in {})",
        items.len(),
        a.data.display(),
        a.endpoint.model,
        a.endpoint.url,
        load.entries,
        cache_path.display()
    );

    let bar = progress::bar(0, "judge");
    let report = judge_with_progress(&config, &items, Some(&cache), &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = report.with_context(|| {
        format!(
            "judging stopped ({} replies so far are cached in {}; rerun the same command to resume)",
            cache.len(),
            cache_path.display()
        )
    })?;

    let rows = report.rows(&items, &a.endpoint.model);
    write_jsonl_atomically(&a.out, &rows)?;

    let mut invalid = Vec::new();
    for j in report.judgements.iter().filter(|j| j.outcome == Outcome::Invalid) {
        for v in [&j.forward, &j.reversed] {
            if let Verdict::Invalid { reply } = v {
                invalid.push((&items[j.item].location, reply));
            }
        }
    }
    for (location, reply) in invalid.iter().take(3) {
        eprintln!("note: no verdict in the reply for {location}: {:?}", preview(reply));
    }
    if invalid.len() > 3 {
        eprintln!("note: {} more replies without a verdict", invalid.len() - 3);
    }

    print_counts(&a, &report, rows.len(), &cache_path);
    Ok(())
}

/// The counts on stdout: text, or one JSON object with `json`.
fn print_counts(a: &JudgeCommandConfig, report: &JudgeReport, rows: usize, cache_path: &std::path::Path) {
    // Logprob verdicts: how strongly the judge favours a position, and what is left after the swap.
    let bias = report.position_bias();
    let c = report.counts;
    if a.json {
        println!(
            "{}",
            json!({
                "pairs": c.pairs, "preferences": c.preferences, "ties": c.ties, "invalid": c.invalid,
                "requests": c.requests, "cache_hits": c.cache_hits, "http_calls": c.http_calls,
                "retries": c.retries, "rows": rows, "out": a.out.display().to_string(),
                "cache": cache_path.display().to_string(),
                "position_bias": bias.map(|b| b.bias),
                "mean_abs_log_odds": bias.map(|b| b.mean_abs_log_odds),
            })
        );
    } else {
        println!(
            "{} pairs judged: {} preferences, {} ties (orders disagree or tie), {} invalid (no verdict)",
            c.pairs, c.preferences, c.ties, c.invalid
        );
        println!(
            "{} requests: {} from the cache, {} HTTP calls ({} retries)",
            c.requests, c.cache_hits, c.http_calls, c.retries
        );
        if let Some(b) = bias {
            println!(
                "logprob verdicts: position bias {:+.3} nats (mean log-odds of A over B, cancelled by the swap), \
                 mean |debiased log-odds| {:.3} nats, tie margin {} nats",
                b.bias, b.mean_abs_log_odds, a.tie_margin
            );
        }
        println!("wrote {} rows to {}", rows, a.out.display());
    }
}
