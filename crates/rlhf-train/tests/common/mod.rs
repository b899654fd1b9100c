//! Pieces shared by the online-RL test binaries.

use rlhf_data::Tokenizer;
use rlhf_reward::{RewardSource, Sample, Score};

/// Toy verifiable task: the share of response bytes that are ASCII digits. A random model
/// writes ~4% digits; learning it means moving probability mass onto 10 of 260 tokens.
pub struct DigitShare(Vec<u32>);

impl DigitShare {
    pub fn new(tok: &Tokenizer) -> Box<Self> {
        Box::new(Self(tok.encode("0123456789", false).unwrap()))
    }
}

impl RewardSource for DigitShare {
    fn name(&self) -> &str {
        "digits"
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> rlhf_reward::Result<Vec<Score>> {
        Ok(samples
            .iter()
            .map(|s| {
                let n = s.response_ids.len().max(1) as f64;
                Score::value(s.response_ids.iter().filter(|t| self.0.contains(t)).count() as f64 / n)
            })
            .collect())
    }
}
