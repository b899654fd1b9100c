//! Using and converting models: `generate`, `logprobs`, `serve` (the OpenAI-compatible server),
//! `convert`, and `merge` (LoRA adapters into their base).

pub mod convert;
pub mod generate;
pub mod logprobs;
pub mod merge;
pub mod serve;
