//! `rlhf serve`, the OpenAI-compatible HTTP server, on a tiny random model: the official OpenAI
//! Python client against it (`tests/openai/client_check.py`, in the venv that
//! `scripts/setup-openai-tests.sh` makes), server-sent events with curl, and OpenAI-style errors.

mod common;

use common::p;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).canonicalize().unwrap()
}

type Server = common::Background;

/// Serves a tiny random model of its own (the model's name is its folder's, `model`).
fn serve(name: &str) -> Server {
    let (_dir, model, _data) = common::setup(&format!("serve-{name}"));
    common::spawn_listening(&["serve", "--model", p(&model), "--port", "0"])
}

/// An HTTP/1.1 response: status, headers (lower-cased names and values) and body.
struct Response {
    status: u16,
    headers: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request over a fresh connection (`Connection: close`), chunked bodies decoded.
fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> Response {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    let headers = head.to_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Response { status, headers, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap_or_else(|| panic!("bad chunk in {rest:?}"));
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

/// The first model id `GET /v1/models` lists.
fn model_name(server: &Server) -> String {
    let r = http(&server.base, "GET", "/v1/models", None);
    assert_eq!(r.status, 200, "GET /v1/models: {}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list", "{v}");
    v["data"][0]["id"].as_str().unwrap_or_else(|| panic!("no model id in {v}")).to_string()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(args).output().expect("run curl (apt-get install curl)");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_official_openai_client_works() {
    let start = Instant::now();
    let root = repo_root();
    let python = root.join("target/openai-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/setup-openai-tests.sh (it installs the pinned official `openai` client)",
        python.display()
    );
    let server = serve("client");
    let model = model_name(&server);
    let script = root.join("crates/rlhf-cli/tests/openai/client_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("{}/v1", server.base))
        .arg(&model)
        .output()
        .expect("run the OpenAI client check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client_check.py failed ({}):\n{stdout}\n{}\nserver stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("summary not JSON ({e}): {stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    eprintln!(
        "openai {} client: all checks passed in {:.1} s; 32 concurrent chat completions in {} s",
        summary["openai"].as_str().unwrap_or("?"),
        start.elapsed().as_secs_f64(),
        summary["checks"]["concurrency"]["wall_seconds"]
    );
}

#[test]
fn curl_streams_server_sent_events() {
    let server = serve("curl");
    let model = model_name(&server);
    let headers = common::tempdir("serve-curl-headers").join("headers.txt");
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": true, "temperature": 0})
            .to_string();
    let url = format!("{}/v1/chat/completions", server.base);
    let out =
        curl(&["-sN", "-D", p(&headers), "-X", "POST", &url, "-H", "Content-Type: application/json", "-d", &body]);
    let head = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}\n{out}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "want chunks and [DONE]:\n{out}");
    assert!(lines.iter().all(|l| l.starts_with("data: ")), "every line should be `data: …`:\n{out}");
    assert_eq!(*lines.last().unwrap(), "data: [DONE]", "{out}");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(&l["data: ".len()..]).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{out}");
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish.len(), 1, "one chunk (the last) should carry a finish_reason:\n{out}");
    assert!(finish[0] == "stop" || finish[0] == "length", "{out}");
    assert!(!chunks.last().unwrap()["choices"][0]["finish_reason"].is_null(), "{out}");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();

    // The same request without streaming gives the same greedy text.
    let whole: Value = serde_json::from_str(&curl(&[
        "-s",
        "-X",
        "POST",
        &url,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.replace("\"stream\":true", "\"stream\":false"),
    ]))
    .unwrap();
    assert_eq!(whole["object"], "chat.completion", "{whole}");
    assert_eq!(whole["choices"][0]["message"]["content"], text.as_str(), "streamed {text:?} vs {whole}");

    let body = json!({"model": model, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}).to_string();
    let url = format!("{}/v1/completions", server.base);
    let out = curl(&["-s", "-X", "POST", &url, "-H", "Content-Type: application/json", "-d", &body]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["object"], "text_completion", "{v}");
    assert!(v["choices"][0]["text"].is_string(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 4, "{v}");
}

/// The words of a message (runs of letters, digits and `_`), to tell `n` from `n` inside a word.
fn words(message: &str) -> Vec<&str> {
    message.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect()
}

#[test]
fn bad_requests_get_openai_style_errors() {
    let server = serve("errors");
    let model = model_name(&server);
    let chat = |extra: Value| {
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    let post = |path: &str, body: &str| http(&server.base, "POST", path, Some(body));
    let expect_error = |path: &str, body: &str, field: Option<&str>| {
        let r = post(path, body);
        assert_eq!(r.status, 400, "POST {path} {body} → {} {}\nserver stderr:\n{}", r.status, r.body, server.log());
        assert!(r.headers.contains("content-type: application/json"), "POST {path} {body}:\n{}", r.headers);
        let v = r.json();
        let error = &v["error"];
        let message = error["message"].as_str().unwrap_or_else(|| panic!("POST {path} {body}: no message in {v}"));
        assert!(!message.trim().is_empty(), "POST {path} {body}: empty message: {v}");
        assert_eq!(error["type"], "invalid_request_error", "POST {path} {body}: {v}");
        if let Some(field) = field {
            assert!(words(message).contains(&field), "POST {path} {body}: the message should name `{field}`: {v}");
            if !error["param"].is_null() {
                assert_eq!(error["param"], field, "POST {path} {body}: {v}");
            }
        }
        message.to_string()
    };

    let chat_path = "/v1/chat/completions";
    expect_error(chat_path, "{\"model\": \"m\", \"messages\": [", None);
    expect_error(chat_path, "not json at all", None);
    expect_error(chat_path, &chat(json!({"temperature": -1})), Some("temperature"));
    expect_error(chat_path, &chat(json!({"n": 0})), Some("n"));
    expect_error(chat_path, &chat(json!({"max_tokens": 0})), Some("max_tokens"));
    expect_error(chat_path, &chat(json!({"top_logprobs": 5})), Some("top_logprobs"));
    expect_error(chat_path, &chat(json!({"logprobs": true, "top_logprobs": 21})), Some("top_logprobs"));
    expect_error(chat_path, &json!({"model": model, "max_tokens": 2}).to_string(), Some("messages"));
    expect_error(
        "/v1/completions",
        &json!({"model": model, "prompt": "Hi", "max_tokens": 2, "logprobs": 6}).to_string(),
        Some("logprobs"),
    );
    expect_error(
        "/v1/completions",
        &json!({"model": model, "prompt": "Hi", "max_tokens": 2, "temperature": -1}).to_string(),
        Some("temperature"),
    );

    // Servers commonly accept any model name, and ignore fields they do not know.
    for extra in [json!({"model": "no-such-model"}), json!({"user": "someone", "not_an_openai_field": [1, 2]})] {
        let body = chat(extra);
        let r = post(chat_path, &body);
        assert_eq!(r.status, 200, "POST {chat_path} {body} → {} {}", r.status, r.body);
        assert_eq!(r.json()["choices"][0]["message"]["role"], "assistant", "{}", r.body);
    }
}

/// A client that sends a long prompt and leaves: the prefill stops at its next chunk instead of
/// running to the end, and the server then answers the next request.
#[test]
fn a_long_prefill_stops_when_its_client_leaves() {
    let server = common::spawn_listening(&["serve", "--model", "default", "--port", "0"]);
    let prompt = "hello ".repeat(4000);
    let body = json!({"model": "default", "prompt": prompt, "max_tokens": 1, "temperature": 0}).to_string();
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    } // the client leaves
    let start = Instant::now();
    let log = loop {
        let log = server.log();
        if log.contains("generation stopped") || start.elapsed() > Duration::from_secs(240) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let line =
        log.lines().find(|l| l.contains("generation stopped")).unwrap_or_else(|| panic!("never stopped:\n{log}"));
    let done: usize =
        line.split("prefill (").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(done < 4000, "stopped after {done} prompt tokens, before the end of the prompt: {line}");
    let model = model_name(&server);
    let small = json!({"model": model, "prompt": "Hi", "max_tokens": 2, "temperature": 0}).to_string();
    assert_eq!(http(&server.base, "POST", "/v1/completions", Some(&small)).status, 200);
}

/// Mutated chat and completion bodies get a 2xx or 4xx answer with an OpenAI-shaped error,
/// never a 5xx or a dead server.
#[test]
fn fuzzed_requests_get_answers_or_errors() {
    use rlhf_model::fuzz::{cases, Mutator};
    let server = serve("fuzz");
    let model = model_name(&server);
    let valid = [
        (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0.7, "n": 2, "stop": ["x"], "logprobs": true, "top_logprobs": 2}),
        ),
        ("/v1/completions", json!({"model": model, "prompt": "Once", "max_tokens": 3, "logprobs": 2, "seed": 7})),
    ];
    for seed in 0..cases(150) as u64 {
        let mut m = Mutator::new(seed);
        let (path, body) = &valid[m.below(valid.len())];
        let body = String::from_utf8_lossy(&m.mutate(body.to_string().as_bytes())).into_owned();
        let r = http(&server.base, "POST", path, Some(&body));
        assert!(r.status < 500, "seed {seed}: {path} {body:?} → {} {}", r.status, r.body);
        if r.status >= 400 {
            assert!(r.json()["error"]["message"].is_string(), "seed {seed}: {}", r.body);
        }
    }
    assert_eq!(http(&server.base, "GET", "/v1/models", None).status, 200, "still serving");
}

/// A second tiny model of the same shape as `common::setup`'s, with other weights.
fn other_weights(dir: &Path) -> PathBuf {
    use candle_core::DType;
    use rlhf_model::{tiny, CausalLm};
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    let model = CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 7, 0.5, DType::F32).unwrap()).unwrap();
    let out = dir.join("other");
    model.save_hf(&out).unwrap();
    tok.save_hf(&out).unwrap();
    out
}

/// Greedy ids and logprobs of `model` after `prompt`, in this process.
fn greedy(model: &Path, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    use rlhf_model::{generate, CausalLm, GenerationConfig, SamplingParams};
    let m = CausalLm::load(model, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: n,
        sampling: SamplingParams { temperature: 0.0, top_k: None, top_p: None, seed: 0 },
        eos_token_ids: vec![],
        pad_token_id: 0,
    };
    let g = generate(&m, &[prompt.to_vec()], &cfg, None, &mut |_| {}).unwrap();
    (g.response_ids[0].clone(), g.response_logprobs[0].clone())
}

/// SGLang's weight-update protocol, as an RL trainer drives it: token-id prompts with the ids
/// and logprobs returned, pause → update_weights_from_disk → continue, the new weights' version
/// on every later reply, a bad update refused with the old weights kept, and a paused server
/// holding requests until it continues.
#[test]
fn weights_are_updated_from_disk_between_batches() {
    let (dir, model, _data) = common::setup("serve-weights");
    let other = other_weights(&dir);
    let server = common::spawn_listening(&[
        "serve",
        "--model",
        p(&model),
        "--port",
        "0",
        "--precision",
        "fp32",
        "--weight-version",
        "v0",
    ]);
    const PROMPT: [u32; 4] = [5, 17, 33, 9];
    let prompt = PROMPT.to_vec();
    let complete = |base: &str| {
        let prompt = PROMPT;
        let body =
            json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 1, "return_token_ids": true});
        let r = http(base, "POST", "/v1/completions", Some(&body.to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let check = |reply: &Value, weights: &Path, version: &str| {
        let (ids, logprobs) = greedy(weights, &prompt, 6);
        assert_eq!(reply["weight_version"], version, "{reply}");
        assert_eq!(reply["prompt_token_ids"], json!(prompt));
        let choice = &reply["choices"][0];
        let got: Vec<u32> = serde_json::from_value(choice["token_ids"].clone()).unwrap();
        assert_eq!(got, ids[..got.len()], "the served weights' greedy tokens");
        for (a, b) in choice["logprobs"]["token_logprobs"].as_array().unwrap().iter().zip(&logprobs) {
            assert!((a.as_f64().unwrap() - *b as f64).abs() < 1e-4, "{a} vs {b}");
        }
    };
    let (a, b) = (greedy(&model, &prompt, 6), greedy(&other, &prompt, 6));
    assert!(a.0 != b.0 && (a.1[0] - b.1[0]).abs() > 1e-2, "the two weights answer differently: {a:?} {b:?}");
    check(&complete(&server.base), &model, "v0");
    let post = |path: &str, body: Value| http(&server.base, "POST", path, Some(&body.to_string()));

    assert_eq!(post("/pause_generation", json!({"mode": "retract"})).json()["success"], true);
    let update = post("/update_weights_from_disk", json!({"model_path": p(&other), "weight_version": "v1"}));
    assert_eq!((update.status, update.json()["success"].clone()), (200, json!(true)), "{}", update.body);
    // Paused: a request waits for /continue_generation.
    let base = server.base.clone();
    let waiting = std::thread::spawn(move || complete(&base));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "a paused server starts no batch");
    assert_eq!(post("/continue_generation", json!({})).json()["success"], true);
    check(&waiting.join().unwrap(), &other, "v1");
    assert_eq!(http(&server.base, "GET", "/get_model_info", None).json()["weight_version"], "v1");

    // A folder that is not there, or of another shape: refused, the weights stay.
    let missing =
        post("/update_weights_from_disk", json!({"model_path": p(&dir.join("nowhere")), "weight_version": "v2"}));
    assert_eq!((missing.status, missing.json()["success"].clone()), (400, json!(false)), "{}", missing.body);
    let no_path = post("/update_weights_from_disk", json!({"weight_version": "v2"}));
    assert_eq!(no_path.status, 400, "{}", no_path.body);
    assert_eq!(http(&server.base, "GET", "/get_weight_version", None).json()["weight_version"], "v1");
    check(&complete(&server.base), &other, "v1");

    // `abort` (the default mode) answers the requests waiting at a pause with an error.
    assert_eq!(post("/pause_generation", json!({"mode": "in_place"})).status, 200);
    let base = server.base.clone();
    let queued = std::thread::spawn(move || {
        let body = json!({"prompt": PROMPT, "max_tokens": 6, "temperature": 0});
        http(&base, "POST", "/v1/completions", Some(&body.to_string()))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(post("/pause_generation", json!({})).json()["num_aborted_requests"], 1);
    let aborted = queued.join().unwrap();
    assert_eq!(aborted.status, 500, "{}", aborted.body);
    assert!(aborted.body.contains("aborted"), "{}", aborted.body);
    assert_eq!(post("/pause_generation", json!({"mode": "sideways"})).status, 400);
    assert_eq!(post("/continue_generation", json!({})).status, 200);
    check(&complete(&server.base), &other, "v1");
}

/// vLLM's runtime LoRA endpoints: a PEFT adapter loaded under a name is what requests naming
/// that `model` sample with (greedy tokens of base + adapter, merged), the base stays for other
/// requests, `/v1/models` lists it, a second load of the name needs `load_inplace`, and unload
/// removes it.
#[test]
fn lora_adapters_are_loaded_and_chosen_by_model_name() {
    use candle_core::{DType, Device, Tensor};
    let (dir, model, _data) = common::setup("serve-lora");
    let base = rlhf_model::CausalLm::load(&model, DType::F32, &Device::Cpu).unwrap();
    let cfg = rlhf_model::lora::LoraConfig { r: 2, ..Default::default() };
    let (with_lora, vars) = base.with_lora(&cfg, 3).unwrap();
    for (i, (name, var)) in vars.iter().enumerate() {
        if name.contains("lora_B") {
            let shape = var.as_tensor().dims().to_vec();
            var.set(&Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap().affine(1.0, i as f64 * 1e-3).unwrap())
                .unwrap();
        }
    }
    let adapter = dir.join("adapter");
    with_lora.save_lora(&adapter).unwrap();
    let merged = dir.join("merged");
    with_lora.merge_lora().unwrap().save_hf(&merged).unwrap();

    let server = common::spawn_listening(&["serve", "--model", p(&model), "--port", "0", "--precision", "fp32"]);
    let post = |path: &str, body: Value| http(&server.base, "POST", path, Some(&body.to_string()));
    let load = json!({"lora_name": "a1", "lora_path": p(&adapter)});
    let loaded = post("/v1/load_lora_adapter", load.clone());
    assert_eq!(loaded.status, 200, "{}", loaded.body);
    assert!(loaded.body.contains("a1"), "{}", loaded.body);
    let prompt = [5u32, 17, 33, 9];
    let complete = |model: &str| {
        let body = json!({"model": model, "prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 1,
            "return_token_ids": true});
        let r = post("/v1/completions", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let (with, without) = (greedy(&merged, &prompt, 6), greedy(&model, &prompt, 6));
    assert!((with.1[0] - without.1[0]).abs() > 1e-3, "the adapter changes the model: {with:?} {without:?}");
    let reply = complete("a1");
    assert_eq!(
        reply["choices"][0]["token_ids"],
        json!(with.0[..reply["choices"][0]["token_ids"].as_array().unwrap().len()])
    );
    let lp = reply["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().unwrap();
    assert!((lp - with.1[0] as f64).abs() < 1e-4, "{lp} vs {}", with.1[0]);
    assert_eq!(reply["weight_version"], "a1@1");
    let lp_base = complete("model")["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().unwrap();
    assert!((lp_base - without.1[0] as f64).abs() < 1e-4, "other names sample with the base");
    let models = http(&server.base, "GET", "/v1/models", None).json();
    assert_eq!(models["data"][1]["id"], "a1", "{models}");

    assert_eq!(post("/v1/load_lora_adapter", load.clone()).status, 400, "the name is taken");
    let mut inplace = load.clone();
    inplace["load_inplace"] = json!(true);
    assert_eq!(post("/v1/load_lora_adapter", inplace).status, 200);
    assert_eq!(complete("a1")["weight_version"], "a1@2");
    let missing = post("/v1/load_lora_adapter", json!({"lora_name": "a2", "lora_path": p(&dir.join("nowhere"))}));
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert_eq!(post("/v1/unload_lora_adapter", json!({"lora_name": "a1"})).status, 200);
    assert_eq!(post("/v1/unload_lora_adapter", json!({"lora_name": "a1"})).status, 404);
    assert_eq!(complete("a1")["weight_version"], "default", "an unknown name samples with the base");
}
