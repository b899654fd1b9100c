//! `rlhf-train`: machinery every trainer composes (the optimiser for now; schedules,
//! checkpoints and metrics follow with the trainers).

pub mod optim;

pub use optim::{AdamW, AdamWConfig};
