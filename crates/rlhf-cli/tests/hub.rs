//! Models and datasets by Hub id, against a stand-in for the Hub's file API on loopback: the
//! info route (`/api/{models,datasets}/ID/revision/REV`), ranged downloads (`/resolve/`) with
//! the ETag / X-Repo-Commit / Content-Range headers, and the Hub's X-Error-Code answers.

mod common;

use common::{p, setup, tempdir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One revision of a repository: its commit and its files (served from disk).
#[derive(Clone)]
struct Snapshot {
    commit: String,
    files: BTreeMap<String, PathBuf>,
}

#[derive(Clone, Default)]
struct Repo {
    /// Branch name → snapshot; a snapshot is also found by its commit.
    revisions: HashMap<String, Snapshot>,
    /// A gated repository answers only requests carrying `Bearer TOKEN`.
    gated_token: Option<String>,
}

/// Each request's path and Authorization header.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

/// The stand-in Hub.
struct FakeHub {
    base: String,
    log: Arc<RequestLog>,
    stop: Arc<AtomicBool>,
}

impl FakeHub {
    /// `repos` keyed by `models/ORG/NAME` or `datasets/ORG/NAME`.
    fn start(repos: HashMap<String, Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (log, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (log2, stop2, repos) = (Arc::clone(&log), Arc::clone(&stop), Arc::new(repos));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if stop2.load(Ordering::SeqCst) {
                    break; // the listener closes: later requests are refused
                }
                let (repos, log) = (Arc::clone(&repos), Arc::clone(&log2));
                std::thread::spawn(move || serve(stream, &repos, &log));
            }
        });
        Self { base, log, stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, repos: &HashMap<String, Repo>, log: &RequestLog) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut range, mut auth) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => auth = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push((path.clone(), auth.clone()));
    let mut stream = stream;
    let answer = route(&path, repos, auth.as_deref());
    match answer {
        Answer::Json(body) => {
            respond(&mut stream, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes())
        }
        Answer::Error(status, code) => respond(
            &mut stream,
            status,
            &[("X-Error-Code", code.into()), ("Content-Type", "application/json".into())],
            json!({"error": code}).to_string().as_bytes(),
        ),
        Answer::File(file, commit) => {
            let mut f = std::fs::File::open(&file).unwrap();
            let total = f.metadata().unwrap().len();
            let start: u64 = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end: u64 = range
                .as_deref()
                .and_then(|r| r.split('-').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(total - 1)
                .min(total - 1);
            f.seek(SeekFrom::Start(start)).unwrap();
            let mut body = Vec::new();
            f.take(end + 1 - start).read_to_end(&mut body).unwrap();
            let headers = [
                ("ETag", format!("\"{}\"", etag(&file))),
                ("X-Repo-Commit", commit),
                ("Content-Range", format!("bytes {start}-{end}/{total}")),
            ];
            respond(&mut stream, "206 Partial Content", &headers, &body);
        }
    }
}

enum Answer {
    Json(String),
    Error(&'static str, &'static str),
    File(PathBuf, String),
}

