//! Shared helpers of the dataset tests: a scratch folder per test and a JSON-lines writer.

#![allow(dead_code)]

use std::path::PathBuf;

/// A fresh folder for one test (removed first if an earlier run left it).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `lines` (already JSON text, or anything for syntax-error tests) one per line.
pub fn write_lines(dir: &std::path::Path, file: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}
