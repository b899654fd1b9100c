//! RLAIF: preference pairs from an LLM judge behind any OpenAI-compatible chat endpoint.
//!
//! Every pair is judged twice, once in each order, because LLM judges favour a position: only a
//! verdict that survives the swap becomes a preference; disagreement or a tie in either order is
//! a [`Outcome::Tie`] and gives no pair. A judge whose endpoint returns `top_logprobs` can instead
//! give its verdict as numbers ([`VerdictMode::Logprobs`]): the log-odds of "A" over "B" in each
//! order, whose difference cancels a constant position bias that would make every text verdict a
//! tie (small judges answer "A" to almost everything). Replies go to an fsync'd [`ReplyCache`] as they arrive,
//! so a run that dies (crash, quota, outage) resumes without paying for a call twice. Output rows
//! have the same shape as the human labels' pairs export, with `annotator: "judge:<model>"`.

pub mod cache;
pub mod error;
pub mod input;
pub mod prompt;

pub use cache::{cache_key, CacheLoad, ReplyCache};
pub use error::{JudgeError, Result};
pub use input::{parse_item, read_items, Candidate, JudgeItem};
pub use prompt::{
    letter_scores, pairwise_messages, parse_scores, parse_verdict, render_text, ChatMessage, Verdict,
    DEFAULT_GUIDELINES,
};
pub use rlhf_openai::{CallStats, ChatClient, ChatRequest, ClientConfig, ClientError, Common};

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How a verdict is read from the judge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VerdictMode {
    /// From the reply's text (any endpoint; a rationale before the verdict line is fine).
    Text,
    /// From the first token's `top_logprobs` of a one-token answer: the two orders' log-odds of
    /// "A" over "B" are combined as ((A−B)_forward − (A−B)_reversed) / 2, the position-debiased
    /// log-odds of the first response; within ±`tie_margin` nats it is a tie.
    Logprobs { tie_margin: f64 },
}

/// How many alternatives a logprob verdict asks for (OpenAI's maximum).
pub const VERDICT_TOP_LOGPROBS: u32 = 20;

/// Where the judge is and how to talk to it.
#[derive(Clone)]
pub struct JudgeConfig {
    /// The API root, e.g. `http://127.0.0.1:8000/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …`; never printed (see the `Debug` impl).
    pub api_key: Option<String>,
    /// The judge's system prompt.
    pub guidelines: String,
    /// Per request, connection to last byte.
    pub timeout: Duration,
    /// Extra attempts after a timeout, connection error, 408, 429 or 5xx.
    pub max_retries: u32,
    /// First backoff; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Cap on any wait, `Retry-After` included.
    pub max_backoff: Duration,
    /// 0 by default: a judge should be as deterministic as the server allows.
    pub temperature: f64,
    /// Room for a short rationale before the verdict line.
    pub max_tokens: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub verdict: VerdictMode,
}

impl JudgeConfig {
    /// The defaults: no key, [`DEFAULT_GUIDELINES`], 60 s timeout, 5 retries from 1 s (capped at
    /// 30 s), temperature 0, 512 tokens, 4 concurrent requests.
    pub fn new(base_url: &str, model: &str) -> Self {
        JudgeConfig {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key: None,
            guidelines: DEFAULT_GUIDELINES.to_string(),
            timeout: Duration::from_secs(60),
            max_retries: 5,
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            temperature: 0.0,
            max_tokens: 512,
            concurrency: 4,
            verdict: VerdictMode::Text,
        }
    }

    /// The request for one ordering (its body's hash is the cache key, so text and logprob
    /// verdicts never share cached replies).
    pub fn request(&self, prompt: &str, a: &str, b: &str) -> ChatRequest {
        let messages = pairwise_messages(&self.guidelines, prompt, a, b, self.verdict);
        let model = Some(self.model.clone());
        match self.verdict {
            VerdictMode::Text => ChatRequest {
                model,
                messages,
                common: Common {
                    temperature: Some(self.temperature),
                    max_tokens: Some(self.max_tokens.into()),
                    ..Common::default()
                },
                ..ChatRequest::default()
            },
            VerdictMode::Logprobs { .. } => ChatRequest {
                model,
                messages,
                common: Common { temperature: Some(0.0), max_tokens: Some(1), ..Common::default() },
                logprobs: Some(true),
                top_logprobs: Some(VERDICT_TOP_LOGPROBS.into()),
                ..ChatRequest::default()
            },
        }
    }

    /// Where the client sends requests and how hard it tries.
    pub fn client(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            api_key: self.api_key.clone(),
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff_base: self.backoff_base,
            max_backoff: self.max_backoff,
        }
    }
}

