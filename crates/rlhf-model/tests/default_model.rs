//! Correctness against a peer: SmolLM2-135M-Instruct (the default model, fetched by
//! scripts/fetch-default-model.sh) against per-token logprobs and greedy continuations computed
//! by Python transformers on the same GGUF (fixtures/smollm2_transformers.json, written by
//! scripts/make_transformers_fixture.py).

use candle_core::{DType, Device, Tensor};
use rlhf_model::{default_model, generate, token_logprobs, CausalLm, GenerationConfig, SamplingParams};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/smollm2_transformers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn default_model() -> CausalLm {
    let path = default_model::locate().unwrap_or_else(|msg| panic!("{msg}"));
    CausalLm::load(&path, DType::F32, &Device::Cpu).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn logprobs_match_transformers() {
    let m = default_model();
    let fx = fixture();
    for case in fx["logprobs"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mask = Tensor::ones_like(&t).unwrap();
        let ours = token_logprobs(&m, &t, &mask, 1.0).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let theirs: Vec<f64> = case["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(ours.len(), theirs.len());
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        eprintln!("{}: max |Δ logprob| = {worst:.2e} over {} tokens", case["name"], ours.len());
        assert!(worst <= 1e-3, "{}: max abs logprob difference {worst}", case["name"]);
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    let m = default_model();
    let fx = fixture();
    let cases = fx["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    // All prompts in one left-padded batch: padding must not change greedy choices.
    let cfg = GenerationConfig {
        max_new_tokens: 32,
        sampling: SamplingParams::greedy(),
        eos_token_ids: vec![2],
        pad_token_id: 0,
    };
    let out = generate(&m, &prompts, &cfg, None, &mut |_| {}).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let theirs = ids(&c["new_ids"]);
        let margins: Vec<f64> =
            c["top1_top2_margins"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        // Compare up to the first near-tie (margin < 0.01 nats), where float rounding may flip.
        let n = margins.iter().position(|&g| g < 0.01).unwrap_or(theirs.len()).min(theirs.len());
        assert!(n >= 6, "case {i}: too few decisive tokens to compare");
        assert_eq!(&out.response_ids[i][..n], &theirs[..n], "case {i}: {}", c["text"]);
    }
}
