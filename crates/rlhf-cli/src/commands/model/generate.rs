//! `rlhf generate`: sample continuations with the batched engine.

use crate::config::{require, CommandArgs};
use crate::{loading, progress};
use anyhow::{bail, Result};
use candle_core::Device;
use rlhf_data::{Message, StopStrings};
use rlhf_model::{generate, GenerationConfig, SamplingParams, StopCondition};
use rlhf_train::PrecisionChoice;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub type Args = CommandArgs<Flags>;

/// The flags, each a shortcut for the key of the same name in [`GenerateConfig`].
#[derive(clap::Args, Serialize)]
pub struct Flags {
    /// Print JSON (ids, text, logprobs, finish reason) instead of plain text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json: bool,
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default` (SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    prompt: Option<String>,
    /// Format the prompt as a user message with the model's chat template.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    system: Option<String>,
    /// 0, the default, is greedy decoding.
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    /// Number of samples (one batch; default 1).
    #[arg(long)]
    n: Option<usize>,
    /// Default 256.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Default 0.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop a sample when its text contains this string (repeatable).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<String>,
    /// Arithmetic of the matrix products: auto (bf16 where the CPU has AMX, else fp32), bf16 or fp32.
    #[arg(long, value_parser = crate::precision::parse)]
    precision: Option<PrecisionChoice>,
}

/// `rlhf generate`'s settings (`--config` / `--set` / the flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    pub json: bool,
    pub model: String,
    pub prompt: String,
    pub chat: bool,
    pub system: Option<String>,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub n: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub stop: Vec<String>,
    pub precision: PrecisionChoice,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            json: false,
            model: String::new(),
            prompt: String::new(),
            chat: false,
            system: None,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            n: 1,
            max_new_tokens: 256,
            seed: 0,
            stop: Vec::new(),
            precision: PrecisionChoice::Auto,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let a: GenerateConfig = args.load()?;
    crate::precision::apply(a.precision);
    require(a.model.is_empty(), "--model MODEL", "model")?;
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let tok = &loaded.tokenizer;
    let prompt_ids = if a.chat {
        let mut messages = vec![];
        if let Some(s) = &a.system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(&a.prompt));
        tok.encode_chat(&messages, true)?
    } else {
        if a.system.is_some() {
            bail!("--system needs --chat");
        }
        tok.encode(&a.prompt, true)?
    };
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
        eos_token_ids: tok.eos_ids(),
        pad_token_id: tok.pad_id(),
    };
    let stops = StopStrings::new(tok, a.stop.clone());
    let stop: Option<&dyn StopCondition> = if a.stop.is_empty() { None } else { Some(&stops) };
    let pb = progress::bar(a.max_new_tokens as u64, "generating");
    let start = std::time::Instant::now();
    let out = generate(&loaded.model, &vec![prompt_ids.clone(); a.n], &cfg, stop, &mut |s| pb.set_position(s as u64))?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let mut samples = vec![];
    for (i, ids) in out.response_ids.iter().enumerate() {
        let mut text = tok.decode(ids, true)?;
        if let Some(cut) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
        samples.push(json!({
            "index": i,
            "text": text,
            "ids": ids,
            "logprobs": out.response_logprobs[i],
            "finish_reason": format!("{:?}", out.finish[i]).to_lowercase(),
        }));
    }
    let generated: usize = out.response_ids.iter().map(Vec::len).sum();
    if a.json {
        let v = json!({"model": loaded.path, "prompt_ids": prompt_ids, "samples": samples, "seconds": secs});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for s in &samples {
            if a.n > 1 {
                println!("--- sample {} ---", s["index"]);
            }
            println!("{}", s["text"].as_str().unwrap_or_default());
        }
        eprintln!("[{generated} tokens in {secs:.2} s, {:.1} tokens/s]", generated as f64 / secs);
    }
    Ok(())
}
