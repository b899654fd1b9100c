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
    /// The endpoint failed: an error status, timeouts or transport failures after the retries,
    /// or a reply that is not a chat completion.
    #[error(transparent)]
    Client(#[from] rlhf_openai::ClientError),
    /// The reply cache cannot be read or written; `location` is the path or path:line.
    #[error("{location}: {message}")]
    Cache { location: String, message: String },
}

pub type Result<T> = std::result::Result<T, JudgeError>;
