//! A blocking client for `POST {base}/chat/completions` with the retry policy a paid, rate-limited
//! API needs:
//! - timeouts, connection failures, 408, 429 and 5xx are retried with exponential backoff and jitter
//!   (a 429's `Retry-After` seconds replace the backoff, capped at `max_backoff`);
//! - any other status is final at once, with the server's own message (retrying a bad request
//!   only pays for the same answer again);
//! - a 200 whose body is not a chat completion is a protocol error, also not retried: the server
//!   did answer, and the cause (wrong URL, a proxy's page, an incompatible server) will not go away
//!   by resending.
//!
//! The API key is sent as a bearer token and scrubbed from every error message, in case a server
//! echoes it back.

use crate::wire::ChatRequest;
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where requests go and how hard to try.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API root, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; never printed.
    pub api_key: Option<String>,
    /// Per request, connection to last byte.
    pub timeout: Duration,
    /// Extra attempts after a timeout, connection error, 408, 429 or 5xx.
    pub max_retries: u32,
    /// First retry waits about this long (with jitter), doubling each time.
    pub backoff_base: Duration,
    pub max_backoff: Duration,
}

/// Why a request failed. None carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A bad setting (the URL).
    #[error("{0}")]
    Config(String),
    /// The endpoint answered with an error status (after retries for 408, 429 and 5xx).
    #[error("{endpoint}: HTTP {status} after {attempts} attempt(s): {message}")]
    Status { endpoint: String, status: u16, attempts: u32, message: String },
    /// No answer within the timeout, on every attempt.
    #[error(
        "{endpoint}: timed out after {timeout_s} s on each of {attempts} attempt(s) (raise the timeout or the retries)"
    )]
    Timeout { endpoint: String, timeout_s: f64, attempts: u32 },
    /// Connection refused, reset, DNS and other transport failures, after retries.
    #[error("{endpoint}: {message} (after {attempts} attempt(s))")]
    Transport { endpoint: String, attempts: u32, message: String },
    /// A 200 reply that is not a chat completion: not retried, since resending the same request
    /// to the same server would most likely get the same answer (and cost again).
    #[error("{endpoint}: not an OpenAI chat completion reply: {message}")]
    Protocol { endpoint: String, message: String },
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// How many requests went over the wire; shared by all worker threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Every HTTP request sent, retries included.
    pub http_calls: u64,
    /// Of those, the ones that repeated a failed attempt.
    pub retries: u64,
}

pub struct ChatClient {
    agent: ureq::Agent,
    endpoint: String,
    authorization: Option<String>,
    api_key: Option<String>,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    max_backoff: Duration,
    http_calls: AtomicU64,
    retries: AtomicU64,
}

/// Reads the wanted text from a chat-completion body, or says why it cannot.
pub type Extract = dyn Fn(&Value) -> std::result::Result<String, String> + Sync;

/// `choices[0].message.content`, the reply text.
fn message_content(v: &Value) -> std::result::Result<String, String> {
    match v.pointer("/choices/0/message/content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("choices[0].message.content is {}, not a string", kind(other))),
        None => Err("no choices[0].message.content".into()),
    }
}

/// Why one attempt failed, before it is known whether retries are left.
enum Failure {
    Retry { error: Retryable, wait: Option<Duration> },
    Final(ClientError),
}

enum Retryable {
    Status { status: u16, message: String },
    Timeout,
    Transport(String),
}

