//! `rlhf-train`: machinery every trainer composes (optimiser, losses; schedules,
//! checkpoints and metrics follow with the trainers).

pub mod dpo;
pub mod optim;
pub mod reward;

pub use optim::{AdamW, AdamWConfig};
