//! `/v1/chat/completions`, `/v1/completions` and `/v1/models` over the [`engine`](super::engine):
//! JSON replies, or server-sent events (`data: {chunk}` … `data: [DONE]`) with `stream: true`.
//!
//! For RL trainers that sample here, SGLang's weight-update endpoints: `POST /pause_generation`,
//! `POST /update_weights_from_disk`, `POST /continue_generation`, and `GET /get_model_info` /
//! `GET /get_weight_version`; every completion reply carries the `weight_version` that sampled it.

use super::engine::{self, Control, EngineConfig, EngineHandle, Event, Job};
use super::wire::{prompt_of, text_of, BadRequest, ChatRequest, Checked, CompletionRequest, Plan, Prompt};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rlhf_data::{Message, Tokenizer};
use rlhf_model::{CausalLm, SamplingParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The name `/v1/models` lists and replies carry.
    pub model_name: String,
    pub max_batch: usize,
    pub gather: Duration,
    /// Where the served weights came from (`/get_model_info`).
    pub model_path: String,
    /// The version label of the weights served at start (SGLang's default is "default").
    pub weight_version: String,
}

struct AppState {
    engine: EngineHandle,
    tok: Arc<Tokenizer>,
    opts: ServeOptions,
    context: usize,
    /// Names of the loaded LoRA adapters: a request whose `model` is one samples with it.
    adapters: std::sync::RwLock<std::collections::BTreeSet<String>>,
}

impl AppState {
    /// The adapter a request's `model` names, if one of that name is loaded.
    fn adapter(&self, model: Option<&str>) -> Option<String> {
        let model = model?;
        self.adapters.read().ok()?.contains(model).then(|| model.to_string())
    }
}

struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<BadRequest> for ApiError {
    fn from(b: BadRequest) -> Self {
        ApiError(StatusCode::BAD_REQUEST, b.body())
    }
}

fn server_error(message: String) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
    )
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError(r.status(), BadRequest { param: None, message: r.body_text() }.body()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| BadRequest { param: None, message: format!("invalid request body: {e}") }.into())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Queues the prompt and returns the event stream of its choices.
fn enqueue(
    state: &AppState,
    prompt: Vec<u32>,
    plan: &Plan,
    model: Option<&str>,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    if prompt.len() + plan.max_tokens > state.context {
        return Err(BadRequest::new(
            "max_tokens",
            format!(
                "the prompt ({} tokens) plus max_tokens ({}) exceed the model's context of {}",
                prompt.len(),
                plan.max_tokens,
                state.context
            ),
        )
        .into());
    }
    let (tx, rx) = unbounded_channel();
    let sampling = SamplingParams { temperature: plan.temperature, top_k: None, top_p: plan.top_p, seed: plan.seed };
    state
        .engine
        .submit(Job {
            prompt,
            n: plan.n,
            sampling,
            max_tokens: plan.max_tokens,
            top_logprobs: plan.top_logprobs,
            stop: plan.stop.clone(),
            first_stream: plan.first_stream,
            adapter: state.adapter(model),
            events: tx,
        })
        .map_err(server_error)?;
    Ok(rx)
}

struct Choice {
    text: String,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    top_logprobs: Vec<Vec<(u32, f32)>>,
    finish_reason: &'static str,
    weight_version: Arc<str>,
}

/// Waits for every choice of a non-streaming request.
async fn collect(mut rx: UnboundedReceiver<Event>, n: usize) -> Result<Vec<Choice>, ApiError> {
    let mut choices: Vec<Option<Choice>> = (0..n).map(|_| None).collect();
    while choices.iter().any(Option::is_none) {
        match rx.recv().await {
            Some(Event::Finished { choice, text, tokens, logprobs, top_logprobs, finish_reason, weight_version }) => {
                choices[choice] = Some(Choice { text, tokens, logprobs, top_logprobs, finish_reason, weight_version });
            }
            Some(Event::Delta { .. }) => {}
            Some(Event::Failed(e)) => return Err(server_error(e)),
            None => return Err(server_error("the generation engine stopped".into())),
        }
    }
    Ok(choices.into_iter().flatten().collect())
}

fn usage(prompt_tokens: usize, choices: &[Choice]) -> Value {
    let completion: usize = choices.iter().map(|c| c.tokens.len()).sum();
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion})
}

