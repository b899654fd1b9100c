//! PPO for RLHF (Ziegler et al.; Ouyang et al.; "The N implementation details of RLHF with
//! PPO"): a critic, per-token reward −β·KL_t with the sequence score on the last token, GAE,
//! whitened advantages, the clipped surrogate and clipped value loss over several epochs of
//! shuffled minibatches, and a fixed or adaptive KL coefficient.
//!
//! The step loop (prompts, rollout, scoring, sample log, metrics, evaluation, checkpoints, the
//! `max_kl` stop) is `online::driver::OnlineLoop::run`; `PpoUpdate::ppo_step` is PPO's update,
//! in named stages: scores → forward passes → targets → rollout metrics → minibatch epochs.

use crate::advantage::{gae, kl_penalised_rewards, masked_whiten};
use crate::aggregate::{token_weights, LossAggregation};
use crate::error::{Result, TrainError};
use crate::kl::{kl_value, KlController, KlControllerConfig, KlEstimator, KlPlacement};
use crate::metric_keys as keys;
use crate::online::driver::{OnlineAlgorithm, OnlineLoop, Rollout, StepStats};
use crate::online::{
    self, HeldOutEval, Metrics, PolicyObjective, PolicyRankStats, PolicyRow, RlPrompt, RunInfo, Session,
};
use crate::policy_loss::{clipped_value_loss, explained_variance, ClipConfig};
use crate::rollout::{self, sharded_logprobs, split_rows, to_f64, RolloutConfig, RolloutRow};
use crate::stats;
use crate::trainer::{MicroOutput, Objective, StepReport, TrainConfig};
use candle_core::{DType, Tensor, Var};
use rlhf_data::Tokenizer;
use rlhf_model::{response_states_packed, CausalLm};
use rlhf_reward::RewardSource;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Prompts (= responses) per rollout.
    pub prompts_per_step: usize,
    pub ppo_epochs: usize,
    pub num_minibatches: usize,
    pub cliprange: f64,
    pub cliprange_value: f64,
    /// Dual clip c > 1 for negative advantages (None: off).
    pub dual_clip: Option<f64>,
    pub vf_coef: f64,
    pub gamma: f64,
    pub lam: f64,
    pub kl: KlControllerConfig,
    pub kl_estimator: KlEstimator,
    /// Clamp of each per-token KL estimate (OpenRLHF/verl use 10; 0 = none).
    pub kl_clamp: f64,
    pub whiten_rewards: bool,
    pub whiten_advantages: bool,
    /// Score given to a response that hit `max_new_tokens` without EOS (None: keep its score).
    pub missing_eos_penalty: Option<f64>,
    /// Stop when the mean sequence KL exceeds this (nats; 0 = never).
    pub max_kl: f64,
    /// `reward`: −β·KL_t in every token's reward (classic RLHF); `loss`: rewards are the score
    /// alone and β·KL_t (the configured estimator, at π_θ) joins the policy loss, as in GRPO.
    pub kl_placement: KlPlacement,
}

impl PpoConfig {
    /// `[train]` of a PPO run: lr 3e-6 with linear decay, 100 steps, a checkpoint every 50.
    pub fn train_defaults() -> TrainConfig {
        TrainConfig {
            learning_rate: 3e-6,
            lr_scheduler: crate::ScheduleKind::Linear,
            max_steps: 100,
            save_steps: 50,
            ..TrainConfig::default()
        }
    }
}

impl Default for PpoConfig {
    /// The N-implementation-details defaults: 4 epochs, ε 0.2, value clip 0.2, γ 1, λ 0.95.
    fn default() -> Self {
        Self {
            prompts_per_step: 8,
            ppo_epochs: 4,
            num_minibatches: 1,
            cliprange: 0.2,
            cliprange_value: 0.2,
            dual_clip: None,
            vf_coef: 0.1,
            gamma: 1.0,
            lam: 0.95,
            kl: KlControllerConfig::default(),
            kl_estimator: KlEstimator::K1,
            kl_clamp: 10.0,
            whiten_rewards: false,
            whiten_advantages: true,
            missing_eos_penalty: None,
            max_kl: 0.0,
            kl_placement: KlPlacement::Reward,
        }
    }
}

