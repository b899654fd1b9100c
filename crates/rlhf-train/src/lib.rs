//! `rlhf-train`: the machinery every trainer composes — optimiser, schedules, gradient
//! accumulation and clipping, checkpoints, metrics, the training loop — and the offline
//! objectives (SFT, reward model, DPO), and the online ones (rollout, GRPO, PPO).

pub mod advantage;
pub mod aggregate;
pub mod checkpoint;
pub mod dpo;
pub mod error;
pub mod grad_accum;
pub mod grpo;
pub mod kl;
pub mod metric_keys;
pub mod metrics;
pub mod online;
pub mod optim;
pub mod policy_loss;
pub mod ppo;
pub mod raft;
pub mod remote;
pub mod reward;
pub mod rollout;
pub mod schedule;
pub mod sft;
pub mod stats;
pub mod tensorboard;
pub mod trainer;

pub use error::{Result, TrainError};
pub use metrics::{MetricsError, MetricsLogger};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{train, Objective, PrecisionChoice, RunOptions, StepReport, TrainConfig};