/// An SSE body from chunks made of each event; `None` from `chunk` skips the event.
fn sse(
    mut rx: UnboundedReceiver<Event>,
    n: usize,
    first: Vec<Value>,
    chunk: impl Fn(&Event) -> Option<Value> + Send + 'static,
) -> Response {
    let (tx, out) = unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let send = |v: &Value| tx.send(Bytes::from(format!("data: {v}\n\n"))).is_ok();
        for v in &first {
            if !send(v) {
                return;
            }
        }
        let mut finished = 0;
        while finished < n {
            let Some(event) = rx.recv().await else { break };
            if let Event::Failed(e) = &event {
                send(&json!({"error": {"message": e, "type": "server_error"}}));
                return;
            }
            if matches!(event, Event::Finished { .. }) {
                finished += 1;
            }
            if let Some(v) = chunk(&event) {
                if !send(&v) {
                    return; // client gone; dropping rx stops its rows
                }
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), out))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let plan = req.plan()?;
    let mut messages = vec![];
    for (i, m) in req.messages.iter().enumerate() {
        if !["system", "user", "assistant", "developer"].contains(&m.role.as_str()) {
            return Err(BadRequest::new(
                &format!("messages[{i}].role"),
                format!("{:?} is not system, user or assistant", m.role),
            )
            .into());
        }
        let role = if m.role == "developer" { "system" } else { m.role.as_str() };
        messages.push(Message::new(role, &text_of(&m.content, &format!("messages[{i}].content"))?));
    }
    let prompt = state
        .tok
        .encode_chat(&messages, true)
        .map_err(|e| BadRequest::new("messages", format!("cannot apply the chat template: {e}")))?;
    let prompt_tokens = prompt.len();
    let rx = enqueue(&state, prompt, &plan, req.model.as_deref())?;
    let (id, created, model) = (request_id("chatcmpl"), now(), state.opts.model_name.clone());
    if plan.stream {
        let head = |extra: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": extra});
        let first = (0..plan.n)
            .map(|i| head(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])))
            .collect();
        let (id2, model2) = (id.clone(), model.clone());
        return Ok(sse(rx, plan.n, first, move |e| {
            let choices = match e {
                Event::Delta { choice, text } if !text.is_empty() => {
                    json!([{"index": choice, "delta": {"content": text}, "finish_reason": null}])
                }
                Event::Finished { choice, finish_reason, .. } => {
                    json!([{"index": choice, "delta": {}, "finish_reason": finish_reason}])
                }
                _ => return None,
            };
            Some(
                json!({"id": id2, "object": "chat.completion.chunk", "created": created, "model": model2, "choices": choices}),
            )
        }));
    }
    let choices = collect(rx, plan.n).await?;
    let body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices.iter().enumerate().map(|(i, c)| json!({
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": if plan.logprobs { json!({"content": token_logprobs(&state.tok, c)}) } else { Value::Null },
            "finish_reason": c.finish_reason,
        })).collect::<Vec<_>>(),
        "usage": usage(prompt_tokens, &choices),
        "weight_version": weight_version(&choices),
    });
    Ok(Json(body).into_response())
}

/// The weights a reply was sampled with: those of its first choice (one batch runs one version;
/// the choices of a request run in one batch unless it is larger than `max_batch`).
fn weight_version(choices: &[Choice]) -> Option<&str> {
    choices.first().map(|c| &*c.weight_version)
}

/// Chat's `logprobs.content`: each sampled token with its alternatives, as OpenAI shapes them.
fn token_logprobs(tok: &Tokenizer, c: &Choice) -> Vec<Value> {
    let entry = |t: u32, lp: f32| {
        let text = token_text(tok, t);
        json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})
    };
    c.tokens
        .iter()
        .zip(&c.logprobs)
        .enumerate()
        .map(|(i, (&t, &lp))| {
            let mut v = entry(t, lp);
            let alts = c.top_logprobs.get(i).map_or(&[][..], Vec::as_slice);
            v["top_logprobs"] = alts.iter().map(|&(a, alp)| entry(a, alp)).collect();
            v
        })
        .collect()
}

