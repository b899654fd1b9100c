//! Where a step's rows come from: the in-process sampler, or inference servers
//! ([`RemoteEngine`]) that get the policy before they sample. With `rollout.max_staleness ≥ 1`
//! the servers draw the next step's rows while this step's update runs, with the weights from
//! before it: those rows are one update behind the policy that trains on them (the trainer's
//! recomputed logprobs and `rollout.tis_cap` correct for it).

use super::driver::{OnlineAlgorithm, Rollout, StepStats};
use crate::error::Result;
use crate::remote::RemoteEngine;
use crate::rollout::{self, RolloutConfig, RolloutEngine, RolloutRow};
use rlhf_data::Tokenizer;
use rlhf_model::CausalLm;
use std::path::Path;
use std::time::Instant;

/// What a step samples: its prompts, responses per prompt, and its seed.
pub struct Draw<'p> {
    pub prompts: Vec<&'p [u32]>,
    pub repeats: usize,
    pub seed: u64,
}

/// A step's rows and how they were drawn.
pub struct Sampled {
    pub rows: Vec<RolloutRow>,
    /// Updates the policy has had since the weights that drew the rows (0: on-policy).
    pub lag: u64,
    /// Seconds spent giving the servers the policy before sampling.
    pub sync_seconds: Option<f64>,
}

pub enum StepSampler {
    Local,
    Remote { engine: Box<RemoteEngine>, ahead: Option<Result<Vec<RolloutRow>>> },
}

impl StepSampler {
    pub fn new(cfg: &RolloutConfig, run_dir: &Path) -> Result<Self> {
        let ranks = rlhf_dist::world().size();
        if cfg.engine == RolloutEngine::Openai && ranks > 1 {
            return Err(crate::TrainError::Config(format!(
                "rollout.engine = \"openai\" with {ranks} data-parallel ranks: inference servers serve one trainer; \
                 run it as one process, or sample in process (rollout.engine = \"local\")"
            )));
        }
        Ok(match cfg.engine {
            RolloutEngine::Local => Self::Local,
            RolloutEngine::Openai => Self::Remote { engine: Box::new(RemoteEngine::new(cfg, run_dir)?), ahead: None },
        })
    }

    /// Whether the next step's rows are drawn during this step's update.
    pub fn draws_ahead(&self, cfg: &RolloutConfig) -> bool {
        matches!(self, Self::Remote { .. }) && cfg.max_staleness >= 1
    }

    /// Step `step`'s rows: drawn during the previous update, or now with the policy as it is
    /// (`step - 1` updates).
    pub fn rows(
        &mut self,
        policy: &CausalLm,
        tok: &Tokenizer,
        cfg: &RolloutConfig,
        step: u64,
        draw: Draw<'_>,
    ) -> Result<Sampled> {
        match self {
            Self::Local => {
                // Data-parallel: each rank samples its share of the rows, and every rank gets
                // all of them.
                let n = draw.prompts.len() * draw.repeats.max(1);
                let rows = rlhf_dist::shard_map(rlhf_dist::world(), n, |of| {
                    rollout::rollout_of(policy, &draw.prompts, draw.repeats, cfg, tok, draw.seed, of, &mut |_| {})
                })?;
                Ok(Sampled { rows, lag: 0, sync_seconds: None })
            }
            Self::Remote { engine, ahead } => {
                if let Some(drawn) = ahead.take() {
                    return Ok(Sampled { rows: drawn?, lag: 1, sync_seconds: None });
                }
                let t0 = Instant::now();
                engine.sync(policy, step - 1)?;
                let sync_seconds = Some(t0.elapsed().as_secs_f64());
                let rows = engine.rollout(&draw.prompts, draw.repeats, cfg, draw.seed)?;
                Ok(Sampled { rows, lag: 0, sync_seconds })
            }
        }
    }

    /// `alg`'s update of step `step` on `scored`. With `max_staleness ≥ 1` and a `next` step,
    /// the servers first get the policy as it is (`step - 1` updates) and draw `next`'s rows
    /// while the update runs; the seconds that sync took.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        alg: &mut dyn OnlineAlgorithm,
        scored: &Rollout,
        policy: &CausalLm,
        cfg: &RolloutConfig,
        step: u64,
        next: Option<Draw<'_>>,
    ) -> Result<(StepStats, Option<f64>)> {
        let (Self::Remote { engine, ahead }, Some(next), true) = (self, next, cfg.max_staleness >= 1) else {
            return Ok((alg.update(scored)?, None));
        };
        let t0 = Instant::now();
        if let Err(e) = engine.sync(policy, step - 1) {
            // No server to draw the next step: update, and let the next step report it.
            *ahead = Some(Err(e));
            return Ok((alg.update(scored)?, None));
        }
        let sync_seconds = t0.elapsed().as_secs_f64();
        let engine: &RemoteEngine = engine;
        let (stats, drawn) = std::thread::scope(|scope| {
            let drawing = scope.spawn(|| engine.rollout(&next.prompts, next.repeats, cfg, next.seed));
            let stats = alg.update(scored);
            let drawn = drawing.join().unwrap_or_else(|_| {
                Err(crate::TrainError::Config("the thread drawing the next step's rows panicked".into()))
            });
            (stats, drawn)
        });
        *ahead = Some(drawn);
        Ok((stats?, Some(sync_seconds)))
    }
}
