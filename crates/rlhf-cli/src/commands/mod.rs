//! One module per command, grouped as the README's command table is: training (and the data it
//! trains on), feedback (sampling candidates, judges, human labels), evaluation, model
//! utilities, benchmarks. `rewards.rs` turns `[[rewards]]` tables into sources for the
//! trainers and `eval`.

pub mod bench;
pub mod eval;
pub mod feedback;
pub mod model;
pub mod rewards;
pub mod train;
