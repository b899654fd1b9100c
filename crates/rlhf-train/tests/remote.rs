//! The requests a rollout on inference servers sends, against a recording stub server: the
//! exact SGLang weight-update sequence (pause → update_weights_from_disk → continue) with its
//! bodies, the completion requests (token-id prompts, seeds and streams of the in-process
//! sampler), and replies that are refused (a stale weight version, no token ids).

use candle_core::DType;
use rlhf_model::{tiny, CausalLm, FinishReason};
use rlhf_train::remote::RemoteEngine;
use rlhf_train::rollout::{RolloutConfig, RolloutEngine, WeightSync};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Vec<(String, Value)>>>;

/// A stub at `http://127.0.0.1:PORT`: every request's path and JSON body go to the log; the
/// answer is `reply(path, body)` (a string as plain text), and a `null` answer drops the
/// connection (a dead worker).
fn stub(reply: impl Fn(&str, &Value) -> Value + Send + Sync + 'static) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let (keep, reply) = (log.clone(), Arc::new(reply));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (keep, reply) = (keep.clone(), reply.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = header.to_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let answer = reply(&path, &body);
                    keep.lock().unwrap().push((path, body));
                    if answer.is_null() {
                        return;
                    }
                    // A JSON string answer goes out as plain text, as vLLM's LoRA endpoints answer.
                    let answer = answer.as_str().map_or_else(|| answer.to_string(), str::to_string);
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    )
                    .unwrap();
                }
            });
        }
    });
    (base, log)
}

fn tiny_model() -> CausalLm {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 0, 0.05, DType::F32).unwrap()).unwrap()
}

fn config(servers: Vec<String>) -> RolloutConfig {
    RolloutConfig {
        engine: RolloutEngine::Openai,
        servers,
        max_new_tokens: 4,
        generation_batch_size: 3,
        temperature: 0.7,
        top_p: Some(0.9),
        ..RolloutConfig::default()
    }
}

fn completion(version: &str) -> Value {
    json!({"choices": [{"index": 0, "text": "ab", "token_ids": [7, 8], "finish_reason": "length",
        "logprobs": {"token_logprobs": [-0.5, -0.25]}}], "weight_version": version})
}