fn route(path: &str, repos: &HashMap<String, Repo>, auth: Option<&str>) -> Answer {
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    // /api/models/ORG/NAME/revision/REV  or  [/datasets]/ORG/NAME/resolve/REV/FILE…
    let (key, revision, file) = match seg.as_slice() {
        ["api", kind, org, name, "revision", rev] => (format!("{kind}/{org}/{name}"), rev.to_string(), None),
        ["datasets", org, name, "resolve", rev, rest @ ..] => {
            (format!("datasets/{org}/{name}"), rev.to_string(), Some(rest.join("/")))
        }
        [org, name, "resolve", rev, rest @ ..] => {
            (format!("models/{org}/{name}"), rev.to_string(), Some(rest.join("/")))
        }
        _ => return Answer::Error("404 Not Found", "NotFound"),
    };
    let Some(repo) = repos.get(&key) else { return Answer::Error("401 Unauthorized", "RepoNotFound") };
    if let Some(token) = &repo.gated_token {
        match auth {
            None => return Answer::Error("401 Unauthorized", "GatedRepo"),
            Some(a) if a != format!("Bearer {token}") => return Answer::Error("403 Forbidden", "GatedRepo"),
            Some(_) => {}
        }
    }
    let snapshot = repo.revisions.get(&revision).or_else(|| repo.revisions.values().find(|s| s.commit == revision));
    let Some(snapshot) = snapshot else { return Answer::Error("404 Not Found", "RevisionNotFound") };
    match file {
        None => {
            let siblings: Vec<Value> = snapshot.files.keys().map(|f| json!({"rfilename": f})).collect();
            Answer::Json(json!({"id": key, "sha": snapshot.commit, "siblings": siblings}).to_string())
        }
        Some(file) => match snapshot.files.get(&file) {
            Some(path) => Answer::File(path.clone(), snapshot.commit.clone()),
            None => Answer::Error("404 Not Found", "EntryNotFound"),
        },
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The Hub names LFS files (weights, Parquet) by SHA-256 and small git files by a git hash.
fn etag(file: &Path) -> String {
    let sha = rlhf_hub::sha256_file(file).unwrap();
    let lfs = file.extension().is_some_and(|e| e == "safetensors" || e == "parquet");
    if lfs {
        sha
    } else {
        sha[..40].to_string()
    }
}

/// A repository whose `main` is every file of `dir` (recursively), at commit `commit`.
fn repo_of(dir: &Path, commit: &str) -> Repo {
    let mut snapshot = Snapshot { commit: commit.to_string(), files: BTreeMap::new() };
    add_files(&mut snapshot, dir, dir);
    Repo { revisions: HashMap::from([("main".to_string(), snapshot)]), gated_token: None }
}

fn add_files(snapshot: &mut Snapshot, root: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            add_files(snapshot, root, &path);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            snapshot.files.insert(rel, path);
        }
    }
}