impl std::fmt::Debug for JudgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("guidelines", &self.guidelines)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("max_backoff", &self.max_backoff)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("concurrency", &self.concurrency)
            .field("verdict", &self.verdict)
            .finish()
    }
}

/// What the two orderings of a pair add up to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Response indices within the item.
    Prefer { chosen: usize, rejected: usize },
    /// The orderings disagree, or either says tie.
    Tie,
    /// Either reply had no readable verdict.
    Invalid,
}

/// One pair of one item, with both verdicts.
#[derive(Clone, Debug, PartialEq)]
pub struct PairJudgement {
    pub item: usize,
    pub first: usize,
    pub second: usize,
    /// Response A = `first`.
    pub forward: Verdict,
    /// Response A = `second`.
    pub reversed: Verdict,
    pub outcome: Outcome,
}

impl PairJudgement {
    /// Logprob verdicts: the position-debiased log-odds that `first` is better.
    pub fn log_odds(&self) -> Option<f64> {
        debiased_log_odds(&self.forward, &self.reversed)
    }
}

/// ((A−B) with `first` shown as A − (A−B) with `first` shown as B) / 2, for logprob verdicts.
pub fn debiased_log_odds(forward: &Verdict, reversed: &Verdict) -> Option<f64> {
    match (forward, reversed) {
        (Verdict::Scores { a: fa, b: fb }, Verdict::Scores { a: ra, b: rb }) => Some(((fa - fb) - (ra - rb)) / 2.0),
        _ => None,
    }
}

