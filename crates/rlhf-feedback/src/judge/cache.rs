//! The judge's reply cache: an append-only JSONL file, one `{"key", "model", "reply"}` line per
//! completed call, written and fsync'd before the call counts as done, so a crash or a failed run
//! loses no paid call and a rerun sends only what is missing.

use super::error::{JudgeError, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The cache key of a request body: SHA-256 (hex) of its JSON, which holds the model, messages,
/// temperature and max_tokens but not the URL or key, so the same judge behind another address
/// reuses the replies.
pub fn cache_key(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What opening the cache found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheLoad {
    /// Replies loaded (a key written twice counts once).
    pub entries: usize,
    /// Things a user should hear about, e.g. a line cut short by a crash that was dropped.
    pub warnings: Vec<String>,
}

/// Replies by key, backed by the file; safe to share between worker threads.
pub struct ReplyCache {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    replies: HashMap<String, String>,
    file: File,
}

impl ReplyCache {
    /// Opens (or creates) the cache file and loads its replies. A last line without its newline is
    /// what a crash mid-write leaves: kept if it still parses, otherwise cut off the file (with a
    /// warning) so that new lines do not run into it. Any other unreadable line is an error naming
    /// path:line, since that is damage the cache did not make.
    pub fn open(path: &Path) -> Result<(Self, CacheLoad)> {
        let cache_err = |message: String| JudgeError::Cache { location: path.display().to_string(), message };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| cache_err(format!("cannot open: {e}")))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|e| cache_err(format!("cannot read: {e}")))?;
        let mut load = CacheLoad::default();
        let mut replies = HashMap::new();
        let mut at = 0usize;
        let mut number = 0usize;
        while at < text.len() {
            number += 1;
            let end = text[at..].iter().position(|&b| b == b'\n').map(|i| at + i);
            let line = &text[at..end.unwrap_or(text.len())];
            let parsed = std::str::from_utf8(line).ok().and_then(|l| {
                if l.trim().is_empty() {
                    return Some(None);
                }
                parse_entry(l).map(Some)
            });
            match (parsed, end) {
                (Some(Some((key, reply))), _) => {
                    replies.insert(key, reply);
                }
                (Some(None), _) => {}
                (None, Some(_)) => {
                    return Err(JudgeError::Cache {
                        location: format!("{}:{number}", path.display()),
                        message: "not a cache entry ({\"key\", \"reply\"}); fix or delete the file".into(),
                    })
                }
                (None, None) => {
                    file.set_len(at as u64)
                        .map_err(|e| cache_err(format!("cannot drop the cut-off last line: {e}")))?;
                    load.warnings.push(format!(
                        "{}:{number}: dropped a cut-off last line ({} bytes, left by an interrupted write)",
                        path.display(),
                        line.len()
                    ));
                    break;
                }
            }
            if end.is_none() {
                // A complete entry that only lacks its newline: finish it so the next append
                // starts on a line of its own.
                file.write_all(b"\n").map_err(|e| cache_err(format!("cannot write: {e}")))?;
            }
            at = end.map_or(text.len(), |e| e + 1);
        }
        file.seek(SeekFrom::End(0)).map_err(|e| cache_err(format!("cannot seek: {e}")))?;
        load.entries = replies.len();
        Ok((ReplyCache { path: path.to_path_buf(), inner: Mutex::new(Inner { replies, file }) }, load))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.lock().replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().replies.get(key).cloned()
    }

    /// Records a reply: one line written in a single call, flushed and fsync'd before returning.
    pub fn insert(&self, key: &str, model: &str, reply: &str) -> Result<()> {
        let mut line = json!({"key": key, "model": model, "reply": reply}).to_string();
        line.push('\n');
        let mut inner = self.lock();
        let written = inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.flush())
            .and_then(|()| inner.file.sync_data());
        written.map_err(|e| JudgeError::Cache {
            location: self.path.display().to_string(),
            message: format!("cannot write: {e}"),
        })?;
        inner.replies.insert(key.to_string(), reply.to_string());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A worker that panicked mid-insert leaves at worst a cut-off line, which `open` handles.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse_entry(line: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some((v.get("key")?.as_str()?.to_string(), v.get("reply")?.as_str()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("rlhf-judge-cache-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn entries_survive_reopening_and_a_cut_line_is_dropped() {
        let p = temp("reopen");
        let (c, load) = ReplyCache::open(&p).unwrap();
        assert_eq!(load, CacheLoad::default());
        c.insert("k1", "m", "A").unwrap();
        c.insert("k2", "m", "line one\nB").unwrap();
        drop(c);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"key": "k3", "rep"#).unwrap();
        drop(f);
        let (c, load) = ReplyCache::open(&p).unwrap();
        assert_eq!(load.entries, 2);
        assert!(load.warnings[0].contains(":3: dropped a cut-off last line"), "{:?}", load.warnings);
        assert_eq!(c.get("k2").as_deref(), Some("line one\nB"));
        c.insert("k3", "m", "tie").unwrap();
        drop(c);
        let (c, load) = ReplyCache::open(&p).unwrap();
        assert_eq!((load.entries, load.warnings.len(), c.get("k3").as_deref()), (3, 0, Some("tie")));
    }

    #[test]
    fn a_complete_last_line_without_newline_is_kept() {
        let p = temp("nonl");
        std::fs::write(&p, "{\"key\": \"k\", \"reply\": \"A\"}").unwrap();
        let (c, load) = ReplyCache::open(&p).unwrap();
        assert_eq!((load.entries, load.warnings.len()), (1, 0));
        c.insert("j", "m", "B").unwrap();
        drop(c);
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
    }

    #[test]
    fn damage_in_the_middle_is_an_error_with_the_line() {
        let p = temp("damage");
        std::fs::write(&p, "{\"key\": \"k\", \"reply\": \"A\"}\nnot json\n{\"key\": \"j\", \"reply\": \"B\"}\n")
            .unwrap();
        let err = ReplyCache::open(&p).err().unwrap().to_string();
        assert!(err.starts_with(&format!("{}:2: not a cache entry", p.display())), "{err}");
    }

    #[test]
    fn keys_depend_on_the_body_only() {
        let a = cache_key(&json!({"model": "m", "messages": [], "temperature": 0.0, "max_tokens": 8}));
        let b = cache_key(&json!({"model": "m", "messages": [], "temperature": 0.0, "max_tokens": 9}));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