fn commit(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// Runs `rlhf` in `cwd` with the Hub variables of `env` (and none inherited from the caller).
fn rlhf_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlhf"));
    cmd.current_dir(cwd).args(args);
    for var in
        ["HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"]
    {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run rlhf")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn succeeds(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let out = rlhf_in(cwd, env, args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "rlhf {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn fails_with(cwd: &Path, env: &[(&str, &str)], args: &[&str], needles: &[&str]) -> String {
    let out = rlhf_in(cwd, env, args);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "rlhf {args:?} should fail");
    for n in needles {
        assert!(stderr.contains(n), "expected `{n}` in:\n{stderr}");
    }
    stderr
}

/// The default model converted to an HF folder and split into two safetensors shards with an
/// index, as large models are published.
fn sharded_default_model(dir: &Path) -> PathBuf {
    let converted = dir.join("converted");
    common::ok(&["convert", "--model", "default", "--out", p(&converted)]);
    let tensors =
        candle_core::safetensors::load(converted.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut weight_map = serde_json::Map::new();
    for (i, half) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let part: HashMap<String, candle_core::Tensor> =
            half.iter().map(|n| (n.to_string(), tensors[*n].clone())).collect();
        candle_core::safetensors::save(&part, repo.join(&file)).unwrap();
        for n in half {
            weight_map.insert(n.to_string(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(repo.join("model.safetensors.index.json"), index.to_string()).unwrap();
    for entry in std::fs::read_dir(&converted).unwrap().flatten() {
        let name = entry.file_name().to_str().unwrap().to_string();
        if name != "model.safetensors" {
            std::fs::copy(entry.path(), repo.join(&name)).unwrap();
        }
    }
    std::fs::write(repo.join("README.md"), "# tiny\n").unwrap();
    repo
}

#[test]
fn default_model_by_id_downloads_caches_and_runs_offline() {
    let dir = tempdir("hub-model");
    let repo = sharded_default_model(&dir);
    let hub = FakeHub::start(HashMap::from([("models/org/tiny".to_string(), repo_of(&repo, &commit('a')))]));
    let hf_home = dir.join("hf");
    let online = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home))];
    let prompt = ["--chat", "--prompt", "What is 12 + 30?", "--max-new-tokens", "12"];
    let args = |model: &'static str| [&["generate", "--model", model][..], &prompt[..]].concat();

    let converted: &'static str = Box::leak(p(&dir.join("converted")).to_string().into_boxed_str());
    let (local, _) = succeeds(&dir, &[], &args(converted));
    let (by_id, _) = succeeds(&dir, &online, &args("org/tiny"));
    assert_eq!(by_id, local, "the model from the Hub answers as the same model loaded from its folder");
    assert!(!local.trim().is_empty());

    // huggingface_hub's layout: refs/main → the commit, snapshot files linking into blobs.
    let cached = hf_home.join("hub/models--org--tiny");
    assert_eq!(std::fs::read_to_string(cached.join("refs/main")).unwrap(), commit('a'));
    let snapshot = cached.join("snapshots").join(commit('a'));
    for f in ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "tokenizer.json"] {
        assert!(std::fs::symlink_metadata(snapshot.join(f)).unwrap().file_type().is_symlink(), "{f}");
    }
    assert!(!snapshot.join("README.md").exists(), "only the files a model needs are downloaded");
    let downloads = |hub: &FakeHub| hub.requests().iter().filter(|(path, _)| path.contains("/resolve/")).count();
    let before = downloads(&hub);
    succeeds(&dir, &online, &args("org/tiny"));
    assert_eq!(downloads(&hub), before, "a second run downloads nothing");

    let offline = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home)), ("HF_HUB_OFFLINE", "1")];
    let asked = hub.requests().len();
    let (cached_run, _) = succeeds(&dir, &offline, &args("org/tiny"));
    assert_eq!(cached_run, local);
    assert_eq!(hub.requests().len(), asked, "HF_HUB_OFFLINE sends no request");
    hub.stop();
    succeeds(&dir, &offline, &args("org/tiny"));
    // Without HF_HUB_OFFLINE a Hub out of reach falls back to a complete cached copy, and says so.
    let (fallback, stderr) = succeeds(&dir, &online, &args("org/tiny"));
    assert_eq!(fallback, local);
    assert!(stderr.contains("cannot reach the Hub") && stderr.contains("cached copy"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap(); // three copies of the default model's weights
}

#[test]
fn gated_model_takes_the_token_as_bearer_and_never_prints_it() {
    let (dir, model, _) = setup("hub-gated");
    let mut repo = repo_of(&model, &commit('b'));
    let secret = "hf_SecretToken4242";
    repo.gated_token = Some(secret.to_string());
    let hub = FakeHub::start(HashMap::from([("models/org/gated".to_string(), repo)]));
    let hf_home = dir.join("hf");
    let env = |token: Option<&'static str>| {
        let mut e = vec![("HF_ENDPOINT", hub.base.clone()), ("HF_HOME", p(&hf_home).to_string())];
        if let Some(t) = token {
            e.push(("HF_TOKEN", t.to_string()));
        }
        e
    };
    let run = |token: Option<&'static str>| {
        let e = env(token);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rlhf_in(&dir, &e, &["generate", "--model", "org/gated", "--prompt", "1+1=", "--max-new-tokens", "3"])
    };
    let no_token = run(None);
    let (_, stderr) = text(&no_token);
    assert!(!no_token.status.success());
    assert!(stderr.contains("`org/gated` is gated") && stderr.contains("set HF_TOKEN"), "{stderr}");

    let wrong = run(Some("hf_WrongToken0000"));
    let (stdout, stderr) = text(&wrong);
    assert!(!wrong.status.success());
    assert!(stderr.contains("has no access"), "{stderr}");
    assert!(!stdout.contains("hf_WrongToken0000") && !stderr.contains("hf_WrongToken0000"));

    let right = run(Some(secret));
    let (stdout, stderr) = text(&right);
    assert!(right.status.success(), "{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the token is never printed");
    let authorised: Vec<_> =
        hub.requests().into_iter().filter(|(_, auth)| auth.as_deref() == Some(&format!("Bearer {secret}"))).collect();
    assert!(authorised.iter().any(|(path, _)| path.starts_with("/api/models/org/gated/revision/main")));
    assert!(authorised.iter().any(|(path, _)| path.ends_with("/model.safetensors")));
}