/// A value model: a trunk and a `[1, d]` head; V_t reads the state that samples token t.
pub struct Critic<'a> {
    pub trunk: &'a CausalLm,
    pub head: &'a Tensor,
}

impl Critic<'_> {
    /// Values `[N]` of every response token of `rows`, row after row.
    pub fn values(&self, rows: &[(&[u32], &[u32])], pad_id: u32) -> Result<Tensor> {
        let h = response_states_packed(self.trunk, rows, pad_id)?; // [N, d]
        Ok(h.matmul(&self.head.t()?)?.squeeze(1)?)
    }
}

#[derive(Clone, Debug)]
pub struct ValueRow {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub old_values: Vec<f64>,
    pub returns: Vec<f64>,
    pub weights: Vec<f64>,
}

/// The clipped value loss (× vf_coef) over [`ValueRow`]s.
pub struct ValueObjective<'a> {
    pub critic: Critic<'a>,
    pub pad_id: u32,
    pub clip: Option<f64>,
    pub vf_coef: f64,
    pub stats: ValueStats,
}

/// Host-side sums of the value loss over the micro-batches since the objective was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueStats {
    /// Σ of the micro-batches' clipped value losses (before `vf_coef`).
    pub loss_sum: f64,
    /// Σ of the tokens whose clipped value term won.
    pub clipped: f64,
    pub tokens: usize,
}

impl Objective for ValueObjective<'_> {
    type Example = ValueRow;

    fn model(&self) -> &CausalLm {
        self.critic.trunk
    }

    fn normaliser(&self, _batch: &[&ValueRow]) -> f64 {
        1.0
    }

    fn micro_loss(&mut self, micro: &[&ValueRow], _n: f64) -> Result<MicroOutput> {
        let pairs: Vec<(&[u32], &[u32])> = micro.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
        let v = self.critic.values(&pairs, self.pad_id)?;
        let loss = self.loss_given(micro, &v)?;
        let tokens = micro.iter().map(|r| r.prompt.len() + r.response.len()).sum();
        Ok(MicroOutput { loss, stats: Vec::new(), tokens })
    }

    fn evaluate(&mut self, _eval: &[ValueRow]) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    fn take_rank_stats(&mut self) -> Option<Vec<u8>> {
        rlhf_dist::encode(&std::mem::take(&mut self.stats)).ok()
    }

    fn merge_rank_stats(&mut self, bytes: &[u8]) -> Result<()> {
        self.stats.merge(&rlhf_dist::decode(bytes)?);
        Ok(())
    }
}

impl ValueStats {
    pub fn merge(&mut self, other: &Self) {
        self.loss_sum += other.loss_sum;
        self.clipped += other.clipped;
        self.tokens += other.tokens;
    }
}

impl ValueObjective<'_> {
    /// vf_coef × the clipped value loss of `micro` from the current values `[N]`.
    pub fn loss_given(&mut self, micro: &[&ValueRow], v: &Tensor) -> Result<Tensor> {
        let (dtype, dev) = (v.dtype(), v.device().clone());
        let flat = |f: fn(&ValueRow) -> &[f64]| -> Result<Tensor> {
            let x: Vec<f64> = micro.iter().flat_map(|r| f(r).iter().copied()).collect();
            let n = x.len();
            Ok(Tensor::from_vec(x, n, &dev)?.to_dtype(dtype)?)
        };
        let (old, ret, w) = (flat(|r| &r.old_values)?, flat(|r| &r.returns)?, flat(|r| &r.weights)?);
        let (loss, clipped) = clipped_value_loss(v, &old, &ret, &w, self.clip)?;
        self.stats.loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.stats.clipped += clipped;
        self.stats.tokens += v.dim(0)?;
        Ok((loss * self.vf_coef)?)
    }
}

