//! `rlhf constitution`: Constitutional AI's critique → revision loop
//! (`rlhf_feedback::constitution`) against any OpenAI-compatible endpoint: this file reads the
//! principles and prompts, opens the reply cache, shows progress and writes the SFT rows and
//! pairs.

use super::endpoint::{EndpointFlags, EndpointSettings};
use crate::config::{require, CommandArgs};
use crate::output::{with_suffix, write_jsonl_atomically};
use crate::progress;
use anyhow::{bail, Context, Result};
use rlhf_data::dataset::for_each_record;
use rlhf_feedback::constitution::{self, Counts, Item, PrincipleOrder, Rows, Settings};
use rlhf_feedback::judge::{ChatClient, ReplyCache};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`ConstitutionConfig`].
#[derive(clap::Args, Serialize)]
pub struct Flags {
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointFlags,
    /// Prompts (JSONL or Parquet, or a Hub dataset ORG/NAME[:SPLIT]): `prompt` as a string or a
    /// list of chat messages.
    #[arg(long)]
    data: Option<String>,
    /// The constitution: one principle per non-empty line; lines starting with `#` are comments.
    #[arg(long)]
    principles: Option<PathBuf>,
    /// SFT rows out: {"prompt", "completion": final revision}, the completion an assistant turn
    /// when the prompt is a conversation (what `rlhf sft` reads).
    #[arg(long)]
    sft_out: Option<PathBuf>,
    /// Preference pairs out: {"prompt", "chosen": revision, "rejected": original, "principle", "critique"}.
    #[arg(long)]
    pairs_out: Option<PathBuf>,
    /// Reply cache (JSONL, appended to; default: <pairs-out>.cache.jsonl).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Critique → revision rounds per prompt, each against its own principle (default 1).
    #[arg(long)]
    revisions: Option<usize>,
    /// How principles are assigned: `round-robin` through the file (the default), or `random` (seeded).
    #[arg(long, value_enum)]
    principle_order: Option<OrderArg>,
    /// Seed of `--principle-order random` (default 0); when given it is also sent with every
    /// request, so servers that honour `seed` (`rlhf serve`, vLLM, OpenAI) sample reproducibly.
    #[arg(long)]
    seed: Option<u64>,
    /// Sampling temperature of the initial answer (some variety is the point; default 0.7).
    #[arg(long)]
    temperature: Option<f64>,
    /// Temperature of critiques and revisions (0, the default: as deterministic as the server allows).
    #[arg(long)]
    critique_temperature: Option<f64>,
    /// Token limit of every reply (answer, critique, revision; default 256).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Prompts processed at once (each runs its calls in sequence; default 4).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Use only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
}

/// `rlhf constitution`'s settings (`--config` / `--set` / the flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstitutionConfig {
    pub json: bool,
    pub data: String,
    pub principles: PathBuf,
    pub sft_out: PathBuf,
    pub pairs_out: PathBuf,
    pub cache: Option<PathBuf>,
    pub revisions: usize,
    pub principle_order: OrderArg,
    pub seed: Option<u64>,
    pub temperature: f64,
    pub critique_temperature: f64,
    pub max_tokens: u32,
    pub concurrency: usize,
    pub limit: Option<usize>,
    pub endpoint: EndpointSettings,
}

impl Default for ConstitutionConfig {
    fn default() -> Self {
        Self {
            json: false,
            data: String::new(),
            principles: PathBuf::new(),
            sft_out: PathBuf::new(),
            pairs_out: PathBuf::new(),
            cache: None,
            revisions: 1,
            principle_order: OrderArg::RoundRobin,
            seed: None,
            temperature: 0.7,
            critique_temperature: 0.0,
            max_tokens: 256,
            concurrency: 4,
            limit: None,
            endpoint: EndpointSettings::default(),
        }
    }
}

/// `--principle-order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderArg {
    RoundRobin,
    Random,
}

impl From<OrderArg> for PrincipleOrder {
    fn from(o: OrderArg) -> Self {
        match o {
            OrderArg::RoundRobin => PrincipleOrder::RoundRobin,
            OrderArg::Random => PrincipleOrder::Random,
        }
    }
}

/// The constitution file's principles, in order.
fn read_principles(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--principles {}: cannot read", path.display()))?;
    let principles = constitution::parse_principles(&text);
    if principles.is_empty() {
        bail!(
            "--principles {}: no principles (write one per line; blank lines and lines starting with # are skipped)",
            path.display()
        );
    }
    Ok(principles)
}

/// Every record's `prompt`; the first bad one is an error naming path:line and the field.
fn read_prompts(path: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut problem = None;
    for_each_record(path, |location, record| {
        if problem.is_some() {
            return Ok(());
        }
        let parsed = record.map_err(|reason| format!("{location}: {reason}")).and_then(|map| {
            let bad = |m: String| format!("{location}: field `prompt`: {m}");
            let prompt = map
                .get("prompt")
                .filter(|v| !v.is_null())
                .ok_or_else(|| bad("missing (a string or a list of messages)".into()))?;
            Item::from_prompt(prompt).map_err(bad)
        });
        match parsed {
            Ok(item) => items.push(item),
            Err(message) => problem = Some(message),
        }
        Ok(())
    })
    .with_context(|| format!("--data {}", path.display()))?;
    if let Some(message) = problem {
        bail!(message);
    }
    if items.is_empty() {
        bail!("--data {}: no prompts", path.display());
    }
    Ok(items)
}

