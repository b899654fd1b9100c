//! Policies side by side on held-out prompts (`rlhf eval`): verifier accuracy, format rate,
//! reward-model score and length of greedy answers; the KL to a reference measured on sampled
//! answers (E_{y∼π}[log π(y) − log π_ref(y)], the quantity the RL leash bounds); Pass@1 / Maj@K
//! over K samples; perplexity on held-out text; reward-hacking signals (length–reward
//! correlation, repetition, how often the reward model prefers a wrong answer to a right one);
//! and each model against a baseline on the same problems (win rates, the accuracy difference
//! with its paired-bootstrap interval and McNemar's exact p).

use crate::metrics::{majority, pearson, repeats, rm_verifier_disagreements, win_rate};
use crate::significance::{discordant, mcnemar_exact, paired_bootstrap, PairedDifference, RESAMPLES};
use rlhf_data::{PromptExample, SftExample, Tokenizer};
use rlhf_model::CausalLm;
use rlhf_reward::math::{extract_final_answer, last_integer};
use rlhf_reward::{RewardSource, RewardSpec, SourceSpec};
use rlhf_train::online::mean_len;
use rlhf_train::rollout::{
    decode_rows, response_logprobs_rows, rollout, score_rows, PromptRef, RolloutConfig, RolloutRow, RowText,
};
use rlhf_train::stats::mean;
use rlhf_train::TrainError;
use serde_json::{json, Value};

pub type Result<T> = std::result::Result<T, TrainError>;

/// What decides a correct answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verifier {
    /// The final answer (`\boxed{}`, `####`, "The answer is", last number) equals the reference.
    Math,
    /// The last integer of the reply equals the reference.
    LastInteger,
}

impl Verifier {
    /// `math` or `last_integer`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "math" => Some(Self::Math),
            "last_integer" => Some(Self::LastInteger),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Math => "math",
            Self::LastInteger => "last_integer",
        }
    }

    /// The reward source that scores with it.
    pub fn spec(self) -> RewardSpec {
        RewardSpec::of(match self {
            Self::Math => SourceSpec::Math {},
            Self::LastInteger => SourceSpec::LastInteger {},
        })
    }

    /// A reply's final answer as this verifier reads it, for majority voting.
    fn final_answer(self, text: &str) -> Option<String> {
        match self {
            Self::Math => extract_final_answer(text).map(|a| a.text),
            Self::LastInteger => last_integer(text).map(|n| n.to_string()),
        }
    }
}

/// How answers are generated and scored.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub verifier: Verifier,
    pub max_new_tokens: usize,
    /// Rows per generation batch and per forward pass.
    pub batch_size: usize,
    /// K samples per prompt for Pass@1, Maj@K and the RM–verifier divergence (0: skip).
    pub samples: usize,
    pub sample_temperature: f64,
}

impl Default for Settings {
    /// Greedy answers of up to 48 tokens, 32 rows at a time; no sampling.
    fn default() -> Self {
        Self { verifier: Verifier::Math, max_new_tokens: 48, batch_size: 32, samples: 0, sample_temperature: 0.7 }
    }
}

/// The scorers of every answer.
pub struct Scorers {
    /// Built from `Settings::verifier`.
    pub verifier: Box<dyn RewardSource>,
    /// The arithmetic set's `The answer is N.` last line.
    pub format: Box<dyn RewardSource>,
    pub reward_model: Option<Box<dyn RewardSource>>,
}

/// One model's row of the table.
#[derive(Clone, Debug)]
pub struct ModelEval {
    pub name: String,
    pub accuracy: f64,
    pub format: f64,
    pub rm: Option<f64>,
    pub kl: f64,
    pub length: f64,
    /// Per prompt, greedy answers: verifier score and RM score (for win rates).
    pub verifier_scores: Vec<f64>,
    pub rm_scores: Option<Vec<f64>>,
    pub pass_at_1: Option<f64>,
    pub maj_at_k: Option<f64>,
    pub length_rm_correlation: Option<f64>,
    pub repetition: f64,
    pub rm_prefers_wrong: Option<f64>,
    pub perplexity: Option<f64>,
}

