//! Typed access to a record's columns, with errors that name the column and say what was found.

use super::read::json_type;
use crate::chat::Message;
use crate::error::DataError;
use serde_json::{Map, Value};

/// Text in TRL's two shapes: "standard" (a string) or "conversational" (a list of messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextOrMessages {
    Text(String),
    Messages(Vec<Message>),
}

/// Why one record cannot be used. `Fatal` problems (e.g. a model without a chat template) would
/// hit every record alike, so they stop loading even when bad records are skipped.
#[derive(Debug)]
pub(crate) enum RecordError {
    Bad { field: Option<String>, reason: String },
    Fatal(DataError),
}

pub(crate) fn bad(field: &str, reason: impl Into<String>) -> RecordError {
    RecordError::Bad { field: Some(field.to_string()), reason: reason.into() }
}

pub(crate) type FieldResult<T> = std::result::Result<T, RecordError>;

/// The column `name`; missing and null are both "missing".
pub(crate) fn required<'a>(record: &'a Map<String, Value>, name: &str) -> FieldResult<&'a Value> {
    match record.get(name) {
        Some(Value::Null) => Err(bad(name, "missing (null)")),
        Some(v) => Ok(v),
        None => {
            let present: Vec<&str> = record.keys().map(String::as_str).collect();
            Err(bad(name, format!("missing (the record has: {})", present.join(", "))))
        }
    }
}

/// `Some` when the column is present and not null.
pub(crate) fn optional<'a>(record: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    record.get(name).filter(|v| !v.is_null())
}

pub(crate) fn text_or_messages(value: &Value, field: &str) -> FieldResult<TextOrMessages> {
    match value {
        Value::String(s) => Ok(TextOrMessages::Text(s.clone())),
        Value::Array(items) => Ok(TextOrMessages::Messages(message_list(items, field)?)),
        other => Err(bad(field, format!("expected a string or a list of messages, found {}", json_type(other)))),
    }
}

pub(crate) fn messages(value: &Value, field: &str) -> FieldResult<Vec<Message>> {
    match value {
        Value::Array(items) => message_list(items, field),
        other => Err(bad(field, format!("expected a list of messages, found {}", json_type(other)))),
    }
}

fn message_list(items: &[Value], field: &str) -> FieldResult<Vec<Message>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(m) = item else {
                return Err(bad(
                    field,
                    format!("message {i}: expected an object with \"role\" and \"content\", found {}", json_type(item)),
                ));
            };
            let text = |key: &str| match m.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => {
                    Err(bad(field, format!("message {i}: \"{key}\": expected a string, found {}", json_type(other))))
                }
                None => Err(bad(field, format!("message {i}: missing \"{key}\""))),
            };
            Ok(Message { role: text("role")?, content: text("content")? })
        })
        .collect()
}

pub(crate) fn string(value: &Value, field: &str) -> FieldResult<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(bad(field, format!("expected a string, found {}", json_type(other)))),
    }
}

/// Answers are compared as text; a numeric column keeps its JSON spelling (`42`, `-3`, `2.5`).
pub(crate) fn string_or_number(value: &Value, field: &str) -> FieldResult<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(bad(field, format!("expected a string or a number, found {}", json_type(other)))),
    }
}

pub(crate) fn list<'a>(value: &'a Value, field: &str) -> FieldResult<&'a [Value]> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(bad(field, format!("expected a list, found {}", json_type(other)))),
    }
}

pub(crate) fn index_list(value: &Value, field: &str) -> FieldResult<Vec<usize>> {
    list(value, field)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(field, format!("item {i}: expected a non-negative integer, found {v}")))
        })
        .collect()
}
