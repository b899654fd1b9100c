//! Request bodies of `POST /v1/chat/completions` and `POST /v1/completions`, as a server reads
//! them and a client writes them. Every field is optional where OpenAI's is, and an absent one
//! is not written, so a client's body holds exactly what it set (the judge hashes bodies into
//! its cache keys). Unknown fields are ignored when reading, as OpenAI-compatible servers do;
//! what values are acceptable is the server's business.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
}

impl ChatRequest {
    /// The body as a JSON value: keys in sorted order, so equal requests give equal text.
    pub fn to_value(&self) -> Value {
        // Strings, numbers, booleans and JSON values only: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": …}` parts.
    pub content: Value,
}

impl ChatMessage {
    /// A message whose content is plain text.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_string(), content: Value::String(content.into()) }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A string, a list of one string, or token ids (a list of integers, or a list of one).
    pub prompt: Value,
    #[serde(flatten)]
    pub common: Common,
    /// Legacy completions: the logprob of each sampled token plus this many alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// vLLM's: also return `prompt_token_ids` and each choice's `token_ids`, so a trainer gets
    /// the exact tokens it trains on instead of re-tokenised text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_token_ids: Option<bool>,
    /// `rlhf serve`'s extension: choice k samples from random stream `sampling_stream + k`
    /// under `seed`, so a trainer can ask for exactly the rows its in-process sampler would
    /// draw. Other servers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_stream: Option<u64>,
}

/// What a trainer reads of a `/v1/completions` reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub choices: Vec<CompletionChoice>,
    /// The weights the reply was sampled with (SGLang's `weight_version`; absent elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_version: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: usize,
    #[serde(default)]
    pub text: String,
    /// With `return_token_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<LegacyLogprobs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// The legacy completions `logprobs` object; a trainer needs only each sampled token's logprob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyLogprobs {
    pub token_logprobs: Vec<Option<f64>>,
}

/// Fields both endpoints share.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Common {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// A string or a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_holds_what_was_set_and_reads_back() {
        let req = ChatRequest {
            model: Some("m".into()),
            messages: vec![ChatMessage::text("user", "2+2?")],
            common: Common { temperature: Some(0.0), max_tokens: Some(8), ..Common::default() },
            ..ChatRequest::default()
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "messages": [{"role": "user", "content": "2+2?"}], "temperature": 0.0, "max_tokens": 8})
        );
        assert_eq!(serde_json::from_value::<ChatRequest>(v).unwrap(), req);
        // Unknown fields are ignored; parts stay as sent for the server to check.
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}], "user": "x"});
        let read: ChatRequest = serde_json::from_value(parts).unwrap();
        assert_eq!(read.messages[0].content, json!([{"type": "text", "text": "a"}]));
        assert_eq!(read.model, None);
    }
}
