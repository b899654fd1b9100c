//! LoRA on tiny Llama-family models: starts at the base, switches off exactly, correct
//! gradients on both kernel paths and only for the adapters, PEFT save/load, merging.

use candle_core::{DType, Device, Tensor, Var};
use rlhf_model::gradcheck::{check_model_gradients, max_abs_diff};
use rlhf_model::{tiny, token_logprobs, CausalLm, Kernels, LoraConfig, ModelConfig};
use std::path::PathBuf;

const V: usize = 40;

fn model(cfg: ModelConfig, dtype: DType, seed: u64) -> CausalLm {
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.3, dtype).unwrap()).unwrap()
}

fn lora_cfg(r: usize, dropout: f64) -> LoraConfig {
    LoraConfig { r, alpha: 2.0 * r as f64, dropout, ..LoraConfig::default() }
}

fn batch(rows: &[&[u32]]) -> (Tensor, Tensor) {
    let (ids, mask) = rlhf_model::generate::left_pad(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), 0);
    let t = ids[0].len();
    (
        Tensor::from_vec(ids.concat(), (rows.len(), t), &Device::Cpu).unwrap(),
        Tensor::from_vec(mask.concat(), (rows.len(), t), &Device::Cpu).unwrap(),
    )
}

fn logits(m: &CausalLm) -> Tensor {
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7], &[4, 8, 2]]);
    m.forward(&ids, &mask, None).unwrap()
}

/// Gives every B (zero at init) deterministic non-zero values so the adapters change the output.
fn randomise_b(vars: &[(String, Var)], seed: u64) {
    for (k, (_, var)) in vars.iter().enumerate().filter(|(_, (n, _))| n.contains("lora_B")) {
        let n = var.elem_count();
        let data: Vec<f64> = (0..n).map(|i| 0.5 * ((i * 7 + k * 13) as f64 * 0.37 + seed as f64).sin()).collect();
        var.set(&Tensor::from_vec(data, var.shape(), &Device::Cpu).unwrap().to_dtype(var.dtype()).unwrap()).unwrap();
    }
}

/// A scalar depending on every logit of every real position.
fn loss(m: &CausalLm) -> candle_core::Result<Tensor> {
    let (ids, mask) = batch(&[&[1, 5, 9, 3, 7], &[4, 8, 2]]);
    let lp = token_logprobs(m, &ids, &mask, 0.9)?; // [B, T-1]
    let dt = lp.dtype();
    let w = Tensor::arange(1.0, 1.0 + lp.elem_count() as f64, &Device::Cpu)?.to_dtype(dt)?.reshape(lp.shape())?;
    let m2 = mask.narrow(1, 1, mask.dim(1)? - 1)?.to_dtype(dt)?;
    (lp * w)?.mul(&m2)?.sum_all()
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rlhf-lora-{name}-{}", std::process::id()))
}

#[test]
fn fresh_adapters_leave_the_logits_unchanged() {
    for cfg in [tiny::llama_config(V), tiny::qwen2_config(V)] {
        for kernels in [Kernels::Fused, Kernels::Composed] {
            for dropout in [0.0, 0.1] {
                let base = model(cfg.clone(), DType::F32, 3).with_kernels(kernels);
                let (m, vars) = base.with_lora(&lora_cfg(4, dropout), 7).unwrap();
                assert_eq!(vars.len(), 2 * 7 * cfg.num_hidden_layers);
                let d = max_abs_diff(&logits(&base), &logits(&m)).unwrap();
                // Dropout forces the composed path, which differs from the fused one by round-off.
                let tol = if dropout > 0.0 && kernels == Kernels::Fused { 1e-5 } else { 0.0 };
                assert!(d <= tol, "{} {kernels:?} dropout {dropout}: {d}", cfg.model_type);
            }
        }
    }
}

