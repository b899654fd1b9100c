//! GGUF loading on small files written by the test: quantised tensors are dequantised exactly as
//! candle's GGML kernels define them, llama.cpp's Q/K permutation is undone, and bad files fail
//! with errors that name the file.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rlhf_model::gguf::permute_for_gguf;
use rlhf_model::{tiny, CausalLm, ModelConfig, Weights};
use std::collections::HashMap;
use std::path::Path;

/// Dimensions that are multiples of the 32-element quantisation blocks.
fn config() -> ModelConfig {
    ModelConfig {
        hidden_size: 64,
        intermediate_size: 96,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        tie_word_embeddings: false,
        rope_theta: 100_000.0,
        ..tiny::llama_config(64)
    }
}

fn gguf_name(hf: &str) -> (String, bool) {
    if hf == "model.embed_tokens.weight" {
        return ("token_embd.weight".into(), false);
    }
    if hf == "model.norm.weight" {
        return ("output_norm.weight".into(), false);
    }
    if hf == "lm_head.weight" {
        return ("output.weight".into(), false);
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, tail) = rest.split_once('.').unwrap();
    let name = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unexpected {other}"),
    };
    (format!("blk.{layer}.{name}"), true)
}

/// Writes `weights` as a llama-arch GGUF, cycling matrices through several quant types, and
/// returns the weights as they should load (quantised then dequantised).
fn write_gguf(cfg: &ModelConfig, weights: &Weights, path: &Path) -> Weights {
    let kinds = [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::F16, GgmlDType::F32];
    let mut names: Vec<&String> = weights.tensors.keys().collect();
    names.sort();
    let mut qtensors = vec![];
    let mut expected = HashMap::new();
    for (i, hf) in names.into_iter().enumerate() {
        let t = &weights.tensors[hf];
        let (gname, is_matrix) = gguf_name(hf);
        let kind = if t.rank() == 2 && is_matrix || hf.contains("embed") || hf.contains("lm_head") {
            kinds[i % kinds.len()]
        } else {
            GgmlDType::F32
        };
        let stored = if hf.ends_with("q_proj.weight") {
            permute_for_gguf(t, cfg.num_attention_heads).unwrap()
        } else if hf.ends_with("k_proj.weight") {
            permute_for_gguf(t, cfg.num_key_value_heads).unwrap()
        } else {
            t.clone()
        };
        let q = QTensor::quantize(&stored, kind).unwrap();
        // What the HF-order tensor should be after loading: dequantise, then undo the permutation.
        let deq = q.dequantize(&Device::Cpu).unwrap();
        let back = if hf.ends_with("q_proj.weight") || hf.ends_with("k_proj.weight") {
            let heads = if hf.ends_with("q_proj.weight") { cfg.num_attention_heads } else { cfg.num_key_value_heads };
            let (rows, cols) = deq.dims2().unwrap();
            deq.reshape((heads, rows / heads / 2, 2, cols))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((rows, cols))
                .unwrap()
        } else {
            deq
        };
        expected.insert(hf.clone(), back);
        qtensors.push((gname, q));
    }
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(cfg.num_hidden_layers as u32)),
        ("llama.context_length", Value::U32(cfg.max_position_embeddings as u32)),
        ("llama.embedding_length", Value::U32(cfg.hidden_size as u32)),
        ("llama.feed_forward_length", Value::U32(cfg.intermediate_size as u32)),
        ("llama.attention.head_count", Value::U32(cfg.num_attention_heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(cfg.num_key_value_heads as u32)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(cfg.norm_eps as f32)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    Weights { tensors: expected }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn quantised_gguf_loads_as_dequantised_hf_weights() {
    let cfg = config();
    let w = tiny::random_weights(&cfg, 1, 0.1, DType::F32).unwrap();
    let path = tmp("tiny.gguf");
    let expected = write_gguf(&cfg, &w, &path);
    let loaded = rlhf_model::weights::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.config.num_key_value_heads, 2);
    assert_eq!(loaded.config.vocab_size, 64);
    assert!(!loaded.config.tie_word_embeddings);
    assert_eq!(loaded.config.eos_token_ids, vec![2]);
    assert_eq!(loaded.weights.tensors.len(), expected.tensors.len());
    for (name, t) in &expected.tensors {
        let got = &loaded.weights.tensors[name];
        let d = (got - t).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{name} differs after GGUF round trip");
    }
    // Quantisation error is small, so the permutation was undone (a wrong order would be O(1)).
    let q = &loaded.weights.tensors["model.layers.0.self_attn.q_proj.weight"];
    let orig = &w.tensors["model.layers.0.self_attn.q_proj.weight"];
    let err = (q - orig).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 0.02, "q_proj mean abs error {err}");
    // The model built from the GGUF equals the model built from the expected HF weights.
    let a = CausalLm::new(loaded.config.clone(), loaded.weights).unwrap();
    let b = CausalLm::new(cfg, expected).unwrap();
    let ids = Tensor::new(&[[1u32, 7, 9, 30, 2]], &Device::Cpu).unwrap();
    let mask = Tensor::ones_like(&ids).unwrap();
    let d = rlhf_model::gradcheck::max_abs_diff(
        &a.forward(&ids, &mask, None).unwrap(),
        &b.forward(&ids, &mask, None).unwrap(),
    )
    .unwrap();
    assert_eq!(d, 0.0);
}

