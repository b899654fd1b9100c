//! Preference data: explicit pairs (`prompt`, `chosen`, `rejected`), implicit pairs (only
//! `chosen`/`rejected`, the prompt being their shared beginning) and K-wise rankings (`prompt`,
//! `responses`, `ranking`), all as groups of (chosen, rejected) pairs under one prompt.

use super::encode::{check_length, check_prompt_length, encode_prompt, encode_response, EncodedPrompt};
use super::fields::{bad, index_list, list, optional, required, text_or_messages, FieldResult, TextOrMessages};
use super::LoadOptions;
use crate::chat::Message;
use crate::error::Location;
use crate::tokenizer::Tokenizer;
use serde_json::{Map, Value};

/// One comparison; `chosen` and `rejected` are response tokens only (the prompt is not repeated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairExample {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    pub source: Location,
}

/// All comparisons of one prompt, kept together so they land in one batch (docs/ARCHITECTURE.md, detail 11): a
/// plain pair is a group of one, a ranking of K responses a group of C(K,2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceGroup {
    pub prompt: Vec<u32>,
    /// (chosen, rejected) response ids.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    pub source: Location,
}

impl PreferenceGroup {
    pub fn pair_examples(&self) -> impl Iterator<Item = PairExample> + '_ {
        self.pairs.iter().map(|(chosen, rejected)| PairExample {
            prompt: self.prompt.clone(),
            chosen: chosen.clone(),
            rejected: rejected.clone(),
            source: self.source.clone(),
        })
    }
}

pub(crate) fn parse_preference(
    tok: &Tokenizer,
    record: &Map<String, Value>,
    source: &Location,
    opts: &LoadOptions,
) -> FieldResult<PreferenceGroup> {
    let encode_side = |prompt: &EncodedPrompt, response: &TextOrMessages, field: &str| -> FieldResult<Vec<u32>> {
        check_prompt_length(prompt.ids.len(), opts.max_prompt_length)?;
        let ids = encode_response(tok, prompt, response, field)?;
        check_length(prompt.ids.len(), ids.len(), opts.max_length, field)?;
        Ok(ids)
    };
    if record.contains_key("responses") || record.contains_key("ranking") {
        let prompt = encode_prompt(tok, &text_or_messages(required(record, "prompt")?, "prompt")?, "prompt")?;
        let responses = list(required(record, "responses")?, "responses")?
            .iter()
            .enumerate()
            .map(|(i, v)| text_or_messages(v, &format!("responses[{i}]")))
            .collect::<FieldResult<Vec<_>>>()?;
        let tiers = ranking_tiers(required(record, "ranking")?)?;
        let ranking: Vec<usize> = tiers.iter().flatten().copied().collect();
        check_ranking(&ranking, responses.len())?;
        if tiers.len() < 2 {
            return Err(bad("ranking", "every response is tied: no preference to learn"));
        }
        let ids = responses
            .iter()
            .enumerate()
            .map(|(i, r)| encode_side(&prompt, r, &format!("responses[{i}]")))
            .collect::<FieldResult<Vec<_>>>()?;
        let mut pairs = Vec::with_capacity(ranking.len() * (ranking.len() - 1) / 2);
        for (rank, tier) in tiers.iter().enumerate() {
            for &better in tier {
                for &worse in tiers[rank + 1..].iter().flatten() {
                    pairs.push((ids[better].clone(), ids[worse].clone()));
                }
            }
        }
        return Ok(PreferenceGroup { prompt: prompt.ids, pairs, source: source.clone() });
    }
    let chosen = text_or_messages(required(record, "chosen")?, "chosen")?;
    let rejected = text_or_messages(required(record, "rejected")?, "rejected")?;
    let (prompt, chosen, rejected) = match optional(record, "prompt") {
        Some(p) => (text_or_messages(p, "prompt")?, chosen, rejected),
        None => split_implicit_prompt(chosen, rejected)?,
    };
    let prompt = encode_prompt(tok, &prompt, "prompt")?;
    let chosen = encode_side(&prompt, &chosen, "chosen")?;
    let rejected = encode_side(&prompt, &rejected, "rejected")?;
    Ok(PreferenceGroup { prompt: prompt.ids, pairs: vec![(chosen, rejected)], source: source.clone() })
}

