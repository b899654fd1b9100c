//! `rlhf collect`: K responses per prompt, spread over temperatures and deduplicated
//! (`rlhf_feedback::candidates`), into a labelling queue (`rlhf label serve` shows them to
//! annotators) or a JSONL file of candidate sets (`--out`, what `rlhf judge` reads).

use crate::config::{require, usage, CommandArgs};
use crate::{loading, progress};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rlhf_data::{load_prompts, LoadOptions, TextOrMessages};
use rlhf_feedback::candidates::{self, Settings};
use rlhf_feedback::labels::{prompt_text, LabelDb, NewItem, NewResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`CollectConfig`]. `--db` and
/// `--out` exclude each other; one of them (or `db` / `out` in the config) is required.
#[derive(clap::Args, Serialize)]
#[command(group(clap::ArgGroup::new("dest").multiple(false).args(["db", "out"])))]
pub struct Flags {
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    #[arg(long)]
    model: Option<String>,
    /// Prompts (JSONL/JSON/Parquet with a `prompt` column: a string or a list of messages).
    #[arg(long)]
    prompts: Option<String>,
    /// The labelling database (created if missing; items are appended).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Instead of a database: candidate sets `{"prompt", "responses"}` as JSONL (for `rlhf judge`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N prompts (0, the default: all).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    sampling: SamplingFlags,
}

/// Shortcuts for `sampling.*`.
#[derive(clap::Args, Serialize)]
pub struct SamplingFlags {
    /// Responses per prompt (2–9; a ranking of more is hard for people; default 4).
    #[arg(long)]
    k: Option<usize>,
    /// Response i is sampled at temperature i mod len; varied temperatures give varied quality
    /// (default 0.6,0.8,1.0,1.2).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    temperatures: Vec<f64>,
    /// Default 256.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    /// Rows per generate call (default 32).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Extra sampling rounds for prompts whose responses came out identical (default 3).
    #[arg(long)]
    max_tries: Option<usize>,
    /// Default 0.
    #[arg(long)]
    seed: Option<u64>,
}

/// `rlhf collect`'s settings (`--config` / `--set` / the flags).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectConfig {
    pub model: String,
    pub prompts: String,
    /// Exactly one of `db` and `out`.
    pub db: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub limit: usize,
    pub sampling: Settings,
}

fn prompt_json(p: &TextOrMessages) -> Value {
    match p {
        TextOrMessages::Text(t) => Value::String(t.clone()),
        TextOrMessages::Messages(m) => json!(m),
    }
}

pub fn run(args: Args) -> Result<()> {
    let a: CollectConfig = args.load()?;
    let settings = a.sampling.clone();
    require(a.model.is_empty(), "--model MODEL", "model")?;
    require(a.prompts.is_empty(), "--prompts FILE", "prompts")?;
    match (&a.db, &a.out) {
        (None, None) => return Err(usage("give one of --db <DB>|--out <OUT> (or `db` / `out` in the config)")),
        (Some(_), Some(_)) => return Err(usage("`db` and `out` cannot be used together: give one")),
        _ => {}
    }
    if !(2..=9).contains(&settings.k) {
        bail!("--k {}: use 2 to 9 responses per prompt", settings.k);
    }
    if settings.temperatures.is_empty() || settings.temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        bail!("--temperatures {:?}: give positive temperatures, e.g. 0.6,0.8,1.0,1.2", settings.temperatures);
    }
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let tok = &loaded.tokenizer;
    let mut prompts = crate::loading::load_dataset(
        &a.prompts,
        tok,
        &LoadOptions { max_length: 0, ..Default::default() },
        load_prompts,
    )?
    .examples;
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", a.prompts);
    }
    let mut sink = match (&a.db, &a.out) {
        (Some(db), _) => Sink::Db(LabelDb::open(db)?, db.clone()),
        (None, Some(out)) => Sink::Jsonl(String::new(), out.clone()),
        (None, None) => bail!("give --db DB or --out FILE"),
    };
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.prompt_ids.as_slice()).collect();
    let pb = progress::bar((prompts.len() * settings.k * settings.max_new_tokens) as u64, "sampling");
    let responses = candidates::sample(&loaded.model, &ids, &settings, tok, &mut |n| pb.set_position(n))?;
    pb.finish_and_clear();
    let (mut items, mut short, mut dropped) = (0, 0, 0);
    for (p, got) in prompts.iter().zip(responses) {
        if got.len() < 2 {
            eprintln!(
                "{}: fewer than 2 distinct responses after {} rounds; not queued",
                p.source,
                settings.max_tries + 1
            );
            dropped += 1;
            continue;
        }
        if got.len() < settings.k {
            short += 1;
        }
        let json = prompt_json(&p.prompt);
        match &mut sink {
            Sink::Db(db, _) => {
                let item = NewItem {
                    prompt: prompt_text(&json),
                    prompt_json: Some(json),
                    source: Some(p.source.to_string()),
                    responses: got
                        .into_iter()
                        .map(|(text, t)| NewResponse {
                            text,
                            temperature: Some(t),
                            model: Some(loaded.path.display().to_string()),
                        })
                        .collect(),
                };
                db.add_item(&item).with_context(|| format!("queueing {}", p.source))?;
            }
            Sink::Jsonl(text, _) => {
                let (responses, temperatures): (Vec<String>, Vec<f64>) = got.into_iter().unzip();
                let row = json!({"prompt": json, "responses": responses, "temperatures": temperatures,
                    "source": p.source.to_string()});
                text.push_str(&format!("{row}\n"));
            }
        }
        items += 1;
    }
    let (verb, dest) = match sink {
        Sink::Db(_, path) => ("queued", path),
        Sink::Jsonl(text, path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            ("wrote", path)
        }
    };
    println!(
        "{verb} {items} prompts × up to {} responses in {} ({short} with fewer distinct responses, {dropped} dropped)",
        settings.k,
        dest.display()
    );
    Ok(())
}

/// Where the candidate sets go: the labelling queue, or a JSONL file written at the end.
enum Sink {
    Db(LabelDb, PathBuf),
    Jsonl(String, PathBuf),
}
