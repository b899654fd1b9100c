//! An OpenAI-compatible endpoint for any model `rlhf` loads: the judge/teacher backend of the
//! AI-feedback commands, and a way to chat with a checkpoint from any OpenAI client.

pub mod engine;
pub mod server;
pub mod wire;

pub use server::{router, run, ServeOptions};