impl ChatClient {
    pub fn new(config: &ClientConfig) -> Result<Self> {
        let base = config.base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "endpoint URL {base:?} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)"
            )));
        }
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).user_agent("rlhf").build();
        let api_key = config.api_key.clone().filter(|k| !k.is_empty());
        Ok(ChatClient {
            agent,
            endpoint: format!("{base}/chat/completions"),
            authorization: api_key.as_ref().map(|k| format!("Bearer {k}")),
            api_key,
            timeout: config.timeout,
            max_retries: config.max_retries,
            backoff_base: config.backoff_base,
            max_backoff: config.max_backoff,
            http_calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn stats(&self) -> CallStats {
        CallStats { http_calls: self.http_calls.load(Ordering::Relaxed), retries: self.retries.load(Ordering::Relaxed) }
    }

    /// Sends one chat completion request and returns `choices[0].message.content`, retrying as
    /// the module describes.
    pub fn chat(&self, request: &ChatRequest) -> Result<String> {
        self.chat_with(request, &message_content)
    }

    /// Sends `request` with the retry policy; `extract` reads the wanted text from a 200's JSON
    /// (its `Err` is a protocol error: the server answered, but not what we can use), e.g. the
    /// judge's letter scores from the logprobs.
    pub fn chat_with(&self, request: &ChatRequest, extract: &Extract) -> Result<String> {
        let body = request.to_value();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.http_calls.fetch_add(1, Ordering::Relaxed);
            if attempts > 1 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let (error, wait) = match self.attempt(&body, attempts, extract) {
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry { error, wait }) => (error, wait),
            };
            if attempts > self.max_retries {
                return Err(self.give_up(error, attempts));
            }
            std::thread::sleep(wait.unwrap_or_else(|| self.backoff(attempts)).min(self.max_backoff));
        }
    }

    fn attempt(&self, body: &Value, attempts: u32, extract: &Extract) -> std::result::Result<String, Failure> {
        let mut request = self.agent.post(&self.endpoint);
        if let Some(auth) = &self.authorization {
            request = request.set("Authorization", auth);
        }
        match request.send_json(body) {
            Ok(response) => {
                let text = response.into_string().map_err(|e| Failure::Retry {
                    error: if is_timeout(&e) {
                        Retryable::Timeout
                    } else {
                        Retryable::Transport(format!("reading the reply: {e}"))
                    },
                    wait: None,
                })?;
                self.content(&text, extract).map_err(Failure::Final)
            }
            Err(ureq::Error::Status(status, response)) => {
                let wait = response.header("retry-after").and_then(parse_retry_after);
                let message = self.scrub(&server_message(&response.into_string().unwrap_or_default()));
                if status == 408 || status == 429 || status >= 500 {
                    Err(Failure::Retry { error: Retryable::Status { status, message }, wait })
                } else {
                    Err(Failure::Final(ClientError::Status {
                        endpoint: self.endpoint.clone(),
                        status,
                        attempts,
                        message,
                    }))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                use ureq::ErrorKind::*;
                let timed_out = std::error::Error::source(&t)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(is_timeout);
                // ureq's text starts with the URL, which the error names already.
                let text = t.to_string();
                let text = t.url().and_then(|u| text.strip_prefix(&format!("{u}: "))).unwrap_or(&text);
                let message = self.scrub(text);
                match t.kind() {
                    _ if timed_out => Err(Failure::Retry { error: Retryable::Timeout, wait: None }),
                    Dns | ConnectionFailed | Io | ProxyConnect => {
                        Err(Failure::Retry { error: Retryable::Transport(message), wait: None })
                    }
                    BadStatus | BadHeader => {
                        Err(Failure::Final(ClientError::Protocol { endpoint: self.endpoint.clone(), message }))
                    }
                    _ => Err(Failure::Final(ClientError::Transport {
                        endpoint: self.endpoint.clone(),
                        attempts,
                        message,
                    })),
                }
            }
        }
    }

    /// What `extract` reads from a 200 body.
    fn content(&self, body: &str, extract: &Extract) -> Result<String> {
        let protocol =
            |message: String| ClientError::Protocol { endpoint: self.endpoint.clone(), message: self.scrub(&message) };
        let v: Value = serde_json::from_str(body)
            .map_err(|e| protocol(format!("the body is not JSON ({e}): {}", snippet(body))))?;
        extract(&v).map_err(|why| protocol(format!("{why}: {}", snippet(body))))
    }

    fn give_up(&self, error: Retryable, attempts: u32) -> ClientError {
        let endpoint = self.endpoint.clone();
        match error {
            Retryable::Status { status, message } => ClientError::Status { endpoint, status, attempts, message },
            Retryable::Timeout => ClientError::Timeout { endpoint, timeout_s: self.timeout.as_secs_f64(), attempts },
            Retryable::Transport(message) => ClientError::Transport { endpoint, attempts, message },
        }
    }

    /// `backoff_base` × 2^(attempt−1), times a random factor in [0.5, 1): the jitter keeps worker
    /// threads that failed together from retrying together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let unit = (RandomState::new().build_hasher().finish() >> 11) as f64 / (1u64 << 53) as f64;
        self.backoff_base.mul_f64(exp * (0.5 + 0.5 * unit)).min(self.max_backoff)
    }

    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "<api key>"),
            None => text.to_string(),
        }
    }
}

/// A JSON value's kind, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and falls back to the backoff).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The human part of an error body: OpenAI's `error.message`, or `error` / `message` / `detail`
/// as other servers send them, else the body itself.
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for pointer in ["/error/message", "/error", "/message", "/detail"] {
            if let Some(Value::String(s)) = v.pointer(pointer) {
                return s.clone();
            }
        }
    }
    if body.trim().is_empty() {
        "(empty body)".into()
    } else {
        snippet(body)
    }
}

/// At most 300 characters of a body, for error messages.
fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &body[..at]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_and_retry_after() {
        assert_eq!(server_message(r#"{"error": {"message": "bad model", "type": "x"}}"#), "bad model");
        assert_eq!(server_message(r#"{"detail": "Not Found"}"#), "Not Found");
        assert_eq!(server_message(""), "(empty body)");
        assert_eq!(server_message("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert!(snippet(&"é".repeat(400)).chars().count() == 301);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let config = |url: &str| ClientConfig {
            base_url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_retries: 0,
            backoff_base: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        let c = ChatClient::new(&config("http://127.0.0.1:1/v1")).unwrap();
        for _ in 0..20 {
            let (first, third) = (c.backoff(1), c.backoff(3));
            assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(100), "{first:?}");
            assert!(third >= Duration::from_millis(200) && third < Duration::from_millis(400), "{third:?}");
            assert_eq!(c.backoff(20), Duration::from_millis(1000));
        }
        assert!(ChatClient::new(&config("localhost:8000")).is_err());
    }
}
