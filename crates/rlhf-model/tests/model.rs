//! Model-level invariants on tiny models built in the test: gradients, fused vs composed,
//! KV cache, padding invariance, sampler logprobs, HF round trip.

use candle_core::{DType, Device, Tensor, Var};
use rlhf_model::gradcheck::check_model_gradients;
use rlhf_model::{generate, tiny, token_logprobs, CausalLm, GenerationConfig, Kernels, ModelConfig, SamplingParams};

const V: usize = 40;

fn model(cfg: ModelConfig, dtype: DType, seed: u64) -> CausalLm {
    let w = tiny::random_weights(&cfg, seed, 0.3, dtype).unwrap();
    CausalLm::new(cfg, w).unwrap()
}

fn batch(rows: &[&[u32]]) -> (Tensor, Tensor) {
    let (ids, mask) = rlhf_model::generate::left_pad(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), 0);
    let t = ids[0].len();
    (
        Tensor::from_vec(ids.concat(), (rows.len(), t), &Device::Cpu).unwrap(),
        Tensor::from_vec(mask.concat(), (rows.len(), t), &Device::Cpu).unwrap(),
    )
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    rlhf_model::gradcheck::max_abs_diff(a, b).unwrap()
}

fn configs() -> Vec<(&'static str, ModelConfig)> {
    vec![("llama", tiny::llama_config(V)), ("qwen2", tiny::qwen2_config(V)), ("gpt2", tiny::gpt2_config(V))]
}

/// A scalar that depends on every logit of every real position.
fn loss(m: &CausalLm, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let lp = token_logprobs(m, ids, mask, 0.9)?; // [B, T-1]
    let w = Tensor::arange(1.0, 1.0 + lp.elem_count() as f64, &Device::Cpu)?.reshape(lp.shape())?;
    let m2 = mask.narrow(1, 1, mask.dim(1)? - 1)?.to_dtype(DType::F64)?;
    let logits = m.forward(ids, mask, None)?;
    let extra = (logits.sqr()?.broadcast_mul(&mask.to_dtype(DType::F64)?.unsqueeze(2)?)?.sum_all()? * 1e-3)?;
    (lp * w)?.mul(&m2)?.sum_all()? + extra
}

#[test]
fn every_parameter_gets_a_correct_gradient() {
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7], &[4, 8, 2]]);
    for (name, cfg) in configs() {
        for kernels in [Kernels::Fused, Kernels::Composed] {
            let base = model(cfg.clone(), DType::F64, 3).with_kernels(kernels);
            let (m, vars) = base.trainable().unwrap();
            let vars: Vec<(String, Var)> = vars;
            let report = check_model_gradients(&m, &vars, &|| loss(&m, &ids, &mask), 1e-5, 6).unwrap();
            // f64 central differences on a loss of magnitude ~10²: round-off alone reaches ~1e-6 relative
            // on the smallest gradients; a wrong backward is off by O(1).
            assert!(report.worst_rel_err < 1e-5, "{name} {kernels:?}: {report:?}");
            assert!(report.checked >= vars.len(), "{name}: checked {} of {} vars", report.checked, vars.len());
        }
    }
}

/// Recomputing each fused layer's activations in the backward pass runs the same arithmetic:
/// every gradient is identical bit for bit.
#[test]
fn activation_checkpointing_gives_the_same_gradients_bit_for_bit() {
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7], &[4, 8, 2]]);
    for cfg in [tiny::llama_config(V), tiny::qwen2_config(V)] {
        let (m, vars) = model(cfg, DType::F64, 4).trainable().unwrap();
        let grads = |on: bool| {
            m.set_activation_checkpointing(on);
            m.zero_grad();
            let store = loss(&m, &ids, &mask).unwrap().backward().unwrap();
            let g = m.grads(&store);
            vars.iter()
                .map(|(n, v)| g.get(n, v).unwrap().unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
                .collect::<Vec<_>>()
        };
        let (kept, recomputed) = (grads(false), grads(true));
        assert_eq!(kept.len(), vars.len());
        assert!(kept == recomputed, "checkpointing changed a gradient");
    }
}

