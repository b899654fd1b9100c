//! What the judge reads and how its answer is read back: the pairwise chat messages, prompts
//! given as message lists rendered as text, and a tolerant verdict parser.

use super::VerdictMode;
use regex::Regex;
use rlhf_openai::client::kind;
pub use rlhf_openai::ChatMessage;
use serde_json::Value;
use std::sync::OnceLock;

/// The judge's system prompt when none is given: short, so small judges and small context
/// windows can afford it.
pub const DEFAULT_GUIDELINES: &str = "You compare two responses to the same prompt. Prefer the response that is \
correct, helpful and honest, and that follows the prompt's instructions; do not reward length for its own sake. \
Say tie only when neither is better.";

/// The judge's answer to one ordering of a pair.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The response shown first is better.
    A,
    /// The response shown second is better.
    B,
    Tie,
    /// A logprob verdict: the log-probabilities of answering "A" and "B" as the first token.
    Scores {
        a: f64,
        b: f64,
    },
    /// No verdict could be read; the reply is kept so a bad judge prompt can be diagnosed.
    Invalid {
        reply: String,
    },
}

/// The two messages of one comparison: the guidelines as system prompt, then the prompt and the
/// two responses under fixed headings with the answer format. The format instruction is part of
/// the user message so custom guidelines cannot drop it; a logprob verdict asks for the letter
/// alone, since only the first token is read.
pub fn pairwise_messages(guidelines: &str, prompt: &str, a: &str, b: &str, mode: VerdictMode) -> Vec<ChatMessage> {
    let ask = match mode {
        VerdictMode::Text => "Which response is better? Put the verdict alone on the last line: A, B or tie.",
        VerdictMode::Logprobs { .. } => "Which response is better? Answer with the letter alone: A or B.",
    };
    let user = format!("[Prompt]\n{prompt}\n[Response A]\n{a}\n[Response B]\n{b}\n{ask}");
    let mut messages = Vec::with_capacity(2);
    if !guidelines.trim().is_empty() {
        messages.push(ChatMessage::text("system", guidelines.trim()));
    }
    messages.push(ChatMessage::text("user", user));
    messages
}

/// A prompt or response as the judge sees it: a string as is; a list of `{role, content}`
/// messages as role-headed blocks, except that a lone message is just its content (a response
/// stored as `[{"role": "assistant", ...}]`). `Err` says what is wrong, for the caller to place.
pub fn render_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(messages) => {
            if messages.is_empty() {
                return Err("is an empty list of messages".into());
            }
            let mut parts = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("[{i}].role: missing or not a string"))?;
                let content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("[{i}].content: missing or not a string"))?;
                parts.push((role, content));
            }
            if let [(_, content)] = parts.as_slice() {
                return Ok(content.to_string());
            }
            Ok(parts
                .iter()
                .map(|(role, content)| format!("{}:\n{content}", capitalise(role)))
                .collect::<Vec<_>>()
                .join("\n\n"))
        }
        other => Err(format!("must be a string or a list of messages, got {}", kind(other))),
    }
}

fn capitalise(role: &str) -> String {
    let mut chars = role.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

fn verdict_token() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Lower-case a/b are left out on purpose: in prose they are mostly the article and a list
    // letter, and reading them as verdicts would turn noise into preferences.
    RE.get_or_init(|| Regex::new(r"\b(A|B|[Tt][Ii][Ee])\b").expect("static regex"))
}

fn token_verdict(t: &str) -> Verdict {
    match t.to_ascii_lowercase().as_str() {
        "a" => Verdict::A,
        "b" => Verdict::B,
        _ => Verdict::Tie,
    }
}

