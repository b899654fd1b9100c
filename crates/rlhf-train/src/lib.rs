//! `rlhf-train`: machinery every trainer composes (optimiser, losses; schedules,
//! checkpoints and metrics follow with the trainers).

pub mod dpo;
pub mod metrics;
pub mod optim;
pub mod reward;
pub mod schedule;
pub mod tensorboard;

pub use metrics::{MetricsError, MetricsLogger};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::{LrSchedule, ScheduleKind};
