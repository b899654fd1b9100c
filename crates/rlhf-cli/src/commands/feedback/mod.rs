//! Feedback: candidates sampled from a policy (`collect`), AI judges (`judge`, `constitution`,
//! through `endpoint.rs`'s client flags) and the human labelling app (`label`).

pub mod collect;
pub mod constitution;
pub mod endpoint;
pub mod judge;
pub mod label;
pub mod label_bench;
