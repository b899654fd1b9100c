//! The arithmetic set as JSON-lines datasets in TRL's conversational column conventions.

use super::{generate_arithmetic, ArithmeticProblem, ArithmeticSet};
use crate::error::{DataError, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The datasets written by [`write_arithmetic`]; each also has an `_eval` twin
/// (`sft_eval.jsonl`, …) holding the eval problems.
pub const ARITHMETIC_FILES: [&str; 5] = ["sft", "prefs_format", "prefs_correctness", "rankings", "prompts"];

/// Generates `n` problems from `seed` and writes every dataset into `dir` (created if needed).
pub fn write_arithmetic(dir: &Path, n: usize, seed: u64) -> Result<ArithmeticSet> {
    let set = generate_arithmetic(n, seed)?;
    set.write(dir)?;
    Ok(set)
}

impl ArithmeticSet {
    /// Writes `<name>.jsonl` (train problems) and `<name>_eval.jsonl` (eval problems) for each
    /// name of [`ARITHMETIC_FILES`]; returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::file(dir, format!("cannot create: {e}")))?;
        let mut written = Vec::new();
        for name in ARITHMETIC_FILES {
            for (suffix, problems) in [("", self.train()), ("_eval", self.eval())] {
                let path = dir.join(format!("{name}{suffix}.jsonl"));
                let mut text = String::new();
                for p in problems {
                    text.push_str(&record(name, p).to_string());
                    text.push('\n');
                }
                std::fs::write(&path, text).map_err(|e| DataError::file(&path, format!("cannot write: {e}")))?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

fn user(p: &ArithmeticProblem) -> Value {
    json!([{ "role": "user", "content": p.question }])
}

fn assistant(text: &str) -> Value {
    json!([{ "role": "assistant", "content": text }])
}

fn record(name: &str, p: &ArithmeticProblem) -> Value {
    match name {
        "sft" => json!({ "messages": [
            { "role": "user", "content": p.question },
            { "role": "assistant", "content": p.correct_formatted },
        ]}),
        "prefs_format" => json!({
            "prompt": user(p), "chosen": assistant(&p.correct_formatted), "rejected": assistant(&p.correct_unformatted),
        }),
        "prefs_correctness" => json!({
            "prompt": user(p), "chosen": assistant(&p.correct_formatted), "rejected": assistant(&p.wrong_formatted),
        }),
        "rankings" => {
            let best_first = p.responses_best_first();
            let responses: Vec<Value> = p.ranking_order.iter().map(|&k| assistant(best_first[k])).collect();
            // ranking[r] = the position in `responses` of the response of rank r.
            let ranking: Vec<usize> =
                (0..4).map(|rank| p.ranking_order.iter().position(|&k| k == rank).unwrap_or(rank)).collect();
            json!({ "prompt": user(p), "responses": responses, "ranking": ranking })
        }
        _ => json!({ "prompt": user(p), "answer": p.answer.to_string() }),
    }
}