#[test]
fn fused_path_equals_composed_path_in_f32() {
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7, 11, 13], &[4, 8, 2]]);
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 5);
        let fused = m.forward(&ids, &mask, None).unwrap();
        let composed = m.detached().unwrap().with_kernels(Kernels::Composed).forward(&ids, &mask, None).unwrap();
        let d = max_abs(&fused, &composed);
        assert!(d <= 1e-5, "{name}: fused vs composed logits differ by {d}");
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 7);
        let (ids, mask) = batch(&[&[1, 5, 9, 3, 7, 11], &[4, 8, 2, 6]]);
        let full = m.forward(&ids, &mask, None).unwrap(); // [B, T, V]
        let t = ids.dim(1).unwrap();
        let mut cache = m.new_cache(2);
        let mut steps = vec![];
        // Prefill 3 tokens, then one at a time (also exercises buffer growth).
        let pre = m.forward(&ids.narrow(1, 0, 3).unwrap(), &mask.narrow(1, 0, 3).unwrap(), Some(&mut cache)).unwrap();
        steps.push(pre);
        for i in 3..t {
            let step =
                m.forward(&ids.narrow(1, i, 1).unwrap(), &mask.narrow(1, 0, i + 1).unwrap(), Some(&mut cache)).unwrap();
            steps.push(step);
        }
        let incremental = Tensor::cat(&steps, 1).unwrap();
        let d = max_abs(&full, &incremental);
        assert!(d <= 1e-5, "{name}: cached vs full logits differ by {d}");
    }
}

#[test]
fn greedy_generation_with_cache_matches_argmax_of_full_forward() {
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 11);
        let prompts = vec![vec![1u32, 5, 9], vec![4u32, 8, 2, 6, 3]];
        let g = GenerationConfig {
            max_new_tokens: 8,
            sampling: SamplingParams::greedy(),
            eos_token_ids: vec![],
            pad_token_id: 0,
        };
        let out = generate(&m, &prompts, &g, None, &mut |_| {}).unwrap();
        for (row, prompt) in prompts.iter().enumerate() {
            // Re-derive each token by a full forward over the growing sequence, without cache.
            let mut seq = prompt.clone();
            for _ in 0..8 {
                let ids = Tensor::new(seq.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let mask = Tensor::ones_like(&ids).unwrap();
                let logits = m.forward(&ids, &mask, None).unwrap();
                let last = logits.squeeze(0).unwrap().get(seq.len() - 1).unwrap();
                seq.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
            }
            assert_eq!(&seq[prompt.len()..], out.response_ids[row].as_slice(), "{name} row {row}");
        }
    }
}

#[test]
fn rows_with_their_own_sampling_and_limits_match_running_alone() {
    use rlhf_model::{generate_rows, FinishReason, RowSpec};
    let m = model(tiny::llama_config(V), DType::F32, 12);
    let warm = SamplingParams { temperature: 0.9, top_k: None, top_p: Some(0.9), seed: 7 };
    let rows = vec![
        RowSpec {
            prompt: vec![1, 5, 9],
            sampling: SamplingParams::greedy(),
            stream: 0,
            max_new_tokens: 8,
            top_logprobs: 2,
        },
        RowSpec { prompt: vec![4, 8, 2, 6, 3], sampling: warm.clone(), stream: 3, max_new_tokens: 3, top_logprobs: 0 },
        RowSpec { prompt: vec![7, 7], sampling: warm, stream: 1, max_new_tokens: 5, top_logprobs: 4 },
    ];
    let together = generate_rows(&m, &rows, &[], 0, None, &mut |_| {}).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let alone = generate_rows(&m, std::slice::from_ref(row), &[], 0, None, &mut |_| {}).unwrap();
        assert_eq!(together.response_ids[i], alone.response_ids[0], "row {i}: batching changed the tokens");
        assert_eq!(together.response_ids[i].len(), row.max_new_tokens, "row {i} stops at its own limit");
        assert_eq!(together.finish[i], FinishReason::Length);
        let d = together.response_logprobs[i]
            .iter()
            .zip(&alone.response_logprobs[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-5, "row {i}: logprobs differ by {d}");
        let top = &together.response_top_logprobs[i];
        if row.top_logprobs == 0 {
            assert!(top.is_empty(), "row {i} asked for no alternatives");
            continue;
        }
        assert_eq!(top.len(), row.max_new_tokens, "row {i}: one list per generated token");
        for (t, (alts, (&tok, &lp))) in
            top.iter().zip(together.response_ids[i].iter().zip(&together.response_logprobs[i])).enumerate()
        {
            assert_eq!(alts.len(), row.top_logprobs);
            assert!(alts.windows(2).all(|w| w[0].1 >= w[1].1), "row {i} token {t}: most likely first");
            if row.sampling.temperature == 0.0 {
                assert_eq!(alts[0].0, tok, "row {i} token {t}: greedy picks the top alternative");
            }
            if let Some(&(_, alt_lp)) = alts.iter().find(|a| a.0 == tok) {
                assert!((alt_lp - lp).abs() <= 1e-6, "row {i} token {t}: same distribution as the logprob");
            }
        }
    }
}

