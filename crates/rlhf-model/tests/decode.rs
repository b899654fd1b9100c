//! Decoding in bf16 precision (`decode.rs`): tokens after the prompt come from a bf16 copy of
//! the weights with a bf16 KV cache. Checked against the fp32 model on the same tokens, on
//! every Llama-family variant (biases, untied head, sliding window, left padding, rows that
//! stop early), and the copy must follow in-place weight updates.

use candle_core::DType;
use rlhf_model::ops::precision::{self, Precision};
use rlhf_model::weights::{self, Weights};
use rlhf_model::{generate, tiny, token_logprobs, CausalLm, GenerationConfig, ModelConfig, SamplingParams};

/// The weights rounded to bf16: the decoding copy then holds them exactly, so what is left
/// between the two precisions is the bf16 key/value cache and the prefill's bf16 products.
fn bf16_exact(w: &Weights) -> Weights {
    let tensors =
        w.tensors.iter().map(|(k, t)| (k.clone(), t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()));
    Weights { tensors: tensors.collect() }
}

fn model(cfg: &ModelConfig, seed: u64) -> CausalLm {
    let w = tiny::random_weights(cfg, seed, 0.08, DType::F32).unwrap();
    CausalLm::new(cfg.clone(), bf16_exact(&w)).unwrap()
}

fn sampling() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 12,
        sampling: SamplingParams { temperature: 1.0, top_k: None, top_p: None, seed: 7 },
        eos_token_ids: vec![2],
        pad_token_id: 0,
    }
}

/// Worst |sampler logprob − model logprob of the same token| over every generated token, the
/// model scoring the samples in precision `scored_in` (fp32, or bf16 as a trainer does).
fn worst_gap(m: &CausalLm, prompts: &[Vec<u32>], scored_in: Precision) -> (f32, usize) {
    let g = precision::with(Precision::Bf16, || generate(m, prompts, &sampling(), None, &mut |_| {}).unwrap());
    let lp32 = precision::with(scored_in, || token_logprobs(m, &g.sequences, &g.attention_mask, 1.0).unwrap());
    let n = g.response_mask.dim(1).unwrap();
    let lp32 = lp32.narrow(1, g.prompt_len - 1, n).unwrap().to_vec2::<f32>().unwrap();
    let mut worst = (0f32, 0);
    for (row, lps) in g.response_logprobs.iter().enumerate() {
        for (i, lp) in lps.iter().enumerate() {
            worst.0 = worst.0.max((lp - lp32[row][i]).abs());
            worst.1 += 1;
        }
    }
    worst
}

#[test]
fn bf16_decoding_follows_the_fp32_model_on_every_llama_variant() {
    let mut windowed = tiny::bf16_wide(tiny::llama_config(96));
    windowed.sliding_window = Some(5);
    let variants = [
        ("llama", tiny::bf16_wide(tiny::llama_config(96))),
        ("qwen2", tiny::bf16_wide(tiny::qwen2_config(96))),
        ("window 5", windowed),
    ];
    // Left padding: three prompt lengths in one batch.
    let prompts: Vec<Vec<u32>> = vec![(3..20).collect(), vec![5, 9, 11], (40..48).collect()];
    for (name, cfg) in variants {
        let m = model(&cfg, 3);
        assert!(precision::with(Precision::Bf16, || m.bf16_decoder().unwrap()).is_some(), "{name}: no decoder");
        let (worst, tokens) = worst_gap(&m, &prompts, Precision::Fp32);
        let (worst_bf16, _) = worst_gap(&m, &prompts, Precision::Bf16);
        eprintln!(
            "{name}: {tokens} tokens, sampler vs model logprobs within {worst:.2e} (fp32), {worst_bf16:.2e} (bf16)"
        );
        assert!(tokens > 20, "{name}: only {tokens} tokens generated");
        // bf16 operands (8 significant bits) move each product by ~2⁻⁹ of its size.
        assert!(worst < 2e-2, "{name}: bf16 decoding is {worst} nats away from the fp32 model");
        // Against the trainer's bf16 (whole sequences): the order of sums differs, and its
        // attention products of 16 terms stay fp32 where the cached keys and values are bf16.
        assert!(worst_bf16 < 2e-2, "{name}: bf16 decoding is {worst_bf16} nats away from the bf16 model");
    }
}

#[test]
fn fp32_and_other_families_decode_through_the_model() {
    let m = model(&tiny::bf16_wide(tiny::llama_config(96)), 3);
    assert!(precision::with(Precision::Fp32, || m.bf16_decoder().unwrap()).is_none());
    let cfg = tiny::gpt2_config(96);
    let g = CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 1, 0.08, DType::F32).unwrap()).unwrap();
    assert!(precision::with(Precision::Bf16, || g.bf16_decoder().unwrap()).is_none());
}

#[test]
fn the_decoding_copy_follows_in_place_updates() {
    let cfg = tiny::bf16_wide(tiny::llama_config(96));
    let (m, vars) = model(&cfg, 5).trainable().unwrap();
    let prompts = vec![(3..15).collect::<Vec<u32>>()];
    let first = precision::with(Precision::Bf16, || {
        let first = m.bf16_decoder().unwrap().unwrap();
        let again = m.bf16_decoder().unwrap().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "an unchanged model reuses its copy");
        first
    });
    let (before, _) = worst_gap(&m, &prompts, Precision::Bf16);
    // An optimiser-like in-place write: every weight scaled (norms included), then noted.
    for (_, v) in &vars {
        let scaled = (v.as_tensor() * 1.5).unwrap();
        v.set(&scaled.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
    }
    weights::note_in_place_update();
    // Generation picks up a fresh copy by itself: its samples follow the updated weights as the
    // model scores them (a stale copy is nats away: the logits scale by more than 1.5; larger
    // logits, larger bf16 gaps).
    let (after, _) = worst_gap(&m, &prompts, Precision::Bf16);
    eprintln!("sampler vs model logprobs within {before:.2e} before and {after:.2e} after the update");
    assert!(after < 5e-2, "after the update, bf16 decoding is {after} nats away from the model");
    let fresh = precision::with(Precision::Bf16, || m.bf16_decoder().unwrap().unwrap());
    assert!(!std::sync::Arc::ptr_eq(&first, &fresh), "the copy was not refreshed");
}
