//! Errors of the data crate: each names the file (and where it applies, the record and field).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// One record of a dataset that cannot be used (with `on_bad_record = "fail"`).
    #[error(transparent)]
    Record(#[from] BadRecord),
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
}

impl DataError {
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::File { path: path.as_ref().to_path_buf(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;

/// Where a record came from, so any later error can point the user at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub path: PathBuf,
    pub index: RecordIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordIndex {
    /// 1-based line of a JSON-lines file, as editors number them.
    Line(usize),
    /// 0-based row of a Parquet file, as dataframe libraries number them.
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            RecordIndex::Line(line) => write!(f, "{}:{line}", self.path.display()),
            RecordIndex::Row(row) => write!(f, "{}:row {row}", self.path.display()),
        }
    }
}

/// A record that could not be turned into an example, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct BadRecord {
    pub location: Location,
    /// The column at fault, when one is.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field \"{field}\": {}", self.location, self.reason),
            None => write!(f, "{}: {}", self.location, self.reason),
        }
    }
}
