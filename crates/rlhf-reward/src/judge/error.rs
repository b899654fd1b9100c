//! Errors of the LLM judge. Each names what to fix: the input line and field, the endpoint and
//! what it answered, or the cache file. None carries the API key (the client scrubs it from
//! anything a server echoes back).

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// A bad setting (URL, concurrency, ...).
    #[error("{0}")]
    Config(String),
    /// An input line that is not a candidate set or a pair; `location` is path:line.
    #[error("{location}: field `{field}`: {message}")]
    Input { location: String, field: String, message: String },
    /// The input file itself cannot be read.
    #[error("{path}: {message}")]
    Read { path: String, message: String },
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
    /// The reply cache cannot be read or written; `location` is the path or path:line.
    #[error("{location}: {message}")]
    Cache { location: String, message: String },
}

pub type Result<T> = std::result::Result<T, JudgeError>;