#[test]
fn adapters_switched_off_give_the_base_model_exactly() {
    let base = model(tiny::qwen2_config(V), DType::F32, 5);
    let (m, vars) = base.with_lora(&lora_cfg(4, 0.0), 1).unwrap();
    randomise_b(&vars, 1);
    let reference = logits(&base);
    assert!(max_abs_diff(&reference, &logits(&m)).unwrap() > 1e-3, "adapters must change the output");
    m.set_adapters_enabled(false);
    assert_eq!(max_abs_diff(&reference, &logits(&m)).unwrap(), 0.0);
    m.set_adapters_enabled(true);
    assert!(max_abs_diff(&reference, &logits(&m)).unwrap() > 1e-3);
    let view = m.without_adapters().unwrap();
    assert_eq!(max_abs_diff(&reference, &logits(&view)).unwrap(), 0.0);
    // The view shares the base weights' storage.
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (a, b) = (base.weights().get(name).unwrap(), view.weights().get(name).unwrap());
    assert!(std::ptr::eq(&*a.storage_and_layout().0, &*b.storage_and_layout().0));
}

#[test]
fn adapter_gradients_match_finite_differences_on_both_paths() {
    for cfg in [tiny::llama_config(V), tiny::qwen2_config(V)] {
        for kernels in [Kernels::Composed, Kernels::Fused] {
            let base = model(cfg.clone(), DType::F64, 11).with_kernels(kernels);
            let (m, vars) = base.with_lora(&lora_cfg(3, 0.0), 2).unwrap();
            randomise_b(&vars, 2);
            let report = check_model_gradients(&m, &vars, &|| loss(&m), 1e-5, 4).unwrap();
            assert!(report.worst_rel_err < 1e-6, "{} {kernels:?}: {report:?}", cfg.model_type);
            assert!(report.checked >= vars.len());
        }
    }
}

#[test]
fn fused_and_composed_adapter_gradients_agree_in_f32() {
    let base = model(tiny::qwen2_config(V), DType::F32, 13);
    let (fused, vars) = base.with_lora(&lora_cfg(4, 0.0), 3).unwrap();
    randomise_b(&vars, 3);
    let (composed, composed_vars) = base.with_kernels(Kernels::Composed).with_lora(&lora_cfg(4, 0.0), 3).unwrap();
    randomise_b(&composed_vars, 3);
    fused.zero_grad();
    let gs_f = loss(&fused).unwrap().backward().unwrap();
    let gs_c = loss(&composed).unwrap().backward().unwrap();
    for ((name, vf), (_, vc)) in vars.iter().zip(&composed_vars) {
        let gf = fused.grads(&gs_f).get(name, vf).unwrap().expect("fused gradient");
        assert!(gs_f.get(vf.as_tensor()).is_none(), "{name}: fused gradients live in the sink");
        let gc = composed.grads(&gs_c).get(name, vc).unwrap().expect("composed gradient");
        let scale = gc.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let d = max_abs_diff(&gf, &gc).unwrap();
        assert!(d <= 1e-4 * scale.max(1e-3), "{name}: fused vs composed gradient differ by {d} (scale {scale})");
    }
}

