//! A blocking client of the label API, for scripted annotators (`rlhf label simulate`), the load
//! benchmark and tests. It speaks exactly what the web page speaks.

use rlhf_feedback::labels::db::{Progress, TaskResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `message` is its `error` field.
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// No answer (connection refused or reset, timeout): the request may or may not have landed.
    #[error("no answer from the server: {0}")]
    Transport(String),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClientTask {
    pub done: bool,
    pub assignment: Option<i64>,
    pub item: Option<i64>,
    pub prompt: Option<String>,
    #[serde(default)]
    pub responses: Vec<TaskResponseWire>,
    pub progress: ProgressWire,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskResponseWire {
    pub id: i64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ProgressWire {
    pub done: usize,
    pub total: usize,
}

impl From<TaskResponseWire> for TaskResponse {
    fn from(r: TaskResponseWire) -> Self {
        TaskResponse { id: r.id, text: r.text }
    }
}

impl From<ProgressWire> for Progress {
    fn from(p: ProgressWire) -> Self {
        Progress { done: p.done, total: p.total }
    }
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Client {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        Client { base: base_url.trim_end_matches('/').to_string(), token: token.to_string(), agent }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json().map_err(|e| ClientError::Reply(e.to_string())),
            Err(ureq::Error::Status(status, r)) => {
                let message = r
                    .into_json::<Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Err(ClientError::Status { status, message })
            }
            Err(e) => Err(ClientError::Transport(e.to_string())),
        }
    }

    pub fn task(&self) -> Result<ClientTask, ClientError> {
        serde_json::from_value(self.call("GET", "/api/task", None)?).map_err(|e| ClientError::Reply(e.to_string()))
    }

    /// Sends a decision (`{"action": …}`); `Ok(true)` when the server already had it.
    pub fn answer(&self, assignment: i64, body: Value) -> Result<bool, ClientError> {
        let reply = self.call("POST", &format!("/api/assignments/{assignment}"), Some(body))?;
        Ok(reply["duplicate"].as_bool().unwrap_or(false))
    }

    pub fn submit(&self, assignment: i64, tiers: &[Vec<i64>]) -> Result<bool, ClientError> {
        self.answer(assignment, json!({ "action": "submit", "ranking": tiers }))
    }

    pub fn summary(&self) -> Result<Value, ClientError> {
        self.call("GET", "/api/admin/summary", None)
    }
}
