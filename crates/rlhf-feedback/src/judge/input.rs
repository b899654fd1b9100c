//! What the judge compares, read from JSONL: candidate sets `{"prompt", "responses": [...]}`
//! (every one of the C(K,2) pairs is judged) or pairs `{"prompt", "chosen", "rejected"}` (the
//! existing label is ignored: the pair is judged afresh). Prompts and responses are strings or
//! lists of chat messages; the original values are kept for the output rows.

use super::error::{JudgeError, Result};
use super::prompt::render_text;
use rlhf_openai::client::kind;
use serde_json::{Map, Value};
use std::path::Path;

/// One response: as given, and as the judge reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub value: Value,
    pub text: String,
}

/// One input line.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeItem {
    /// path:line, for messages about this item.
    pub location: String,
    pub prompt: Value,
    pub prompt_text: String,
    /// At least two.
    pub responses: Vec<Candidate>,
}

impl JudgeItem {
    /// The (first, second) response indices to compare, i < j, in a fixed order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let k = self.responses.len();
        (0..k).flat_map(move |i| (i + 1..k).map(move |j| (i, j)))
    }
}

/// Every non-blank line of a JSONL file as an item; the first bad line is an error naming
/// path:line and the field.
pub fn read_items(path: &Path) -> Result<Vec<JudgeItem>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JudgeError::Read { path: path.display().to_string(), message: format!("cannot read: {e}") })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_item(l, &format!("{}:{}", path.display(), i + 1)))
        .collect()
}

/// One JSON line as an item; `location` goes into errors as is.
pub fn parse_item(line: &str, location: &str) -> Result<JudgeItem> {
    let bad = |field: &str, message: String| JudgeError::Input {
        location: location.to_string(),
        field: field.to_string(),
        message,
    };
    let record: Map<String, Value> = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return Err(bad("(line)", format!("must be a JSON object, got {}", kind(&other)))),
        Err(e) => return Err(bad("(line)", format!("not JSON: {e}"))),
    };
    let candidate = |value: &Value, field: &str| -> Result<Candidate> {
        let text = render_text(value).map_err(|m| bad(field, m))?;
        Ok(Candidate { value: value.clone(), text })
    };
    let prompt =
        record.get("prompt").ok_or_else(|| bad("prompt", "missing (a string or a list of messages)".into()))?;
    let prompt_text = render_text(prompt).map_err(|m| bad("prompt", m))?;
    let responses = match (record.get("responses"), record.get("chosen"), record.get("rejected")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(bad("responses", "a line has either `responses` or `chosen`/`rejected`, not both".into()))
        }
        (Some(Value::Array(list)), None, None) => {
            if list.len() < 2 {
                return Err(bad("responses", format!("needs at least 2 responses to compare, got {}", list.len())));
            }
            list.iter()
                .enumerate()
                .map(|(i, v)| candidate(v, &format!("responses[{i}]")))
                .collect::<Result<Vec<_>>>()?
        }
        (Some(other), None, None) => return Err(bad("responses", format!("must be a list, got {}", kind(other)))),
        (None, Some(chosen), Some(rejected)) => vec![candidate(chosen, "chosen")?, candidate(rejected, "rejected")?],
        (None, None, None) => {
            return Err(bad(
                "responses",
                "missing: a line needs `responses` (a candidate set) or `chosen` and `rejected` (a pair)".into(),
            ))
        }
        (None, None, Some(_)) => return Err(bad("chosen", "missing (the pair has only `rejected`)".into())),
        (None, Some(_), None) => return Err(bad("rejected", "missing (the pair has only `chosen`)".into())),
    };
    Ok(JudgeItem { location: location.to_string(), prompt: prompt.clone(), prompt_text, responses })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_item(line, "d.jsonl:7").unwrap_err().to_string()
    }

    #[test]
    fn both_shapes_parse() {
        let set = parse_item(r#"{"prompt": "q", "responses": ["a", "b", "c"]}"#, "x:1").unwrap();
        assert_eq!(set.pairs().collect::<Vec<_>>(), vec![(0, 1), (0, 2), (1, 2)]);
        let pair = parse_item(
            r#"{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "4"}], "rejected": "5"}"#,
            "x:2",
        )
        .unwrap();
        assert_eq!((pair.prompt_text.as_str(), pair.responses[0].text.as_str(), pair.responses.len()), ("q", "4", 2));
        assert!(pair.responses[0].value.is_array());
    }

    #[test]
    fn bad_lines_name_location_and_field() {
        assert_eq!(err("[1]"), "d.jsonl:7: field `(line)`: must be a JSON object, got a list");
        assert!(err("{").starts_with("d.jsonl:7: field `(line)`: not JSON"));
        assert!(err(r#"{"responses": ["a", "b"]}"#).starts_with("d.jsonl:7: field `prompt`: missing"));
        assert!(err(r#"{"prompt": "q", "responses": ["a"]}"#).contains("`responses`: needs at least 2"));
        assert!(err(r#"{"prompt": "q", "responses": ["a", 3]}"#).contains("`responses[1]`: must be a string"));
        assert!(err(r#"{"prompt": "q", "chosen": "a"}"#).contains("`rejected`: missing"));
        assert!(err(r#"{"prompt": "q"}"#).contains("`responses`: missing"));
        assert!(err(r#"{"prompt": {"x": 1}, "chosen": "a", "rejected": "b"}"#)
            .contains("`prompt`: must be a string or a list"));
    }
}