#[test]
fn hub_errors_name_the_id_and_what_to_do() {
    let (dir, model, _) = setup("hub-errors");
    // A repo whose index names a shard it does not hold, and one with only PyTorch weights.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(model.join("config.json"), broken.join("config.json")).unwrap();
    std::fs::copy(model.join("model.safetensors"), broken.join("model-00001-of-00002.safetensors")).unwrap();
    let index =
        json!({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    std::fs::write(broken.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let torch = dir.join("torch");
    std::fs::create_dir_all(&torch).unwrap();
    std::fs::copy(model.join("config.json"), torch.join("config.json")).unwrap();
    std::fs::write(torch.join("pytorch_model.bin"), b"not read").unwrap();
    let hub = FakeHub::start(HashMap::from([
        ("models/org/tiny".to_string(), repo_of(&model, &commit('c'))),
        ("models/org/broken".to_string(), repo_of(&broken, &commit('d'))),
        ("models/org/torch".to_string(), repo_of(&torch, &commit('e'))),
    ]));
    let hf_home = dir.join("hf");
    let env = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home))];
    let gen = |model: &'static str| ["generate", "--model", model, "--prompt", "x", "--max-new-tokens", "2"];

    fails_with(&dir, &env, &gen("org/nope"), &["org/nope", "has no model repository `org/nope`", "check the spelling"]);
    fails_with(&dir, &env, &gen("org/tiny@v9"), &["has no revision `v9`"]);
    fails_with(&dir, &env, &gen("org/broken"), &["`org/broken` has no file `model-00002-of-00002.safetensors`"]);
    fails_with(
        &dir,
        &env,
        &gen("org/torch"),
        &["`org/torch` holds no weights", "model.safetensors", "pytorch_model.bin"],
    );
    let offline = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home)), ("HF_HUB_OFFLINE", "1")];
    fails_with(&dir, &offline, &gen("org/tiny"), &["HF_HUB_OFFLINE is set", "does not hold model `org/tiny`"]);
    let nowhere = [("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HOME", p(&hf_home))];
    fails_with(&dir, &nowhere, &gen("org/tiny"), &["cannot reach the Hub at http://127.0.0.1:9", "HF_HUB_OFFLINE"]);
    let data = ["dpo", "--model", p(&model), "--data", "org/nope:train", "--out", "unused"];
    fails_with(&dir, &env, &data, &["has no dataset repository `org/nope`"]);

    // A local folder spelled like an id wins, and the Hub is not asked.
    let asked = hub.requests().len();
    let local = dir.join("org/tiny");
    std::fs::create_dir_all(dir.join("org")).unwrap();
    std::fs::rename(&model, &local).unwrap();
    succeeds(&dir, &env, &gen("org/tiny"));
    assert_eq!(hub.requests().len(), asked);
    // A mistyped local file is reported as a missing file, not looked up.
    fails_with(
        &dir,
        &env,
        &["dpo", "--model", "org/tiny", "--data", "data/prefs.jsonl", "--out", "x"],
        &["no such file"],
    );
    assert_eq!(hub.requests().len(), asked);
}