#[test]
fn only_adapters_are_trainable_and_receive_gradients() {
    for (kernels, dropout) in [(Kernels::Fused, 0.0), (Kernels::Composed, 0.0), (Kernels::Fused, 0.2)] {
        let base = model(tiny::qwen2_config(V), DType::F32, 17).with_kernels(kernels);
        let (m, vars) = base.with_lora(&lora_cfg(4, dropout), 4).unwrap();
        randomise_b(&vars, 4);
        assert!(m.weights().tensors.values().all(|t| !t.is_variable()), "base weights must not be Vars");
        assert!(vars.iter().all(|(n, _)| n.starts_with("base_model.model.model.layers.") && n.contains(".lora_")));
        m.zero_grad();
        let store = loss(&m).unwrap().backward().unwrap();
        let grads = m.grads(&store);
        for (name, var) in &vars {
            let g = grads.get(name, var).unwrap().unwrap_or_else(|| panic!("{kernels:?}: no gradient for {name}"));
            assert!(g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{name}: zero gradient");
        }
        for (name, t) in &m.weights().tensors {
            assert!(store.get(t).is_none(), "{kernels:?}: base weight {name} has a GradStore gradient");
            assert!(!grads.sink.is_some_and(|s| s.has(name)), "{kernels:?}: base weight {name} has a sink gradient");
        }
    }
}

#[test]
fn dropout_applies_only_while_training_and_active() {
    let base = model(tiny::llama_config(V), DType::F32, 19);
    let (m, vars) = base.with_lora(&lora_cfg(4, 0.5), 5).unwrap();
    randomise_b(&vars, 5);
    let eval = logits(&m.detached().unwrap());
    let a = logits(&m);
    let b = logits(&m);
    assert!(max_abs_diff(&a, &eval).unwrap() > 1e-4, "dropout must change a training forward");
    assert!(max_abs_diff(&a, &b).unwrap() > 1e-6, "each forward draws fresh masks");
    m.set_lora_dropout_active(false);
    assert!(max_abs_diff(&logits(&m), &eval).unwrap() <= 1e-6);
    // Reproducible: the same seed gives the same masks.
    let (m2, vars2) = base.with_lora(&lora_cfg(4, 0.5), 5).unwrap();
    for ((_, dst), (_, src)) in vars2.iter().zip(&vars) {
        dst.set(src.as_tensor()).unwrap();
    }
    assert_eq!(max_abs_diff(&logits(&m2), &a).unwrap(), 0.0);
}

#[test]
fn save_load_round_trip_and_merge() {
    let dir = temp_dir("roundtrip");
    let base = model(tiny::qwen2_config(V), DType::F32, 23);
    let cfg = LoraConfig { base_model_name_or_path: Some("tiny-qwen2".into()), ..lora_cfg(4, 0.1) };
    let (m, vars) = base.with_lora(&cfg, 6).unwrap();
    randomise_b(&vars, 6);
    m.set_lora_dropout_active(false);
    let adapted = logits(&m);
    m.save_lora(&dir).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    assert_eq!(json["bias"], "none");
    assert_eq!(json["base_model_name_or_path"], "tiny-qwen2");
    let saved = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(saved["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].dims(), [4, 16]);
    assert_eq!(saved["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].dims(), [16, 4]);

    let (back, back_vars) = base.load_lora(&dir).unwrap();
    assert_eq!(back.lora_config(), Some(&cfg));
    assert_eq!(back_vars.len(), vars.len());
    back.set_lora_dropout_active(false);
    assert_eq!(max_abs_diff(&adapted, &logits(&back)).unwrap(), 0.0);

    let merged = m.merge_lora().unwrap();
    assert!(merged.lora_config().is_none());
    let d = max_abs_diff(&adapted, &logits(&merged)).unwrap();
    assert!(d <= 1e-5, "merged vs adapted logits differ by {d}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_adapters_are_rejected_with_clear_errors() {
    let dir = temp_dir("errors");
    let base = model(tiny::llama_config(V), DType::F32, 29);
    let err = |r: rlhf_model::Result<(CausalLm, Vec<(String, Var)>)>| r.err().expect("must fail").to_string();

    let msg = err(base.load_lora(&dir.join("nowhere")));
    assert!(msg.contains("adapter_config.json"), "{msg}");

    let bad_target = LoraConfig { target_modules: vec!["q_proj".into(), "qkv".into()], ..lora_cfg(2, 0.0) };
    let msg = err(base.with_lora(&bad_target, 0));
    assert!(msg.contains("`qkv`") && msg.contains("does not exist"), "{msg}");

    let gpt2 = model(tiny::gpt2_config(V), DType::F32, 29);
    let msg = err(gpt2.with_lora(&lora_cfg(2, 0.0), 0));
    assert!(msg.contains("Llama family"), "{msg}");

    // Rank mismatch: a rank-2 adapter whose config claims r = 3.
    let (m, _) = base.with_lora(&lora_cfg(2, 0.0), 0).unwrap();
    m.save_lora(&dir).unwrap();
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"r\": 2", "\"r\": 3");
    std::fs::write(&path, text).unwrap();
    let msg = err(base.load_lora(&dir));
    assert!(
        msg.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") && msg.contains("shape"),
        "{msg}"
    );

    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("\"use_dora\": false", "\"use_dora\": true")).unwrap();
    let msg = err(base.load_lora(&dir));
    assert!(msg.contains("use_dora") && msg.contains("not supported"), "{msg}");
    std::fs::write(&path, good).unwrap();

    std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    let msg = err(base.load_lora(&dir));
    assert!(msg.contains("adapter_model.safetensors"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fused_adapter_gradients_accumulate_across_micro_batches() {
    let base = model(tiny::llama_config(V), DType::F64, 41);
    let (m, vars) = base.with_lora(&lora_cfg(3, 0.0), 10).unwrap();
    randomise_b(&vars, 10);
    let loss_of = |rows: &[&[u32]]| {
        let (ids, mask) = batch(rows);
        let t = mask.dim(1).unwrap();
        let lp = token_logprobs(&m, &ids, &mask, 1.0).unwrap();
        let m2 = (mask.narrow(1, 1, t - 1).unwrap() * mask.narrow(1, 0, t - 1).unwrap()).unwrap();
        (lp * m2.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap()
    };
    let rows: [&[u32]; 2] = [&[1, 5, 9, 3, 7], &[4, 8, 2]];
    m.zero_grad();
    let whole = loss_of(&rows).backward().unwrap();
    let whole: Vec<Tensor> = vars.iter().map(|(n, v)| m.grads(&whole).get(n, v).unwrap().unwrap()).collect();
    m.zero_grad();
    let _first = loss_of(&rows[..1]).backward().unwrap();
    let second = loss_of(&rows[1..]).backward().unwrap();
    for ((name, var), w) in vars.iter().zip(&whole) {
        let acc = m.grads(&second).get(name, var).unwrap().unwrap();
        let d = max_abs_diff(w, &acc).unwrap();
        assert!(d < 1e-12, "{name}: micro-batch accumulation differs by {d}");
    }
}

#[test]
fn a_few_sgd_steps_on_the_adapters_lower_the_loss() {
    let base = model(tiny::llama_config(V), DType::F32, 31);
    let (m, vars) = base.with_lora(&lora_cfg(4, 0.0), 8).unwrap();
    let nll = || loss(&m).unwrap().neg().unwrap();
    let first = nll().to_scalar::<f32>().unwrap();
    for _ in 0..5 {
        m.zero_grad();
        let store = nll().backward().unwrap();
        for (name, var) in &vars {
            let g = m.grads(&store).get(name, var).unwrap().unwrap();
            var.set(&(var.as_tensor() - (g * 1e-3).unwrap()).unwrap()).unwrap();
        }
    }
    let last = nll().to_scalar::<f32>().unwrap();
    assert!(last < first, "loss did not fall: {first} → {last}");
}

/// Dev-only: writes a base HF folder, an adapter and the adapted logits for
/// `scripts/check_peft_adapter.py` (Python `peft` must reproduce them; steps in the script).
#[test]
#[ignore]
fn write_peft_check_fixture() {
    let Ok(dir) = std::env::var("RLHF_PEFT_CHECK_DIR") else { return };
    let dir = PathBuf::from(dir);
    let base = model(tiny::qwen2_config(V), DType::F32, 37);
    let (m, vars) = base.with_lora(&lora_cfg(4, 0.05), 9).unwrap();
    randomise_b(&vars, 9);
    m.set_lora_dropout_active(false);
    base.save_hf(&dir.join("base")).unwrap();
    m.save_lora(&dir.join("adapter")).unwrap();
    let ids: Vec<u32> = vec![1, 5, 9, 3, 7, 11, 13];
    let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let l = m.forward(&t, &Tensor::ones_like(&t).unwrap(), None).unwrap().squeeze(0).unwrap();
    let expected = serde_json::json!({"input_ids": ids, "logits": l.to_vec2::<f32>().unwrap()});
    std::fs::write(dir.join("expected.json"), expected.to_string()).unwrap();
}

/// Dev-only: the adapter `scripts/check_peft_adapter.py` wrote with Python `peft` gives peft's
/// logits here.
#[test]
#[ignore]
fn reads_an_adapter_written_by_peft() {
    let Ok(dir) = std::env::var("RLHF_PEFT_CHECK_DIR") else { return };
    let dir = PathBuf::from(dir);
    let base = CausalLm::load(&dir.join("base"), DType::F32, &Device::Cpu).unwrap();
    let (m, vars) = base.load_lora(&dir.join("peft_adapter")).unwrap();
    assert_eq!(vars.len(), 2 * 3 * base.config().num_hidden_layers);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peft_expected.json")).unwrap()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let got = m.detached().unwrap().forward(&t, &Tensor::ones_like(&t).unwrap(), None).unwrap().squeeze(0).unwrap();
    let d = max_abs_diff(&got, &Tensor::new(want, &Device::Cpu).unwrap()).unwrap();
    assert!(d <= 1e-4, "rlhf vs peft logits differ by {d}");
}
