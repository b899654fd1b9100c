//! `rlhf-train`: the machinery every trainer composes — optimiser, schedules, gradient
//! accumulation and clipping, checkpoints, metrics, the training loop — and the offline
//! objectives (SFT, reward model, DPO).

pub mod checkpoint;
pub mod dpo;
pub mod error;
pub mod grad_accum;
pub mod metrics;
pub mod optim;
pub mod reward;
pub mod schedule;
pub mod sft;
pub mod tensorboard;
pub mod trainer;

pub use error::{Result, TrainError};
pub use metrics::{MetricsError, MetricsLogger};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{train, Objective, RunOptions, StepReport, TrainConfig};
