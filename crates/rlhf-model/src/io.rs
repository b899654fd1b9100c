//! Atomic file writes: a crash never leaves a half-written file under the final name.

use crate::error::{ModelError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling path for writing before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| ModelError::file(path, format!("cannot write: {e}")))
}