/// A response as both halves of PPO see it.
pub struct PpoRow {
    pub policy: PolicyRow,
    pub value: ValueRow,
}

/// Policy and value losses through one forward of a shared trunk: the value head reads the
/// same hidden states that produce the logprobs; loss = pg + vf_coef·vf.
pub struct PpoObjective<'a> {
    pub policy: PolicyObjective<'a>,
    pub value: ValueObjective<'a>,
}

impl Objective for PpoObjective<'_> {
    type Example = PpoRow;

    fn model(&self) -> &CausalLm {
        self.policy.policy
    }

    fn normaliser(&self, _batch: &[&PpoRow]) -> f64 {
        1.0
    }

    fn micro_loss(&mut self, micro: &[&PpoRow], _n: f64) -> Result<MicroOutput> {
        let prows: Vec<&PolicyRow> = micro.iter().map(|r| &r.policy).collect();
        let vrows: Vec<&ValueRow> = micro.iter().map(|r| &r.value).collect();
        let pairs: Vec<(&[u32], &[u32])> = prows.iter().map(|r| (r.prompt.as_slice(), r.response.as_slice())).collect();
        let p = &self.policy;
        let (logp, states) = rollout::response_logprobs(p.policy, &pairs, p.pad_id, p.temperature)?;
        let v = states.matmul(&self.value.critic.head.t()?)?.squeeze(1)?; // [N]
        let loss = (self.policy.loss_given(&prows, &logp)? + self.value.loss_given(&vrows, &v)?)?;
        let tokens = prows.iter().map(|r| r.prompt.len() + r.response.len()).sum();
        Ok(MicroOutput { loss, stats: Vec::new(), tokens })
    }

    fn evaluate(&mut self, _eval: &[PpoRow]) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    fn take_rank_stats(&mut self) -> Option<Vec<u8>> {
        let both = (self.policy.take_sums(), std::mem::take(&mut self.value.stats));
        rlhf_dist::encode(&both).ok()
    }

    fn merge_rank_stats(&mut self, bytes: &[u8]) -> Result<()> {
        let (policy, value): (PolicyRankStats, ValueStats) = rlhf_dist::decode(bytes)?;
        self.policy.merge_sums(&policy);
        self.value.stats.merge(&value);
        Ok(())
    }
}

