//! Resolving a Hub id to files in the cache, downloading what is missing.
//!
//! The cache layout is `huggingface_hub`'s (`models--ORG--NAME/{blobs,snapshots/COMMIT,refs}`), so
//! both tools share one cache. Online, the revision is first resolved to a commit through the
//! repository's info (which also lists its files), then each needed file is fetched at that
//! commit, so one run never mixes two versions of a repository; `refs/REVISION` records the
//! commit for offline use. Offline (`HF_HUB_OFFLINE`), only the cache is read.

use crate::error::{HubError, Kind, Result};
use crate::files;
use crate::id::{is_commit, DatasetRef, RepoRef};
use crate::settings::HubSettings;
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

/// Where the Hub keeps the Parquet conversion of every public dataset.
const CONVERTED_BRANCH: &str = "refs/convert/parquet";

/// A resolved id, and a warning for the user when the answer came from the cache because the
/// Hub could not be reached (the library does not print; the caller decides).
#[derive(Debug)]
pub struct Resolved<T> {
    pub value: T,
    pub warning: Option<String>,
}

pub struct Hub {
    settings: HubSettings,
    api: Api,
}

impl Hub {
    pub fn new(settings: HubSettings) -> Result<Self> {
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(settings.cache_dir.clone()))
            .with_endpoint(settings.endpoint.clone())
            .with_token(settings.token.clone())
            .with_progress(settings.progress)
            .with_retries(2)
            .with_user_agent("rlhf", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Unreachable {
                id: String::new(),
                endpoint: settings.endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { settings, api })
    }

