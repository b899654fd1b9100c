//! `rlhf serve`: an OpenAI-compatible server (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`) for any model `rlhf` loads, batching concurrent requests.

use crate::config::{require, CommandArgs};
use crate::loading;
use anyhow::Result;
use candle_core::Device;
use rlhf_server::openai::{run as serve, ServeOptions};
use rlhf_train::PrecisionChoice;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`ServeConfig`].
#[derive(clap::Args, Serialize)]
pub struct Flags {
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    #[arg(long)]
    model: Option<String>,
    /// Default 8000.
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind (default 127.0.0.1); anything but loopback exposes the model to the network.
    #[arg(long)]
    host: Option<IpAddr>,
    /// Most sequences decoded together; requests arriving during a batch join the next one (default 32).
    #[arg(long)]
    max_batch: Option<usize>,
    /// How long an idle server waits for more requests to batch with the first, in ms (default 5).
    #[arg(long)]
    gather_ms: Option<u64>,
    /// Model name in replies and `/v1/models` (default: the model's file or folder name).
    #[arg(long)]
    name: Option<String>,
    /// Version label of the weights served at start, until a trainer's `update_weights_from_disk`
    /// replaces them (default "default", as SGLang's).
    #[arg(long)]
    weight_version: Option<String>,
    /// Arithmetic of the matrix products: auto (bf16 where the CPU has AMX, else fp32), bf16 or fp32.
    #[arg(long, value_parser = crate::precision::parse)]
    precision: Option<PrecisionChoice>,
}

/// `rlhf serve`'s settings (`--config` / `--set` / the flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub model: String,
    pub port: u16,
    pub host: IpAddr,
    pub max_batch: usize,
    pub gather_ms: u64,
    pub name: Option<String>,
    pub weight_version: String,
    pub precision: PrecisionChoice,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            port: 8000,
            host: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            max_batch: 32,
            gather_ms: 5,
            name: None,
            weight_version: "default".into(),
            precision: PrecisionChoice::Auto,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let a: ServeConfig = args.load()?;
    crate::precision::apply(a.precision);
    require(a.model.is_empty(), "--model MODEL", "model")?;
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let name = a.name.clone().unwrap_or_else(|| {
        loaded
            .path
            .file_name()
            .map_or_else(|| a.model.clone(), |f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
    });
    if !a.host.is_loopback() {
        eprintln!("warning: binding {}: the model is reachable from the network, without authentication", a.host);
    }
    let opts = ServeOptions {
        model_name: name.clone(),
        max_batch: a.max_batch,
        gather: Duration::from_millis(a.gather_ms),
        model_path: loaded.path.display().to_string(),
        weight_version: a.weight_version.clone(),
    };
    serve(SocketAddr::new(a.host, a.port), loaded.model, loaded.tokenizer, opts, |addr| {
        eprintln!("serving {name} on http://{addr}/v1 (OpenAI-compatible; Ctrl-C stops it)");
    })?;
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Base URL of a running OpenAI-compatible server (ours or another), e.g. http://127.0.0.1:8000/v1
    #[arg(long)]
    url: String,
    /// Concurrency levels to measure, one after another.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Requests each client sends, one after another, at each level.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    #[arg(long, default_value = "default")]
    model: String,
}

/// Completion tokens per second (from each reply's `usage`) at each concurrency level.
pub fn bench(a: BenchArgs) -> Result<()> {
    use serde_json::{json, Value};
    let url = format!("{}/chat/completions", a.url.trim_end_matches('/'));
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>14} {:>12}",
        "clients", "requests", "completion", "wall s", "tokens/s", "p50 req s"
    );
    for &clients in &a.clients {
        let start = std::time::Instant::now();
        let results: Vec<Result<Vec<(u64, f64)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let url = url.clone();
                    let a = &a;
                    s.spawn(move || -> Result<Vec<(u64, f64)>> {
                        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
                        let mut out = vec![];
                        for r in 0..a.requests {
                            let body = json!({"model": a.model, "max_tokens": a.max_tokens, "temperature": 0.7, "seed": c * 1000 + r,
                                "messages": [{"role": "user", "content": format!("Write a short story about robot number {c}-{r}.")}]});
                            let sent = std::time::Instant::now();
                            let reply: Value = agent.post(&url).send_json(body).map_err(|e| anyhow::anyhow!("{url}: {e}"))?.into_json()?;
                            let tokens = reply["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                            out.push((tokens, sent.elapsed().as_secs_f64()));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("client panicked")))).collect()
        });
        let wall = start.elapsed().as_secs_f64();
        let mut all = vec![];
        for r in results {
            all.extend(r?);
        }
        let tokens: u64 = all.iter().map(|x| x.0).sum();
        let mut lat: Vec<f64> = all.iter().map(|x| x.1).collect();
        lat.sort_by(f64::total_cmp);
        println!(
            "{:>8} {:>9} {:>12} {:>10.2} {:>14.1} {:>12.2}",
            clients,
            all.len(),
            tokens,
            wall,
            tokens as f64 / wall,
            lat[lat.len() / 2]
        );
    }
    Ok(())
}
