//! Evaluation of policies (`policy.rs`: models side by side on held-out prompts, against a
//! baseline) and reports of training and evaluation runs: `report.html` with every run's curves
//! drawn as inline SVG (no scripts, no CDN, opens from disk) and the evaluation tables.

pub mod metrics;
pub mod policy;
pub mod report;
pub mod significance;
pub mod svg;

pub use report::{load_eval, load_run, render, EvalTable, Run};
