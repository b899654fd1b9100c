//! Human preference labelling: a queue of prompts with K responses each, ranked by annotators in a
//! web app, with agreement statistics and export to the preference formats `rlhf reward` reads.

pub mod agreement;
pub mod client;
pub mod db;
pub mod error;
pub mod export;
pub mod server;

pub use db::{
    prompt_text, Allocation, Annotator, Decision, LabelDb, NewItem, NewResponse, Role, StoredSubmission, Task,
};
pub use error::LabelError;
pub use server::{spawn, summary, RunningServer, ServerOptions, Summary};
