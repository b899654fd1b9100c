//! A step-level verifier for process supervision: every line of a response that states an
//! integer equation `a op b = c` (op ∈ + − * × x /) is a step, rewarded 1 when the equation holds
//! and 0 when it does not. The sequence value is the share of correct steps.

use crate::error::Result;
use crate::source::{RewardSource, Sample, Score};

/// Scores the equations of a response line by line (steps end at each line's end).
#[derive(Clone, Debug)]
pub struct EquationSteps {
    name: String,
}

impl Default for EquationSteps {
    fn default() -> Self {
        Self { name: "steps".into() }
    }
}

impl EquationSteps {
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `(byte offset just past the step's line, 1.0 correct / 0.0 wrong)` for each equation line.
    pub fn steps(text: &str) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            let end = start + line.trim_end_matches('\n').len();
            if let Some(ok) = check_equation(line) {
                out.push((end, if ok { 1.0 } else { 0.0 }));
            }
            start += line.len();
        }
        out
    }
}

/// `Some(holds)` when `line` contains `a op b = c` with integers; `None` when it has no equation.
fn check_equation(line: &str) -> Option<bool> {
    let (lhs, rhs) = line.split_once('=')?;
    let c = leading_int(rhs.trim_start())?;
    let lhs = lhs.trim_end();
    // The operator is the last one that has an integer on each side.
    for (i, ch) in lhs.char_indices().rev() {
        if !matches!(ch, '+' | '-' | '*' | '×' | 'x' | '/' | '−') {
            continue;
        }
        let (Some(a), Some(b)) =
            (trailing_int(lhs[..i].trim_end()), leading_int(lhs[i + ch.len_utf8()..].trim_start()))
        else {
            continue;
        };
        let value = match ch {
            '+' => a.checked_add(b),
            '-' | '−' => a.checked_sub(b),
            '/' => (b != 0 && a % b == 0).then(|| a / b),
            _ => a.checked_mul(b),
        };
        return Some(value == Some(c));
    }
    None
}

fn leading_int(s: &str) -> Option<i64> {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    let n: String = digits.chars().take_while(|c| c.is_ascii_digit() || *c == ',').filter(|c| *c != ',').collect();
    n.parse::<i64>().ok().map(|v| sign * v)
}

/// The integer at the end of `s`, negative when a minus sign stands directly before it and
/// after a non-alphanumeric (or nothing), e.g. `(-5`, `-5`, not `x-5`.
fn trailing_int(s: &str) -> Option<i64> {
    let start = s
        .rfind(|c: char| !(c.is_ascii_digit() || c == ','))
        .map_or(0, |i| i + s[i..].chars().next().map_or(1, char::len_utf8));
    let v: i64 = s[start..].replace(',', "").parse().ok()?;
    let negative = s[..start].strip_suffix('-').is_some_and(|rest| {
        let rest = rest.trim_end();
        rest.is_empty() || rest.ends_with(|c: char| !c.is_ascii_alphanumeric())
    });
    Some(if negative { -v } else { v })
}

impl RewardSource for EquationSteps {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        Ok(samples
            .iter()
            .map(|s| {
                let steps = Self::steps(s.response);
                let value = (!steps.is_empty()).then(|| steps.iter().map(|(_, r)| r).sum::<f64>() / steps.len() as f64);
                let note =
                    value.map(|v| format!("{} of {} steps correct", (v * steps.len() as f64).round(), steps.len()));
                Score { value, steps, note }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equations_are_steps_at_line_ends() {
        let text = "First, 23 + 45 = 68.\nThen 68 * 2 = 137\nSo the answer is 136.";
        let steps = EquationSteps::steps(text);
        assert_eq!(steps, vec![(20, 1.0), (38, 0.0)]);
        assert_eq!(&text[..20], "First, 23 + 45 = 68.");
        assert_eq!(check_equation("12 - 30 = -18"), Some(true));
        assert_eq!(check_equation("1,200 / 4 = 300"), Some(true));
        assert_eq!(check_equation("7 × 8 = 54"), Some(false));
        assert_eq!(check_equation("no equation here"), None);
        assert_eq!(check_equation("x = 5"), None);
        assert_eq!(check_equation("-5 + 3 = -2"), Some(true));
    }
}
