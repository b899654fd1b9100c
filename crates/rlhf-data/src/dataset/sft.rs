//! SFT examples: `prompt` + `completion`, `messages` (every assistant turn is learned), or plain
//! `text` (every token is learned).

use super::encode::{
    check_length, check_prompt_length, continuation, encode, encode_prompt, encode_response, render, through_last_eos,
    without_double_bos,
};
use super::fields::{bad, messages, optional, required, string, text_or_messages, FieldResult};
use super::LoadOptions;
use crate::chat::Message;
use crate::error::Location;
use crate::tokenizer::Tokenizer;
use serde_json::{Map, Value};

/// One training sequence; `loss_mask[t] = 1` where token `t` is a target (completion or assistant
/// tokens), 0 on prompt, system and user tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftExample {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    pub source: Location,
}

pub(crate) fn parse_sft(
    tok: &Tokenizer,
    record: &Map<String, Value>,
    source: &Location,
    opts: &LoadOptions,
) -> FieldResult<SftExample> {
    let (input_ids, loss_mask, field) = if let Some(value) = optional(record, "messages") {
        let (ids, mask) = conversation(tok, &messages(value, "messages")?)?;
        (ids, mask, "messages")
    } else if record.contains_key("prompt") || record.contains_key("completion") {
        let prompt = encode_prompt(tok, &text_or_messages(required(record, "prompt")?, "prompt")?, "prompt")?;
        check_prompt_length(prompt.ids.len(), opts.max_prompt_length)?;
        let completion = text_or_messages(required(record, "completion")?, "completion")?;
        let response = encode_response(tok, &prompt, &completion, "completion")?;
        let mask = [vec![0u8; prompt.ids.len()], vec![1u8; response.len()]].concat();
        ([prompt.ids, response].concat(), mask, "completion")
    } else if let Some(value) = optional(record, "text") {
        let ids = plain_text(tok, &string(value, "text")?)?;
        let mut mask = vec![1u8; ids.len()];
        mask[0] = 0; // nothing predicts the first token
        (ids, mask, "text")
    } else {
        return Err(bad("messages", "missing (an SFT record needs \"messages\", or \"prompt\" and \"completion\")"));
    };
    check_length(0, input_ids.len(), opts.max_length, field)?;
    Ok(SftExample { input_ids, loss_mask, source: source.clone() })
}

fn plain_text(tok: &Tokenizer, text: &str) -> FieldResult<Vec<u32>> {
    if text.trim().is_empty() {
        return Err(bad("text", "empty text"));
    }
    let mut ids = without_double_bos(tok, encode(tok, text, true, "text")?);
    let eos = tok.eos_ids();
    if let Some(&first_eos) = eos.first() {
        if !ids.last().is_some_and(|id| eos.contains(id)) {
            ids.push(first_eos);
        }
    }
    Ok(ids)
}

/// A conversation as token ids built turn by turn: the context before each assistant turn
/// (masked out) and the turn itself (learned), each segment tokenised on its own. Messages after
/// the last assistant turn have nothing to teach and are dropped.
fn conversation(tok: &Tokenizer, messages: &[Message]) -> FieldResult<(Vec<u32>, Vec<u8>)> {
    const FIELD: &str = "messages";
    let turns: Vec<usize> =
        messages.iter().enumerate().filter(|(_, m)| m.role == "assistant").map(|(i, _)| i).collect();
    if turns.is_empty() {
        return Err(bad(FIELD, "no assistant message to learn from"));
    }
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    let mut rendered = String::new();
    for &turn in &turns {
        if turn == 0 {
            return Err(bad(FIELD, "message 0 is an assistant message with no prompt before it"));
        }
        if messages[turn].content.trim().is_empty() {
            return Err(bad(FIELD, format!("message {turn}: empty assistant response")));
        }
        let prompt = render(tok, &messages[..turn], true, FIELD)?;
        let Some(context) = prompt.strip_prefix(rendered.as_str()) else {
            return Err(bad(
                FIELD,
                format!("the chat template renders the conversation before message {turn} differently from its earlier turns, so turns cannot be separated"),
            ));
        };
        let first = ids.is_empty();
        let mut context_ids = encode(tok, context, first, FIELD)?;
        if first {
            context_ids = without_double_bos(tok, context_ids);
        }
        let reply = continuation(tok, &prompt, &messages[..=turn], FIELD)?;
        let mut reply_ids = encode(tok, &reply, false, FIELD)?;
        if Some(&turn) == turns.last() {
            // The sequence ends where generation would stop (see `through_last_eos`).
            reply_ids = through_last_eos(tok, reply_ids);
        }
        mask.extend(std::iter::repeat_n(0u8, context_ids.len()).chain(std::iter::repeat_n(1u8, reply_ids.len())));
        ids.extend(context_ids.into_iter().chain(reply_ids));
        rendered = prompt + &reply;
    }
    Ok((ids, mask))
}
