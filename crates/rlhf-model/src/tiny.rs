//! Tiny randomly initialised models for tests and examples (no files, no network).

use crate::config::{Activation, Family, ModelConfig};
use crate::weights::{expected_shapes, Weights};
use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// A 2-layer Llama-family config with grouped-query attention (4 heads over 2 KV heads).
pub fn llama_config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        family: Family::Llama,
        model_type: "llama".into(),
        vocab_size,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 4,
        max_position_embeddings: 256,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: true,
        hidden_act: Activation::Silu,
        sliding_window: None,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        pad_token_id: Some(0),
    }
}

/// A Qwen2-style variant: q/k/v biases and an untied LM head.
pub fn qwen2_config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        model_type: "qwen2".into(),
        qkv_bias: true,
        tie_word_embeddings: false,
        rope_theta: 1e6,
        ..llama_config(vocab_size)
    }
}

/// A 2-layer GPT-2.
pub fn gpt2_config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        family: Family::Gpt2,
        model_type: "gpt2".into(),
        intermediate_size: 64,
        num_key_value_heads: 4,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        rope_theta: 0.0,
        hidden_act: Activation::GeluTanh,
        max_position_embeddings: 64,
        ..llama_config(vocab_size)
    }
}

/// `base` widened until every projection and the LM head sum at least 32 terms: the size at
/// which products take the bf16 path, for tests of bf16 precision.
pub fn bf16_wide(base: ModelConfig) -> ModelConfig {
    ModelConfig {
        hidden_size: 64,
        intermediate_size: 160,
        head_dim: 16,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        ..base
    }
}

/// Random weights: N(0, std²) matrices, norms ~1, small biases. Deterministic in `seed`.
pub fn random_weights(cfg: &ModelConfig, seed: u64, std: f64, dtype: DType) -> Result<Weights> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, std).expect("valid std");
    let mut tensors = HashMap::new();
    for (name, shape) in expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm") || name.contains("ln_");
        let data: Vec<f64> = (0..n)
            .map(|_| {
                let x = normal.sample(&mut rng);
                if is_norm && name.ends_with("weight") {
                    1.0 + x
                } else {
                    x
                }
            })
            .collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?);
    }
    Ok(Weights { tensors })
}
