//! The `rlhf` binary end to end on the default model (fetched by scripts/fetch-default-model.sh).

use serde_json::Value;
use std::process::Command;

fn rlhf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("run rlhf")
}

fn ok(args: &[&str]) -> String {
    let out = rlhf(args);
    assert!(out.status.success(), "rlhf {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/smollm2_transformers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn logprobs(model: &str, text: &str) -> Vec<f64> {
    let v: Value = serde_json::from_str(&ok(&["logprobs", "--model", model, "--text", text, "--json"])).unwrap();
    v["logprobs"].as_array().unwrap().iter().skip(1).map(|x| x.as_f64().unwrap()).collect()
}

fn assert_answers_paris(model: &str) {
    let args = [
        "generate",
        "--model",
        model,
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "24",
    ];
    let out = ok(&args);
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn chat_generation_answers_paris() {
    assert_answers_paris("default");
}

#[test]
fn logprobs_command_matches_transformers_and_convert_round_trips() {
    let fx = fixture();
    let case = &fx["logprobs"][1];
    let text = case["text"].as_str().unwrap();
    let ours = logprobs("default", text);
    let theirs: Vec<f64> = case["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(ours.len(), theirs.len());
    assert!(worst <= 1e-3, "max abs logprob difference {worst}");

    // GGUF → HF folder → same logprobs (the folder holds the dequantised f32 weights).
    let dir = std::env::temp_dir().join(format!("rlhf-convert-{}", std::process::id()));
    let dir_s = dir.to_str().unwrap();
    ok(&["convert", "--model", "default", "--out", dir_s]);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(cfg["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    assert_eq!(logprobs(dir_s, text), ours);
    assert_answers_paris(dir_s);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_model_paths_are_clear_errors() {
    let out = rlhf(&["generate", "--model", "/no/such/model", "--prompt", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/model") && err.contains("no such file"), "{err}");

    let dir = std::env::temp_dir().join(format!("rlhf-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = rlhf(&["logprobs", "--model", dir.to_str().unwrap(), "--text", "a b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
}
