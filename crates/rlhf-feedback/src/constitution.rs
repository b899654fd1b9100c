//! Constitutional AI's critique → revision loop (Bai et al. 2022) against any OpenAI-compatible
//! endpoint. For each prompt the model answers, critiques its answer against one principle and
//! rewrites it, for as many rounds as asked; the revisions become SFT rows and (revision,
//! original) preference pairs. Every reply goes to the judge's fsync'd [`ReplyCache`] before it
//! is used, so rerunning after a failure sends only the calls still missing.

use crate::judge::{cache_key, render_text, ChatClient, ChatMessage, ChatRequest, Common, JudgeError, ReplyCache};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// How principles are assigned to rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipleOrder {
    /// Through the file in order, continuing across prompts and rounds.
    RoundRobin,
    /// Drawn at random (seeded).
    Random,
}

/// One prompt: as given (for the output rows) and as the model reads it.
#[derive(Clone, Debug)]
pub struct Item {
    pub prompt: Value,
    /// What the generation request sends: the messages as given, or the string as a user turn.
    pub messages: Vec<ChatMessage>,
    /// The prompt as one text, quoted in critique and revision requests.
    pub text: String,
}

impl Item {
    /// A record's `prompt` (a string or a list of chat messages); the error says what is wrong
    /// with the field.
    pub fn from_prompt(prompt: &Value) -> Result<Self, String> {
        let text = render_text(prompt)?;
        if text.trim().is_empty() {
            return Err("empty prompt".into());
        }
        let messages = match prompt {
            Value::Array(list) => list
                .iter()
                .map(|m| {
                    ChatMessage::text(m["role"].as_str().unwrap_or_default(), m["content"].as_str().unwrap_or_default())
                })
                .collect(),
            _ => vec![user(text.clone())],
        };
        Ok(Item { prompt: prompt.clone(), messages, text })
    }
}

/// The constitution's principles: one per non-empty line, `#` lines are comments.
pub fn parse_principles(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// One critique → revision round.
#[derive(Clone, Debug)]
pub struct Round {
    pub principle: usize,
    pub critique: String,
    pub revision: String,
}

/// What became of one prompt.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The final revision differs from the answer: an SFT row and a pair.
    Revised { answer: String, rounds: Vec<Round> },
    /// The revision repeats the answer: a good SFT target, but no preference to learn.
    Unchanged { answer: String },
    /// Nothing to learn from: the answer or a revision came back empty.
    Empty,
}

/// How the model is asked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The model name the endpoint knows.
    pub model: String,
    /// Sampling temperature of the initial answer (some variety is the point).
    pub temperature: f64,
    /// Temperature of critiques and revisions.
    pub critique_temperature: f64,
    /// Token limit of every reply.
    pub max_tokens: u32,
    /// Sent with every request, for servers that honour it.
    pub seed: Option<i64>,
    /// Prompts processed at once (each runs its calls in sequence).
    pub concurrency: usize,
}

/// How many requests there were and how they were answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: usize,
    pub cache_hits: usize,
    pub http_calls: u64,
    pub retries: u64,
}

/// Runs every item's rounds (`plan[i]`: the principle of each round of item i) with
/// `settings.concurrency` workers, calling `on_item` after each finished item. The first error
/// stops the run; the replies cached until then are kept.
pub fn revise_all(
    client: ChatClient,
    cache: &ReplyCache,
    items: &[Item],
    principles: &[String],
    plan: &[Vec<usize>],
    settings: &Settings,
    on_item: &(dyn Fn() + Sync),
) -> Result<(Vec<Outcome>, Counts), JudgeError> {
    let caller = Caller {
        client,
        model: settings.model.clone(),
        cache,
        max_tokens: settings.max_tokens,
        seed: settings.seed,
        requests: AtomicUsize::new(0),
        cache_hits: AtomicUsize::new(0),
    };
    let outcomes: Vec<OnceLock<Outcome>> = items.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<JudgeError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..settings.concurrency.min(items.len()) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    match process(&caller, settings, item, principles, &plan[i]) {
                        Ok(outcome) => {
                            let _ = outcomes[i].set(outcome);
                            on_item();
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(e);
    }
    let stats = caller.client.stats();
    let counts = Counts {
        requests: caller.requests.load(Ordering::Relaxed),
        cache_hits: caller.cache_hits.load(Ordering::Relaxed),
        http_calls: stats.http_calls,
        retries: stats.retries,
    };
    // Every worker set its outcome, or the run returned its error above.
    Ok((outcomes.into_iter().map(|o| o.into_inner().unwrap_or(Outcome::Empty)).collect(), counts))
}

/// The output rows: SFT rows `{"prompt", "completion"}` (revised and unchanged items) and pairs
/// `{"prompt", "chosen": revision, "rejected": original, "principle", "critique", "annotator"}`
/// (with every round when there were several).
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub sft: Vec<Value>,
    pub pairs: Vec<Value>,
    pub unchanged: usize,
    pub empty: usize,
}

