//! Errors of the training machinery: each names the file, step or setting to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error(
        "step {step}: {what} is not finite ({value}); stopped without writing a checkpoint \
         (lower the learning rate, check the data, or resume from the last checkpoint)"
    )]
    NonFinite { step: u64, what: String, value: f64 },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Data(#[from] rlhf_data::DataError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Dist(#[from] rlhf_dist::DistError),
}

impl TrainError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
