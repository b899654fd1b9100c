//! Errors of the labelling queue. Each names what was wrong so the API can answer with a 4xx
//! that tells the annotator (or their script) exactly what to fix.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{path}: {source}")]
    Db { path: PathBuf, source: rusqlite::Error },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("assignment {0} is not one of yours")]
    NotYours(i64),
    #[error("assignment {0} was already answered differently; answers are final")]
    AlreadySubmitted(i64),
    #[error("{0}")]
    Io(String),
}

impl LabelError {
    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> Self {
        LabelError::Db { path: path.to_path_buf(), source }
    }
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        LabelError::Invalid { field: field.to_string(), message: message.into() }
    }
}

pub type Result<T, E = LabelError> = std::result::Result<T, E>;
