//! Combinations of sources: a weighted sum (task reward + format bonus + length penalty) and an
//! ensemble of reward models (min or mean, or mean − k·std against reward hacking).

use crate::error::{Result, RewardError};
use crate::source::{RewardSource, Sample, Score};
use serde::{Deserialize, Serialize};

/// Scores of every member, checked to be one per sample.
fn score_all<'a, 's: 'a>(
    members: impl Iterator<Item = &'a mut Box<dyn RewardSource + 's>>,
    samples: &[Sample<'_>],
) -> Result<Vec<Vec<Score>>> {
    members
        .map(|m| {
            let scores = m.score(samples)?;
            if scores.len() != samples.len() {
                return Err(RewardError::Config(format!(
                    "reward source `{}` returned {} scores for {} samples",
                    m.name(),
                    scores.len(),
                    samples.len()
                )));
            }
            Ok(scores)
        })
        .collect()
}

fn join_notes<'a>(notes: impl Iterator<Item = (&'a str, &'a Option<String>)>) -> Option<String> {
    let parts: Vec<String> = notes.filter_map(|(name, n)| n.as_ref().map(|n| format!("{name}: {n}"))).collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `Σ wᵢ·rᵢ`. A part that cannot score a sample (`None`) counts 0 there, unless no part can:
/// then the sum is `None` too. Process rewards (`steps`) pass through scaled by their part's
/// weight; steps at the same token are added.
pub struct Weighted<'s> {
    name: String,
    parts: Vec<(f64, Box<dyn RewardSource + 's>)>,
}

impl<'s> Weighted<'s> {
    pub fn new(parts: Vec<(f64, Box<dyn RewardSource + 's>)>) -> Result<Self> {
        if parts.is_empty() {
            return Err(RewardError::Config("weighted reward: no reward sources given".into()));
        }
        if let Some((w, s)) = parts.iter().find(|(w, _)| !w.is_finite()) {
            return Err(RewardError::Config(format!("weighted reward: weight {w} of `{}` is not finite", s.name())));
        }
        Ok(Self { name: "weighted".into(), parts })
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `(weight, name)` of each part, for metrics.
    pub fn parts(&self) -> impl Iterator<Item = (f64, &str)> {
        self.parts.iter().map(|(w, s)| (*w, s.name()))
    }
}

impl RewardSource for Weighted<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        let weights: Vec<f64> = self.parts.iter().map(|(w, _)| *w).collect();
        let names: Vec<String> = self.parts.iter().map(|(_, s)| s.name().to_string()).collect();
        let all = score_all(self.parts.iter_mut().map(|(_, s)| s), samples)?;
        Ok((0..samples.len())
            .map(|i| {
                let scores: Vec<&Score> = all.iter().map(|s| &s[i]).collect();
                let any = scores.iter().any(|s| s.value.is_some());
                let value = any.then(|| scores.iter().zip(&weights).map(|(s, w)| w * s.value.unwrap_or(0.0)).sum());
                let mut steps: Vec<(usize, f64)> = scores
                    .iter()
                    .zip(&weights)
                    .flat_map(|(s, w)| s.steps.iter().map(move |&(t, r)| (t, w * r)))
                    .collect();
                steps.sort_by_key(|&(t, _)| t);
                steps.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        kept.1 += later.1;
                    }
                    same
                });
                let note = join_notes(names.iter().map(String::as_str).zip(scores.iter().map(|s| &s.note)));
                Score { value, steps, note }
            })
            .collect())
    }
}

/// How an ensemble reduces its members' scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleMode {
    /// The most pessimistic member.
    Min,
    Mean,
    /// `mean − k·std` (population std over the members that scored the sample): penalises
    /// disagreement, where a policy exploits one model's errors.
    MeanMinusStd(f64),
}

/// Several sources scoring the same thing (usually reward models trained with different seeds).
/// Members returning `None` are left out of a sample's reduction; `None` if all do. Steps are
/// dropped (members' steps need not line up).
pub struct Ensemble<'s> {
    name: String,
    mode: EnsembleMode,
    members: Vec<Box<dyn RewardSource + 's>>,
}

impl<'s> Ensemble<'s> {
    pub fn new(members: Vec<Box<dyn RewardSource + 's>>, mode: EnsembleMode) -> Result<Self> {
        if members.is_empty() {
            return Err(RewardError::Config("reward ensemble: no members given".into()));
        }
        if let EnsembleMode::MeanMinusStd(k) = mode {
            if !k.is_finite() {
                return Err(RewardError::Config(format!("reward ensemble: mean_minus_std k = {k} is not finite")));
            }
        }
        Ok(Self { name: "ensemble".into(), mode, members })
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The reduction of one sample's member values (`None` if empty).
    pub fn reduce(mode: EnsembleMode, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        Some(match mode {
            EnsembleMode::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            EnsembleMode::Mean => mean,
            EnsembleMode::MeanMinusStd(k) => {
                let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                mean - k * var.sqrt()
            }
        })
    }
}

impl RewardSource for Ensemble<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        let names: Vec<String> = self.members.iter().map(|s| s.name().to_string()).collect();
        let all = score_all(self.members.iter_mut(), samples)?;
        Ok((0..samples.len())
            .map(|i| {
                let values: Vec<f64> = all.iter().filter_map(|s| s[i].value).collect();
                let note = join_notes(names.iter().map(String::as_str).zip(all.iter().map(|s| &s[i].note)));
                Score { value: Self::reduce(self.mode, &values), steps: Vec::new(), note }
            })
            .collect())
    }
}