/// Reads a verdict from a reply, in this order:
/// 1. the last non-empty line, stripped of markdown and punctuation and of a label such as
///    "Verdict:" or "Response", is exactly `A`, `B` or `tie` (any case);
/// 2. the last line names exactly one of them as a standalone token (`A`, `B` upper-case, `tie`
///    any case), e.g. "Response B is better.";
/// 3. the last line names none: the last standalone token anywhere in the reply.
///
/// A last line naming both A and B ("A > B") is ambiguous and, like no token at all, gives
/// [`Verdict::Invalid`].
pub fn parse_verdict(reply: &str) -> Verdict {
    let invalid = || Verdict::Invalid { reply: reply.to_string() };
    let Some(last) = reply.lines().map(str::trim).rfind(|l| !l.is_empty()) else { return invalid() };
    let mut bare = last.trim_matches(|c: char| !c.is_alphanumeric()).to_ascii_lowercase();
    for label in ["final verdict", "final answer", "verdict", "answer", "winner", "better", "response", "option"] {
        if let Some(rest) = bare.strip_prefix(label) {
            bare = rest.trim_matches(|c: char| !c.is_alphanumeric()).to_string();
        }
    }
    match bare.as_str() {
        "a" => return Verdict::A,
        "b" => return Verdict::B,
        "tie" => return Verdict::Tie,
        _ => {}
    }
    let on_last: Vec<Verdict> = verdict_token().find_iter(last).map(|m| token_verdict(m.as_str())).collect();
    if let Some(first) = on_last.first() {
        return if on_last.iter().all(|v| v == first) { first.clone() } else { invalid() };
    }
    verdict_token().find_iter(reply).last().map_or_else(invalid, |m| token_verdict(m.as_str()))
}

/// The first answer token's alternatives in a chat-completion body
/// (`choices[0].logprobs.content[0].top_logprobs`, plus the token taken), reduced to what a
/// verdict needs, as the JSON text that is cached: `{"A": lp, "B": lp, "floor": lp}`. A letter
/// is every token that is the letter once whitespace is trimmed (" A" and "A" are summed in
/// probability); a letter not among the alternatives is `null`, and `floor`, the least likely
/// alternative listed, bounds its logprob from above.
pub fn letter_scores(body: &Value) -> Result<String, String> {
    let first = body.pointer("/choices/0/logprobs/content/0").ok_or(
        "no choices[0].logprobs.content[0] in the reply: the endpoint must return logprobs \
         (and top_logprobs) for logprob verdicts; use text verdicts otherwise",
    )?;
    let mut entries = vec![first];
    match first.get("top_logprobs") {
        Some(Value::Array(alts)) if !alts.is_empty() => entries.extend(alts),
        _ => {
            return Err("choices[0].logprobs.content[0].top_logprobs is missing or empty: the endpoint \
                         must support top_logprobs for logprob verdicts"
                .into())
        }
    }
    let (mut a, mut b, mut floor) = (None::<f64>, None::<f64>, f64::INFINITY);
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let token = e.get("token").and_then(Value::as_str);
        let lp = e.get("logprob").and_then(Value::as_f64);
        let (Some(token), Some(lp)) = (token, lp) else {
            return Err(format!("logprobs entry {i} has no string token and numeric logprob: {e}"));
        };
        // The sampled token is listed again among the alternatives; count it once.
        if !seen.insert(token) {
            continue;
        }
        floor = floor.min(lp);
        let slot = match token.trim() {
            "A" => &mut a,
            "B" => &mut b,
            _ => continue,
        };
        *slot = Some(slot.map_or(lp, |x| log_add(x, lp)));
    }
    Ok(serde_json::json!({"A": a, "B": b, "floor": floor}).to_string())
}

fn log_add(x: f64, y: f64) -> f64 {
    let m = x.max(y);
    m + ((x - m).exp() + (y - m).exp()).ln()
}

