//! The flags of commands that call an OpenAI-compatible endpoint (`judge`, `constitution`), and
//! the client settings they make.

use anyhow::{bail, Result};
use rlhf_feedback::judge::JudgeConfig;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct EndpointArgs {
    /// API root, e.g. http://127.0.0.1:8000/v1 (requests go to <url>/chat/completions).
    #[arg(long)]
    pub url: String,
    /// Model name the endpoint knows the model by.
    #[arg(long)]
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself never goes on the
    /// command line, where `ps` and shell history would show it).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_s: f64,
    /// Extra attempts after a timeout, connection error, 408, 429 or 5xx.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
}

impl EndpointArgs {
    /// Client settings with the key read from the environment; other fields at their defaults.
    pub fn config(&self) -> Result<JudgeConfig> {
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            bail!("--timeout-s {}: give a positive number of seconds", self.timeout_s);
        }
        if self.model.trim().is_empty() {
            bail!("--model: give the name the endpoint knows the model by");
        }
        let mut config = JudgeConfig::new(&self.url, &self.model);
        config.api_key = match &self.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
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
