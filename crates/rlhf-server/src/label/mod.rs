//! The human-labelling web app: pages and a JSON API over the label queue of
//! `rlhf_feedback::labels` (prompts with K responses, ranked by annotators), and a blocking
//! client of that API for `rlhf label simulate|bench` and the tests.

pub mod client;
pub mod server;

pub use server::{spawn, summary, RunningServer, ServerOptions, Summary};
