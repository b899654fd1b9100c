//! `rlhf verify`: greedy answers to held-out prompts with reference answers, scored by the
//! arithmetic verifiers — the rate of correct final answers and of the well-formatted style
//! (`The answer is N.` as the last line).

use crate::{loading, progress};
use anyhow::{Context, Result};
use candle_core::Device;
use rlhf_data::{is_correct, is_well_formatted, load_prompts, LoadOptions};
use rlhf_model::{generate, GenerationConfig, SamplingParams};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hub id ORG/NAME[@REVISION], HF folder, .gguf file, or `default`.
    #[arg(long)]
    model: String,
    /// LoRA adapter folder to apply on top of --model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Prompts with an `answer` column (e.g. prompts_eval.jsonl from `rlhf data make arithmetic`).
    #[arg(long)]
    prompts: String,
    /// Score only the first N prompts (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// Write every prompt, answer and verdict to this JSONL file.
    #[arg(long)]
    samples: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let tok = &loaded.tokenizer;
    let model = match &a.adapter {
        Some(dir) => loaded
            .model
            .load_lora(dir)
            .with_context(|| format!("loading adapters from {}", dir.display()))?
            .0
            .detached()?,
        None => loaded.model.detached()?,
    };
    let mut prompts =
        loading::load_dataset(&a.prompts, tok, &LoadOptions { max_length: 0, ..Default::default() }, load_prompts)?
            .examples;
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    let cfg = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams::greedy(),
        eos_token_ids: tok.eos_ids(),
        pad_token_id: tok.pad_id(),
    };
    let (mut correct, mut formatted, mut scored) = (0usize, 0usize, 0usize);
    let mut lines = Vec::new();
    let pb = progress::bar(prompts.len() as u64, "verifying");
    for chunk in prompts.chunks(a.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.prompt_ids.clone()).collect();
        let out = generate(&model, &ids, &cfg, None, &mut |_| {})?;
        for (p, resp) in chunk.iter().zip(&out.response_ids) {
            let text = tok.decode(resp, true)?;
            let answer = p.answer.clone().unwrap_or_default();
            let (ok, fmt) = (is_correct(&text, &answer), is_well_formatted(&text));
            correct += usize::from(ok);
            formatted += usize::from(fmt);
            scored += 1;
            lines.push(json!({"source": p.source.to_string(), "answer": answer, "response": text, "correct": ok, "well_formatted": fmt}));
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    if let Some(path) = &a.samples {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let n = scored.max(1) as f64;
    println!(
        "{}",
        json!({"prompts": scored, "accuracy": correct as f64 / n, "well_formatted": formatted as f64 / n, "model": a.model})
    );
    Ok(())
}
