//! Hub ids as users type them: `ORG/NAME[@REVISION]` for models, `ORG/NAME[@REVISION][:SPLIT]`
//! for datasets (the forms TRL, OpenRLHF and verl take).

use std::fmt;

/// A repository on the Hub at a revision (a branch, tag or commit; `main` when not given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// `ORG/NAME`.
    pub repo: String,
    /// `None` means the default branch, `main`.
    pub revision: Option<String>,
}

/// A dataset repository and the split to read (`train` when not given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRef {
    pub repo: RepoRef,
    pub split: String,
}

impl RepoRef {
    /// `ORG/NAME[@REVISION]`, or `None` when `text` is not of that form (then it is not an id,
    /// e.g. a path with several folders).
    pub fn parse(text: &str) -> Option<Self> {
        let (repo, revision) = match text.split_once('@') {
            Some((repo, rev)) if is_revision(rev) => (repo, Some(rev.to_string())),
            Some(_) => return None,
            None => (text, None),
        };
        is_repo_id(repo).then(|| RepoRef { repo: repo.to_string(), revision })
    }

    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

impl DatasetRef {
    /// `ORG/NAME[@REVISION][:SPLIT]`, or `None` when `text` is not of that form.
    pub fn parse(text: &str) -> Option<Self> {
        let (repo, split) = match text.rsplit_once(':') {
            Some((repo, split)) if is_name(split) => (repo, split.to_string()),
            Some(_) => return None,
            None => (text, "train".to_string()),
        };
        RepoRef::parse(repo).map(|repo| DatasetRef { repo, split })
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(rev) => write!(f, "{}@{rev}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo, self.split)
    }
}

/// The Hub's rule for `ORG/NAME`: each part of letters, digits, `-`, `_`, `.`, not starting or
/// ending with `-` or `.`, without `--` or `..`, the name at most 96 characters.
fn is_repo_id(text: &str) -> bool {
    let Some((org, name)) = text.split_once('/') else { return false };
    is_name(org) && is_name(name) && name.len() <= 96
}

fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.'])
        && !part.contains("--")
        && !part.contains("..")
}

/// Branch and tag names may hold `/` (`refs/pr/1`); no spaces, no `..`.
fn is_revision(rev: &str) -> bool {
    !rev.is_empty()
        && !rev.contains("..")
        && rev.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !rev.starts_with('/')
        && !rev.ends_with('/')
}

/// A full commit hash: the snapshot folder it names needs no ref to find.
pub(crate) fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        let r = RepoRef::parse("Qwen/Qwen2.5-0.5B-Instruct").unwrap();
        assert_eq!((r.repo.as_str(), r.revision()), ("Qwen/Qwen2.5-0.5B-Instruct", "main"));
        let r = RepoRef::parse("org/tiny@v1.0").unwrap();
        assert_eq!((r.repo.as_str(), r.revision()), ("org/tiny", "v1.0"));
        assert_eq!(RepoRef::parse("org/tiny@refs/pr/1").unwrap().revision(), "refs/pr/1");
        assert_eq!(r.to_string(), "org/tiny@v1.0");
        for not_an_id in [
            "default",
            "runs/sft/final",
            "./model",
            "/abs/x",
            "org/",
            "/name",
            "a/b@",
            "a--b/c",
            "a/.b",
            "a/b c",
            "a/b@x y",
        ] {
            assert_eq!(RepoRef::parse(not_an_id), None, "{not_an_id}");
        }
        assert_eq!(RepoRef::parse(&format!("o/{}", "n".repeat(97))), None);
    }

    #[test]
    fn dataset_ids() {
        let d = DatasetRef::parse("trl-lib/ultrafeedback_binarized").unwrap();
        assert_eq!((d.repo.repo.as_str(), d.split.as_str()), ("trl-lib/ultrafeedback_binarized", "train"));
        let d = DatasetRef::parse("org/prefs@main:test").unwrap();
        assert_eq!((d.repo.revision(), d.split.as_str()), ("main", "test"));
        assert_eq!(d.to_string(), "org/prefs@main:test");
        assert_eq!(DatasetRef::parse("org/prefs:"), None);
        assert_eq!(DatasetRef::parse("data/prefs.jsonl/x:train"), None);
    }

    #[test]
    fn commits() {
        assert!(is_commit(&"a1".repeat(20)));
        assert!(!is_commit("main"));
        assert!(!is_commit(&"A1".repeat(20)));
    }
}
