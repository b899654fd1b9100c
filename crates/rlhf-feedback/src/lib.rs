//! Preference feedback: K distinct candidates per prompt sampled from a policy for rankers
//! (`candidates.rs`), an LLM judge's pairwise verdicts behind any OpenAI-compatible endpoint
//! (`judge/`, RLAIF), and Constitutional AI's critique → revision loop (`constitution.rs`). Their pairs have the shape of the human labels' pairs export
//! (`rlhf-server`'s labelling app), so every preference source feeds `rlhf reward` and
//! `rlhf dpo` alike.

pub mod candidates;
pub mod constitution;
pub mod judge;
