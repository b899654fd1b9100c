//! What the CLI integration tests share: running the binary from the workspace root (so the
//! shipped `examples/` resolve), temporary folders, and a tiny model with generated data.

#![allow(dead_code)] // each test file uses its own subset

use candle_core::DType;
use rlhf_model::{tiny, CausalLm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .output()
        .expect("run rlhf")
}

pub fn ok(args: &[&str]) -> String {
    let out = rlhf(args);
    assert!(out.status.success(), "rlhf {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(args: &[&str]) -> String {
    let out = rlhf(args);
    assert!(!out.status.success(), "rlhf {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rlhf-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny Llama in an HF folder whose vocabulary matches the tiny byte-level tokenizer, plus the
/// arithmetic datasets: (folder, model folder, data folder).
pub fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = tempdir(name);
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    let model = CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 0, 0.05, DType::F32).unwrap()).unwrap();
    let model_dir = dir.join("model");
    model.save_hf(&model_dir).unwrap();
    tok.save_hf(&model_dir).unwrap();
    let data = dir.join("data");
    ok(&["data", "make", "arithmetic", "--n", "40", "--seed", "1", "--out", p(&data)]);
    (dir, model_dir, data)
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The JSON lines of a file (metrics.jsonl, samples.jsonl, eval output).
pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