/// Rows that share a prompt (a GRPO group) prefill it once and copy its cache; each row still
/// samples what it samples alone, on every family.
#[test]
fn rows_sharing_a_prompt_sample_what_they_sample_alone() {
    use rlhf_model::{generate_rows, RowSpec};
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 21);
        let warm = SamplingParams { temperature: 1.0, top_k: None, top_p: None, seed: 5 };
        let spec = |prompt: &[u32], stream| RowSpec {
            prompt: prompt.to_vec(),
            sampling: warm.clone(),
            stream,
            max_new_tokens: 6,
            top_logprobs: 0,
        };
        let (a, b): (&[u32], &[u32]) = (&[3, 1, 4, 1, 5], &[9, 2]);
        let rows = vec![spec(a, 0), spec(b, 1), spec(a, 2), spec(a, 3), spec(b, 4)];
        let together = generate_rows(&m, &rows, &[], 0, None, &mut |_| {}).unwrap();
        let distinct: std::collections::HashSet<&Vec<u32>> = together.response_ids.iter().collect();
        assert!(distinct.len() > 2, "{name}: the streams sample different responses");
        for (i, row) in rows.iter().enumerate() {
            let alone = generate_rows(&m, std::slice::from_ref(row), &[], 0, None, &mut |_| {}).unwrap();
            assert_eq!(together.response_ids[i], alone.response_ids[0], "{name} row {i}: tokens");
            let d = together.response_logprobs[i]
                .iter()
                .zip(&alone.response_logprobs[0])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-5, "{name} row {i}: logprobs differ by {d}");
        }
    }
}

#[test]
fn padding_does_not_change_logprobs() {
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 13);
        let seq: &[u32] = &[4, 8, 2, 6, 3];
        let (alone_ids, alone_mask) = batch(&[seq]);
        let alone = token_logprobs(&m, &alone_ids, &alone_mask, 1.0).unwrap();
        let (ids, mask) = batch(&[&[1, 5, 9, 3, 7, 11, 13, 12, 2], seq]);
        let padded = token_logprobs(&m, &ids, &mask, 1.0).unwrap();
        let n = seq.len() - 1;
        let t = ids.dim(1).unwrap() - 1;
        let tail = padded.get(1).unwrap().narrow(0, t - n, n).unwrap();
        let d = max_abs(&alone.squeeze(0).unwrap(), &tail);
        assert!(d <= 1e-5, "{name}: padded vs alone logprobs differ by {d}");
    }
}

#[test]
fn sampler_logprobs_equal_recomputed_logprobs() {
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 17);
        let prompts = vec![vec![1u32, 5, 9], vec![4u32, 8, 2, 6, 3], vec![7u32]];
        let g = GenerationConfig {
            max_new_tokens: 10,
            sampling: SamplingParams { temperature: 0.7, top_k: None, top_p: None, seed: 42 },
            eos_token_ids: vec![2, 3],
            pad_token_id: 0,
        };
        let out = generate(&m, &prompts, &g, None, &mut |_| {}).unwrap();
        let n = out.response_mask.dim(1).unwrap();
        let recomputed = rlhf_model::token_logprobs_tail(&m, &out.sequences, &out.attention_mask, 0.7, n).unwrap();
        let rmask = out.response_mask.to_dtype(DType::F32).unwrap();
        let d = max_abs(&(recomputed * &rmask).unwrap(), &out.logprobs);
        assert!(d <= 1e-5, "{name}: sampler vs recomputed logprobs differ by {d}");
        // The response mask covers generated tokens up to and including the first EOS.
        for (row, ids) in out.response_ids.iter().enumerate() {
            if let Some(pos) = ids.iter().position(|t| [2, 3].contains(t)) {
                assert_eq!(pos + 1, ids.len(), "{name}: row {row} continued after EOS");
            }
            let ones = out.response_mask.get(row).unwrap().sum_all().unwrap().to_scalar::<u32>().unwrap();
            assert_eq!(ones as usize, ids.len());
        }
    }
}

