//! Finding the final answer in a worked solution, in the order models are trained to mark it:
//! `\boxed{…}` (MATH), `#### N` (GSM8K), "The answer is N", else the last number in the text.

use super::number::{parse_number, Parsed};
use regex::Regex;
use std::sync::LazyLock;

/// How the final answer was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Boxed,
    Hashes,
    AnswerIs,
    LastNumber,
}

/// The final answer of a response: its text and, when it is a number, its value.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalAnswer {
    pub text: String,
    pub number: Option<Parsed>,
    pub marker: Marker,
}

/// A number as it appears inside prose: `\frac{a}{b}`, `1,234.5`, `3/4`, `.5`, `2e-3`, with an
/// optional `%`. The sign is handled by [`number_tokens`] (it needs to look behind).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?: \\[dt]?frac \s* (?: \{[^{}]*\} | \d ) \s* (?: \{[^{}]*\} | \d )
          | (?: \d{1,3}(?:,\d{3})+ | \d+ ) (?: \.\d+ )? (?: [eE][-+]?\d+ )? (?: \s*/\s*\d+(?:\.\d+)? )?
          | \.\d+ )
        (?: \s* \\?% )?",
    )
    .expect("valid number pattern")
});

static ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)the\s+(?:final\s+)?answer\s+is\s*:?").expect("valid answer pattern"));

static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\d+").expect("valid integer pattern"));

/// Every number in `text`, in order, as `(start, text)`. A leading `-`/`+`/`−` belongs to the
/// number unless it follows a letter, digit or closing bracket (then it is an operator: `x-5`).
pub fn number_tokens(text: &str) -> Vec<(usize, String)> {
    NUMBER
        .find_iter(text)
        .map(|m| {
            let before = &text[..m.start()];
            let mut chars = before.chars().rev();
            let sign = chars.next().filter(|c| matches!(c, '-' | '+' | '−'));
            let unary = sign.is_some() && !chars.next().is_some_and(|c| c.is_alphanumeric() || ")]}".contains(c));
            match sign {
                Some(s) if unary => (m.start() - s.len_utf8(), format!("{s}{}", m.as_str())),
                _ => (m.start(), m.as_str().to_string()),
            }
        })
        .collect()
}

/// The final answer of `text`, or `None` when it holds no marker and no number.
pub fn extract_final_answer(text: &str) -> Option<FinalAnswer> {
    if let Some(inner) = last_boxed(text) {
        let inner = inner.rsplit_once('=').map_or(inner, |(_, rhs)| rhs).trim();
        return Some(FinalAnswer { text: inner.to_string(), number: parse_number(inner), marker: Marker::Boxed });
    }
    if let Some(i) = text.rfind("####") {
        if let Some(answer) = from_line(&text[i + 4..], Marker::Hashes) {
            return Some(answer);
        }
    }
    if let Some(m) = ANSWER_IS.find_iter(text).last() {
        if let Some(answer) = from_line(&text[m.end()..], Marker::AnswerIs) {
            return Some(answer);
        }
    }
    let (_, last) = number_tokens(text).pop()?;
    Some(FinalAnswer { number: parse_number(&last), text: last, marker: Marker::LastNumber })
}

/// The answer on the rest of a marker's line: the whole line if it is a number, else its first
/// number ("The answer is 5 apples."), else the line's text.
fn from_line(rest: &str, marker: Marker) -> Option<FinalAnswer> {
    let line = rest.lines().next().unwrap_or("").trim().trim_end_matches('.').trim();
    if line.is_empty() {
        return None;
    }
    if let Some(number) = parse_number(line) {
        return Some(FinalAnswer { text: line.to_string(), number: Some(number), marker });
    }
    match number_tokens(line).into_iter().next() {
        Some((_, first)) => Some(FinalAnswer { number: parse_number(&first), text: first, marker }),
        None => Some(FinalAnswer { text: line.to_string(), number: None, marker }),
    }
}

/// The contents of the last `\boxed{…}` / `\fbox{…}` (nested braces allowed), or of `\boxed 5`.
pub(crate) fn last_boxed(text: &str) -> Option<&str> {
    let (start, name) = ["\\boxed", "\\fbox"].iter().filter_map(|n| text.rfind(n).map(|i| (i, *n))).max()?;
    let rest = &text[start + name.len()..];
    let body = rest.trim_start();
    if let Some(inner) = body.strip_prefix('{') {
        let mut depth = 1usize;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&inner[..i]);
                    }
                }
                _ => {}
            }
        }
        None
    } else if body.len() < rest.len() {
        // `\boxed 5`: up to the next space or `$`.
        body.split(|c: char| c.is_whitespace() || c == '$').next().filter(|s| !s.is_empty())
    } else {
        None
    }
}

/// The last integer of `text` (`-?\d+`, no other normalisation): the reward rule "1 if the last
/// integer of the reply is the reference".
pub fn last_integer(text: &str) -> Option<i128> {
    INTEGER.find_iter(text).last().and_then(|m| m.as_str().parse().ok())
}
