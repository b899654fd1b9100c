//! Rollouts on inference servers (`rollout.engine = "openai"`): `rlhf serve` or SGLang workers
//! sample the responses, the trainer keeps everything else.
//!
//! - Each row is one `POST {server}/completions` with the prompt as token ids (the chat template
//!   was applied by us, so the tokens are the trainer's), `logprobs` and `return_token_ids`, and
//!   the seed and random stream the in-process sampler would give that row
//!   ([`rollout`](crate::rollout::rollout)'s chunks: `seed + chunk`, stream = row in chunk), so
//!   `rlhf serve` in fp32 draws the same rows.
//! - A row goes to the server with the fewest requests in flight; a server that fails or times
//!   out is dropped and the row goes to another, up to `rollout.max_retries` times. With every
//!   server gone the rollout stops with an error (the loop checkpoints first).
//! - Before a step samples, the servers get the policy as it is (SGLang's protocol, `sync =
//!   "sglang-disk"`): the weights written as an HF folder under `sync_dir`, then
//!   `POST /pause_generation` → `POST /update_weights_from_disk {model_path, weight_version}` →
//!   `POST /continue_generation` on each server's root (the API root without `/v1`), after
//!   which the folder is deleted; LoRA adapters are merged into the weights first. The version label is the number of updates
//!   the policy has had; a reply that names another version than the one the servers were
//!   given is refused. (`online::sampling` decides when: before each step, or with
//!   `max_staleness ≥ 1` before drawing the next step during this step's update.)

use crate::error::{Result, TrainError};
use crate::rollout::{RolloutConfig, RolloutRow, WeightSync};
use rlhf_model::{CausalLm, FinishReason};
use rlhf_openai::wire::{Common, CompletionRequest, CompletionResponse};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Requests in flight per server at most (the server batches what arrives together).
const IN_FLIGHT_PER_SERVER: usize = 64;

/// The name the policy's LoRA adapter is loaded under (`sync = "vllm-lora"`).
pub const ADAPTER_NAME: &str = "rlhf-policy";

/// What `engine = "openai"` needs and what it cannot do (yet).
pub fn validate(cfg: &RolloutConfig) -> Result<()> {
    let bad = |m: &str| Err(TrainError::Config(format!("rollout.engine = \"openai\": {m}")));
    if cfg.servers.is_empty() {
        return bad("give the servers' API roots in rollout.servers, e.g. [\"http://127.0.0.1:8000/v1\"]");
    }
    if let Some(s) = cfg.servers.iter().find(|s| !(s.starts_with("http://") || s.starts_with("https://"))) {
        return bad(&format!("rollout.servers entry {s:?} must start with http:// or https://"));
    }
    if cfg.top_k.is_some() {
        return bad("rollout.top_k is not part of the completions API; use top_p");
    }
    if cfg.ignore_eos {
        return bad("rollout.ignore_eos is not part of the completions API");
    }
    if !(cfg.request_timeout_s.is_finite() && cfg.request_timeout_s > 0.0) {
        return bad("rollout.request_timeout_s must be a positive number of seconds");
    }
    Ok(())
}

struct Server {
    /// The API root, e.g. `http://127.0.0.1:8000/v1`.
    api: String,
    /// Where SGLang's native endpoints live: the API root without `/v1`.
    root: String,
    in_flight: AtomicUsize,
    gone: AtomicBool,
}

/// The servers of a run and the weights they hold.
pub struct RemoteEngine {
    servers: Vec<Server>,
    agent: ureq::Agent,
    sync_dir: PathBuf,
    sync: WeightSync,
    max_retries: usize,
    /// The version label the servers hold (`None` before the first sync).
    version: Option<u64>,
}

