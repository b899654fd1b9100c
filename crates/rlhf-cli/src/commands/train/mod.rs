//! The training commands, `rlhf data` (the datasets they train on) and `iterate` (rounds of
//! feedback and training); `common.rs` and `rl.rs` hold what they share.

pub mod common;
pub mod data;
pub mod dpo;
pub mod grpo;
pub mod iterate;
pub mod ppo;
pub mod raft;
pub mod reward;
pub mod rl;
pub mod sft;