#[test]
fn weight_sync_is_pause_update_continue_and_rows_carry_the_in_process_seeds() {
    let version = Arc::new(Mutex::new(String::new()));
    let current = version.clone();
    let (base, log) = stub(move |path, body| match path {
        "/update_weights_from_disk" => {
            // The weights are complete when the server is told to load them.
            let dir = std::path::Path::new(body["model_path"].as_str().unwrap());
            assert!(dir.join("model.safetensors").exists() && dir.join("config.json").exists());
            *current.lock().unwrap() = body["weight_version"].as_str().unwrap().to_string();
            json!({"success": true, "message": "ok", "num_paused_requests": 0})
        }
        "/v1/completions" => completion(&current.lock().unwrap()),
        _ => json!({"success": true}),
    });
    let dir = std::env::temp_dir().join(format!("rlhf-train-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config(vec![format!("{base}/v1/")]);
    let mut engine = RemoteEngine::new(&cfg, &dir).unwrap();
    let model = tiny_model();

    engine.sync(&model, 3).unwrap();
    std::fs::create_dir_all(dir.join("rollout-weights")).unwrap();
    let weights = std::fs::canonicalize(dir.join("rollout-weights")).unwrap().join("v3");
    assert!(!weights.exists(), "the folder goes once the servers have loaded it");
    let sent = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(
        sent,
        vec![
            ("/pause_generation".to_string(), json!({"mode": "abort"})),
            (
                "/update_weights_from_disk".to_string(),
                json!({"model_path": weights, "weight_version": "3", "flush_cache": true})
            ),
            ("/continue_generation".to_string(), json!({})),
        ],
        "SGLang's order and bodies, on the server root"
    );
    engine.sync(&model, 3).unwrap();
    assert!(log.lock().unwrap().is_empty(), "weights the servers hold are not sent again");

    // Two prompts × 2 rows, chunks of 3 rows: rows 0-2 use seed + 0 and streams 0-2, row 3 seed + 1, stream 0.
    let prompts: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
    let rows = engine.rollout(&prompts, 2, &cfg, 100).unwrap();
    assert_eq!(rows.len(), 4);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!((row.prompt_index, row.prompt_ids.as_slice()), (k / 2, prompts[k / 2]));
        assert_eq!(
            (row.response_ids.as_slice(), row.sampler_logprobs.as_slice()),
            (&[7, 8][..], &[-0.5f32, -0.25][..])
        );
        assert_eq!(row.finish, FinishReason::Length);
    }
    let mut sent: Vec<Value> = log
        .lock()
        .unwrap()
        .drain(..)
        .map(|(p, b)| {
            assert_eq!(p, "/v1/completions");
            b
        })
        .collect();
    sent.sort_by_key(|b| (b["seed"].as_i64(), b["sampling_stream"].as_u64()));
    let expect = |prompt: &[u32], seed: i64, stream: u64| {
        json!({"prompt": prompt, "n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 4, "seed": seed,
            "logprobs": 1, "return_token_ids": true, "sampling_stream": stream})
    };
    assert_eq!(
        sent,
        vec![expect(&[1, 2, 3], 100, 0), expect(&[1, 2, 3], 100, 1), expect(&[4, 5], 100, 2), expect(&[4, 5], 101, 0)]
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stale_or_incomplete_reply_is_refused() {
    for (reply, why) in [
        (completion("old"), "weight version old"),
        (json!({"choices": [{"index": 0, "text": "ab", "finish_reason": "stop"}]}), "no token_ids"),
    ] {
        let (base, _log) =
            stub(move |path, _| if path == "/v1/completions" { reply.clone() } else { json!({"success": true}) });
        let dir = std::env::temp_dir().join(format!("rlhf-train-remote-stale-{}", std::process::id()));
        let cfg = RolloutConfig { max_retries: 0, ..config(vec![format!("{base}/v1")]) };
        let mut engine = RemoteEngine::new(&cfg, &dir).unwrap();
        engine.sync(&tiny_model(), 1).unwrap();
        let err = engine.rollout(&[&[1, 2]], 1, &cfg, 0).unwrap_err().to_string();
        assert!(err.contains(why) && err.contains("no rollout server left"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_server_that_dies_mid_run_is_dropped_and_its_rows_go_to_the_others() {
    let (dead, dead_log) =
        stub(|path, _| if path == "/v1/completions" { Value::Null } else { json!({"success": true}) });
    let (live, live_log) =
        stub(|path, _| if path == "/v1/completions" { completion("1") } else { json!({"success": true}) });
    let dir = std::env::temp_dir().join(format!("rlhf-train-remote-dies-{}", std::process::id()));
    let cfg = config(vec![format!("{dead}/v1"), format!("{live}/v1")]);
    let mut engine = RemoteEngine::new(&cfg, &dir).unwrap();
    engine.sync(&tiny_model(), 1).unwrap();
    let rows = engine.rollout(&[&[1, 2], &[3]], 3, &cfg, 0).unwrap();
    assert_eq!(rows.len(), 6, "every row came back");
    let tried = dead_log.lock().unwrap().iter().filter(|(p, _)| p == "/v1/completions").count();
    assert!(tried >= 1, "the dead server was tried");
    let answered = live_log.lock().unwrap().iter().filter(|(p, _)| p == "/v1/completions").count();
    assert_eq!(answered, 6, "the live server answered every row");
    // The dead server gets no more weights either.
    dead_log.lock().unwrap().clear();
    engine.sync(&tiny_model(), 2).unwrap();
    assert!(dead_log.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vllm_lora_sync_loads_the_adapter_in_place_and_rows_name_it() {
    let (base, log) = stub(|path, body| match path {
        "/v1/load_lora_adapter" => {
            let dir = std::path::Path::new(body["lora_path"].as_str().unwrap());
            assert!(dir.join("adapter_config.json").exists() && dir.join("adapter_model.safetensors").exists());
            json!("Success: LoRA adapter 'rlhf-policy' added successfully.")
        }
        "/v1/completions" => json!({"choices": [{"index": 0, "text": "ab", "token_ids": [7], "finish_reason": "stop",
            "logprobs": {"token_logprobs": [-0.5]}}]}),
        _ => Value::Null,
    });
    let dir = std::env::temp_dir().join(format!("rlhf-train-remote-lora-{}", std::process::id()));
    let cfg = RolloutConfig { sync: WeightSync::VllmLora, ..config(vec![format!("{base}/v1")]) };
    let mut engine = RemoteEngine::new(&cfg, &dir).unwrap();
    let err = engine.sync(&tiny_model(), 1).unwrap_err().to_string();
    assert!(err.contains("enable [lora]"), "{err}");

    let lora = rlhf_model::lora::LoraConfig { r: 2, ..Default::default() };
    let (policy, _) = tiny_model().with_lora(&lora, 0).unwrap();
    engine.sync(&policy, 1).unwrap();
    let sent = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(sent.len(), 1, "one request per server: {sent:?}");
    assert_eq!(sent[0].0, "/v1/load_lora_adapter");
    assert_eq!((&sent[0].1["lora_name"], &sent[0].1["load_inplace"]), (&json!("rlhf-policy"), &json!(true)));
    let rows = engine.rollout(&[&[1, 2]], 2, &cfg, 0).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].finish, FinishReason::Eos);
    for (path, body) in log.lock().unwrap().iter() {
        assert_eq!((path.as_str(), &body["model"]), ("/v1/completions", &json!("rlhf-policy")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