pub struct PpoSetup<'a> {
    pub policy: &'a CausalLm,
    pub params: &'a [(String, Var)],
    pub reference: &'a CausalLm,
    pub critic: Critic<'a>,
    /// The critic's trainable parameters (trunk and head); empty with a shared trunk.
    pub critic_params: &'a [(String, Var)],
    /// The critic is the policy's trunk plus a head (in `params`): one model, one optimiser,
    /// one backward of pg + vf_coef·vf. Otherwise the critic is its own model.
    pub shared_trunk: bool,
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a [RlPrompt<'a>],
    pub sources: Vec<(Box<dyn RewardSource + 'a>, f64)>,
    pub eval: Option<HeldOutEval<'a>>,
}

/// Runs PPO for `train.max_steps` rollouts; the critic trains with `critic_train` (its
/// learning rate and schedule). Returns the last evaluation.
pub fn train_ppo(
    s: &mut PpoSetup,
    cfg: &PpoConfig,
    roll: &RolloutConfig,
    train: &TrainConfig,
    critic_train: &TrainConfig,
    run: &RunInfo,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<Vec<(String, f64)>> {
    if cfg.prompts_per_step == 0 || cfg.ppo_epochs == 0 || cfg.num_minibatches == 0 || s.sources.is_empty() {
        return Err(TrainError::Config(
            "ppo needs prompts_per_step, ppo_epochs, num_minibatches ≥ 1 and a reward source".into(),
        ));
    }
    roll.validate()?;
    let total = train.max_steps.max(1);
    let policy_session = Session::new(s.policy, s.params, train, total, &run.dir.join("checkpoints"))?;
    let critic_session = if s.shared_trunk {
        None
    } else {
        let root = run.dir.join("critic_checkpoints");
        Some(Session::new(s.critic.trunk, s.critic_params, critic_train, total, &root)?)
    };
    let PpoSetup { policy, reference, critic, tokenizer, prompts, sources, eval, .. } = s;
    let mut update = PpoUpdate {
        cfg,
        roll,
        policy,
        reference,
        critic: Critic { trunk: critic.trunk, head: critic.head },
        tokenizer,
        policy_session,
        critic_session,
        kl_ctl: KlController::new(&cfg.kl),
    };
    let schedule = train.into();
    let online = OnlineLoop { policy, tokenizer, prompts, sources, eval: eval.as_mut(), rollout: roll, schedule, run };
    online.run(&mut update, on_step)
}

/// PPO's side of a step (the loop in `online::driver` does the rest).
struct PpoUpdate<'a, 'c> {
    cfg: &'c PpoConfig,
    roll: &'c RolloutConfig,
    policy: &'a CausalLm,
    reference: &'a CausalLm,
    critic: Critic<'a>,
    tokenizer: &'a Tokenizer,
    policy_session: Session<'a>,
    critic_session: Option<Session<'a>>,
    kl_ctl: KlController,
}

impl OnlineAlgorithm for PpoUpdate<'_, '_> {
    fn name(&self) -> &'static str {
        "ppo"
    }

    fn samples_per_prompt(&self) -> usize {
        1
    }

    fn prompts_per_step(&self) -> usize {
        self.cfg.prompts_per_step
    }

    fn headline(&self) -> &'static str {
        keys::REWARD_SCORE
    }

    fn max_kl(&self) -> f64 {
        self.cfg.max_kl
    }

    fn update(&mut self, rollout: &Rollout) -> Result<StepStats> {
        self.ppo_step(rollout)
    }

    fn lr(&self, step: u64) -> f64 {
        self.policy_session.schedule.lr_at(step as usize - 1)
    }

    /// The critic first: the policy's checkpoint, written last, is the one a resume looks for.
    fn save(&self, step: u64, total: u64, seed: u64, config: &serde_json::Value) -> Result<()> {
        if let Some(c) = &self.critic_session {
            c.save(step, total, seed, "ppo-critic", config)?;
        }
        let extra = serde_json::json!({ "kl_coef": self.kl_ctl.coef });
        self.policy_session.save_with(step, total, seed, "ppo", config, extra)?;
        Ok(())
    }

    fn restore(&mut self, dir: &Path, run: &RunInfo) -> Result<u64> {
        let state = self.policy_session.restore(dir, "ppo", &run.config)?;
        if let Some(c) = self.critic_session.as_mut() {
            let critic_dir = c.checkpoint_dir(state.step);
            c.restore(&critic_dir, "ppo-critic", &run.config)?;
        }
        let coef = state.extra.get("kl_coef").and_then(serde_json::Value::as_f64);
        self.kl_ctl.coef = coef.ok_or_else(|| TrainError::file(dir, "cannot resume: its state.json has no kl_coef"))?;
        Ok(state.step)
    }
}

/// What the current policy, the reference and the critic say about the sampled tokens before
/// any update of this step.
struct Passes {
    /// The policy's logprobs (the ratio's denominator).
    old: Vec<Vec<f64>>,
    reference: Vec<Vec<f64>>,
    values: Vec<Vec<f64>>,
}

/// A step's per-token training targets.
struct Targets {
    /// The per-token KL estimate to the reference that the reward penalises.
    kl: Vec<Vec<f64>>,
    /// Σ (old − reference) per sequence: what the KL controller and `max_kl` watch.
    seq_kl: Vec<f64>,
    advantages: Vec<Vec<f64>>,
    returns: Vec<Vec<f64>>,
}