/// A hand-made GGUF v3 header with one tensor of an unknown type id.
fn gguf_with_unknown_type(path: &Path) {
    let mut b: Vec<u8> = vec![];
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(0x46554747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    s(&mut b, "token_embd.weight");
    b.extend(1u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(99u32.to_le_bytes()); // no such ggml type
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 128, 0);
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_gguf_files_are_reported_with_their_path() {
    let path = tmp("unknown-type.gguf");
    gguf_with_unknown_type(&path);
    let err = CausalLm::load(&path, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("unknown-type.gguf") && err.to_lowercase().contains("dtype"), "{err}");

    let path = tmp("not-gguf.gguf");
    std::fs::write(&path, b"definitely not a gguf file").unwrap();
    let err = CausalLm::load(&path, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("not-gguf.gguf") && err.contains("not a readable GGUF"), "{err}");

    // A valid file truncated in the middle of its tensor data.
    let cfg = config();
    let w = tiny::random_weights(&cfg, 2, 0.1, DType::F32).unwrap();
    let full = tmp("full.gguf");
    write_gguf(&cfg, &w, &full);
    let bytes = std::fs::read(&full).unwrap();
    let cut = tmp("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = CausalLm::load(&cut, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("truncated.gguf") && err.contains("tensor"), "{err}");
}

/// Mutated GGUF files (header counts, string lengths, shapes, offsets, truncations) are errors
/// naming the file, never a panic or an unbounded allocation. (Seed 924 gave a tensor a zero
/// dimension, which candle's reader turned into a misaligned slice: undefined behaviour.)
#[test]
fn fuzzed_gguf_files_never_panic() {
    use rlhf_model::fuzz::{cases, Mutator};
    let cfg = config();
    let w = rlhf_model::tiny::random_weights(&cfg, 5, 0.1, DType::F32).unwrap();
    let path = tmp("fuzz-base.gguf");
    write_gguf(&cfg, &w, &path);
    let valid = std::fs::read(&path).unwrap();
    let case_path = tmp("fuzz-case.gguf");
    for seed in 0..cases(1000) as u64 {
        let bytes = Mutator::new(seed).mutate(&valid);
        std::fs::write(&case_path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| CausalLm::load(&case_path, DType::F32, &Device::Cpu).map(|_| ()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => assert!(e.to_string().contains("fuzz-case.gguf"), "seed {seed}: error without the file: {e}"),
            Err(_) => panic!("seed {seed}: loading a mutated GGUF panicked"),
        }
    }
}
