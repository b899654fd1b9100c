//! Human preference labels: the queue of prompts with K responses each (SQLite), annotators and
//! their rankings, agreement statistics (Cohen's κ, Krippendorff's α) and the export to the pair
//! and ranking formats `rlhf reward` reads — the same pair shape the LLM judge writes. The web
//! app annotators rank in is `rlhf_server::label`.

pub mod agreement;
pub mod db;
pub mod error;
pub mod export;

pub use db::{
    prompt_text, Allocation, Annotator, Decision, LabelDb, NewItem, NewResponse, Role, StoredSubmission, Task,
};
pub use error::LabelError;
