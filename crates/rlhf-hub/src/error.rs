//! Every way a Hub id can fail, each naming the id and what to do about it. No message ever
//! carries the token.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Dataset,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Model => "model",
            Kind::Dataset => "dataset",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the Hub at {endpoint} has no {kind} repository `{id}`{}", private_hint(*.token_given))]
    RepoNotFound { kind: Kind, id: String, endpoint: String, token_given: bool },
    #[error("{kind} `{id}` is gated: {}", gated_hint(*.token_given))]
    Gated { kind: Kind, id: String, token_given: bool },
    #[error("{kind} `{id}` has no revision `{revision}` (give a branch, tag or commit after `@`)")]
    RevisionNotFound { kind: Kind, id: String, revision: String },
    #[error("{kind} `{id}` has no file `{file}`")]
    FileNotFound { kind: Kind, id: String, file: String },
    #[error(
        "model `{id}` holds no weights rlhf reads: it needs model.safetensors or model.safetensors.index.json{}",
        found_hint(found, *adapter)
    )]
    NoWeights { id: String, found: Vec<String>, adapter: bool },
    #[error(
        "dataset `{id}` has no Parquet files for split `{split}` (looked for data/{split}-*.parquet and the refs/convert/parquet branch){}",
        splits_hint(found)
    )]
    NoSplit { id: String, split: String, found: Vec<String> },
    #[error(
        "HF_HUB_OFFLINE is set and the cache {} does not hold {kind} `{id}` ({missing}): run the command once without HF_HUB_OFFLINE to download it",
        cache.display()
    )]
    NotCached { kind: Kind, id: String, cache: PathBuf, missing: String },
    #[error(
        "cannot reach the Hub at {endpoint} for `{id}`: {reason} (HF_ENDPOINT names a mirror; HF_HUB_OFFLINE=1 uses only the cache)"
    )]
    Unreachable { id: String, endpoint: String, reason: String },
    #[error("the Hub answered HTTP {status} for `{id}` ({url}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http { id: String, url: String, status: u16, message: Option<String> },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

fn private_hint(token_given: bool) -> &'static str {
    if token_given {
        " (check the spelling; the token in HF_TOKEN may also lack access to it)"
    } else {
        " (check the spelling; a private repository needs HF_TOKEN)"
    }
}

fn gated_hint(token_given: bool) -> &'static str {
    if token_given {
        "the token in HF_TOKEN has no access yet; accept its conditions on its Hub page with that account"
    } else {
        "accept its conditions on its Hub page, then set HF_TOKEN to a token of that account"
    }
}

fn found_hint(found: &[String], adapter: bool) -> String {
    let mut out = String::new();
    if adapter {
        out.push_str("; it is a LoRA adapter (adapter_config.json): merge it into its base with `rlhf merge`");
    }
    if found.iter().any(|f| f.ends_with(".gguf")) {
        out.push_str("; a .gguf file can be downloaded and given as a path");
    }
    if !found.is_empty() {
        out.push_str(&format!("; weight files there: {}", found.join(", ")));
    }
    out
}

fn splits_hint(found: &[String]) -> String {
    if found.is_empty() {
        "; it holds no Parquet splits".to_string()
    } else {
        format!("; splits there: {}", found.join(", "))
    }
}

pub type Result<T> = std::result::Result<T, HubError>;
