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

/// A long-running `rlhf` command (a server) started with `--port 0`: `base` is the
/// `http://host:port` it names on stderr; stderr keeps being drained (and kept, for failure
/// messages) so the server never blocks on a full pipe. Killed on drop.
pub struct Background {
    child: std::process::Child,
    pub base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Background {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rlhf args` in the background, its stderr piped (stdout discarded).
pub fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn spawn_listening(args: &[&str]) -> Background {
    use std::io::BufRead;
    let mut child = spawn(args);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let keep = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            keep.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("http://").nth(1) {
                if let Some(tx) = tx.take() {
                    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next().unwrap();
                    let _ = tx.send(format!("http://{addr}"));
                }
            }
        }
    });
    let base = rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap_or_else(|_| {
        let status = child.try_wait().ok().flatten();
        let _ = child.kill();
        panic!("rlhf {args:?} never named its address (exit: {status:?}); stderr:\n{}", log.lock().unwrap())
    });
    Background { child, base, log }
}

/// A scripted OpenAI-compatible chat endpoint on loopback: each request's JSON body and
/// `Authorization` header go to `reply`, whose text becomes the assistant message. Returns the
/// API root (`http://127.0.0.1:PORT/v1`).
pub fn fake_chat_endpoint(reply: impl Fn(&Value, Option<&str>) -> String + Send + Sync + 'static) -> String {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let reply = std::sync::Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let reply = std::sync::Arc::clone(&reply);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut auth) = (0, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.trim_end().split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap();
                        } else if name.eq_ignore_ascii_case("authorization") {
                            auth = Some(value.trim().to_string());
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                let content = reply(&body, auth.as_deref());
                let answer = serde_json::json!({"id": "x", "object": "chat.completion", "model": "fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
                .to_string();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    base
}

/// Three steps of GRPO on the tiny model in fp32 (2 prompts × 3 samples a step): the run the
/// remote-rollout and data-parallel tests compare against one in-process run.
pub const TINY_GRPO: [&str; 18] = [
    "--set",
    "rewards=[{kind=\"regex\", pattern=\"(?s).*[a-z].*\"}]",
    "--set",
    "train.max_steps=3",
    "--set",
    "train.precision=\"fp32\"",
    "--set",
    "train.learning_rate=1e-3",
    "--set",
    "train.save_steps=0",
    "--set",
    "grpo.num_generations=3",
    "--set",
    "grpo.prompts_per_step=2",
    "--set",
    "rollout.max_new_tokens=6",
    "--set",
    "rollout.generation_batch_size=4",
];
