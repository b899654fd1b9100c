//! Evaluation: policies on held-out prompts (`eval`, `verify`), reward models on held-out pairs
//! (`reward-eval`), and the HTML report of runs (`report`).

#[allow(clippy::module_inception)]
pub mod eval;
pub mod report;
pub mod reward_eval;
pub mod verify;