/// Evaluates `model` on `prompts`: greedy answers scored by every scorer, K samples when asked,
/// and one sampled answer per prompt for the KL to `reference`. Seeds are fixed, so a model's
/// row does not depend on which other models are in the table.
pub fn evaluate(
    name: &str,
    model: &CausalLm,
    reference: &CausalLm,
    prompts: &[PromptExample],
    scorers: &mut Scorers,
    s: &Settings,
    tok: &Tokenizer,
) -> Result<ModelEval> {
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.prompt_ids.as_slice()).collect();
    let refs: Vec<PromptRef> = prompts.iter().map(|p| PromptRef { answer: p.answer.as_deref(), tests: None }).collect();
    let greedy = RolloutConfig {
        max_new_tokens: s.max_new_tokens,
        temperature: 0.0,
        generation_batch_size: s.batch_size,
        ..RolloutConfig::default()
    };
    let answers = rollout(model, &ids, 1, &greedy, tok, 0, &mut |_| {})?;
    let texts = decode_rows(tok, &answers)?;
    let score = |source: &mut Box<dyn RewardSource>| values(source, &answers, &texts, &refs, f64::NAN);
    let verifier_scores = score(&mut scorers.verifier)?;
    let format_scores = score(&mut scorers.format)?;
    let rm_scores = scorers.reward_model.as_mut().map(score).transpose()?;
    let finite_mean = |v: &[f64]| mean(&v.iter().copied().filter(|x| x.is_finite()).collect::<Vec<_>>());
    let lengths: Vec<f64> = answers.iter().map(|r| r.response_ids.len() as f64).collect();
    let length_rm_correlation = rm_scores.as_ref().and_then(|rm| pearson(&lengths, rm));
    let repetition =
        answers.iter().filter(|r| repeats(&r.response_ids, 4, 3)).count() as f64 / answers.len().max(1) as f64;
    let sampled = if s.samples > 0 {
        let cfg = RolloutConfig { temperature: s.sample_temperature, ..greedy.clone() };
        Some(sampled_metrics(model, &ids, &refs, scorers, s, &cfg, tok)?)
    } else {
        None
    };
    let kl = kl_to_reference(model, reference, &ids, &RolloutConfig { temperature: 1.0, ..greedy }, s.batch_size, tok)?;
    Ok(ModelEval {
        name: name.to_string(),
        accuracy: finite_mean(&verifier_scores),
        format: finite_mean(&format_scores),
        rm: rm_scores.as_deref().map(finite_mean),
        kl,
        length: mean_len(&answers),
        verifier_scores: verifier_scores.iter().map(|x| if x.is_finite() { *x } else { 0.0 }).collect(),
        rm_scores,
        pass_at_1: sampled.map(|m| m.pass_at_1),
        maj_at_k: sampled.map(|m| m.maj_at_k),
        length_rm_correlation,
        repetition,
        rm_prefers_wrong: sampled.and_then(|m| m.rm_prefers_wrong),
        perplexity: None,
    })
}

/// `source`'s score of every row, `missing` where it cannot judge one.
fn values(
    source: &mut Box<dyn RewardSource>,
    rows: &[RolloutRow],
    texts: &[RowText],
    refs: &[PromptRef],
    missing: f64,
) -> Result<Vec<f64>> {
    Ok(score_rows(source.as_mut(), rows, texts, refs)?.iter().map(|x| x.value.unwrap_or(missing)).collect())
}

#[derive(Clone, Copy)]
struct SampledMetrics {
    pass_at_1: f64,
    maj_at_k: f64,
    /// Among sample pairs of one prompt that the verifier separates, the share the reward model
    /// orders the other way (None without a reward model or such pairs).
    rm_prefers_wrong: Option<f64>,
}

/// Pass@1, Maj@K and the RM–verifier divergence over `s.samples` answers per prompt.
fn sampled_metrics(
    model: &CausalLm,
    ids: &[&[u32]],
    refs: &[PromptRef],
    scorers: &mut Scorers,
    s: &Settings,
    cfg: &RolloutConfig,
    tok: &Tokenizer,
) -> Result<SampledMetrics> {
    let samples = rollout(model, ids, s.samples, cfg, tok, 2, &mut |_| {})?;
    let texts = decode_rows(tok, &samples)?;
    let correct = values(&mut scorers.verifier, &samples, &texts, refs, 0.0)?;
    let rm = scorers.reward_model.as_mut().map(|rm| values(rm, &samples, &texts, refs, f64::NAN)).transpose()?;
    let (mut maj_right, mut against, mut apart) = (0usize, 0usize, 0usize);
    for p in 0..ids.len() {
        let rows: Vec<usize> = (0..samples.len()).filter(|&r| samples[r].prompt_index == p).collect();
        let extracted: Vec<Option<String>> =
            rows.iter().map(|&r| s.verifier.final_answer(&texts[r].response)).collect();
        let votes: Vec<Option<&str>> = extracted.iter().map(|x| x.as_deref()).collect();
        if let Some(top) = majority(&votes) {
            // Samples with the same final answer get the same verdict.
            maj_right += rows.iter().zip(&votes).any(|(&r, v)| *v == Some(top) && correct[r] > 0.5) as usize;
        }
        if let Some(rm) = &rm {
            let (x, y) = rm_verifier_disagreements(
                &rows.iter().map(|&r| rm[r]).collect::<Vec<_>>(),
                &rows.iter().map(|&r| correct[r] > 0.5).collect::<Vec<_>>(),
            );
            (against, apart) = (against + x, apart + y);
        }
    }
    Ok(SampledMetrics {
        pass_at_1: mean(&correct),
        maj_at_k: maj_right as f64 / ids.len().max(1) as f64,
        rm_prefers_wrong: (rm.is_some() && apart > 0).then(|| against as f64 / apart as f64),
    })
}