/// `ranking` lists response indices best first; an entry that is itself a list is a tie (a
/// tier), whose members are compared with every other tier but not with each other.
fn ranking_tiers(value: &Value) -> FieldResult<Vec<Vec<usize>>> {
    list(value, "ranking")?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Array(_) => {
                let tier = index_list(v, &format!("ranking[{i}]"))?;
                if tier.is_empty() {
                    return Err(bad("ranking", format!("item {i}: an empty tie group")));
                }
                Ok(tier)
            }
            _ => v.as_u64().map(|x| vec![x as usize]).ok_or_else(|| {
                bad("ranking", format!("item {i}: expected an index or a list of tied indices, found {v}"))
            }),
        })
        .collect()
}

/// A ranking lists response indices best first and must be a permutation of `0..k`, `k ≥ 2`.
fn check_ranking(ranking: &[usize], k: usize) -> FieldResult<()> {
    if k < 2 {
        return Err(bad("responses", format!("a ranking needs at least 2 responses, found {k}")));
    }
    if ranking.len() != k {
        return Err(bad("ranking", format!("has {} entries for {k} responses", ranking.len())));
    }
    let mut seen = vec![false; k];
    for &i in ranking {
        if i >= k || std::mem::replace(&mut seen[i], true) {
            return Err(bad("ranking", format!("{ranking:?} is not a permutation of 0..{k}")));
        }
    }
    Ok(())
}

/// TRL's implicit prompt: for strings the longest common prefix (a trailing space goes with the
/// responses, where a tokenizer expects it); for conversations every message before the final
/// assistant turn, which must be the same on both sides.
fn split_implicit_prompt(
    chosen: TextOrMessages,
    rejected: TextOrMessages,
) -> FieldResult<(TextOrMessages, TextOrMessages, TextOrMessages)> {
    match (chosen, rejected) {
        (TextOrMessages::Text(c), TextOrMessages::Text(r)) => {
            let mut end = c
                .char_indices()
                .zip(r.chars())
                .find(|((_, a), b)| a != b)
                .map_or(c.len().min(r.len()), |((i, _), _)| i);
            if c[..end].ends_with(' ') {
                end -= 1;
            }
            if end == 0 {
                return Err(bad(
                    "chosen",
                    "no \"prompt\" column, and \"chosen\" and \"rejected\" share no beginning to use as the prompt",
                ));
            }
            Ok((
                TextOrMessages::Text(c[..end].to_string()),
                TextOrMessages::Text(c[end..].to_string()),
                TextOrMessages::Text(r[end..].to_string()),
            ))
        }
        (TextOrMessages::Messages(c), TextOrMessages::Messages(r)) => {
            let (c_prompt, c_reply) = split_last_assistant(c, "chosen")?;
            let (r_prompt, r_reply) = split_last_assistant(r, "rejected")?;
            if c_prompt != r_prompt {
                return Err(bad("rejected", "no \"prompt\" column, and the messages before the last assistant turn differ from those of \"chosen\""));
            }
            Ok((
                TextOrMessages::Messages(c_prompt),
                TextOrMessages::Messages(vec![c_reply]),
                TextOrMessages::Messages(vec![r_reply]),
            ))
        }
        _ => Err(bad("rejected", "\"chosen\" and \"rejected\" must both be strings or both be lists of messages")),
    }
}

fn split_last_assistant(mut messages: Vec<Message>, field: &str) -> FieldResult<(Vec<Message>, Message)> {
    match messages.pop() {
        Some(last) if last.role == "assistant" && !messages.is_empty() => Ok((messages, last)),
        _ => Err(bad(field, "without a \"prompt\" column the conversation must end with an assistant message after at least one other message")),
    }
}
