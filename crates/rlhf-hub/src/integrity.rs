//! A downloaded weight or data file is checked before anything reads it: the Hub names an LFS
//! file's blob by its SHA-256, so a truncated or altered download is caught here.

use crate::error::{HubError, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Checks the blob behind `pointer` when its name is a SHA-256 (LFS files: weights, Parquet);
/// small git-stored files are named by a git hash and pass as they are. A mismatching blob is
/// removed, with its pointer, so the next run downloads it again.
pub fn check_blob(pointer: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(pointer)
        .map_err(|e| HubError::File { path: pointer.to_path_buf(), message: format!("cannot resolve: {e}") })?;
    let Some(expected) = blob.file_name().and_then(|n| n.to_str()).filter(|n| is_sha256(n)) else {
        return Ok(());
    };
    let actual = sha256_file(&blob)?;
    if actual == expected {
        return Ok(());
    }
    let _ = std::fs::remove_file(&blob);
    let _ = std::fs::remove_file(pointer);
    Err(HubError::File {
        path: pointer.to_path_buf(),
        message: format!("downloaded file has SHA-256 {actual}, the Hub announced {expected}; removed, run again to download it anew"),
    })
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |e: std::io::Error| HubError::File { path: path.to_path_buf(), message: format!("cannot read: {e}") };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_named_by_sha256_are_checked() {
        let dir = std::env::temp_dir().join(format!("rlhf-hub-integrity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // sha256("hello")
        std::fs::write(dir.join(good), "hello").unwrap();
        check_blob(&dir.join(good)).unwrap();
        let bad = "0".repeat(64);
        std::fs::write(dir.join(&bad), "hello").unwrap();
        let err = check_blob(&dir.join(&bad)).unwrap_err().to_string();
        assert!(err.contains(good) && err.contains("removed"), "{err}");
        assert!(!dir.join(&bad).exists());
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        check_blob(&dir.join("config.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
