//! Verifier for math answers: the response's final answer against the sample's reference
//! `answer`, compared as numbers when both are numbers and as normalised text otherwise.

mod extract;
mod number;
mod steps;

pub use extract::{extract_final_answer, last_integer, number_tokens, FinalAnswer, Marker};
pub use number::{clean_latex, numbers_equal, parse_number, Number, Parsed};
pub use steps::EquationSteps;

use crate::error::{Result, RewardError};
use crate::source::{RewardSource, Sample, Score};
use serde::{Deserialize, Serialize};

/// Which answer of the response is compared with the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MathMode {
    /// `\boxed{}`, `#### N`, "The answer is N", else the last number; numeric equivalence.
    #[default]
    FinalAnswer,
    /// The last integer (`-?\d+`) of the reply must equal the reference integer, nothing else
    /// (the rule of the arithmetic acceptance run). A non-integer reference is an error.
    LastInteger,
}

/// Settings of [`MathVerifier`]; the defaults give 1 for a correct answer and 0 otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MathConfig {
    pub mode: MathMode,
    pub correct: f64,
    pub incorrect: f64,
    /// Reward when the response holds no answer at all (no marker, no number).
    pub unparseable: f64,
    /// Also accept a percentage's fraction (`50%` matches `0.5`); `50%` always matches `50`.
    pub percent_as_fraction: bool,
    /// Relative tolerance of non-integer comparisons.
    pub rel_tol: f64,
}

impl Default for MathConfig {
    fn default() -> Self {
        Self {
            mode: MathMode::FinalAnswer,
            correct: 1.0,
            incorrect: 0.0,
            unparseable: 0.0,
            percent_as_fraction: false,
            rel_tol: 1e-9,
        }
    }
}

/// The verdict on one response.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Correct,
    Incorrect { got: String },
    NoAnswer,
}

/// Scores 1/0 by the final answer; `value: None` for samples without a reference answer.
#[derive(Clone, Debug)]
pub struct MathVerifier {
    name: String,
    cfg: MathConfig,
}

impl MathVerifier {
    pub fn new(cfg: MathConfig) -> Self {
        Self { name: "math".into(), cfg }
    }

    /// The "last integer equals the reference" rule with 1/0 rewards.
    pub fn last_integer() -> Self {
        Self::new(MathConfig { mode: MathMode::LastInteger, ..MathConfig::default() })
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn config(&self) -> &MathConfig {
        &self.cfg
    }

    /// Judges one response against a reference answer.
    pub fn judge(&self, response: &str, reference: &str) -> Result<Verdict> {
        match self.cfg.mode {
            MathMode::LastInteger => {
                let want: i128 = reference.trim().parse().map_err(|_| {
                    RewardError::Config(format!(
                        "math verifier `{}` (mode last_integer): reference answer `{reference}` is not an integer",
                        self.name
                    ))
                })?;
                Ok(match last_integer(response) {
                    None => Verdict::NoAnswer,
                    Some(got) if got == want => Verdict::Correct,
                    Some(got) => Verdict::Incorrect { got: got.to_string() },
                })
            }
            MathMode::FinalAnswer => Ok(match extract_final_answer(response) {
                None => Verdict::NoAnswer,
                Some(ans) if self.matches(&ans, reference) => Verdict::Correct,
                Some(ans) => Verdict::Incorrect { got: ans.text },
            }),
        }
    }

    fn matches(&self, ans: &FinalAnswer, reference: &str) -> bool {
        let reference = reference_answer(reference);
        match (ans.number, parse_number(reference)) {
            (Some(a), Some(b)) => {
                let tol = self.cfg.rel_tol;
                numbers_equal(a.value, b.value, tol)
                    || (self.cfg.percent_as_fraction
                        && ((a.percent && numbers_equal(a.value.percent_of(), b.value, tol))
                            || (b.percent && numbers_equal(a.value, b.value.percent_of(), tol))))
            }
            _ => normalise_text(&ans.text) == normalise_text(reference),
        }
    }
}

/// A reference may itself be a full solution (GSM8K's `answer` column ends in `#### N`, MATH's
/// `solution` holds a `\boxed{}`): use its marked final answer then, the text as is otherwise.
pub fn reference_answer(reference: &str) -> &str {
    match reference.rfind("####") {
        Some(i) => reference[i + 4..].trim(),
        None => extract::last_boxed(reference).unwrap_or(reference).trim(),
    }
}

/// Text answers (`\pi`, `x+1`, `(2, 3)`): LaTeX wrappers, `\text{}`, degree marks and case
/// removed before comparing.
fn normalise_text(s: &str) -> String {
    let mut t = clean_latex(s);
    for wrapper in ["\\text{", "\\mathrm{", "\\textbf{", "\\mbox{"] {
        while let Some(i) = t.find(wrapper) {
            let Some(end) = t[i..].find('}') else { break };
            let inner = t[i + wrapper.len()..i + end].to_string();
            t.replace_range(i..i + end + 1, &inner);
        }
    }
    t.replace("^\\circ", "").replace("^{\\circ}", "").to_lowercase()
}

impl RewardSource for MathVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        samples
            .iter()
            .map(|s| {
                let Some(reference) = s.answer else { return Ok(Score::default()) };
                let cfg = &self.cfg;
                Ok(match self.judge(s.response, reference)? {
                    Verdict::Correct => Score::value(cfg.correct),
                    Verdict::Incorrect { got } => Score {
                        value: Some(cfg.incorrect),
                        note: Some(format!("answer `{got}`, expected `{}`", reference_answer(reference))),
                        ..Score::default()
                    },
                    Verdict::NoAnswer => Score {
                        value: Some(cfg.unparseable),
                        note: Some("no final answer found".into()),
                        ..Score::default()
                    },
                })
            })
            .collect()
    }
}
