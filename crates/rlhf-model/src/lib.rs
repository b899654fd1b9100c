//! `rlhf-model`: the transformer side of `rlhf` — our own Llama-family and GPT-2 implementations
//! on candle, HF/GGUF weights IO, fused CPU ops with verified gradients, KV cache, sampling,
//! batched generation and the one per-token logprob function.

pub mod attention;
pub mod config;
pub mod decode;
pub mod default_model;
pub mod error;
pub mod fuzz;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod gradcheck;
pub mod grads;
pub mod heads;
pub mod io;
pub mod kv_cache;
pub mod llama;
mod llama_layer;
pub mod logprobs;
pub mod lora;
pub mod model;
pub mod ops;
pub mod packing;
pub mod sampling;
pub mod tiny;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use generate::{
    generate, generate_rows, generate_rows_chunked, FinishReason, Generated, GenerationConfig, RowSpec, StopCondition,
    PREFILL_CHUNK,
};
pub use logprobs::{token_logprobs, token_logprobs_and_states_at, token_logprobs_at, token_logprobs_tail};
pub use lora::LoraConfig;
pub use model::CausalLm;
pub use ops::Kernels;
pub use packing::{last_states_packed, response_logprobs_packed, response_states_packed, PackedRows};
pub use sampling::{top_logprobs, SamplingParams};
pub use weights::Weights;