impl RemoteEngine {
    /// The engine of `cfg.servers`; weights go to `cfg.sync_dir`, or `rollout-weights/` in `run_dir`.
    pub fn new(cfg: &RolloutConfig, run_dir: &Path) -> Result<Self> {
        validate(cfg)?;
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let api = s.trim_end_matches('/').to_string();
                let root = api.strip_suffix("/v1").unwrap_or(&api).to_string();
                Server { api, root, in_flight: AtomicUsize::new(0), gone: AtomicBool::new(false) }
            })
            .collect();
        let sync_dir =
            if cfg.sync_dir.is_empty() { run_dir.join("rollout-weights") } else { cfg.sync_dir.clone().into() };
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs_f64(cfg.request_timeout_s)).build();
        Ok(Self { servers, agent, sync_dir, sync: cfg.sync, max_retries: cfg.max_retries, version: None })
    }

    /// Gives every live server the weights of `policy` labelled `version` (the updates it has
    /// had), unless they hold them already. A server that fails here is dropped.
    pub fn sync(&mut self, policy: &CausalLm, version: u64) -> Result<()> {
        if self.version == Some(version) {
            return Ok(());
        }
        let dir = self.sync_dir.join(format!("v{version}"));
        match (self.sync, policy.lora_config()) {
            (WeightSync::VllmLora, Some(_)) => policy.save_lora(&dir)?,
            (WeightSync::VllmLora, None) => {
                return Err(TrainError::Config(
                    "rollout.sync = \"vllm-lora\" loads LoRA adapters: enable [lora], or use \"sglang-disk\"".into(),
                ))
            }
            // LoRA: the servers get the adapters merged into full weights.
            (WeightSync::SglangDisk, Some(_)) => policy.merge_lora()?.save_hf(&dir)?,
            (WeightSync::SglangDisk, None) => policy.save_hf(&dir)?,
        }
        let path = std::fs::canonicalize(&dir).map_err(|e| TrainError::file(&dir, e.to_string()))?;
        let label = version.to_string();
        for server in self.live() {
            let steps = match self.sync {
                WeightSync::SglangDisk => vec![
                    (&server.root, "pause_generation", json!({"mode": "abort"})),
                    (
                        &server.root,
                        "update_weights_from_disk",
                        json!({"model_path": path, "weight_version": label, "flush_cache": true}),
                    ),
                    (&server.root, "continue_generation", json!({})),
                ],
                WeightSync::VllmLora => vec![(
                    &server.api,
                    "load_lora_adapter",
                    json!({"lora_name": ADAPTER_NAME, "lora_path": path, "load_inplace": true}),
                )],
            };
            for (base, endpoint, body) in steps {
                let url = format!("{base}/{endpoint}");
                let answer = self.post(&url, &body).and_then(|v| match v.get("success") {
                    Some(Value::Bool(false)) => Err(format!("{url}: {}", v["message"])),
                    _ => Ok(()),
                });
                if let Err(e) = answer {
                    eprintln!("warning: rollout server {} dropped: weight sync failed: {e}", server.api);
                    server.gone.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        // The servers hold the weights now (the update is synchronous): the folder is not needed.
        let _ = std::fs::remove_dir_all(&dir);
        if self.live().next().is_none() {
            return Err(self.all_gone("while loading the new weights"));
        }
        self.version = Some(version);
        Ok(())
    }

    /// `repeats` responses to each prompt, as [`crate::rollout::rollout`] samples them.
    pub fn rollout(
        &self,
        prompts: &[&[u32]],
        repeats: usize,
        cfg: &RolloutConfig,
        seed: u64,
    ) -> Result<Vec<RolloutRow>> {
        let rows: Vec<(usize, &[u32])> =
            prompts.iter().enumerate().flat_map(|(i, p)| std::iter::repeat_n((i, *p), repeats.max(1))).collect();
        let chunk = if cfg.generation_batch_size == 0 { rows.len().max(1) } else { cfg.generation_batch_size };
        // vLLM's LoRA replies carry no version: the adapter's name pins the weights.
        let expected = self.version.map(|v| v.to_string()).filter(|_| self.sync == WeightSync::SglangDisk);
        let model = (self.sync == WeightSync::VllmLora).then(|| ADAPTER_NAME.to_string());
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<Option<Result<RolloutRow>>>> = Mutex::new((0..rows.len()).map(|_| None).collect());
        let workers = rows.len().min(self.servers.len() * IN_FLIGHT_PER_SERVER).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(prompt_index, prompt)) = rows.get(k) else { break };
                    let request = CompletionRequest {
                        model: model.clone(),
                        prompt: json!(prompt),
                        common: Common {
                            n: Some(1),
                            temperature: Some(cfg.temperature),
                            top_p: cfg.top_p,
                            max_tokens: Some(cfg.max_new_tokens as i64),
                            seed: Some(seed.wrapping_add((k / chunk) as u64) as i64),
                            ..Common::default()
                        },
                        logprobs: Some(1),
                        return_token_ids: Some(true),
                        sampling_stream: Some((k % chunk) as u64),
                        ..CompletionRequest::default()
                    };
                    let row =
                        self.sample(&request, expected.as_deref()).map(|(response_ids, sampler_logprobs, finish)| {
                            RolloutRow {
                                prompt_index,
                                prompt_ids: prompt.to_vec(),
                                response_ids,
                                sampler_logprobs,
                                finish,
                                weight_version: self.version,
                            }
                        });
                    let stop = row.is_err();
                    if let Ok(mut d) = done.lock() {
                        d[k] = Some(row);
                    }
                    if stop {
                        break;
                    }
                });
            }
        });
        let done = done.into_inner().map_err(|_| TrainError::Config("a rollout worker panicked".into()))?;
        done.into_iter().map(|r| r.unwrap_or_else(|| Err(self.all_gone("while sampling")))).collect()
    }

    /// One row from the least busy live server, moving on after failures.
    fn sample(
        &self,
        request: &CompletionRequest,
        expected: Option<&str>,
    ) -> Result<(Vec<u32>, Vec<f32>, FinishReason)> {
        let body = serde_json::to_value(request).map_err(|e| TrainError::Config(e.to_string()))?;
        let mut failures = Vec::new();
        for _ in 0..=self.max_retries {
            let Some(server) = self.live().min_by_key(|s| s.in_flight.load(Ordering::Relaxed)) else { break };
            server.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = self.post(&format!("{}/completions", server.api), &body);
            server.in_flight.fetch_sub(1, Ordering::Relaxed);
            match reply.and_then(|v| read_row(&v, expected)) {
                Ok(row) => return Ok(row),
                Err(e) => {
                    if !server.gone.swap(true, Ordering::Relaxed) {
                        eprintln!("warning: rollout server {} dropped: {e}", server.api);
                    }
                    failures.push(e);
                }
            }
        }
        let tried = if failures.is_empty() { String::new() } else { format!(" ({})", failures.join("; ")) };
        Err(self.all_gone(&format!("while sampling{tried}")))
    }

    fn live(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter().filter(|s| !s.gone.load(Ordering::Relaxed))
    }

    fn all_gone(&self, when: &str) -> TrainError {
        let names: Vec<&str> = self.servers.iter().map(|s| s.api.as_str()).collect();
        TrainError::Config(format!("no rollout server left {when}: {} all failed", names.join(", ")))
    }

    /// The reply's JSON, or its text as a JSON string (vLLM answers `load_lora_adapter` in text).
    fn post(&self, url: &str, body: &Value) -> std::result::Result<Value, String> {
        match self.agent.post(url).send_json(body) {
            Ok(reply) => {
                let text = reply.into_string().map_err(|e| format!("{url}: reading the reply: {e}"))?;
                Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(ureq::Error::Status(status, reply)) => {
                Err(format!("{url}: HTTP {status}: {}", reply.into_string().unwrap_or_default()))
            }
            Err(e) => Err(format!("{url}: {e}")),
        }
    }
}

