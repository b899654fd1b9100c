//! Two-digit additions as RL prompts: "What is {a} + {b}? Reply with the number only." with a
//! and b uniform in 10..=99, the task TRL's GRPO speed reference was measured on.

use crate::error::{DataError, Result};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};

/// `(question, sum)` pairs, seeded; the held-out ones never repeat a training pair.
pub fn sum_problems(n: usize, seed: u64) -> Vec<(String, i64)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (a, b): (i64, i64) = (rng.random_range(10..=99), rng.random_range(10..=99));
            (format!("What is {a} + {b}? Reply with the number only."), a + b)
        })
        .collect()
}

/// Writes `prompts.jsonl` (`n_train`) and `prompts_eval.jsonl` (`n_eval`, disjoint questions)
/// as conversational prompts with an `answer` column.
pub fn write_sum_prompts(dir: &Path, n_train: usize, n_eval: usize, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::file(dir, format!("cannot create: {e}")))?;
    let eval = sum_problems(n_eval, seed ^ 0xE7A1);
    let held: std::collections::HashSet<&str> = eval.iter().map(|(q, _)| q.as_str()).collect();
    let mut train = Vec::with_capacity(n_train);
    let mut extra = seed;
    while train.len() < n_train {
        extra = extra.wrapping_add(1);
        let fresh = sum_problems(n_train - train.len(), extra.wrapping_mul(0x9E37_79B9));
        train.extend(fresh.into_iter().filter(|(q, _)| !held.contains(q.as_str())));
    }
    let mut written = Vec::new();
    for (name, set) in [("prompts.jsonl", &train), ("prompts_eval.jsonl", &eval)] {
        let path = dir.join(name);
        let text: String = set
            .iter()
            .map(|(q, s)| format!("{}\n", json!({"prompt": [{"role": "user", "content": q}], "answer": s.to_string()})))
            .collect();
        std::fs::write(&path, text).map_err(|e| DataError::file(&path, format!("cannot write: {e}")))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_seeded_in_range_and_held_out_is_disjoint() {
        let p = sum_problems(200, 1);
        assert_eq!(p, sum_problems(200, 1));
        assert_ne!(p, sum_problems(200, 2));
        for (q, s) in &p {
            let nums: Vec<i64> = q.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
            assert_eq!(nums.len(), 2, "{q}");
            assert!(nums.iter().all(|n| (10..=99).contains(n)));
            assert_eq!(nums[0] + nums[1], *s);
        }
        let dir = std::env::temp_dir().join(format!("rlhf-sums-{}", std::process::id()));
        write_sum_prompts(&dir, 300, 50, 3).unwrap();
        let read =
            |n: &str| std::fs::read_to_string(dir.join(n)).unwrap().lines().map(str::to_string).collect::<Vec<_>>();
        let (train, eval) = (read("prompts.jsonl"), read("prompts_eval.jsonl"));
        assert_eq!((train.len(), eval.len()), (300, 50));
        assert!(train.iter().all(|t| !eval.contains(t)), "held-out prompts never appear in training");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