/// The settings' values, checked before any file is read.
fn check(a: &ConstitutionConfig) -> Result<()> {
    require(a.data.is_empty(), "--data FILE", "data")?;
    require(a.principles.as_os_str().is_empty(), "--principles FILE", "principles")?;
    require(a.sft_out.as_os_str().is_empty(), "--sft-out FILE", "sft_out")?;
    require(a.pairs_out.as_os_str().is_empty(), "--pairs-out FILE", "pairs_out")?;
    for (flag, t) in [("--temperature", a.temperature), ("--critique-temperature", a.critique_temperature)] {
        if !(t.is_finite() && t >= 0.0) {
            bail!("{flag} {t}: give a number ≥ 0");
        }
    }
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if a.revisions == 0 {
        bail!("--revisions must be at least 1 (each round is one critique and one revision)");
    }
    if a.limit == Some(0) {
        bail!("--limit 0 leaves no prompts");
    }
    if a.sft_out == a.pairs_out {
        bail!("--sft-out and --pairs-out are the same file ({})", a.sft_out.display());
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let a: ConstitutionConfig = args.load()?;
    check(&a)?;
    let principles = read_principles(&a.principles)?;
    let mut items = Vec::new();
    for file in crate::loading::dataset_files(&a.data)? {
        items.extend(read_prompts(&file)?);
    }
    if let Some(limit) = a.limit {
        items.truncate(limit);
    }
    let plan = constitution::assign_principles(
        items.len(),
        a.revisions,
        principles.len(),
        a.principle_order.into(),
        a.seed.unwrap_or(0),
    );

    let client = ChatClient::new(&a.endpoint.config()?.client())?;
    let cache_path = a.cache.clone().unwrap_or_else(|| with_suffix(&a.pairs_out, ".cache.jsonl"));
    if let Some(dir) = cache_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (cache, load) = ReplyCache::open(&cache_path)?;
    for w in &load.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "constitution: {} prompts × {} round(s) against {} principles with {} at {} ({} cached replies in {})",
        items.len(),
        a.revisions,
        principles.len(),
        a.endpoint.model,
        a.endpoint.url,
        load.entries,
        cache_path.display()
    );

    let settings =
        Settings {
            model: a.endpoint.model.clone(),
            temperature: a.temperature,
            critique_temperature: a.critique_temperature,
            max_tokens: a.max_tokens,
            seed: a.seed.map(i64::try_from).transpose().map_err(|_| {
                anyhow::anyhow!("--seed: at most 2^63 − 1 (requests carry it as a signed 64-bit integer)")
            })?,
            concurrency: a.concurrency,
        };
    let bar = progress::bar(items.len() as u64, "constitution");
    let done = constitution::revise_all(client, &cache, &items, &principles, &plan, &settings, &|| bar.inc(1));
    bar.finish_and_clear();
    let (outcomes, counts) = done.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "stopped ({} replies so far are cached in {}; rerun the same command to resume)",
            cache.len(),
            cache_path.display()
        ))
    })?;
    let rows = constitution::rows(&items, outcomes, &principles, &format!("constitution:{}", a.endpoint.model));
    write_jsonl_atomically(&a.sft_out, &rows.sft)?;
    write_jsonl_atomically(&a.pairs_out, &rows.pairs)?;
    print_summary(&a, items.len(), &rows, &counts, &cache_path);
    Ok(())
}

/// The summary on stdout: text, or one JSON object with `json`.
fn print_summary(a: &ConstitutionConfig, prompts: usize, rows: &Rows, counts: &Counts, cache_path: &Path) {
    let (sft, pairs, unchanged, empty) = (&rows.sft, &rows.pairs, rows.unchanged, rows.empty);
    let (requests, cache_hits) = (counts.requests, counts.cache_hits);
    if a.json {
        println!(
            "{}",
            json!({
                "prompts": prompts, "sft_rows": sft.len(), "pairs": pairs.len(),
                "unchanged": unchanged, "empty": empty, "requests": requests, "cache_hits": cache_hits,
                "http_calls": counts.http_calls, "retries": counts.retries,
                "sft_out": a.sft_out.display().to_string(), "pairs_out": a.pairs_out.display().to_string(),
                "cache": cache_path.display().to_string(),
            })
        );
    } else {
        println!(
            "{} prompts: {} revised, {} unchanged (SFT row, no pair), {} empty answer or revision (skipped)",
            prompts,
            pairs.len(),
            unchanged,
            empty
        );
        println!(
            "{requests} requests: {cache_hits} from the cache, {} HTTP calls ({} retries)",
            counts.http_calls, counts.retries
        );
        println!(
            "wrote {} SFT rows to {} and {} pairs to {}",
            sft.len(),
            a.sft_out.display(),
            pairs.len(),
            a.pairs_out.display()
        );
    }
}