/// Combines the two orderings. Text: A then B (first wins) or B then A (second wins) is a
/// preference. Scores: the debiased log-odds decide, ties within ±`tie_margin`.
pub fn combine(forward: &Verdict, reversed: &Verdict, first: usize, second: usize, tie_margin: f64) -> Outcome {
    if let Some(s) = debiased_log_odds(forward, reversed) {
        return match s {
            s if s > tie_margin => Outcome::Prefer { chosen: first, rejected: second },
            s if s < -tie_margin => Outcome::Prefer { chosen: second, rejected: first },
            _ => Outcome::Tie,
        };
    }
    match (forward, reversed) {
        (Verdict::Invalid { .. }, _) | (_, Verdict::Invalid { .. }) => Outcome::Invalid,
        (Verdict::Scores { .. }, _) | (_, Verdict::Scores { .. }) => Outcome::Invalid,
        (Verdict::A, Verdict::B) => Outcome::Prefer { chosen: first, rejected: second },
        (Verdict::B, Verdict::A) => Outcome::Prefer { chosen: second, rejected: first },
        _ => Outcome::Tie,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JudgeCounts {
    pub pairs: usize,
    pub preferences: usize,
    pub ties: usize,
    pub invalid: usize,
    /// Distinct judge requests (two per pair, fewer when the input repeats a pair).
    pub requests: usize,
    /// Requests answered from the cache, not sent.
    pub cache_hits: usize,
    /// HTTP requests sent, retries included.
    pub http_calls: u64,
    pub retries: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JudgeReport {
    /// In input order: items, then pairs (i < j).
    pub judgements: Vec<PairJudgement>,
    pub counts: JudgeCounts,
}

/// How strongly a logprob judge favours a position, and what is left after the swap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionBias {
    /// Mean log-odds of "A" over "B" over both orders: what the swap cancels.
    pub bias: f64,
    /// Mean |debiased log-odds|: how decided the judge is once the bias is gone.
    pub mean_abs_log_odds: f64,
}

impl JudgeReport {
    /// Over the pairs with logprob verdicts in both orders (None without any).
    pub fn position_bias(&self) -> Option<PositionBias> {
        let scores: Vec<(f64, f64)> = self
            .judgements
            .iter()
            .filter_map(|j| match (&j.forward, &j.reversed, j.log_odds()) {
                (Verdict::Scores { a: fa, b: fb }, Verdict::Scores { a: ra, b: rb }, Some(s)) => {
                    Some((((fa - fb) + (ra - rb)) / 2.0, s.abs()))
                }
                _ => None,
            })
            .collect();
        if scores.is_empty() {
            return None;
        }
        let mean = |f: fn(&(f64, f64)) -> f64| scores.iter().map(f).sum::<f64>() / scores.len() as f64;
        Some(PositionBias { bias: mean(|s| s.0), mean_abs_log_odds: mean(|s| s.1) })
    }

    /// One pairs-format row per preference, in input order.
    pub fn rows(&self, items: &[JudgeItem], model: &str) -> Vec<Value> {
        self.judgements
            .iter()
            .filter_map(|j| match j.outcome {
                Outcome::Prefer { chosen, rejected } => {
                    let item = &items[j.item];
                    let mut row = json!({
                        "prompt": item.prompt,
                        "chosen": item.responses[chosen].value,
                        "rejected": item.responses[rejected].value,
                        "judge": model,
                        "annotator": format!("judge:{model}"),
                        "agreement": 1.0,
                        "orders": 2,
                    });
                    if let Some(s) = j.log_odds() {
                        // Of the chosen over the rejected response.
                        row["judge_log_odds"] = json!(s.abs());
                    }
                    Some(row)
                }
                _ => None,
            })
            .collect()
    }
}

/// Judges every pair of every item in both orders. Requests already in `cache` are not sent;
/// new replies are added to it as they arrive. The first failed request stops the workers from
/// taking more (those in flight finish and are cached) and is returned.
pub fn judge(config: &JudgeConfig, items: &[JudgeItem], cache: Option<&ReplyCache>) -> Result<JudgeReport> {
    judge_with_progress(config, items, cache, &|_, _| {})
}

/// [`judge`], calling `progress(answered, to_send)` once before the first request (with 0) and
/// after each reply that had to be fetched, from the worker threads.
pub fn judge_with_progress(
    config: &JudgeConfig,
    items: &[JudgeItem],
    cache: Option<&ReplyCache>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<JudgeReport> {
    if config.concurrency == 0 {
        return Err(JudgeError::Config("judge concurrency must be at least 1".into()));
    }
    if config.max_tokens == 0 {
        return Err(JudgeError::Config("judge max_tokens must be at least 1".into()));
    }
    if config.model.trim().is_empty() {
        return Err(JudgeError::Config("judge model name is empty".into()));
    }
    if let VerdictMode::Logprobs { tie_margin } = config.verdict {
        if !(tie_margin >= 0.0 && tie_margin.is_finite()) {
            return Err(JudgeError::Config(format!("judge tie margin must be ≥ 0 nats, got {tie_margin}")));
        }
    }
    let client = ChatClient::new(&config.client())?;
    let logprob_verdicts = matches!(config.verdict, VerdictMode::Logprobs { .. });

    // Plan: two request keys per pair; distinct keys are sent at most once. Bodies are rebuilt
    // when sent rather than kept, so a large input costs keys, not prompts, in memory.
    let mut plan = Vec::new();
    let mut to_send: Vec<(String, usize, usize, usize)> = Vec::new();
    let mut known: HashMap<String, Option<String>> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        for (first, second) in item.pairs() {
            let mut key_of = |a: usize, b: usize| {
                let request = config.request(&item.prompt_text, &item.responses[a].text, &item.responses[b].text);
                let key = cache_key(&request.to_value());
                known.entry(key.clone()).or_insert_with(|| {
                    let hit = cache.and_then(|c| c.get(&key));
                    if hit.is_none() {
                        to_send.push((key.clone(), index, a, b));
                    }
                    hit
                });
                key
            };
            let forward = key_of(first, second);
            let reversed = key_of(second, first);
            plan.push((index, first, second, forward, reversed));
        }
    }
    let cache_hits = known.values().filter(|v| v.is_some()).count();

    let replies: Vec<OnceLock<String>> = to_send.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let answered = AtomicUsize::new(0);
    progress(0, to_send.len());
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<JudgeError>> = Mutex::new(None);
    let fail = |e: JudgeError| {
        stop.store(true, Ordering::SeqCst);
        let mut slot = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(e);
    };
    std::thread::scope(|scope| {
        for _ in 0..config.concurrency.min(to_send.len()) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(ref key, item, a, b)) = to_send.get(i) else { break };
                    let (item, a, b) = (&items[item], &items[item].responses[a], &items[item].responses[b]);
                    let request = config.request(&item.prompt_text, &a.text, &b.text);
                    let reply = if logprob_verdicts {
                        client.chat_with(&request, &letter_scores)
                    } else {
                        client.chat(&request)
                    };
                    let stored = reply.map_err(JudgeError::from).and_then(|reply| {
                        cache.map_or(Ok(()), |c| c.insert(key, &config.model, &reply)).map(|()| reply)
                    });
                    match stored {
                        Ok(reply) => {
                            let _ = replies[i].set(reply);
                            progress(answered.fetch_add(1, Ordering::SeqCst) + 1, to_send.len());
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(e);
    }
    for ((key, ..), reply) in to_send.iter().zip(replies) {
        known.insert(key.clone(), reply.into_inner());
    }

    let stats = client.stats();
    let mut counts = JudgeCounts {
        requests: known.len(),
        cache_hits,
        http_calls: stats.http_calls,
        retries: stats.retries,
        ..JudgeCounts::default()
    };
    let verdict = |key: &str| -> Verdict {
        // Every key got a reply or the run returned its error above.
        let reply = known.get(key).and_then(Option::as_deref).unwrap_or_default();
        if logprob_verdicts {
            parse_scores(reply)
        } else {
            parse_verdict(reply)
        }
    };
    let tie_margin = match config.verdict {
        VerdictMode::Logprobs { tie_margin } => tie_margin,
        VerdictMode::Text => 0.0,
    };
    let judgements: Vec<PairJudgement> = plan
        .into_iter()
        .map(|(item, first, second, fk, rk)| {
            let (forward, reversed) = (verdict(&fk), verdict(&rk));
            let outcome = combine(&forward, &reversed, first, second, tie_margin);
            match outcome {
                Outcome::Prefer { .. } => counts.preferences += 1,
                Outcome::Tie => counts.ties += 1,
                Outcome::Invalid => counts.invalid += 1,
            }
            PairJudgement { item, first, second, forward, reversed, outcome }
        })
        .collect();
    counts.pairs = judgements.len();
    Ok(JudgeReport { judgements, counts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bodies (and so the cache keys of existing reply caches) are those the judge has
    /// always sent: exactly these fields.
    #[test]
    fn request_bodies_and_cache_keys_are_stable() {
        let mut cfg = JudgeConfig::new("http://127.0.0.1:1/v1", "judge-m");
        let messages = |mode| json!(pairwise_messages(&cfg.guidelines, "p", "a", "b", mode));
        let text = cfg.request("p", "a", "b").to_value();
        let expected =
            json!({"model": "judge-m", "messages": messages(VerdictMode::Text), "temperature": 0.0, "max_tokens": 512});
        assert_eq!(text, expected);
        assert_eq!(cache_key(&text), "222d59c2217e807a91b2302f5575a92a241afead4d1fbd3ef187ce28b377cc53");
        cfg.verdict = VerdictMode::Logprobs { tie_margin: 0.1 };
        let expected = json!({"model": "judge-m", "messages": messages(cfg.verdict), "temperature": 0.0, "max_tokens": 1,
            "logprobs": true, "top_logprobs": 20});
        assert_eq!(cfg.request("p", "a", "b").to_value(), expected);
    }

    #[test]
    fn only_a_verdict_that_survives_the_swap_is_a_preference() {
        let inv = Verdict::Invalid { reply: "?".into() };
        let c = |f: &Verdict, r: &Verdict| combine(f, r, 0, 1, 0.0);
        assert_eq!(c(&Verdict::A, &Verdict::B), Outcome::Prefer { chosen: 0, rejected: 1 });
        assert_eq!(c(&Verdict::B, &Verdict::A), Outcome::Prefer { chosen: 1, rejected: 0 });
        assert_eq!(c(&Verdict::A, &Verdict::A), Outcome::Tie);
        assert_eq!(c(&Verdict::B, &Verdict::B), Outcome::Tie);
        assert_eq!(c(&Verdict::Tie, &Verdict::B), Outcome::Tie);
        assert_eq!(c(&Verdict::A, &inv), Outcome::Invalid);
        assert_eq!(c(&inv, &Verdict::Tie), Outcome::Invalid);
    }

    #[test]
    fn logprob_verdicts_cancel_a_constant_position_bias() {
        let s = |a: f64, b: f64| Verdict::Scores { a, b };
        // Always "A" by ~3 nats, but less so when the first response is shown second:
        // forward A−B = 3.0, reversed A−B = 2.0 → first is better by (3 − 2)/2 = 0.5 nats.
        let (f, r) = (s(-0.1, -3.1), s(-0.2, -2.2));
        assert!((debiased_log_odds(&f, &r).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(combine(&f, &r, 0, 1, 0.1), Outcome::Prefer { chosen: 0, rejected: 1 });
        assert_eq!(combine(&r, &f, 0, 1, 0.1), Outcome::Prefer { chosen: 1, rejected: 0 });
        assert_eq!(combine(&f, &r, 0, 1, 0.5), Outcome::Tie, "within the margin");
        assert_eq!(combine(&f, &f, 0, 1, 0.0), Outcome::Tie, "identical orders carry no preference");
        assert_eq!(combine(&f, &Verdict::A, 0, 1, 0.0), Outcome::Invalid, "mixed verdict kinds");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let mut c = JudgeConfig::new("http://x/v1", "m");
        c.api_key = Some("sk-secret".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret") && shown.contains("<set>"), "{shown}");
    }
}
