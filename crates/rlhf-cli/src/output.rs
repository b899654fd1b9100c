//! Writing what commands produce: JSON lines replaced atomically (a reader never sees a
//! half-written file, and a crash leaves the old one), and names derived from an output path.

use anyhow::{Context, Result};
use serde_json::Value;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`pairs.jsonl` → `pairs.jsonl.cache.jsonl`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes one JSON value per line to a temporary file, syncs it and renames it over `path`
/// (creating the parent folder).
pub fn write_jsonl_atomically(path: &Path, rows: &[Value]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = with_suffix(path, ".tmp");
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
