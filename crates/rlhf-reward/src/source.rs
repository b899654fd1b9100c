//! The one interface every trainer scores responses through.

use crate::error::Result;

/// One prompt + response to score. Token ids and text are both given: reward models read the
/// ids (same tokenizer as the policy), verifiers read the text.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// The prompt as the policy saw it (chat template applied), decoded.
    pub prompt: &'a str,
    /// The response text (special tokens removed).
    pub response: &'a str,
    pub prompt_ids: &'a [u32],
    /// Generated tokens, including the final EOS when there is one.
    pub response_ids: &'a [u32],
    /// Reference answer of a verifiable prompt (`answer` column).
    pub answer: Option<&'a str>,
    /// Unit tests of a code prompt (`tests` column).
    pub tests: Option<&'a str>,
    /// False when generation hit the token limit (a truncated response).
    pub finished: bool,
}

/// A source's verdict on one sample.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    /// The sequence-level reward; `None` = this source cannot score the sample (it is left out
    /// of group statistics, as TRL does with a reward function that returns None).
    pub value: Option<f64>,
    /// Process supervision: (byte offset in the response text just past the end of a step,
    /// reward of the step), in increasing order; trainers map each offset to the response token
    /// that ends there. Empty for outcome-only sources.
    pub steps: Vec<(usize, f64)>,
    /// Why the score is what it is, when that is worth reporting (e.g. "timeout after 5 s").
    pub note: Option<String>,
}

impl Score {
    pub fn value(v: f64) -> Self {
        Self { value: Some(v), ..Self::default() }
    }
}

/// Something that scores responses: a reward model, a verifier, a judge, or a combination.
/// Batched, so reward models can run one forward pass per batch.
pub trait RewardSource {
    /// Short name used in metrics (`reward/<name>`).
    fn name(&self) -> &str;
    /// One score per sample, in order.
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>>;
}
