//! Errors of the model crate. Loading errors always name the file and what is wrong with it,
//! because the person reading them has to go and fix that file.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file is missing, unreadable or malformed.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A configuration value or argument that cannot work.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        ModelError::File { path: path.as_ref().to_path_buf(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
