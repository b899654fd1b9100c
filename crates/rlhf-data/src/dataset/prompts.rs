//! Prompts for RL (PPO, GRPO, RAFT): `prompt`, with an optional reference `answer` or `tests` for
//! verifiable rewards.

use super::encode::{check_length, check_prompt_length, encode_prompt};
use super::fields::{optional, required, string, string_or_number, text_or_messages, FieldResult, TextOrMessages};
use super::LoadOptions;
use crate::error::Location;
use crate::tokenizer::Tokenizer;
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptExample {
    pub prompt_ids: Vec<u32>,
    /// The prompt as written in the dataset, so callers can re-render it (e.g. for a judge).
    pub prompt: TextOrMessages,
    pub answer: Option<String>,
    pub tests: Option<String>,
    pub source: Location,
}

pub(crate) fn parse_prompt(
    tok: &Tokenizer,
    record: &Map<String, Value>,
    source: &Location,
    opts: &LoadOptions,
) -> FieldResult<PromptExample> {
    let prompt = text_or_messages(required(record, "prompt")?, "prompt")?;
    let prompt_ids = encode_prompt(tok, &prompt, "prompt")?.ids;
    check_prompt_length(prompt_ids.len(), opts.max_prompt_length)?;
    check_length(prompt_ids.len(), 0, opts.max_length, "prompt")?;
    let answer = optional(record, "answer").map(|v| string_or_number(v, "answer")).transpose()?;
    let tests = optional(record, "tests").map(|v| string(v, "tests")).transpose()?;
    Ok(PromptExample { prompt_ids, prompt, answer, tests, source: source.clone() })
}
