//! Learning-rate schedules with the exact formulas of Hugging Face `transformers`
//! (`get_constant_schedule`, `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
//! `get_cosine_schedule_with_warmup` with half a cycle), so a run configured like a TRL run follows
//! the same learning-rate curve step for step.
//!
//! `transformers` wraps these in PyTorch's `LambdaLR`: the learning rate used by optimiser step `s`
//! (0-based) is `base_lr · λ(s)`; the first step of a warmup therefore runs at lr 0.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `base_lr` throughout; warmup is ignored (as `get_constant_schedule` does).
    Constant,
    /// Linear warmup from 0, then `base_lr`.
    ConstantWithWarmup,
    /// Linear warmup from 0, then linear decay to 0 at `total_steps`.
    Linear,
    /// Linear warmup from 0, then a half cosine down to 0 at `total_steps`.
    Cosine,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    /// Number of optimiser steps of the whole run (decaying schedules reach 0 there).
    pub total_steps: usize,
}

impl LrSchedule {
    /// Learning rate for the 0-based optimiser step about to be taken.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }

    /// The `λ(step)` multiplier; operations are ordered as in `transformers` so results agree bit for bit.
    fn factor(&self, step: usize) -> f64 {
        let warmup = self.warmup_steps;
        if self.kind == ScheduleKind::Constant {
            return 1.0;
        }
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        // Signed: past `total_steps` the remaining fraction goes negative and is clamped (linear)
        // or runs on along the cosine (as in `transformers`).
        let remaining = self.total_steps as i64 - step as i64;
        let decay_len = (self.total_steps as i64 - warmup as i64).max(1) as f64;
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::ConstantWithWarmup => 1.0,
            ScheduleKind::Linear => (remaining as f64 / decay_len).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (step - warmup) as f64 / decay_len;
                let num_cycles = 0.5;
                (0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }
        }
    }
}

/// Warmup steps for a warmup given as a fraction of the run, rounded up like `transformers`'
/// `TrainingArguments.get_warmup_steps` (so a tiny nonzero ratio still warms up for one step).
pub fn warmup_steps_from_ratio(warmup_ratio: f64, total_steps: usize) -> usize {
    // `as` saturates: a negative or NaN ratio gives 0.
    (total_steps as f64 * warmup_ratio).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values: printed by scripts/lr_schedule_reference.py (transformers 5.23, torch LambdaLR)
    // with base_lr 3e-4, 3 warmup steps, 10 total steps, for steps 0..12 (two past the end).
    const BASE_LR: f64 = 3e-4;
    const CONSTANT_WITH_WARMUP: [f64; 12] = [
        0.0,
        9.999999999999999e-05,
        0.00019999999999999998,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
        0.0003,
    ];
    const LINEAR: [f64; 12] = [
        0.0,
        9.999999999999999e-05,
        0.00019999999999999998,
        0.0003,
        0.0002571428571428571,
        0.00021428571428571427,
        0.0001714285714285714,
        0.00012857142857142855,
        8.57142857142857e-05,
        4.285714285714285e-05,
        0.0,
        0.0,
    ];
    const COSINE: [f64; 12] = [
        0.0,
        9.999999999999999e-05,
        0.00019999999999999998,
        0.0003,
        0.0002851453301853628,
        0.00024352347027881003,
        0.00018337814009344714,
        0.00011662185990655284,
        5.6476529721189974e-05,
        1.4854669814637143e-05,
        0.0,
        1.4854669814637127e-05,
    ];
    const LINEAR_NO_WARMUP: [f64; 12] = [
        0.0003,
        0.00027,
        0.00023999999999999998,
        0.00020999999999999998,
        0.00017999999999999998,
        0.00015,
        0.00011999999999999999,
        8.999999999999999e-05,
        5.9999999999999995e-05,
        2.9999999999999997e-05,
        0.0,
        0.0,
    ];
    const COSINE_NO_WARMUP: [f64; 12] = [
        0.0003,
        0.00029265847744427303,
        0.0002713525491562421,
        0.00023816778784387094,
        0.0001963525491562421,
        0.00015,
        0.0001036474508437579,
        6.183221215612904e-05,
        2.8647450843757897e-05,
        7.34152255572697e-06,
        0.0,
        7.34152255572697e-06,
    ];

    fn assert_schedule(kind: ScheduleKind, warmup_steps: usize, expected: &[f64]) {
        let schedule = LrSchedule { kind, base_lr: BASE_LR, warmup_steps, total_steps: 10 };
        for (step, &want) in expected.iter().enumerate() {
            let got = schedule.lr_at(step);
            // Libm's cos may differ from CPython's in the last bit; everything else is exact.
            assert!((got - want).abs() <= 1e-18, "{kind:?} step {step}: got {got:e}, transformers {want:e}");
        }
    }

    #[test]
    fn constant_ignores_warmup() {
        assert_schedule(ScheduleKind::Constant, 3, &[BASE_LR; 12]);
    }

    #[test]
    fn constant_with_warmup_matches_transformers() {
        assert_schedule(ScheduleKind::ConstantWithWarmup, 3, &CONSTANT_WITH_WARMUP);
    }

    #[test]
    fn linear_matches_transformers() {
        assert_schedule(ScheduleKind::Linear, 3, &LINEAR);
        assert_schedule(ScheduleKind::Linear, 0, &LINEAR_NO_WARMUP);
    }

    #[test]
    fn cosine_matches_transformers() {
        assert_schedule(ScheduleKind::Cosine, 3, &COSINE);
        assert_schedule(ScheduleKind::Cosine, 0, &COSINE_NO_WARMUP);
    }

    #[test]
    fn warmup_ratio_rounds_up_like_transformers() {
        // (ratio, total, TrainingArguments.get_warmup_steps) from the same script.
        for (ratio, total, want) in [(0.1, 1000, 100), (0.03, 333, 10), (0.05, 7, 1), (0.0, 50, 0), (0.5, 3, 2)] {
            assert_eq!(warmup_steps_from_ratio(ratio, total), want, "ratio {ratio} of {total}");
        }
        assert_eq!(warmup_steps_from_ratio(-0.1, 10), 0);
    }

    #[test]
    fn kind_names_are_snake_case() {
        let json = serde_json::to_string(&ScheduleKind::ConstantWithWarmup).unwrap();
        assert_eq!(json, "\"constant_with_warmup\"");
    }
}
