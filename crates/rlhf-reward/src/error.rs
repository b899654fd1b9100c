//! Errors of reward sources: each names the model, file or setting to fix.

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The sandbox itself failed (cannot start the interpreter, cannot make its directory): not a
    /// verdict on the program.
    #[error("sandbox: {0}")]
    Sandbox(String),
}

pub type Result<T> = std::result::Result<T, RewardError>;
