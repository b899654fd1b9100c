//! The OpenAI-compatible wire format and its client, at the bottom of the crate graph so that
//! every side of it shares one definition: `rlhf serve` parses these requests, the LLM judge and
//! the constitution loop send them through [`client::ChatClient`].

pub mod client;
pub mod wire;

pub use client::{CallStats, ChatClient, ClientConfig, ClientError};
pub use wire::{ChatMessage, ChatRequest, Common, CompletionRequest};
