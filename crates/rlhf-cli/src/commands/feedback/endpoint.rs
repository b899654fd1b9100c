//! The `[endpoint]` of commands that call an OpenAI-compatible server (`judge`, `constitution`):
//! its settings, the flags that are shortcuts for them, and the client settings they make.

use crate::config::require;
use anyhow::{bail, Result};
use rlhf_feedback::judge::JudgeConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `--url`, `--model`, … : shortcuts for `endpoint.url`, `endpoint.model`, ….
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct EndpointFlags {
    /// API root, e.g. http://127.0.0.1:8000/v1 (requests go to <url>/chat/completions).
    #[arg(long)]
    url: Option<String>,
    /// Model name the endpoint knows the model by.
    #[arg(long)]
    model: Option<String>,
    /// Name of the environment variable holding the API key (the key itself never goes on the
    /// command line, where `ps` and shell history would show it).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Per-request timeout, in seconds (default 60).
    #[arg(long)]
    timeout_s: Option<f64>,
    /// Extra attempts after a timeout, connection error, 408, 429 or 5xx (default 5).
    #[arg(long)]
    max_retries: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointSettings {
    pub url: String,
    pub model: String,
    /// Empty: no API key.
    pub api_key_env: String,
    pub timeout_s: f64,
    pub max_retries: u32,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self { url: String::new(), model: String::new(), api_key_env: String::new(), timeout_s: 60.0, max_retries: 5 }
    }
}

impl EndpointSettings {
    /// Client settings with the key read from the environment; other fields at their defaults.
    pub fn config(&self) -> Result<JudgeConfig> {
        require(self.url.trim().is_empty(), "--url API_ROOT", "endpoint.url")?;
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            bail!("--timeout-s {}: give a positive number of seconds", self.timeout_s);
        }
        // The name the endpoint knows the model by.
        require(self.model.trim().is_empty(), "--model NAME", "endpoint.model")?;
        let mut config = JudgeConfig::new(&self.url, &self.model);
        config.api_key = match self.api_key_env.as_str() {
            "" => None,
            var => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
                Ok(_) => bail!("--api-key-env {var}: the environment variable is empty"),
                Err(std::env::VarError::NotPresent) => {
                    bail!("--api-key-env {var}: the environment variable is not set")
                }
                Err(std::env::VarError::NotUnicode(_)) => bail!("--api-key-env {var}: the value is not valid UTF-8"),
            },
        };
        config.timeout = Duration::from_secs_f64(self.timeout_s);
        config.max_retries = self.max_retries;
        Ok(config)
    }
}
