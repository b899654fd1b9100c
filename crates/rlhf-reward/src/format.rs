//! Format rewards: a regular expression the response (or its last line) must match, and a
//! length penalty for overlong or truncated responses.

use crate::error::{Result, RewardError};
use crate::source::{RewardSource, Sample, Score};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// How a pattern has to match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The whole text must match (the pattern is anchored as `^(?:…)$`).
    #[default]
    Full,
    /// Some part of the text must match.
    Search,
}

/// Which text a pattern is matched against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Response,
    /// The last non-empty line, without trailing whitespace: "ends with `The answer is 12.`".
    LastLine,
}

/// `matched` when the pattern matches, `unmatched` otherwise (defaults 1 and 0).
#[derive(Clone, Debug)]
pub struct RegexReward {
    name: String,
    regex: Regex,
    target: Target,
    matched: f64,
    unmatched: f64,
}

impl RegexReward {
    /// Compiles `pattern` (Rust `regex` syntax, no look-around); the error names the pattern.
    pub fn new(pattern: &str, mode: MatchMode) -> Result<Self> {
        let full = match mode {
            MatchMode::Full => format!("^(?:{pattern})$"),
            MatchMode::Search => pattern.to_string(),
        };
        let regex = Regex::new(&full)
            .map_err(|e| RewardError::Config(format!("format reward: invalid regex `{pattern}`: {e}")))?;
        Ok(Self { name: "format".into(), regex, target: Target::Response, matched: 1.0, unmatched: 0.0 })
    }

    pub fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    pub fn with_values(mut self, matched: f64, unmatched: f64) -> Self {
        (self.matched, self.unmatched) = (matched, unmatched);
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn matches(&self, response: &str) -> bool {
        let text = match self.target {
            Target::Response => response,
            Target::LastLine => last_line(response),
        };
        self.regex.is_match(text)
    }
}

/// The last line with visible content, trailing whitespace removed.
pub fn last_line(text: &str) -> &str {
    text.lines().rev().map(str::trim_end).find(|l| !l.trim().is_empty()).unwrap_or("")
}

impl RewardSource for RegexReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        Ok(samples
            .iter()
            .map(|s| Score::value(if self.matches(s.response) { self.matched } else { self.unmatched }))
            .collect())
    }
}

/// DAPO's soft overlong punishment: 0 up to `max_tokens − buffer_tokens`, then falling linearly
/// to −1 at `max_tokens`, and −1 beyond.
pub fn overlong_penalty(len: usize, max_tokens: usize, buffer_tokens: usize) -> f64 {
    let start = max_tokens.saturating_sub(buffer_tokens);
    if len <= start {
        0.0
    } else if len > max_tokens || buffer_tokens == 0 {
        -1.0
    } else {
        -((len - start) as f64) / buffer_tokens as f64
    }
}

/// A penalty to add to a task reward (e.g. in [`crate::Weighted`]):
/// `scale · overlong_penalty(len) + (unfinished if the response was truncated)`, with `len`
/// the number of response tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LengthPenalty {
    pub max_tokens: usize,
    pub buffer_tokens: usize,
    pub scale: f64,
    /// Added when the response hit the generation limit (`finished == false`); e.g. −1.
    pub unfinished: f64,
}

impl Default for LengthPenalty {
    fn default() -> Self {
        Self { max_tokens: 1024, buffer_tokens: 256, scale: 1.0, unfinished: 0.0 }
    }
}

impl LengthPenalty {
    pub fn new(max_tokens: usize, buffer_tokens: usize) -> Result<Self> {
        if buffer_tokens > max_tokens {
            return Err(RewardError::Config(format!(
                "length penalty: buffer_tokens ({buffer_tokens}) must not exceed max_tokens ({max_tokens})"
            )));
        }
        Ok(Self { max_tokens, buffer_tokens, ..Self::default() })
    }

    pub fn penalty(&self, sample: &Sample<'_>) -> f64 {
        let len = sample.response_ids.len();
        let over = self.scale * overlong_penalty(len, self.max_tokens, self.buffer_tokens);
        over + if sample.finished { 0.0 } else { self.unfinished }
    }
}

impl RewardSource for LengthPenalty {
    fn name(&self) -> &str {
        "length_penalty"
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        Ok(samples.iter().map(|s| Score::value(self.penalty(s))).collect())
    }
}
