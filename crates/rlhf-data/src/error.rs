//! Errors of the data crate: each names the file (and where it applies, the record and field).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
}

impl DataError {
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::File { path: path.as_ref().to_path_buf(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