/// Parquet preference pairs (prompt / chosen / rejected strings), one row group.
fn write_pairs(path: &Path, rows: &[(&str, &str, &str)]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = "message schema { REQUIRED BYTE_ARRAY prompt (UTF8); REQUIRED BYTE_ARRAY chosen (UTF8); REQUIRED BYTE_ARRAY rejected (UTF8); }";
    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in 0..3 {
        let values: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from([r.0, r.1, r.2][column])).collect();
        let mut out = group.next_column().unwrap().unwrap();
        out.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
        out.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn trainers_read_hub_datasets_in_both_parquet_layouts_and_reward_models_by_id() {
    let (dir, model, _) = setup("hub-dpo");
    let rows: Vec<(&str, &str, &str)> = vec![
        ("What is 2 + 3?", "5", "6"),
        ("What is 4 + 4?", "8", "9"),
        ("What is 1 + 6?", "7", "5"),
        ("What is 3 + 3?", "6", "33"),
        ("What is 9 + 1?", "10", "91"),
        ("What is 5 + 2?", "7", "52"),
    ];
    // `datasets`' push layout: data/SPLIT-XXXXX-of-YYYYY.parquet on main.
    let pushed = dir.join("pushed");
    write_pairs(&pushed.join("data/train-00000-of-00002.parquet"), &rows[..3]);
    write_pairs(&pushed.join("data/train-00001-of-00002.parquet"), &rows[3..]);
    write_pairs(&pushed.join("data/test-00000-of-00001.parquet"), &[("What is 1 + 1?", "2", "")]);
    std::fs::write(pushed.join("README.md"), "---\nlicense: mit\n---\n").unwrap();
    // Pushed as JSON lines: only the Hub's refs/convert/parquet branch has Parquet.
    let json_main = dir.join("json_main");
    std::fs::create_dir_all(&json_main).unwrap();
    std::fs::write(json_main.join("train.jsonl"), "{}\n").unwrap();
    let converted = dir.join("converted");
    write_pairs(&converted.join("default/train/0000.parquet"), &rows);
    let mut conv = repo_of(&json_main, &commit('1'));
    let mut branch = repo_of(&converted, &commit('2')).revisions.remove("main").unwrap();
    branch.commit = commit('2');
    conv.revisions.insert("refs/convert/parquet".to_string(), branch);
    let hub = FakeHub::start(HashMap::from([
        ("datasets/org/prefs".to_string(), repo_of(&pushed, &commit('f'))),
        ("datasets/org/conv".to_string(), conv),
    ]));
    let hf_home = dir.join("hf");
    let env = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home))];
    let dpo = |data: &str, out: &str, extra: &[&str]| {
        let mut a = vec!["dpo", "--model", p(&model), "--data", data, "--out", out];
        a.extend_from_slice(&[
            "--set",
            "train.max_steps=2",
            "--set",
            "train.batch_size=2",
            "--set",
            "data.max_length=64",
        ]);
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        succeeds(&dir, &env, &a)
    };

    run(dpo("org/prefs:train", p(&dir.join("run1")), &[]));
    let metrics = common::lines(&dir.join("run1/metrics.jsonl"));
    assert!(!metrics.is_empty() && metrics.iter().all(|m| m["loss"].as_f64().is_some_and(f64::is_finite)));
    let snapshot = hf_home.join("hub/datasets--org--prefs/snapshots").join(commit('f'));
    assert!(snapshot.join("data/train-00001-of-00002.parquet").exists());
    assert!(!snapshot.join("data/test-00000-of-00001.parquet").exists(), "only the split asked for is fetched");

    // A bad record names the cached file and its row.
    let (_, stderr) = fails_with_output(&dir, &env, dpo("org/prefs:test", p(&dir.join("run2")), &[]));
    assert!(
        stderr.contains("datasets--org--prefs") && stderr.contains("test-00000-of-00001.parquet:row 0"),
        "{stderr}"
    );

    run(dpo("org/conv", p(&dir.join("run3")), &[]));
    assert!(hf_home
        .join("hub/datasets--org--conv/snapshots")
        .join(commit('2'))
        .join("default/train/0000.parquet")
        .exists());
    assert_eq!(
        std::fs::read_to_string(hf_home.join("hub/datasets--org--conv/refs/refs/convert/parquet")).unwrap(),
        commit('2')
    );

    let missing = dpo("org/prefs:validation", "x", &[]);
    let a: Vec<&str> = missing.iter().map(String::as_str).collect();
    fails_with(&dir, &env, &a, &["no Parquet files for split `validation`", "splits there: test, train"]);

    // A reward model trained on the Hub split, then read back by id with the same split.
    run(vec![
        "reward".into(),
        "--model".into(),
        p(&model).into(),
        "--data".into(),
        "org/prefs".into(),
        "--out".into(),
        p(&dir.join("rm")).into(),
        "--set".into(),
        "train.max_steps=2".into(),
        "--set".into(),
        "train.batch_size=2".into(),
    ]);
    let rm_hub =
        FakeHub::start(HashMap::from([("models/org/rm".to_string(), repo_of(&dir.join("rm/final"), &commit('3')))]));
    let rm_env = [("HF_ENDPOINT", rm_hub.base.as_str()), ("HF_HOME", p(&hf_home))];
    let (by_id, _) = succeeds(
        &dir,
        &rm_env,
        &["reward-eval", "--model", "org/rm", "--data", p(&snapshot.join("data/train-00000-of-00002.parquet"))],
    );
    let (local, _) = succeeds(
        &dir,
        &[],
        &[
            "reward-eval",
            "--model",
            p(&dir.join("rm/final")),
            "--data",
            p(&snapshot.join("data/train-00000-of-00002.parquet")),
        ],
    );
    assert_eq!(by_id, local);
    assert!(hf_home.join("hub/models--org--rm/snapshots").join(commit('3')).join("reward_stats.json").exists());

    // Offline, the cached split serves without the Hub.
    hub.stop();
    let offline = [("HF_ENDPOINT", hub.base.as_str()), ("HF_HOME", p(&hf_home)), ("HF_HUB_OFFLINE", "1")];
    let args = dpo("org/prefs:train", p(&dir.join("run4")), &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeds(&dir, &offline, &a);
    let args = dpo("org/conv:train", p(&dir.join("run5")), &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeds(&dir, &offline, &a);
}

fn fails_with_output(cwd: &Path, env: &[(&str, &str)], args: Vec<String>) -> (String, String) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rlhf_in(cwd, env, &a);
    assert!(!out.status.success(), "rlhf {a:?} should fail");
    text(&out)
}
