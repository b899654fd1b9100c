//! `rlhf-data`: tokenizers and chat templates (datasets and collation follow).

pub mod chat;
pub mod error;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use error::{DataError, Result};
pub use tokenizer::{StopStrings, Tokenizer};