/// What the epochs of minibatch updates report.
struct EpochStats {
    grad_norms: Vec<f64>,
    value_grad_norms: Vec<f64>,
    /// The policy ratio's mean on the first minibatch (1 unless sampling and training disagree).
    first_ratio: f64,
    updates: usize,
}

impl<'a> PpoUpdate<'a, '_> {
    /// One PPO update, stage by stage: scores → forward passes → targets (KL-shaped rewards,
    /// GAE, whitening) → the rollout's metrics → epochs of minibatch updates → the KL controller.
    fn ppo_step(&mut self, rollout: &Rollout) -> Result<StepStats> {
        let rows = &rollout.rows;
        let scores = self.scores(rollout);
        let passes = self.forward_passes(rows)?;
        let targets = self.targets(&passes, &scores);
        let mut metrics = self.rollout_metrics(rows, &scores, &passes, &targets);
        let mut obj = self.objective();
        let epochs = self.optimise(&mut obj, rows, &passes, &targets, rollout.step)?;
        let mean_kl = stats::mean(&targets.seq_kl);
        self.kl_ctl.update(mean_kl, rows.len());
        let value = &obj.value.stats;
        let prompt_and_response: usize = rows.iter().map(|r| r.prompt_ids.len() + r.response_ids.len()).sum();
        metrics.extend([
            ("grad_norm".to_string(), stats::mean(&epochs.grad_norms)),
            ("value/grad_norm".into(), stats::mean(&epochs.value_grad_norms)),
            ("value/loss".into(), value.loss_sum / epochs.updates as f64),
            ("value/clipfrac".into(), value.clipped / value.tokens.max(1) as f64),
            ("ratio/first_minibatch".into(), epochs.first_ratio),
            (keys::UPDATE_TOKENS.into(), (self.cfg.ppo_epochs * prompt_and_response) as f64),
        ]);
        metrics.extend(obj.policy.take_stats().into_iter().filter(|(k, _)| !k.starts_with("logprob_mismatch")));
        Ok(StepStats { metrics, sequence_kl: Some(mean_kl) })
    }

    /// Each response's score: the weighted sum of the sources (unscored = 0), or
    /// `missing_eos_penalty` for a response cut off before EOS.
    fn scores(&self, rollout: &Rollout) -> Vec<f64> {
        let mut scores = vec![0.0; rollout.rows.len()];
        for (w, sc) in rollout.weights.iter().zip(&rollout.scores) {
            for (total, x) in scores.iter_mut().zip(sc) {
                *total += *w * x.value.unwrap_or(0.0);
            }
        }
        if let Some(p) = self.cfg.missing_eos_penalty {
            for (sc, r) in scores.iter_mut().zip(&rollout.rows) {
                if r.truncated() {
                    *sc = p;
                }
            }
        }
        scores
    }

    fn forward_passes(&self, rows: &[RolloutRow]) -> Result<Passes> {
        let (pad, roll) = (self.tokenizer.pad_id(), self.roll);
        let pairs: Vec<(&[u32], &[u32])> =
            rows.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
        let fb = roll.forward_batch_size;
        Ok(Passes {
            old: sharded_logprobs(self.policy, &pairs, pad, roll.temperature, fb)?,
            reference: sharded_logprobs(self.reference, &pairs, pad, roll.temperature, fb)?,
            values: rlhf_dist::shard_map(rlhf_dist::world(), pairs.len(), |of| {
                critic_values(&self.critic, &pairs[of], pad, fb)
            })?,
        })
    }

    /// Per-token rewards (−β·KL_t, the score on the last token; β = 0 here when the KL is in
    /// the loss instead), optionally whitened, then GAE and optionally whitened advantages.
    fn targets(&self, passes: &Passes, scores: &[f64]) -> Targets {
        let cfg = self.cfg;
        let clamp = (cfg.kl_clamp > 0.0).then_some(cfg.kl_clamp);
        let kl: Vec<Vec<f64>> = passes
            .old
            .iter()
            .zip(&passes.reference)
            .map(|(o, r)| o.iter().zip(r).map(|(&a, &b)| kl_value(cfg.kl_estimator, a, b, clamp)).collect())
            .collect();
        let seq_kl: Vec<f64> =
            passes.old.iter().zip(&passes.reference).map(|(o, r)| o.iter().zip(r).map(|(a, b)| a - b).sum()).collect();
        let reward_coef = if cfg.kl_placement == KlPlacement::Loss { 0.0 } else { self.kl_ctl.coef };
        let mut rewards = kl_penalised_rewards(&kl, scores, reward_coef);
        if cfg.whiten_rewards {
            rewards = masked_whiten(&rewards, false, true);
        }
        let (raw, returns) = gae(&rewards, &passes.values, cfg.gamma, cfg.lam);
        let advantages = if cfg.whiten_advantages { masked_whiten(&raw, true, true) } else { raw };
        Targets { kl, seq_kl, advantages, returns }
    }

    /// What the rollout looked like before the update: rewards, KL, length, entropy, the
    /// critic's fit and the sampler-vs-trainer logprob mismatch.
    fn rollout_metrics(&self, rows: &[RolloutRow], scores: &[f64], passes: &Passes, targets: &Targets) -> Metrics {
        let coef = self.kl_ctl.coef;
        let mismatch = rollout::LogprobMismatch::of(rows, &passes.old);
        let flat_v: Vec<f64> = passes.values.concat();
        let flat_r: Vec<f64> = targets.returns.concat();
        let non_score: f64 = targets.kl.iter().map(|k| -coef * k.iter().sum::<f64>()).sum::<f64>() / rows.len() as f64;
        let mut metrics = vec![
            (keys::REWARD_SCORE.to_string(), stats::mean(scores)),
            ("reward/non_score".into(), non_score),
            ("reward/rlhf".into(), stats::mean(scores) + non_score),
            (keys::KL_SEQUENCE.into(), stats::mean(&targets.seq_kl)),
            ("kl/coef".into(), coef),
            (keys::RESPONSE_LENGTH.into(), online::mean_len(rows)),
            ("truncation_rate".into(), online::truncation_rate(rows)),
            ("entropy".into(), online::sampled_entropy(rows)),
            ("value/explained_variance".into(), explained_variance(&flat_v, &flat_r)),
            ("value/mean".into(), stats::mean(&flat_v)),
        ];
        metrics.extend(mismatch.rows());
        metrics
    }

    /// The clipped surrogate (with the KL term when it sits in the loss) and the clipped value
    /// loss, at this step's KL coefficient.
    fn objective(&self) -> PpoObjective<'a> {
        let (cfg, roll, pad) = (self.cfg, self.roll, self.tokenizer.pad_id());
        let clip = ClipConfig { epsilon_low: cfg.cliprange, epsilon_high: cfg.cliprange, dual_clip: cfg.dual_clip };
        let mut obj = PpoObjective {
            policy: PolicyObjective::new(self.policy, pad, roll.temperature, clip).with_tis_cap(roll.tis_cap),
            value: ValueObjective {
                critic: Critic { trunk: self.critic.trunk, head: self.critic.head },
                pad_id: pad,
                clip: (cfg.cliprange_value > 0.0).then_some(cfg.cliprange_value),
                vf_coef: cfg.vf_coef,
                stats: ValueStats::default(),
            },
        };
        if cfg.kl_placement == KlPlacement::Loss {
            obj.policy.kl_coef = self.kl_ctl.coef;
            obj.policy.kl_estimator = cfg.kl_estimator;
        }
        obj
    }

    /// `ppo_epochs` passes over seeded shuffles of the rows in `num_minibatches` minibatches,
    /// each a token-mean loss: one policy and one critic optimiser step, or one step of both
    /// together when they share a trunk.
    fn optimise(
        &mut self,
        obj: &mut PpoObjective,
        rows: &[RolloutRow],
        passes: &Passes,
        targets: &Targets,
        step: u64,
    ) -> Result<EpochStats> {
        let (cfg, roll) = (self.cfg, self.roll);
        let kl_in_loss = cfg.kl_placement == KlPlacement::Loss;
        let mut ppo_rows: Vec<PpoRow> = (0..rows.len())
            .map(|i| PpoRow {
                policy: PolicyRow {
                    prompt: rows[i].prompt_ids.clone(),
                    response: rows[i].response_ids.clone(),
                    old_logp: Some(passes.old[i].clone()),
                    ref_logp: kl_in_loss.then(|| passes.reference[i].clone()),
                    sampler_logp: rows[i].sampler_logprobs.clone(),
                    advantages: targets.advantages[i].clone(),
                    weights: Vec::new(),
                },
                value: ValueRow {
                    prompt: rows[i].prompt_ids.clone(),
                    response: rows[i].response_ids.clone(),
                    old_values: passes.values[i].clone(),
                    returns: targets.returns[i].clone(),
                    weights: Vec::new(),
                },
            })
            .collect();
        let mb_size = rows.len().div_ceil(cfg.num_minibatches);
        let mut out =
            EpochStats { grad_norms: Vec::new(), value_grad_norms: Vec::new(), first_ratio: f64::NAN, updates: 0 };
        for epoch in 0..cfg.ppo_epochs {
            for mb in rollout::minibatches(rows.len(), mb_size, rollout::step_seed(step, epoch as u64)) {
                let lengths: Vec<usize> = mb.iter().map(|&i| rows[i].response_ids.len()).collect();
                // Token mean over the minibatch (the masked means of the N-details formulas).
                let w = token_weights(LossAggregation::Bnpo, &lengths, roll.max_new_tokens, None);
                for (&i, w) in mb.iter().zip(w) {
                    ppo_rows[i].policy.weights = w.clone();
                    ppo_rows[i].value.weights = w;
                }
                match self.critic_session.as_mut() {
                    Some(critic) => {
                        let prow: Vec<&PolicyRow> = mb.iter().map(|&i| &ppo_rows[i].policy).collect();
                        out.grad_norms.push(self.policy_session.update(&mut obj.policy, &prow, step)?);
                        let vrow: Vec<&ValueRow> = mb.iter().map(|&i| &ppo_rows[i].value).collect();
                        out.value_grad_norms.push(critic.update(&mut obj.value, &vrow, step)?);
                    }
                    None => {
                        let both: Vec<&PpoRow> = mb.iter().map(|&i| &ppo_rows[i]).collect();
                        out.grad_norms.push(self.policy_session.update(obj, &both, step)?);
                    }
                }
                if out.first_ratio.is_nan() {
                    let stats = obj.policy.stats.rows();
                    out.first_ratio = stats.iter().find(|(k, _)| k == "ratio/mean").map_or(f64::NAN, |(_, v)| *v);
                }
                out.updates += 1;
            }
        }
        Ok(out)
    }
}

/// Values of every response token, as host rows, without gradients.
fn critic_values(critic: &Critic, pairs: &[(&[u32], &[u32])], pad: u32, fb: usize) -> Result<Vec<Vec<f64>>> {
    let trunk = critic.trunk.detached()?;
    let head = critic.head.detach();
    let detached = Critic { trunk: &trunk, head: &head };
    let mut out = Vec::with_capacity(pairs.len());
    for part in pairs.chunks(fb.max(1)) {
        let v = detached.values(part, pad)?;
        out.extend(split_rows(&to_f64(&v)?, part.iter().map(|(_, r)| r.len())));
    }
    Ok(out)
}