pub fn rows(items: &[Item], outcomes: Vec<Outcome>, principles: &[String], annotator: &str) -> Rows {
    let mut out = Rows::default();
    for (item, outcome) in items.iter().zip(outcomes) {
        match outcome {
            Outcome::Revised { answer, rounds } => {
                let Some(last) = rounds.last() else {
                    out.empty += 1;
                    continue;
                };
                out.sft.push(json!({"prompt": item.prompt, "completion": response(&item.prompt, &last.revision)}));
                let mut pair = json!({
                    "prompt": item.prompt,
                    "chosen": response(&item.prompt, &last.revision),
                    "rejected": response(&item.prompt, &answer),
                    "principle": principles[last.principle],
                    "critique": last.critique,
                    "annotator": annotator,
                });
                if rounds.len() > 1 {
                    pair["rounds"] = rounds
                        .iter()
                        .map(|r| json!({"principle": principles[r.principle], "critique": r.critique, "revision": r.revision}))
                        .collect();
                }
                out.pairs.push(pair);
            }
            Outcome::Unchanged { answer } => {
                out.unchanged += 1;
                out.sft.push(json!({"prompt": item.prompt, "completion": response(&item.prompt, &answer)}));
            }
            Outcome::Empty => out.empty += 1,
        }
    }
    out
}

fn user(content: String) -> ChatMessage {
    ChatMessage::text("user", content)
}

/// The critique request. Short on purpose: small models have small context windows.
fn critique_request(principle: &str, request: &str, response: &str) -> ChatMessage {
    user(format!(
        "Principle: {principle}\nRequest: {request}\nResponse: {response}\n\
         Point out briefly how the response falls short of the principle."
    ))
}

fn revision_request(principle: &str, request: &str, response: &str, critique: &str) -> ChatMessage {
    user(format!(
        "Principle: {principle}\nRequest: {request}\nResponse: {response}\nCritique: {critique}\n\
         Rewrite the response so it follows the principle and answers the critique. \
         Reply with the rewritten response only."
    ))
}

/// Which principle each round of each item uses: round-robin continues through the file across
/// items and rounds, so every principle gets used about equally often.
pub fn assign_principles(
    items: usize,
    rounds: usize,
    principles: usize,
    order: PrincipleOrder,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..items)
        .map(|i| {
            (0..rounds)
                .map(|r| match order {
                    PrincipleOrder::RoundRobin => (i * rounds + r) % principles,
                    PrincipleOrder::Random => rng.random_range(0..principles),
                })
                .collect()
        })
        .collect()
}

/// The model's calls, answered from the cache when it has them.
struct Caller<'a> {
    client: ChatClient,
    model: String,
    cache: &'a ReplyCache,
    max_tokens: u32,
    seed: Option<i64>,
    requests: AtomicUsize,
    cache_hits: AtomicUsize,
}

impl Caller<'_> {
    fn call(&self, messages: &[ChatMessage], temperature: f64) -> std::result::Result<String, JudgeError> {
        let request = ChatRequest {
            model: Some(self.model.clone()),
            messages: messages.to_vec(),
            common: Common {
                temperature: Some(temperature),
                max_tokens: Some(self.max_tokens.into()),
                seed: self.seed,
                ..Common::default()
            },
            ..ChatRequest::default()
        };
        let key = cache_key(&request.to_value());
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = self.cache.get(&key) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(reply);
        }
        let reply = self.client.chat(&request)?;
        self.cache.insert(&key, &self.model, &reply)?;
        Ok(reply)
    }
}

fn process(
    caller: &Caller,
    s: &Settings,
    item: &Item,
    principles: &[String],
    plan: &[usize],
) -> std::result::Result<Outcome, JudgeError> {
    let answer = caller.call(&item.messages, s.temperature)?.trim().to_string();
    if answer.is_empty() {
        return Ok(Outcome::Empty);
    }
    let mut current = answer.clone();
    let mut rounds = Vec::with_capacity(plan.len());
    for &p in plan {
        let principle = &principles[p];
        let critique = caller.call(&[critique_request(principle, &item.text, &current)], s.critique_temperature)?;
        let critique = critique.trim().to_string();
        let request = revision_request(principle, &item.text, &current, &critique);
        let revision = caller.call(&[request], s.critique_temperature)?.trim().to_string();
        if revision.is_empty() {
            return Ok(Outcome::Empty);
        }
        current = revision.clone();
        rounds.push(Round { principle: p, critique, revision });
    }
    if current == answer {
        return Ok(Outcome::Unchanged { answer });
    }
    Ok(Outcome::Revised { answer, rounds })
}

/// A response in the prompt's shape: a string for a string prompt, an assistant turn for a
/// conversation (TRL's conversational form, which `rlhf sft`/`reward`/`dpo` read).
pub fn response(prompt: &Value, text: &str) -> Value {
    match prompt {
        Value::Array(_) => json!([{"role": "assistant", "content": text}]),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_continues_across_items_and_random_is_seeded() {
        let plan = assign_principles(3, 2, 4, PrincipleOrder::RoundRobin, 0);
        assert_eq!(plan, vec![vec![0, 1], vec![2, 3], vec![0, 1]]);
        let a = assign_principles(50, 1, 5, PrincipleOrder::Random, 7);
        assert_eq!(a, assign_principles(50, 1, 5, PrincipleOrder::Random, 7));
        assert_ne!(a, assign_principles(50, 1, 5, PrincipleOrder::Random, 8));
        assert!(a.iter().all(|r| r[0] < 5));
    }

    #[test]
    fn responses_take_the_prompts_shape() {
        assert_eq!(response(&json!("q"), "a"), json!("a"));
        assert_eq!(
            response(&json!([{"role": "user", "content": "q"}]), "a"),
            json!([{"role": "assistant", "content": "a"}])
        );
    }
}