/// The sampled ids, their logprobs and why the row ended, from a completion reply.
fn read_row(v: &Value, expected: Option<&str>) -> std::result::Result<(Vec<u32>, Vec<f32>, FinishReason), String> {
    let reply: CompletionResponse =
        serde_json::from_value(v.clone()).map_err(|e| format!("not a completion reply ({e})"))?;
    if let (Some(want), Some(got)) = (expected, reply.weight_version.as_deref()) {
        if want != got {
            return Err(format!("sampled with weight version {got}, not the {want} it was given"));
        }
    }
    let choice = reply.choices.into_iter().next().ok_or("no choices")?;
    let ids = choice.token_ids.ok_or("no token_ids in the reply (the server needs vLLM's return_token_ids)")?;
    let logprobs: Vec<f32> = choice
        .logprobs
        .ok_or("no logprobs in the reply")?
        .token_logprobs
        .into_iter()
        .map(|lp| lp.map(|x| x as f32).ok_or("a token without its logprob"))
        .collect::<std::result::Result<_, _>>()?;
    if logprobs.len() != ids.len() {
        return Err(format!("{} token ids but {} logprobs", ids.len(), logprobs.len()));
    }
    let finish = match choice.finish_reason.as_deref() {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Eos,
    };
    Ok((ids, logprobs, finish))
}
