//! Names of the metrics that other code reads back from `metrics.jsonl` or a step report (the
//! command tables, `rlhf iterate`, the held-out curve, the benchmarks). Writers and readers both
//! name them from here, so renaming one cannot silently break a reader.

/// Seconds of a whole step (online: rollout + update).
pub const STEP_TIME: &str = "step_time";
/// Data-parallel runs: seconds of the step spent summing gradients across ranks.
pub const ALL_REDUCE_SECONDS: &str = "dist/all_reduce_seconds";
/// Seconds of an online step's update (after the rollout).
pub const UPDATE_SECONDS: &str = "update/seconds";
/// Tokens an online update trained on (prompt + response, every pass).
pub const UPDATE_TOKENS: &str = "update/tokens";
/// GRPO's and RAFT's mean reward of the step's samples (their headline).
pub const REWARD_MEAN: &str = "reward/mean";
/// PPO's mean score before the KL penalty (its headline).
pub const REWARD_SCORE: &str = "reward/score";
/// Mean Σ (log π − log π_ref) per sequence, in nats.
pub const KL_SEQUENCE: &str = "kl/sequence";
pub const RESPONSE_LENGTH: &str = "response_length";
/// The held-out reward of one source: `eval/reward/<source>`.
pub const EVAL_REWARD_PREFIX: &str = "eval/reward/";
/// Wall seconds and training seconds (without evaluation) at an evaluation.
pub const EVAL_ELAPSED_SECONDS: &str = "eval/elapsed_seconds";
pub const EVAL_TRAIN_SECONDS: &str = "eval/train_seconds";
/// The reward model's held-out pair accuracy.
pub const EVAL_ACCURACY: &str = "eval/accuracy";
/// RAFT: samples kept, their mean reward, the share of prompts with one kept, the SFT's last loss.
pub const KEPT: &str = "kept";
pub const KEPT_REWARD_MEAN: &str = "reward/kept_mean";
pub const KEPT_PROMPT_SHARE: &str = "kept_prompt_share";
pub const SFT_LOSS: &str = "sft/loss";

/// An evaluation row's name from the evaluation's own (`accuracy` → `eval/accuracy`).
pub fn eval(name: &str) -> String {
    format!("eval/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_names_are_prefixed_rows() {
        assert_eq!(eval("accuracy"), EVAL_ACCURACY);
        assert!(eval("reward/math").starts_with(EVAL_REWARD_PREFIX));
        assert_eq!(eval("elapsed_seconds"), EVAL_ELAPSED_SECONDS);
        assert_eq!(eval("train_seconds"), EVAL_TRAIN_SECONDS);
    }
}
