//! Bad model folders fail with errors that name the file and the problem, never a panic.

use candle_core::{DType, Device};
use rlhf_model::{tiny, CausalLm};
use std::path::{Path, PathBuf};

fn saved_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-bad-{}-{name}", std::process::id()));
    let cfg = tiny::llama_config(40);
    let m = CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 1, 0.1, DType::F32).unwrap()).unwrap();
    m.save_hf(&dir).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match CausalLm::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_config() {
    let dir = saved_model("noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json") && err.contains("cannot read"), "{err}");
}

#[test]
fn corrupt_config() {
    let dir = saved_model("corrupt");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\", ").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json") && err.contains("not valid JSON"), "{err}");
}

#[test]
fn unknown_architecture() {
    let dir = saved_model("arch");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "t5", "vocab_size": 10}"#).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("unknown architecture") && err.contains("t5"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let dir = saved_model("truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors") && err.contains("cannot read safetensors"), "{err}");
}

#[test]
fn wrong_tensor_shapes() {
    let dir = saved_model("shapes");
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).unwrap().replace("\"intermediate_size\": 24", "\"intermediate_size\": 32");
    std::fs::write(&cfg_path, text).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("mlp") && err.contains("has shape") && err.contains("[32, 16]"), "{err}");
}

#[test]
fn missing_weights_file_and_missing_path() {
    let dir = saved_model("noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("no model.safetensors"), "{err}");
    let err = load_err(&dir.join("does-not-exist"));
    assert!(err.contains("does-not-exist") && err.contains("no such file"), "{err}");
}

#[test]
fn absurd_layer_count_is_refused_before_anything_is_allocated() {
    let dir = saved_model("layers");
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(1_000_000_000u64);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    // Before the fix this built 9·10⁹ expected tensor names and was killed for memory.
    let start = std::time::Instant::now();
    let err = load_err(&dir);
    assert!(err.contains("num_hidden_layers = 1000000000") && err.contains("only"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

/// Mutated `config.json` and `model.safetensors` bytes are errors naming a file, never a panic.
#[test]
fn fuzzed_config_and_safetensors_never_panic() {
    use rlhf_model::fuzz::{cases, Mutator};
    let dir = saved_model("fuzz");
    for file in ["config.json", "model.safetensors"] {
        let path = dir.join(file);
        let valid = std::fs::read(&path).unwrap();
        for seed in 0..cases(1000) as u64 {
            let bytes = Mutator::new(seed).mutate(&valid);
            std::fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(|| CausalLm::load(&dir, DType::F32, &Device::Cpu).map(|_| ()));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&dir.display().to_string()), "{file} seed {seed}: no path in `{msg}`");
                }
                Err(_) => panic!("{file} seed {seed}: loading panicked"),
            }
        }
        std::fs::write(&path, &valid).unwrap();
    }
}