/// A cached [`letter_scores`] text as a verdict: a letter missing from the alternatives takes
/// the floor (its largest possible logprob); both missing is [`Verdict::Invalid`].
pub fn parse_scores(reply: &str) -> Verdict {
    let invalid = || Verdict::Invalid { reply: reply.to_string() };
    let Ok(v) = serde_json::from_str::<Value>(reply) else { return invalid() };
    let Some(floor) = v.get("floor").and_then(Value::as_f64) else { return invalid() };
    match (v.get("A").and_then(Value::as_f64), v.get("B").and_then(Value::as_f64)) {
        (None, None) => invalid(),
        (a, b) => Verdict::Scores { a: a.unwrap_or(floor), b: b.unwrap_or(floor) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts_are_read_from_the_end() {
        assert_eq!(parse_verdict("A"), Verdict::A);
        assert_eq!(parse_verdict("Both are fine.\n\nVerdict: **b**\n"), Verdict::B);
        assert_eq!(parse_verdict("I weighed both.\nTIE."), Verdict::Tie);
        assert_eq!(parse_verdict("A is shorter, but\nResponse B is better."), Verdict::B);
        assert_eq!(parse_verdict("Final answer: A\n\nHope this helps!"), Verdict::A);
        assert_eq!(parse_verdict("Response B"), Verdict::B);
        assert_eq!(
            parse_verdict("a better one would be longer"),
            Verdict::Invalid { reply: "a better one would be longer".into() }
        );
        assert_eq!(parse_verdict("A > B"), Verdict::Invalid { reply: "A > B".into() });
        assert_eq!(parse_verdict("  \n "), Verdict::Invalid { reply: "  \n ".into() });
        assert_eq!(parse_verdict("tied"), Verdict::Invalid { reply: "tied".into() });
    }

    #[test]
    fn message_lists_render_with_roles() {
        let conv = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]);
        assert_eq!(render_text(&conv).unwrap(), "System:\nBe brief.\n\nUser:\n2+2?");
        assert_eq!(render_text(&json!([{"role": "assistant", "content": "4"}])).unwrap(), "4");
        assert!(render_text(&json!([{"role": "user"}])).unwrap_err().contains("[0].content"));
        assert!(render_text(&json!(3)).unwrap_err().contains("a number"));
    }

    #[test]
    fn guidelines_go_first_and_the_format_is_always_asked() {
        let m = pairwise_messages("Be fair.", "p", "x", "y", VerdictMode::Text);
        assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("system", Some("Be fair.")));
        assert!(m[1].content.as_str().unwrap().contains("[Response A]\nx\n[Response B]\ny\n"));
        assert!(m[1].content.as_str().unwrap().ends_with("A, B or tie."));
        assert_eq!(pairwise_messages("", "p", "x", "y", VerdictMode::Text).len(), 1);
        let l = pairwise_messages("", "p", "x", "y", VerdictMode::Logprobs { tie_margin: 0.0 });
        assert!(l[0].content.as_str().unwrap().ends_with("Answer with the letter alone: A or B."));
    }

    #[test]
    fn letter_scores_sum_spellings_and_bound_missing_letters() {
        // The token taken is the most likely alternative (greedy), listed again among them.
        let body = |alts: Value| {
            let taken = alts.get(0).cloned().unwrap_or(json!({"token": "A", "logprob": -0.5}));
            json!({"choices": [{"logprobs": {"content": [
                {"token": taken["token"], "logprob": taken["logprob"], "top_logprobs": alts}
            ]}}]})
        };
        let alts = json!([
            {"token": "A", "logprob": -0.5}, {"token": " A", "logprob": -1.5},
            {"token": "B", "logprob": -2.0}, {"token": "The", "logprob": -4.0}
        ]);
        let v: Value = serde_json::from_str(&letter_scores(&body(alts)).unwrap()).unwrap();
        let a = ((-0.5f64).exp() + (-1.5f64).exp()).ln();
        assert!((v["A"].as_f64().unwrap() - a).abs() < 1e-12, "{v}");
        assert_eq!((v["B"].as_f64(), v["floor"].as_f64()), (Some(-2.0), Some(-4.0)));
        let reply = v.to_string();
        assert_eq!(parse_scores(&reply), Verdict::Scores { a: v["A"].as_f64().unwrap(), b: -2.0 });

        let only_a = letter_scores(&body(json!([{"token": "A", "logprob": -0.5}, {"token": "x", "logprob": -3.0}])));
        assert_eq!(parse_scores(&only_a.unwrap()), Verdict::Scores { a: -0.5, b: -3.0 }, "B bounded by the floor");
        let neither = letter_scores(&body(json!([{"token": "x", "logprob": -0.1}]))).unwrap();
        assert!(matches!(parse_scores(&neither), Verdict::Invalid { .. }));
        assert!(letter_scores(&body(json!([]))).unwrap_err().contains("top_logprobs"));
        assert!(letter_scores(&json!({"choices": [{"message": {"content": "A"}}]})).unwrap_err().contains("logprobs"));
        assert!(matches!(parse_scores("A"), Verdict::Invalid { .. }));
    }
}