/// One token's text on its own (special tokens included, so an EOS alternative is visible).
fn token_text(tok: &Tokenizer, t: u32) -> String {
    tok.decode(&[t], false).unwrap_or_default()
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(body)?;
    let plan = req.plan()?;
    let prompt = match prompt_of(&req, state.tok.vocab_size())? {
        Prompt::Text(text) => {
            state.tok.encode(&text, true).map_err(|e| BadRequest::new("prompt", format!("cannot tokenize: {e}")))?
        }
        Prompt::Ids(ids) => ids,
    };
    let return_ids = req.return_token_ids == Some(true);
    let prompt_ids = return_ids.then(|| prompt.clone());
    if prompt.is_empty() {
        return Err(BadRequest::new("prompt", "is empty").into());
    }
    let prompt_tokens = prompt.len();
    let rx = enqueue(&state, prompt, &plan, req.model.as_deref())?;
    let (id, created, model) = (request_id("cmpl"), now(), state.opts.model_name.clone());
    if plan.stream {
        return Ok(sse(rx, plan.n, vec![], move |e| {
            let choices = match e {
                Event::Delta { choice, text } if !text.is_empty() => {
                    json!([{"index": choice, "text": text, "logprobs": null, "finish_reason": null}])
                }
                Event::Finished { choice, finish_reason, .. } => {
                    json!([{"index": choice, "text": "", "logprobs": null, "finish_reason": finish_reason}])
                }
                _ => return None,
            };
            Some(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices}))
        }));
    }
    let choices = collect(rx, plan.n).await?;
    let body = json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": choices.iter().enumerate().map(|(i, c)| json!({
            "index": i,
            "text": c.text,
            "logprobs": if plan.logprobs {
                let tokens: Vec<String> = c.tokens.iter().map(|&t| token_text(&state.tok, t)).collect();
                let offsets: Vec<usize> = tokens.iter().scan(0, |at, t| { let o = *at; *at += t.len(); Some(o) }).collect();
                // Legacy shape: per token an object {token text: logprob} of the alternatives.
                // Tokens that decode to the same text share a key; the likelier (first) one stays.
                let top: Vec<Value> = c.top_logprobs.iter().map(|alts| {
                    let mut map = serde_json::Map::new();
                    for &(a, lp) in alts {
                        map.entry(token_text(&state.tok, a)).or_insert(json!(lp));
                    }
                    Value::Object(map)
                }).collect();
                json!({"tokens": tokens, "token_logprobs": c.logprobs, "top_logprobs": top, "text_offset": offsets})
            } else { Value::Null },
            "finish_reason": c.finish_reason,
            "token_ids": if return_ids { json!(c.tokens) } else { Value::Null },
        })).collect::<Vec<_>>(),
        "usage": usage(prompt_tokens, &choices),
        "prompt_token_ids": prompt_ids,
        "weight_version": weight_version(&choices),
    });
    Ok(Json(body).into_response())
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let base = &state.opts.model_name;
    let mut data = vec![json!({"id": base, "object": "model", "created": 0, "owned_by": "rlhf"})];
    if let Ok(names) = state.adapters.read() {
        data.extend(
            names.iter().map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "rlhf", "parent": base})),
        );
    }
    Json(json!({"object": "list", "data": data}))
}

/// SGLang's `POST /pause_generation {"mode"}`: no new batch starts until `/continue_generation`.
/// The running batch finishes first; `abort` (the default) also fails the queued requests, while
/// `retract` and `in_place` keep them for after the pause.
async fn pause(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body: Value = if body.as_ref().is_ok_and(|b| b.is_empty()) { json!({}) } else { parse(body)? };
    let abort = match body.get("mode").and_then(Value::as_str).unwrap_or("abort") {
        "abort" => true,
        "retract" | "in_place" => false,
        other => return Err(BadRequest::new("mode", format!("{other:?} is not abort, retract or in_place")).into()),
    };
    let (done, answer) = tokio::sync::oneshot::channel();
    state.engine.control(Control::Pause { abort, done }).map_err(server_error)?;
    let aborted = answer.await.map_err(|_| server_error("the generation engine stopped".into()))?;
    Ok(Json(json!({"success": true, "message": "paused", "num_aborted_requests": aborted})).into_response())
}

/// SGLang's `POST /continue_generation`.
async fn resume(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state.engine.control(Control::Continue).map_err(server_error)?;
    Ok(Json(json!({"success": true, "message": "continued"})).into_response())
}

/// SGLang's `POST /update_weights_from_disk {"model_path", "weight_version", …}`: the weights of
/// an HF folder of the same architecture, loaded between batches. A failure keeps the old
/// weights and answers `success: false` with status 400.
async fn update_weights(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: Value = parse(body)?;
    let Some(path) = body.get("model_path").and_then(Value::as_str) else {
        return Err(BadRequest::new("model_path", "required: the folder of the new weights").into());
    };
    let version = match body.get("weight_version") {
        None | Some(Value::Null) => path.to_string(),
        Some(Value::String(v)) => v.clone(),
        Some(other) => other.to_string(),
    };
    let (done, answer) = tokio::sync::oneshot::channel();
    state.engine.control(Control::Update { path: path.into(), version, done }).map_err(server_error)?;
    let loaded = answer.await.map_err(|_| server_error("the generation engine stopped".into()))?;
    let (status, success, message) = match loaded {
        Ok(()) => (StatusCode::OK, true, "weights updated".to_string()),
        Err(e) => (StatusCode::BAD_REQUEST, false, e),
    };
    Ok((status, Json(json!({"success": success, "message": message, "num_paused_requests": 0}))).into_response())
}