/// Mean over one sampled answer per prompt of log π(y) − log π_ref(y). Both sides are scored
/// the same way (whole sequences), not the sampler's logprobs against the reference's: in bf16
/// the two differ by ~1e-3 nats a token, which a model would show as KL to itself.
fn kl_to_reference(
    model: &CausalLm,
    reference: &CausalLm,
    ids: &[&[u32]],
    cfg: &RolloutConfig,
    batch_size: usize,
    tok: &Tokenizer,
) -> Result<f64> {
    let sampled = rollout(model, ids, 1, cfg, tok, 1, &mut |_| {})?;
    let pairs: Vec<(&[u32], &[u32])> =
        sampled.iter().map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice())).collect();
    let policy_lp = response_logprobs_rows(model, &pairs, tok.pad_id(), 1.0, batch_size)?;
    let ref_lp = response_logprobs_rows(reference, &pairs, tok.pad_id(), 1.0, batch_size)?;
    let kl: Vec<f64> = policy_lp.iter().zip(&ref_lp).map(|(p, q)| p.iter().zip(q).map(|(p, q)| p - q).sum()).collect();
    Ok(mean(&kl))
}

/// Perplexity of `model` on the completion tokens of held-out demonstrations.
pub fn perplexity(model: &CausalLm, text: &[SftExample], pad_id: u32, batch_size: usize) -> Result<Option<f64>> {
    let mut sft = rlhf_train::sft::SftObjective { model, pad_id, eval_batch_size: batch_size };
    let stats = rlhf_train::Objective::evaluate(&mut sft, text)?;
    Ok(stats.iter().find(|(k, _)| k == "perplexity").map(|(_, v)| *v))
}

/// A model against the baseline on the same prompts.
#[derive(Clone, Copy, Debug)]
pub struct Versus {
    /// Share of prompts where its greedy answer beats the baseline's by the verifier (ties half).
    pub win_rate_verifier: f64,
    /// The same by reward-model score (None without a reward model).
    pub win_rate_rm: Option<f64>,
    /// Accuracy difference with its paired-bootstrap interval, and McNemar's exact p.
    pub accuracy: Option<(PairedDifference, f64)>,
}

/// Every row against `rows[baseline]`.
pub fn against(rows: &[ModelEval], baseline: usize) -> Vec<Versus> {
    let base = &rows[baseline];
    rows.iter()
        .map(|r| {
            let accuracy = paired_bootstrap(&r.verifier_scores, &base.verifier_scores, RESAMPLES, 0).map(|d| {
                let (only_r, only_base) = discordant(&r.verifier_scores, &base.verifier_scores);
                (d, mcnemar_exact(only_r, only_base))
            });
            Versus {
                win_rate_verifier: win_rate(&r.verifier_scores, &base.verifier_scores, 1e-9).unwrap_or(f64::NAN),
                win_rate_rm: r.rm_scores.as_ref().zip(base.rm_scores.as_ref()).and_then(|(x, y)| win_rate(x, y, 1e-6)),
                accuracy,
            }
        })
        .collect()
}

/// A row of `eval.jsonl` (what `report.html` and `iterate` read).
pub fn json_row(r: &ModelEval, v: &Versus, baseline: &str, prompts: usize, samples: usize) -> Value {
    json!({"model": r.name, "accuracy": r.accuracy, "well_formatted": r.format,
        "rm_reward": r.rm, "kl_to_reference": r.kl, "mean_length": r.length, "prompts": prompts,
        "baseline": baseline, "win_rate_verifier": v.win_rate_verifier, "win_rate_rm": v.win_rate_rm,
        "pass_at_1": r.pass_at_1, "maj_at_k": r.maj_at_k, "samples": samples,
        "length_rm_correlation": r.length_rm_correlation, "repetition_rate": r.repetition,
        "rm_prefers_wrong": r.rm_prefers_wrong, "perplexity": r.perplexity,
        "accuracy_diff": v.accuracy.map(|(d, _)| d.diff), "accuracy_diff_ci95": v.accuracy.map(|(d, _)| [d.lo, d.hi]),
        "mcnemar_p": v.accuracy.map(|(_, p)| p)})
}
