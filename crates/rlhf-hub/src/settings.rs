//! Where the Hub is and where its files are cached, read from the same environment variables as
//! Python's `huggingface_hub`, so a model Python already downloaded is used as it is.

use std::fmt;
use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Clone)]
pub struct HubSettings {
    /// `HF_ENDPOINT` (a mirror), or the Hub itself.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` writes. Never printed.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: use only what the cache holds.
    pub offline: bool,
    /// Progress bars per downloaded file (off with `HF_HUB_DISABLE_PROGRESS_BARS`).
    pub progress: bool,
}

impl HubSettings {
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }

    /// The same rules over any variable lookup (tests pass a map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cache")).join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let file = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
            read_token_file(&file)
        });
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token: token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            progress: !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v)),
        }
    }
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `huggingface_hub`'s reading of boolean variables.
fn is_true(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

/// The token is shown only as present or absent.
impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> HubSettings {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn cache_follows_huggingface_hub_precedence() {
        assert_eq!(settings(&[("HOME", "/h")]).cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(
            settings(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).cache_dir,
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(settings(&[("HOME", "/h"), ("HF_HOME", "/hf")]).cache_dir, PathBuf::from("/hf/hub"));
        let s = settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]);
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
    }

    #[test]
    fn endpoint_offline_and_token() {
        let s = settings(&[("HF_ENDPOINT", "http://127.0.0.1:9/"), ("HF_HUB_OFFLINE", "1"), ("HF_TOKEN", "hf_secret")]);
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert!(s.offline);
        assert_eq!(s.token.as_deref(), Some("hf_secret"));
        assert!(!format!("{s:?}").contains("hf_secret"));
        let s = settings(&[("HF_HUB_OFFLINE", "0")]);
        assert!(!s.offline && s.token.is_none() && s.endpoint == DEFAULT_ENDPOINT);
    }

    #[test]
    fn token_file_when_no_variable() {
        let dir = std::env::temp_dir().join(format!("rlhf-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_from_file\n").unwrap();
        let s = settings(&[("HF_HOME", dir.to_str().unwrap())]);
        assert_eq!(s.token.as_deref(), Some("hf_from_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
