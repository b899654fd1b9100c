//! `rlhf collect`: K responses per prompt, spread over temperatures and deduplicated
//! (`rlhf_feedback::candidates`), into a labelling queue (`rlhf label serve` shows them to
//! annotators) or a JSONL file of candidate sets (`--out`, what `rlhf judge` reads).

use crate::{loading, progress};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rlhf_data::{load_prompts, LoadOptions, TextOrMessages};
use rlhf_feedback::candidates::{self, Settings};
use rlhf_server::label::{prompt_text, LabelDb, NewItem, NewResponse};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("dest").required(true).args(["db", "out"])))]
pub struct Args {
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    #[arg(long)]
    model: String,
    /// Prompts (JSONL/JSON/Parquet with a `prompt` column: a string or a list of messages).
    #[arg(long)]
    prompts: String,
    /// Responses per prompt (2–9; a ranking of more is hard for people).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Response i is sampled at temperature i mod len; varied temperatures give varied quality.
    #[arg(long, value_delimiter = ',', default_value = "0.6,0.8,1.0,1.2")]
    temperatures: Vec<f64>,
    /// The labelling database (created if missing; items are appended).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Instead of a database: candidate sets `{"prompt", "responses"}` as JSONL (for `rlhf judge`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[arg(long)]
    top_p: Option<f64>,
    /// Use only the first N prompts (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Rows per generate call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Extra sampling rounds for prompts whose responses came out identical.
    #[arg(long, default_value_t = 3)]
    max_tries: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn prompt_json(p: &TextOrMessages) -> Value {
    match p {
        TextOrMessages::Text(t) => Value::String(t.clone()),
        TextOrMessages::Messages(m) => json!(m),
    }
}

pub fn run(a: Args) -> Result<()> {
    if !(2..=9).contains(&a.k) {
        bail!("--k {}: use 2 to 9 responses per prompt", a.k);
    }
    if a.temperatures.is_empty() || a.temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        bail!("--temperatures {:?}: give positive temperatures, e.g. 0.6,0.8,1.0,1.2", a.temperatures);
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
    let settings = Settings {
        k: a.k,
        temperatures: a.temperatures.clone(),
        max_new_tokens: a.max_new_tokens,
        top_p: a.top_p,
        batch_size: a.batch_size,
        max_tries: a.max_tries,
        seed: a.seed,
    };
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.prompt_ids.as_slice()).collect();
    let pb = progress::bar((prompts.len() * a.k * a.max_new_tokens) as u64, "sampling");
    let responses = candidates::sample(&loaded.model, &ids, &settings, tok, &mut |n| pb.set_position(n))?;
    pb.finish_and_clear();
    let (mut items, mut short, mut dropped) = (0, 0, 0);
    for (p, got) in prompts.iter().zip(responses) {
        if got.len() < 2 {
            eprintln!("{}: fewer than 2 distinct responses after {} rounds; not queued", p.source, a.max_tries + 1);
            dropped += 1;
            continue;
        }
        if got.len() < a.k {
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
        a.k,
        dest.display()
    );
    Ok(())
}

/// Where the candidate sets go: the labelling queue, or a JSONL file written at the end.
enum Sink {
    Db(LabelDb, PathBuf),
    Jsonl(String, PathBuf),
}