async fn current_version(state: &AppState) -> Result<String, ApiError> {
    let (done, answer) = tokio::sync::oneshot::channel();
    state.engine.control(Control::Version { done }).map_err(server_error)?;
    answer.await.map_err(|_| server_error("the generation engine stopped".into()))
}

async fn model_info(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let version = current_version(&state).await?;
    Ok(Json(json!({
        "model_path": state.opts.model_path, "tokenizer_path": state.opts.model_path,
        "is_generation": true, "weight_version": version,
    }))
    .into_response())
}

async fn weight_version_route(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(json!({"weight_version": current_version(&state).await?})).into_response())
}

/// vLLM's `POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace"}`: a PEFT
/// adapter folder of the served model, merged into a copy of the weights it adapts; requests
/// whose `model` is `lora_name` sample with it (replies label it `lora_name@n`, the n-th load).
async fn load_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: Value = parse(body)?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::from(BadRequest::new(name, "required")))
    };
    let (name, path) = (field("lora_name")?, field("lora_path")?);
    let replace = body.get("load_inplace").and_then(Value::as_bool).unwrap_or(false);
    let (done, answer) = tokio::sync::oneshot::channel();
    let control = Control::LoadAdapter { name: name.clone(), path: path.into(), replace, done };
    state.engine.control(control).map_err(server_error)?;
    match answer.await.map_err(|_| server_error("the generation engine stopped".into()))? {
        Ok(()) => {
            if let Ok(mut names) = state.adapters.write() {
                names.insert(name.clone());
            }
            Ok(format!("Success: LoRA adapter '{name}' added successfully.").into_response())
        }
        Err(e) => Err(BadRequest::new("lora_path", e).into()),
    }
}

/// vLLM's `POST /v1/unload_lora_adapter {"lora_name"}`.
async fn unload_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: Value = parse(body)?;
    let Some(name) = body.get("lora_name").and_then(Value::as_str).map(str::to_string) else {
        return Err(BadRequest::new("lora_name", "required").into());
    };
    if let Ok(mut names) = state.adapters.write() {
        names.remove(&name);
    }
    let (done, answer) = tokio::sync::oneshot::channel();
    state.engine.control(Control::UnloadAdapter { name: name.clone(), done }).map_err(server_error)?;
    match answer.await.map_err(|_| server_error("the generation engine stopped".into()))? {
        Ok(()) => Ok(format!("Success: LoRA adapter '{name}' removed successfully.").into_response()),
        Err(e) => Err(ApiError(StatusCode::NOT_FOUND, BadRequest::new("lora_name", e).body())),
    }
}

pub fn router(model: CausalLm, tok: Tokenizer, opts: ServeOptions) -> Router {
    let context = model.config().max_position_embeddings;
    let tok = Arc::new(tok);
    let config = EngineConfig { max_batch: opts.max_batch.max(1), gather: opts.gather };
    let engine = engine::start(model, tok.clone(), config, opts.weight_version.clone());
    let state = Arc::new(AppState { engine, tok, opts, context, adapters: Default::default() });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/pause_generation", post(pause))
        .route("/continue_generation", post(resume))
        .route("/update_weights_from_disk", post(update_weights))
        .route("/get_model_info", get(model_info))
        .route("/get_weight_version", get(weight_version_route))
        .route("/v1/load_lora_adapter", post(load_adapter))
        .route("/v1/unload_lora_adapter", post(unload_adapter))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, json!({"error": {"message": "no such endpoint", "type": "invalid_request_error", "param": null, "code": null}})) })
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(state)
}

/// Serves on `addr` until the process ends; `on_listening` gets the bound address.
pub fn run(
    addr: SocketAddr,
    model: CausalLm,
    tok: Tokenizer,
    opts: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        on_listening(listener.local_addr()?);
        let forever = std::future::pending::<()>();
        crate::http::serve(listener, router(model, tok, opts), crate::http::HEADER_READ_TIMEOUT, forever).await
    })
}