    pub fn from_env() -> Result<Self> {
        Self::new(HubSettings::from_env())
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The snapshot folder of a model (config.json, safetensors weights, tokenizer files): a
    /// folder every loader of this project reads as it reads a local HF folder.
    pub fn model(&self, r: &RepoRef) -> Result<Resolved<PathBuf>> {
        let repo = CachedRepo::new(&self.settings.cache_dir, Kind::Model, &r.repo);
        if self.settings.offline {
            return self.cached_model(&repo, r).map(|value| Resolved { value, warning: None });
        }
        let (commit, listing) = match self.info(Kind::Model, r, r.revision()) {
            Ok(found) => found,
            Err(e @ HubError::Unreachable { .. }) => return self.fall_back(e, || self.cached_model(&repo, r)),
            Err(e) => return Err(e),
        };
        let id = r.to_string();
        let needed = files::model_files(&id, &listing)?;
        for file in &needed {
            self.fetch(&repo, &r.repo, &commit, file)?;
        }
        if needed.iter().any(|f| f == files::WEIGHTS_INDEX) {
            let index = repo.snapshot(&commit).join(files::WEIGHTS_INDEX);
            for shard in index_shards(&index)? {
                if !listing.contains(&shard) {
                    return Err(HubError::FileNotFound { kind: Kind::Model, id, file: shard });
                }
                self.fetch(&repo, &r.repo, &commit, &shard)?;
            }
        }
        repo.write_ref(r.revision(), &commit)?;
        Ok(Resolved { value: repo.snapshot(&commit), warning: None })
    }

    /// The local Parquet files of a dataset split, in shard order.
    pub fn dataset(&self, d: &DatasetRef) -> Result<Resolved<Vec<PathBuf>>> {
        let repo = CachedRepo::new(&self.settings.cache_dir, Kind::Dataset, &d.repo.repo);
        if self.settings.offline {
            return self.cached_dataset(&repo, d).map(|value| Resolved { value, warning: None });
        }
        let (commit, listing) = match self.info(Kind::Dataset, &d.repo, d.repo.revision()) {
            Ok(found) => found,
            Err(e @ HubError::Unreachable { .. }) => return self.fall_back(e, || self.cached_dataset(&repo, d)),
            Err(e) => return Err(e),
        };
        let mut chosen = (d.repo.revision().to_string(), commit.clone(), files::split_files(&listing, &d.split));
        let mut seen = listing;
        // The converted branch serves datasets pushed in other formats; an explicit revision
        // means the user wants that revision's files only.
        if chosen.2.is_empty() && d.repo.revision.is_none() {
            match self.info(Kind::Dataset, &d.repo, CONVERTED_BRANCH) {
                Ok((converted, listing)) => {
                    chosen = (CONVERTED_BRANCH.into(), converted, files::converted_split_files(&listing, &d.split));
                    seen.extend(listing);
                }
                Err(HubError::RevisionNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (revision, commit, names) = chosen;
        if names.is_empty() {
            return Err(HubError::NoSplit {
                id: d.repo.to_string(),
                split: d.split.clone(),
                found: files::split_names(&seen),
            });
        }
        let paths = names.iter().map(|f| self.fetch(&repo, &d.repo.repo, &commit, f)).collect::<Result<Vec<_>>>()?;
        repo.write_ref(&revision, &commit)?;
        Ok(Resolved { value: paths, warning: None })
    }

    /// With the Hub out of reach, a complete cached copy still serves (as `huggingface_hub` does),
    /// with a warning; otherwise the network error stands.
    fn fall_back<T>(&self, unreachable: HubError, cached: impl FnOnce() -> Result<T>) -> Result<Resolved<T>> {
        match cached() {
            Ok(value) => Ok(Resolved { value, warning: Some(format!("{unreachable}; using the cached copy")) }),
            Err(_) => Err(unreachable),
        }
    }

    fn cached_model(&self, repo: &CachedRepo, r: &RepoRef) -> Result<PathBuf> {
        let not_cached = |missing: String| HubError::NotCached {
            kind: Kind::Model,
            id: r.to_string(),
            cache: self.settings.cache_dir.clone(),
            missing,
        };
        let snapshot = repo
            .cached_snapshot(r.revision())
            .ok_or_else(|| not_cached(format!("no snapshot of `{}`", r.revision())))?;
        let listing = list_files(&snapshot);
        let needed = files::model_files(&r.to_string(), &listing).map_err(|e| not_cached(e.to_string()))?;
        if needed.iter().any(|f| f == files::WEIGHTS_INDEX) {
            for shard in index_shards(&snapshot.join(files::WEIGHTS_INDEX))? {
                if !listing.contains(&shard) {
                    return Err(not_cached(format!("shard `{shard}` was never downloaded")));
                }
            }
        }
        Ok(snapshot)
    }

    fn cached_dataset(&self, repo: &CachedRepo, d: &DatasetRef) -> Result<Vec<PathBuf>> {
        let mut found = None;
        if let Some(snapshot) = repo.cached_snapshot(d.repo.revision()) {
            found = Some((files::split_files(&list_files(&snapshot), &d.split), snapshot));
        }
        if found.as_ref().is_none_or(|(names, _)| names.is_empty()) && d.repo.revision.is_none() {
            if let Some(snapshot) = repo.cached_snapshot(CONVERTED_BRANCH) {
                found = Some((files::converted_split_files(&list_files(&snapshot), &d.split), snapshot));
            }
        }
        match found {
            Some((names, snapshot)) if !names.is_empty() => Ok(names.iter().map(|n| snapshot.join(n)).collect()),
            _ => Err(HubError::NotCached {
                kind: Kind::Dataset,
                id: d.to_string(),
                cache: self.settings.cache_dir.clone(),
                missing: format!("no Parquet files of split `{}`", d.split),
            }),
        }
    }

    /// The commit a revision points to, and every file path of the repository there.
    fn info(&self, kind: Kind, r: &RepoRef, revision: &str) -> Result<(String, Vec<String>)> {
        let handle = self.api.repo(Repo::with_revision(r.repo.clone(), repo_type(kind), revision.to_string()));
        let info = handle.info().map_err(|e| self.explain(e, kind, r, revision, None))?;
        if !is_commit(&info.sha) {
            return Err(HubError::Http {
                id: r.to_string(),
                url: handle.info_request().url().to_string(),
                status: 200,
                message: Some(format!("`sha` is not a commit hash: `{}`", info.sha)),
            });
        }
        Ok((info.sha, info.siblings.into_iter().map(|s| s.rfilename).collect()))
    }

    /// The cached file at `commit`, downloaded first when it is not there yet.
    fn fetch(&self, repo: &CachedRepo, id: &str, commit: &str, file: &str) -> Result<PathBuf> {
        let target = repo.snapshot(commit).join(file);
        if target.exists() {
            return Ok(target);
        }
        let r = RepoRef { repo: id.to_string(), revision: Some(commit.to_string()) };
        let handle = self.api.repo(Repo::with_revision(id.to_string(), repo_type(repo.kind), commit.to_string()));
        let got = handle.download(file).map_err(|e| self.explain(e, repo.kind, &r, commit, Some(file)))?;
        // The download records `refs/COMMIT`; `huggingface_hub` keeps refs for branches and tags only.
        let _ = std::fs::remove_file(repo.dir.join("refs").join(commit));
        crate::integrity::check_blob(&got)?;
        Ok(if target.exists() { target } else { got })
    }

    /// The Hub's answer as one of this crate's errors, using the `X-Error-Code` header the Hub
    /// sends with 401/403/404 answers.
    fn explain(&self, e: ApiError, kind: Kind, r: &RepoRef, revision: &str, file: Option<&str>) -> HubError {
        let id = r.repo.clone();
        let token_given = self.settings.token.is_some();
        let endpoint = self.settings.endpoint.clone();
        match e {
            ApiError::RequestError(boxed) => match *boxed {
                ureq::Error::Status(status, response) => {
                    let code = response.header("x-error-code").map(str::to_string);
                    let message = response.header("x-error-message").map(str::to_string);
                    match (status, code.as_deref(), file) {
                        (_, Some("GatedRepo"), _) | (403, None, _) => HubError::Gated { kind, id, token_given },
                        (_, Some("RevisionNotFound"), _) => {
                            HubError::RevisionNotFound { kind, id, revision: r.revision().to_string() }
                        }
                        (_, Some("EntryNotFound"), Some(file)) | (404, None, Some(file)) => {
                            HubError::FileNotFound { kind, id, file: file.to_string() }
                        }
                        (_, Some("RepoNotFound"), _) | (401 | 404, None, _) => {
                            HubError::RepoNotFound { kind, id, endpoint, token_given }
                        }
                        _ => HubError::Http { id, url: response.get_url().to_string(), status, message },
                    }
                }
                ureq::Error::Transport(t) => HubError::Unreachable { id, endpoint, reason: t.to_string() },
            },
            ApiError::TooManyRetries(inner) => self.explain(*inner, kind, r, revision, file),
            ApiError::LockAcquisition(path) => HubError::File {
                path,
                message: "another process holds this download's lock; try again when it is done".into(),
            },
            ApiError::IoError(e) => HubError::File { path: self.settings.cache_dir.clone(), message: e.to_string() },
            other => HubError::Http {
                id,
                url: format!("{endpoint} ({kind} at {revision})"),
                status: 0,
                message: Some(format!("unexpected answer: {other}")),
            },
        }
    }
}

fn repo_type(kind: Kind) -> RepoType {
    match kind {
        Kind::Model => RepoType::Model,
        Kind::Dataset => RepoType::Dataset,
    }
}

fn index_shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| HubError::File { path: index.to_path_buf(), message: format!("cannot read: {e}") })?;
    files::shard_names(&text).map_err(|message| HubError::File { path: index.to_path_buf(), message })
}

/// One repository's folder in the cache.
struct CachedRepo {
    kind: Kind,
    dir: PathBuf,
}

impl CachedRepo {
    fn new(cache: &Path, kind: Kind, id: &str) -> Self {
        let prefix = match kind {
            Kind::Model => "models",
            Kind::Dataset => "datasets",
        };
        Self { kind, dir: cache.join(format!("{prefix}--{}", id.replace('/', "--"))) }
    }

    fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The snapshot a revision names in the cache: a commit names its folder directly, a branch
    /// or tag through `refs/`.
    fn cached_snapshot(&self, revision: &str) -> Option<PathBuf> {
        let commit = if is_commit(revision) {
            revision.to_string()
        } else {
            std::fs::read_to_string(self.dir.join("refs").join(revision)).ok()?.trim().to_string()
        };
        let dir = self.snapshot(&commit);
        (is_commit(&commit) && dir.is_dir()).then_some(dir)
    }

    fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if is_commit(revision) {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        let io = |e: std::io::Error| HubError::File { path: path.clone(), message: format!("cannot write: {e}") };
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir)).map_err(io)?;
        std::fs::write(&path, commit).map_err(io)
    }
}

/// Every file under `dir`, as `/`-separated paths relative to it (symlinks to blobs included).
fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.exists() {
                if let Ok(rel) = path.strip_prefix(dir) {
                    out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
                }
            }
        }
    }
    out.sort();
    out
}
