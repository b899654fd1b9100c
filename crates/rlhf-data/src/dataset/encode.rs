//! The tokenisation contract shared by every dataset kind (docs/ARCHITECTURE.md, details 4, 5).
//!
//! Prompt and response are tokenised separately and joined as token ids, never as strings, so the
//! tokens a trainer scores are exactly those a policy would have generated after that prompt.
//! - Conversational: the prompt is the chat template with the generation prompt; the response is
//!   the text the template adds for the assistant turn(s) after that prefix.
//! - Standard: the prompt gets the tokenizer's specials (BOS if it adds one), the response none,
//!   then EOS unless the response already ends with one.
//!
//! Either way the prompt never starts with two BOS.

use super::fields::{bad, FieldResult, RecordError, TextOrMessages};
use crate::chat::Message;
use crate::error::DataError;
use crate::tokenizer::Tokenizer;

/// A prompt ready for responses: its ids, and for conversations the rendered text responses
/// must extend.
pub(crate) struct EncodedPrompt {
    pub ids: Vec<u32>,
    chat: Option<(Vec<Message>, String)>,
}

pub(crate) fn encode_prompt(tok: &Tokenizer, prompt: &TextOrMessages, field: &str) -> FieldResult<EncodedPrompt> {
    match prompt {
        TextOrMessages::Text(text) => {
            let ids = without_double_bos(tok, encode(tok, text, true, field)?);
            if ids.is_empty() {
                return Err(bad(field, "empty prompt"));
            }
            Ok(EncodedPrompt { ids, chat: None })
        }
        TextOrMessages::Messages(messages) => {
            if messages.is_empty() {
                return Err(bad(field, "empty list of messages"));
            }
            let rendered = render(tok, messages, true, field)?;
            let ids = without_double_bos(tok, encode(tok, &rendered, true, field)?);
            Ok(EncodedPrompt { ids, chat: Some((messages.clone(), rendered)) })
        }
    }
}

/// Response ids that follow `prompt`. A string response to a conversational prompt is the
/// assistant's reply.
pub(crate) fn encode_response(
    tok: &Tokenizer,
    prompt: &EncodedPrompt,
    response: &TextOrMessages,
    field: &str,
) -> FieldResult<Vec<u32>> {
    match (&prompt.chat, response) {
        (None, TextOrMessages::Text(text)) => {
            if text.trim().is_empty() {
                return Err(bad(field, "empty response"));
            }
            let mut ids = encode(tok, text, false, field)?;
            let eos = tok.eos_ids();
            if let Some(&first_eos) = eos.first() {
                if !ids.last().is_some_and(|id| eos.contains(id)) {
                    ids.push(first_eos);
                }
            }
            Ok(ids)
        }
        (None, TextOrMessages::Messages(_)) => {
            Err(bad(field, "expected a string, as the prompt is a string (found a list of messages)"))
        }
        (Some((messages, rendered_prompt)), response) => {
            let turns = match response {
                TextOrMessages::Text(text) => vec![Message::assistant(text)],
                TextOrMessages::Messages(turns) => turns.clone(),
            };
            if turns.is_empty() || turns.iter().any(|m| m.content.trim().is_empty()) {
                return Err(bad(field, "empty response"));
            }
            let full: Vec<Message> = messages.iter().cloned().chain(turns).collect();
            let suffix = continuation(tok, rendered_prompt, &full, field)?;
            Ok(through_last_eos(tok, encode(tok, &suffix, false, field)?))
        }
    }
}

/// Drops what a template renders after a response's final end-of-turn token (SmolLM2/Qwen add
/// "\n" after `<|im_end|>`). Generation stops at that token, so a sampled response ends there;
/// a reward model trained on sequences ending one token later reads its head at a position it
/// never sees in PPO or evaluation (scores shifted by several std, rankings degraded).
pub(crate) fn through_last_eos(tok: &Tokenizer, mut ids: Vec<u32>) -> Vec<u32> {
    let eos = tok.eos_ids();
    if let Some(last) = ids.iter().rposition(|id| eos.contains(id)) {
        ids.truncate(last + 1);
    }
    ids
}

/// The text the chat template adds to `prefix` when it renders `full` (without a generation
/// prompt). Templates that rewrite earlier turns (e.g. dropping past reasoning) make the response
/// inseparable: that is an error rather than a silently shifted loss mask.
pub(crate) fn continuation(tok: &Tokenizer, prefix: &str, full: &[Message], field: &str) -> FieldResult<String> {
    let rendered = render(tok, full, false, field)?;
    match rendered.strip_prefix(prefix) {
        Some(suffix) if !suffix.is_empty() => Ok(suffix.to_string()),
        Some(_) => Err(bad(field, "the chat template renders this response as empty text")),
        None => Err(bad(
            field,
            "the chat template's rendering of the conversation does not start with its rendering of the prompt \
             (with the generation prompt), so the response cannot be separated from it",
        )),
    }
}

pub(crate) fn render(
    tok: &Tokenizer,
    messages: &[Message],
    generation_prompt: bool,
    field: &str,
) -> FieldResult<String> {
    if tok.chat_template().is_none() {
        return Err(RecordError::Fatal(DataError::Template(format!(
            "field \"{field}\" holds messages but this model has no chat template (use string columns, or a model with one)"
        ))));
    }
    tok.apply_chat_template(messages, generation_prompt).map_err(|e| bad(field, e.to_string()))
}

pub(crate) fn encode(tok: &Tokenizer, text: &str, add_special: bool, field: &str) -> FieldResult<Vec<u32>> {
    tok.encode(text, add_special).map_err(|e| bad(field, e.to_string()))
}

/// Drops a second BOS: a template that renders `bos_token` plus a tokenizer that adds one
/// otherwise yields `[BOS, BOS, …]`, a silent distribution shift (docs/ARCHITECTURE.md, detail 5).
pub(crate) fn without_double_bos(tok: &Tokenizer, mut ids: Vec<u32>) -> Vec<u32> {
    if let Some(bos) = tok.bos_id() {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
            ids.remove(0);
        }
    }
    ids
}

/// A prompt must fit in `max_prompt_length` tokens (0: no limit).
pub(crate) fn check_prompt_length(prompt: usize, max_prompt_length: usize) -> FieldResult<()> {
    if max_prompt_length > 0 && prompt > max_prompt_length {
        return Err(bad("prompt", format!("{prompt} tokens, longer than max_prompt_length {max_prompt_length}")));
    }
    Ok(())
}

/// `prompt + response` must fit in `max_length` tokens (0: no limit).
pub(crate) fn check_length(prompt: usize, response: usize, max_length: usize, field: &str) -> FieldResult<()> {
    if max_length > 0 && prompt + response > max_length {
        if prompt == 0 || response == 0 {
            let n = prompt + response;
            return Err(bad(field, format!("{n} tokens, longer than max_length {max_length}")));
        }
        return Err(bad(
            field,
            format!(
                "prompt + response is {} tokens ({prompt} + {response}), longer than max_length {max_length}",
                prompt + response
            ),
        ));
    }
    Ok(())
}
