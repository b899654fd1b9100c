//! What `rlhf serve` accepts of the OpenAI request bodies (`rlhf_openai::wire`, shared with the
//! clients), checked into one [`Plan`], and the error shape OpenAI clients parse
//! (`{"error": {"message", "type", "param", "code"}}`).

pub use rlhf_openai::wire::{ChatMessage, ChatRequest, Common, CompletionRequest};
use serde_json::Value;

/// The most choices one request may ask for (each is a batch row).
pub const MAX_N: usize = 16;
/// OpenAI's limits on alternatives per token: 20 for chat, 5 for legacy completions.
pub const MAX_TOP_LOGPROBS_CHAT: i64 = 20;
pub const MAX_TOP_LOGPROBS_COMPLETIONS: i64 = 5;
const MAX_STOPS: usize = 4;

/// A refused request: the field at fault and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    pub param: Option<String>,
    pub message: String,
}

impl BadRequest {
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        BadRequest { param: Some(param.to_string()), message: message.into() }
    }
    /// The message names the field too, as OpenAI's do: clients often show only the message.
    pub fn body(&self) -> Value {
        let message = match &self.param {
            Some(p) => format!("{p}: {}", self.message),
            None => self.message.clone(),
        };
        serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": self.param, "code": null}})
    }
}

/// What to generate, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub n: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub logprobs: bool,
    /// Most likely alternatives per token returned with the logprobs (0: none).
    pub top_logprobs: usize,
    pub seed: u64,
    /// Choice k samples from random stream `first_stream + k` under `seed`.
    pub first_stream: u64,
}

pub fn text_of(content: &Value, field: &str) -> Result<String, BadRequest> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                (Some("text"), Some(t)) => Ok(t.to_string()),
                _ => Err(BadRequest::new(
                    field,
                    "only text content parts ({\"type\": \"text\", \"text\": …}) are supported",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.concat()),
        Value::Null => Ok(String::new()),
        other => Err(BadRequest::new(field, format!("expected a string or a list of text parts, found {other}"))),
    }
}

/// A request's settings checked against what the server can do.
pub trait Checked {
    fn plan(&self) -> Result<Plan, BadRequest>;
}

/// The fields both endpoints share. `max_tokens` defaults to 256; `logprobs` and `top_logprobs`
/// are decided by the endpoint.
fn common_plan(c: &Common, max_tokens: Option<i64>, logprobs: bool, top_logprobs: usize) -> Result<Plan, BadRequest> {
    let n = c.n.unwrap_or(1);
    if !(1..=MAX_N as i64).contains(&n) {
        return Err(BadRequest::new("n", format!("must be between 1 and {MAX_N}, got {n}")));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(BadRequest::new("temperature", format!("must be between 0 and 2, got {temperature}")));
    }
    if let Some(p) = c.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(BadRequest::new("top_p", format!("must be in (0, 1], got {p}")));
        }
    }
    let max_tokens = max_tokens.or(c.max_tokens).unwrap_or(256);
    if max_tokens < 1 {
        return Err(BadRequest::new("max_tokens", format!("must be at least 1, got {max_tokens}")));
    }
    let stop = match &c.stop {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| BadRequest::new("stop", "expected strings")))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(BadRequest::new("stop", format!("expected a string or a list of strings, found {other}")))
        }
    };
    if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
        return Err(BadRequest::new("stop", format!("up to {MAX_STOPS} non-empty strings")));
    }
    let stream = c.stream.unwrap_or(false);
    if stream && logprobs {
        return Err(BadRequest::new("logprobs", "logprobs are returned only without stream"));
    }
    Ok(Plan {
        n: n as usize,
        temperature,
        top_p: c.top_p,
        max_tokens: max_tokens as usize,
        stop,
        stream,
        logprobs,
        top_logprobs,
        seed: c.seed.map_or_else(rand::random::<u64>, |s| s as u64),
        first_stream: 0,
    })
}

impl Checked for ChatRequest {
    fn plan(&self) -> Result<Plan, BadRequest> {
        if self.messages.is_empty() {
            return Err(BadRequest::new("messages", "must contain at least one message"));
        }
        let logprobs = self.logprobs.unwrap_or(false);
        let top = self.top_logprobs.unwrap_or(0);
        if !(0..=MAX_TOP_LOGPROBS_CHAT).contains(&top) {
            return Err(BadRequest::new(
                "top_logprobs",
                format!("must be between 0 and {MAX_TOP_LOGPROBS_CHAT}, got {top}"),
            ));
        }
        if top > 0 && !logprobs {
            return Err(BadRequest::new("top_logprobs", "needs logprobs: true"));
        }
        common_plan(&self.common, self.max_completion_tokens, logprobs, top as usize)
    }
}

impl Checked for CompletionRequest {
    fn plan(&self) -> Result<Plan, BadRequest> {
        let top = self.logprobs.unwrap_or(0);
        if !(0..=MAX_TOP_LOGPROBS_COMPLETIONS).contains(&top) {
            return Err(BadRequest::new(
                "logprobs",
                format!("must be between 0 and {MAX_TOP_LOGPROBS_COMPLETIONS}, got {top}"),
            ));
        }
        if self.echo == Some(true) {
            return Err(BadRequest::new("echo", "echo is not supported"));
        }
        let mut plan = common_plan(&self.common, None, top > 0, top as usize)?;
        plan.first_stream = self.sampling_stream.unwrap_or(0);
        Ok(plan)
    }
}

/// A completion request's prompt: text to tokenise, or token ids as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A string, a list of exactly one string, token ids, or a list of exactly one list of ids.
/// Ids must be below `vocab`.
pub fn prompt_of(req: &CompletionRequest, vocab: usize) -> Result<Prompt, BadRequest> {
    let ids = |list: &[Value]| -> Option<Vec<u32>> {
        list.iter().map(|v| v.as_u64().filter(|&id| (id as usize) < vocab).map(|id| id as u32)).collect()
    };
    let bad = || {
        BadRequest::new(
            "prompt",
            format!(
                "expected a string, token ids below the vocabulary size {vocab}, or a list of exactly one of either"
            ),
        )
    };
    match &req.prompt {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(list) if list.len() == 1 && list[0].is_string() => {
            Ok(Prompt::Text(list[0].as_str().unwrap_or_default().to_string()))
        }
        Value::Array(list) if list.len() == 1 && list[0].is_array() => {
            list[0].as_array().and_then(|inner| ids(inner)).map(Prompt::Ids).ok_or_else(bad)
        }
        Value::Array(list) if !list.is_empty() => ids(list).map(Prompt::Ids).ok_or_else(bad),
        _ => Err(bad()),
    }
}
