//! `rlhf bench` (`bench.rs`: kernels, decoding, and the trainer steps of `trainers.rs` and
//! `rl.rs`).

#[allow(clippy::module_inception)]
pub mod bench;
pub mod rl;
pub mod trainers;
