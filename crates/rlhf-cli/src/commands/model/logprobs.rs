//! `rlhf logprobs`: per-token log-probabilities of a text under a model.

use crate::loading;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rlhf_model::token_logprobs;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    #[arg(long)]
    text: String,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Prepend BOS if the tokenizer asks for it.
    #[arg(long)]
    add_special: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = loading::load(&a.model, &Device::Cpu)?;
    let ids = loaded.tokenizer.encode(&a.text, a.add_special)?;
    if ids.len() < 2 {
        bail!("--text must have at least two tokens to score (it has {})", ids.len());
    }
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mask = Tensor::ones_like(&t)?;
    let lp = token_logprobs(&loaded.model, &t, &mask, a.temperature)?.squeeze(0)?.to_vec1::<f32>()?;
    let tokens: Vec<String> = ids.iter().map(|&i| loaded.tokenizer.token(i).unwrap_or_default()).collect();
    // The first token has no logprob (nothing precedes it).
    let lps: Vec<Option<f32>> = std::iter::once(None).chain(lp.iter().copied().map(Some)).collect();
    if a.json {
        let total: f32 = lp.iter().sum();
        let v = json!({"model": loaded.path, "ids": ids, "tokens": tokens, "logprobs": lps, "sum_logprob": total});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:>6}  {:>8}  token", "id", "logprob");
        for ((id, tok), lp) in ids.iter().zip(&tokens).zip(&lps) {
            let lp = lp.map_or("-".to_string(), |x| format!("{x:.4}"));
            println!("{id:>6}  {lp:>8}  {tok:?}");
        }
    }
    Ok(())
}
