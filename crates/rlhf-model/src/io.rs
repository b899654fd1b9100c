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

/// Gives a file the mode a plain `File::create` would (0666 less the umask). Files written
/// through a temporary file (safetensors does) are created 0600; checkpoints and exported
/// models should be as readable as the config files beside them.
pub fn set_default_mode(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666 & !umask()))?;
    }
    Ok(())
}

/// The process umask, read without changing it (Linux reports it in /proc/self/status).
#[cfg(unix)]
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022)
}
