//! Datasets in TRL's column conventions, from JSON lines or Parquet, tokenised into examples.
//!
//! Every example keeps its [`Location`] (file and line or row); a record that cannot be used
//! becomes a [`BadRecord`] naming file, line and field, which either stops loading
//! ([`OnBadRecord::Fail`]) or is collected and reported ([`OnBadRecord::Skip`]).

mod encode;
mod fields;
mod preferences;
mod prompts;
mod read;
mod sft;
mod split;

pub use fields::TextOrMessages;
pub use preferences::{PairExample, PreferenceGroup};
pub use prompts::PromptExample;
pub use read::{for_each_record, RawRecord};
pub use sft::SftExample;
pub use split::{split_train_eval, EvalSplit};

use crate::error::{BadRecord, DataError, Location, Result};
use crate::tokenizer::Tokenizer;
use fields::RecordError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// What to do with a record that cannot be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    /// Stop at the first bad record: silent data loss is worse than a clear error.
    #[default]
    Fail,
    /// Leave bad records out and report them in [`Loaded::skipped`].
    Skip,
}

impl std::str::FromStr for OnBadRecord {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(Self::Fail),
            "skip" => Ok(Self::Skip),
            other => Err(DataError::Invalid(format!("on_bad_record `{other}`: expected \"fail\" or \"skip\""))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// Longest prompt + response in tokens; longer records are bad records (0: no limit).
    /// TRL's default is 1024.
    pub max_length: usize,
    /// Longest prompt in tokens (0: only `max_length` limits it): of a prompt/completion SFT
    /// record, a preference record, or an RL prompt. TRL's DPO and GRPO default is 512.
    pub max_prompt_length: usize,
    pub on_bad_record: OnBadRecord,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { max_length: 1024, max_prompt_length: 0, on_bad_record: OnBadRecord::Fail }
    }
}

/// The examples of a file, and the records left out under [`OnBadRecord::Skip`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<T> {
    pub examples: Vec<T>,
    pub skipped: Vec<BadRecord>,
}

/// SFT examples from `messages`, `prompt` + `completion`, or `text` columns.
pub fn load_sft(path: &Path, tok: &Tokenizer, opts: &LoadOptions) -> Result<Loaded<SftExample>> {
    load_with(path, tok, opts, |record, source| sft::parse_sft(tok, record, source, opts))
}

/// Pairs (explicit or implicit prompt) and K-wise rankings, one group per record.
pub fn load_preferences(path: &Path, tok: &Tokenizer, opts: &LoadOptions) -> Result<Loaded<PreferenceGroup>> {
    load_with(path, tok, opts, |record, source| preferences::parse_preference(tok, record, source, opts))
}

/// Prompts with an optional reference `answer` or `tests`.
pub fn load_prompts(path: &Path, tok: &Tokenizer, opts: &LoadOptions) -> Result<Loaded<PromptExample>> {
    load_with(path, tok, opts, |record, source| prompts::parse_prompt(tok, record, source, opts))
}

/// The columns TRL's conventions tokenise.
const TEXT_COLUMNS: [&str; 7] = ["prompt", "completion", "chosen", "rejected", "messages", "text", "responses"];

/// Bytes of text in a record's tokenised columns (strings at any depth, e.g. message contents).
fn text_bytes(record: &Map<String, Value>) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(walk).sum(),
            Value::Object(o) => o.values().map(walk).sum(),
            _ => 0,
        }
    }
    TEXT_COLUMNS.iter().filter_map(|c| record.get(*c)).map(walk).sum()
}

fn load_with<T>(
    path: &Path,
    tok: &Tokenizer,
    opts: &LoadOptions,
    mut parse: impl FnMut(&Map<String, Value>, &Location) -> std::result::Result<T, RecordError>,
) -> Result<Loaded<T>> {
    // A record with more text than `max_length` tokens can stand for is refused before it is
    // tokenised: a 50 MB record would otherwise take seconds and gigabytes to be found too long.
    let token_bytes = tok.max_token_bytes();
    let max_bytes = (opts.max_length > 0).then(|| opts.max_length.saturating_mul(token_bytes));
    if !path.is_file() {
        let what = if path.exists() { "not a file" } else { "no such file" };
        return Err(DataError::file(path, format!("cannot read dataset: {what}")));
    }
    let mut loaded = Loaded { examples: Vec::new(), skipped: Vec::new() };
    let mut records = 0usize;
    for_each_record(path, |location, record| {
        records += 1;
        let outcome = match record {
            Ok(map) => match max_bytes.map(|m| (m, text_bytes(&map))) {
                Some((m, bytes)) if bytes > m => Err(RecordError::Bad {
                    field: None,
                    reason: format!(
                        "{bytes} bytes of text cannot fit in max_length {} tokens (no token is longer than {token_bytes} bytes)",
                        opts.max_length
                    ),
                }),
                _ => parse(&map, &location),
            },
            Err(reason) => Err(RecordError::Bad { field: None, reason }),
        };
        match outcome {
            Ok(example) => loaded.examples.push(example),
            Err(RecordError::Fatal(e)) => return Err(e),
            Err(RecordError::Bad { field, reason }) => {
                let bad = BadRecord { location, field, reason };
                match opts.on_bad_record {
                    OnBadRecord::Fail => return Err(bad.into()),
                    OnBadRecord::Skip => loaded.skipped.push(bad),
                }
            }
        }
        Ok(())
    })?;
    if records == 0 {
        return Err(DataError::file(path, "the dataset holds no records"));
    }
    Ok(loaded)
}