#[test]
fn same_seed_same_samples_and_rows_independent_of_batch() {
    let m = model(tiny::llama_config(V), DType::F32, 19);
    let g = GenerationConfig {
        max_new_tokens: 6,
        sampling: SamplingParams { temperature: 1.0, top_k: Some(10), top_p: Some(0.9), seed: 5 },
        eos_token_ids: vec![],
        pad_token_id: 0,
    };
    let a = generate(&m, &[vec![1, 2, 3], vec![4, 5]], &g, None, &mut |_| {}).unwrap();
    let b = generate(&m, &[vec![1, 2, 3], vec![4, 5]], &g, None, &mut |_| {}).unwrap();
    assert_eq!(a.response_ids, b.response_ids);
    let alone = generate(&m, &[vec![1, 2, 3]], &g, None, &mut |_| {}).unwrap();
    assert_eq!(alone.response_ids[0], a.response_ids[0]);
}

#[test]
fn hf_folder_round_trip_gives_identical_logits() {
    let dir = std::env::temp_dir().join(format!("rlhf-roundtrip-{}", std::process::id()));
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7], &[4, 8, 2]]);
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 23);
        let path = dir.join(name);
        m.save_hf(&path).unwrap();
        let back = CausalLm::load(&path, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(back.config(), m.config(), "{name}");
        let d = max_abs(&m.forward(&ids, &mask, None).unwrap(), &back.forward(&ids, &mask, None).unwrap());
        assert_eq!(d, 0.0, "{name}: logits changed after save/load");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sharded_safetensors_load_like_a_single_file() {
    let dir = std::env::temp_dir().join(format!("rlhf-sharded-{}", std::process::id()));
    let cfg = tiny::qwen2_config(V);
    let m = model(cfg, DType::F32, 29);
    m.save_hf(&dir).unwrap();
    // Split model.safetensors into two shards with an index, as HF does for large models.
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    let a: Vec<&String> = names.iter().step_by(2).copied().collect();
    let b: Vec<&String> = names.iter().skip(1).step_by(2).copied().collect();
    for (file, part) in [("model-00001-of-00002.safetensors", &a), ("model-00002-of-00002.safetensors", &b)] {
        let shard: std::collections::HashMap<String, Tensor> =
            part.iter().map(|n| ((*n).clone(), all[*n].clone())).collect();
        candle_core::safetensors::save(&shard, dir.join(file)).unwrap();
        for n in part.iter() {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let back = CausalLm::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let (ids, mask) = batch(&[&[1, 5, 9, 3]]);
    assert_eq!(max_abs(&m.forward(&ids, &mask, None).unwrap(), &back.forward(&ids, &mask, None).unwrap()), 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fused_layers_accumulate_weight_gradients_across_micro_batches() {
    let base = model(tiny::qwen2_config(V), DType::F64, 31);
    let (m, vars) = base.trainable().unwrap();
    let rows: [&[u32]; 2] = [&[1, 5, 9, 3, 7], &[4, 8, 2]];
    let loss_of = |r: &[&[u32]]| {
        let (ids, mask) = batch(r);
        let lp = token_logprobs(&m, &ids, &mask, 1.0).unwrap();
        // A token counts when it and its context are real (the first real token has no context).
        let t = mask.dim(1).unwrap();
        let m2 = (mask.narrow(1, 1, t - 1).unwrap() * mask.narrow(1, 0, t - 1).unwrap()).unwrap();
        (lp * m2.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap()
    };
    let name = "model.layers.1.mlp.down_proj.weight";
    let var = &vars.iter().find(|(n, _)| n == name).unwrap().1;
    // Whole batch (the second row is left-padded inside it).
    m.zero_grad();
    let store = loss_of(&rows).backward().unwrap();
    assert!(store.get(var.as_tensor()).is_none(), "fused layers keep weight gradients out of the GradStore");
    let whole = m.grads(&store).get(name, var).unwrap().unwrap();
    // Two micro-batches of one row each, accumulated without zeroing in between.
    m.zero_grad();
    let s1 = loss_of(&rows[..1]).backward().unwrap();
    let s2 = loss_of(&rows[1..]).backward().unwrap();
    let _ = (&s1, &s2);
    let accumulated = m.grads(&s2).get(name, var).unwrap().unwrap();
    let d = max_abs(&whole, &accumulated);
    assert!(d < 1e-12, "micro-batch accumulation differs by {d}");
    m.zero_grad();
    assert!(m.grads(&s2).get(name, var).unwrap().is_none());
}

#[test]
fn logprobs_at_chosen_positions_equal_the_full_table() {
    for (name, cfg) in configs() {
        let m = model(cfg, DType::F32, 11);
        let (ids, mask) = batch(&[&[3, 4, 5, 6, 7], &[8, 9, 10]]);
        let full = token_logprobs(&m, &ids, &mask, 0.7).unwrap().to_vec2::<f32>().unwrap(); // [B, T-1]
        let targets = [(0usize, 1usize), (0, 4), (1, 3), (1, 4)];
        let at = rlhf_model::token_logprobs_at(&m, &ids, &mask, 0.7, &targets).unwrap().to_vec1::<f32>().unwrap();
        for (k, &(r, t)) in targets.iter().enumerate() {
            assert!((at[k] - full[r][t - 1]).abs() < 1e-5, "{name}: ({r},{t}) {} vs {}", at[k], full[r][t - 1]);
        }
        assert!(rlhf_model::token_logprobs_at(&m, &ids, &mask, 0.7, &[(0, 0)]).is_err(), "position 0 has no context");
    }
}

/// Long prompts are prefilled in chunks; the chunks' keys and values in the cache and the last
/// chunk's logits equal one whole pass (padded rows, shared prompts and sliding windows included).
#[test]
fn chunked_prefill_samples_what_one_pass_samples() {
    use rlhf_model::{generate_rows_chunked, RowSpec};
    let mut windowed = tiny::llama_config(V);
    windowed.sliding_window = Some(3);
    for (name, cfg) in configs().into_iter().chain([("llama, window 3", windowed)]) {
        let m = model(cfg, DType::F32, 8);
        let warm = SamplingParams { temperature: 1.0, top_k: None, top_p: None, seed: 3 };
        let spec = |prompt: Vec<u32>, stream| RowSpec {
            prompt,
            sampling: warm.clone(),
            stream,
            max_new_tokens: 5,
            top_logprobs: 0,
        };
        let long: Vec<u32> = (0..23).map(|i| (i * 7 + 3) % 16 + 1).collect();
        let short: Vec<u32> = long[..9].to_vec();
        let rows = vec![spec(long.clone(), 0), spec(short, 1), spec(long, 2)];
        let whole = generate_rows_chunked(&m, &rows, &[], 0, None, &mut |_| {}, 1000).unwrap();
        for chunk in [1, 4, 7] {
            let chunked = generate_rows_chunked(&m, &rows, &[], 0, None, &mut |_| {}, chunk).unwrap();
            assert_eq!(chunked.response_ids, whole.response_ids, "{name}, chunks of {chunk}: tokens");
            let d = chunked
                .response_logprobs
                .iter()
                .flatten()
                .zip(whole.response_logprobs.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-5, "{name}, chunks of {chunk}: logprobs differ by {d}");
        }
    }
}

/// A cancelled generation stops between prefill chunks with an error saying how far it got.
#[test]
fn a_cancelled_prefill_stops_between_chunks() {
    use rlhf_model::{generate_rows_chunked, RowSpec, StopCondition};
    struct CancelAfter(std::cell::Cell<usize>);
    impl StopCondition for CancelAfter {
        fn should_stop(&self, _: usize, _: &[u32]) -> bool {
            false
        }
        fn cancelled(&self) -> bool {
            let left = self.0.get();
            self.0.set(left.saturating_sub(1));
            left == 0
        }
    }
    let (_, cfg) = configs().into_iter().next().unwrap();
    let m = model(cfg, DType::F32, 8);
    let row = RowSpec {
        prompt: (1..=20).collect(),
        sampling: SamplingParams { temperature: 0.0, top_k: None, top_p: None, seed: 0 },
        stream: 0,
        max_new_tokens: 3,
        top_logprobs: 0,
    };
    let stop = CancelAfter(std::cell::Cell::new(2));
    let err = generate_rows_chunked(&m, &[row], &[], 0, Some(&stop), &mut |_| {}, 5).err().unwrap().to_string();
    assert!(err.contains("cancelled during the prefill (10 of 20 prompt tokens done)"), "{err}");
}
