//! K distinct responses per prompt from a policy, for judges and human labellers to rank
//! (`rlhf collect`). Response i is sampled at temperature i mod len (varied temperatures give
//! varied quality); responses that differ only in whitespace count once, and prompts still short
//! of K distinct ones get up to `max_tries` more rounds, one sample per missing slot.

use rlhf_data::Tokenizer;
use rlhf_model::CausalLm;
use rlhf_train::rollout::{decode_rows, rollout, step_seed, RolloutConfig};
use rlhf_train::Result;
use std::collections::HashSet;

/// How candidates are sampled.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Responses per prompt.
    pub k: usize,
    pub temperatures: Vec<f64>,
    pub max_new_tokens: usize,
    pub top_p: Option<f64>,
    /// Rows per generate call.
    pub batch_size: usize,
    /// Extra sampling rounds for prompts whose responses came out identical.
    pub max_tries: usize,
    pub seed: u64,
}

impl Default for Settings {
    /// Four responses at temperatures 0.6, 0.8, 1.0 and 1.2 (varied temperatures give varied
    /// quality), up to 256 tokens, three retry rounds for identical ones.
    fn default() -> Self {
        Self {
            k: 4,
            temperatures: vec![0.6, 0.8, 1.0, 1.2],
            max_new_tokens: 256,
            top_p: None,
            batch_size: 32,
            max_tries: 3,
            seed: 0,
        }
    }
}

/// Whitespace-insensitive identity: responses that differ only in spacing are duplicates.
pub fn dedup_key(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Per prompt, up to `k` distinct non-empty responses (trimmed) with the temperature each was
/// sampled at, in sampling order. `on_tokens(n)` reports tokens sampled so far.
pub fn sample(
    model: &CausalLm,
    prompts: &[&[u32]],
    s: &Settings,
    tok: &Tokenizer,
    on_tokens: &mut dyn FnMut(u64),
) -> Result<Vec<Vec<(String, f64)>>> {
    let mut responses: Vec<Vec<(String, f64)>> = vec![vec![]; prompts.len()];
    let mut seen: Vec<HashSet<String>> = vec![HashSet::new(); prompts.len()];
    let per_temperature = |t: usize| (0..s.k).filter(|i| i % s.temperatures.len() == t).count();
    let mut sampled = 0u64;
    for round in 0..=s.max_tries {
        for (t, &temperature) in s.temperatures.iter().enumerate() {
            // First round: this temperature's share of K; later rounds: one more try per missing slot.
            let need: Vec<usize> =
                (0..prompts.len()).filter(|&p| if round == 0 { true } else { responses[p].len() < s.k }).collect();
            let repeats = if round == 0 { per_temperature(t) } else { 1 };
            if need.is_empty() || repeats == 0 {
                continue;
            }
            let ids: Vec<&[u32]> = need.iter().map(|&p| prompts[p]).collect();
            let cfg = RolloutConfig {
                max_new_tokens: s.max_new_tokens,
                temperature,
                top_p: s.top_p,
                generation_batch_size: s.batch_size,
                ..RolloutConfig::default()
            };
            let seed = step_seed(s.seed, (round * s.temperatures.len() + t) as u64);
            let rows = rollout(model, &ids, repeats, &cfg, tok, seed, &mut |n| on_tokens(sampled + n as u64))?;
            sampled += rows.iter().map(|r| r.response_ids.len() as u64).sum::<u64>();
            for (row, text) in rows.iter().zip(decode_rows(tok, &rows)?) {
                let p = need[row.prompt_index];
                let text = text.response.trim().to_string();
                if responses[p].len() < s.k && !text.is_empty() && seen[p].insert(dedup_key(&text)) {
                    responses[p].push((text, temperature));
                }
            }
        }
        if responses.iter().all(|r| r.len() >= s.k) {
            break;
        }
    }
    Ok(responses)
}
