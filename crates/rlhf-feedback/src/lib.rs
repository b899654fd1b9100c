//! Preference feedback, every source of it: human rankings in a label queue with agreement
//! statistics and the export to pairs (`labels/`), K distinct candidates per prompt sampled from
//! a policy for rankers (`candidates.rs`), an LLM judge's pairwise verdicts behind any
//! OpenAI-compatible endpoint (`judge/`, RLAIF), and Constitutional AI's critique → revision loop
//! (`constitution.rs`). All of them write pairs of one shape, so every source feeds
//! `rlhf reward` and `rlhf dpo` alike.

pub mod candidates;
pub mod constitution;
pub mod judge;
pub mod labels;
