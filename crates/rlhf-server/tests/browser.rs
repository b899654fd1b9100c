//! The labelling page in a real browser: Debian's Chromium driven by `tests/browser/label.mjs`
//! (playwright-core) against a server started in-process. One annotator ranks item 1 with the
//! mouse, item 2 with the keyboard and flags item 3; the test then reads the stored decisions.
//!
//! Needs `/usr/bin/chromium`, node and `tests/browser/node_modules`; `./scripts/setup-browser-tests.sh`
//! installs them. Without them the test fails (it does not skip). A screenshot of the task page is
//! kept in `target/test-artifacts/label-task.png`.

use rlhf_feedback::labels::{LabelDb, NewItem, NewResponse, Role, StoredSubmission};
use rlhf_server::label::{spawn, ServerOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SETUP: &str = "run ./scripts/setup-browser-tests.sh (as root: it apt-installs chromium and runs npm ci)";
const NODE_TIMEOUT: Duration = Duration::from_secs(90);

/// The database and its WAL files, removed at the end whatever happens.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

fn temp_db() -> TempDb {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    TempDb(std::env::temp_dir().join(format!("rlhf-label-browser-{}-{nanos}.db", std::process::id())))
}

fn items() -> Vec<NewItem> {
    let item = |prompt: &str, responses: [&str; 4]| NewItem {
        prompt: prompt.into(),
        prompt_json: None,
        source: Some("tests/browser.rs".into()),
        responses: responses
            .iter()
            .map(|t| NewResponse { text: t.to_string(), temperature: Some(0.7), model: Some("fixture".into()) })
            .collect(),
    };
    vec![
        item(
            "Explain what a hash map is to a new programmer.\nKeep it short.",
            [
                "A hash map stores key–value pairs. It hashes each key to pick a bucket,\nso looking a key up takes about the same time however many entries there are.",
                "It's a map. With hashes.",
                "A hash map is like a coat check: you hand over a coat (the value), get a ticket (the key),\nand the ticket tells the attendant exactly which hook to go to.",
                "Hash maps, also called dictionaries, associate keys with values; lookups, inserts and deletes are O(1) on average.",
            ],
        ),
        item(
            "Write a haiku about <b>SQLite</b> & write-ahead logs.",
            [
                "Pages wait in line,\nthe log remembers each change —\ncheckpoint, then calm sleep.",
                "SQLite is a C library that implements a small, fast SQL database engine.",
                "<script>alert('not a haiku')</script>",
                "Write ahead, commit;\nreaders never block writers.\nOne file holds it all.",
            ],
        ),
        item(
            "Translate \"good morning\" into French.",
            ["Bonjour.", "Bonsoir.", "Guten Morgen.", "\u{fffd}\u{fffd}\u{fffd} [garbled output]"],
        ),
    ]
}

/// Runs `cmd` to completion or `timeout`, returning (status, stdout, stderr).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}); install node >= 20, then {SETUP}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("label.mjs ran longer than {timeout:?}; stderr:\n{}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().expect("a list of ids").iter().map(|x| x.as_i64().expect("an id")).collect()
}

fn tiers(v: &Value) -> Vec<Vec<i64>> {
    v.as_array().expect("a list of tiers").iter().map(ids).collect()
}

#[test]
fn annotator_ranks_with_mouse_and_keyboard_and_flags() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = manifest.join("tests/browser");
    let workspace = manifest.join("../..").canonicalize().expect("the workspace directory");
    assert!(Path::new("/usr/bin/chromium").is_file(), "/usr/bin/chromium is missing: {SETUP}");
    assert!(
        browser_dir.join("node_modules/playwright-core/package.json").is_file(),
        "{} is missing: {SETUP}",
        browser_dir.join("node_modules/playwright-core").display()
    );

    let db_file = temp_db();
    let mut db = LabelDb::open(&db_file.0).expect("open the label db");
    let fixtures = items();
    let mut prompts = BTreeMap::new();
    for item in &fixtures {
        prompts.insert(db.add_item(item).expect("add item"), item.prompt.clone());
    }
    let token = db.add_annotator("alice", Role::Annotator).expect("add annotator");
    let admin_token = db.add_annotator("lead", Role::Admin).expect("add admin");
    drop(db);

    let server = spawn("127.0.0.1:0".parse().unwrap(), &db_file.0, ServerOptions::default()).expect("start the server");
    let base = format!("http://{}", server.addr);

    let artifacts = workspace.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let screenshot = artifacts.join("label-task.png");
    let _ = std::fs::remove_file(&screenshot);

    let mut node = Command::new("node");
    node.arg(browser_dir.join("label.mjs")).arg(&base).arg(&token).arg(&screenshot).arg(&admin_token);
    node.current_dir(&browser_dir);
    let started = Instant::now();
    let (status, stdout, stderr) = run_with_timeout(node, NODE_TIMEOUT);
    eprintln!("label.mjs took {:.1?}:\n{stderr}", started.elapsed());
    assert!(status.success(), "label.mjs failed ({status}); stderr:\n{stderr}\nstdout:\n{stdout}");
    server.stop().expect("stop the server");

    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("label.mjs printed no JSON report ({e}):\n{stdout}"));
    let done = report["items"].as_array().expect("report.items");
    assert_eq!(done.len(), 3, "{report}");

    // What the script did, from the order the responses were served in (a, b, c, d top first):
    // item 1 by mouse: drag d to the top, drag b to 2nd, tie the last two; item 2 by keyboard:
    // p down twice, tie r with p, d to the top and down past the tie; item 3 flagged.
    let served: Vec<Vec<i64>> = done.iter().map(|d| ids(&d["served"])).collect();
    let [a, b, c, d] = served[0][..] else { panic!("item 1 served {:?}", served[0]) };
    let [p, q, r, s] = served[1][..] else { panic!("item 2 served {:?}", served[1]) };
    let expected = [vec![vec![d], vec![b], vec![a, c]], vec![vec![q], vec![r, p], vec![s]], vec![]];
    for (i, want) in expected.iter().enumerate().take(2) {
        assert_eq!(&tiers(&done[i]["tiers"]), want, "label.mjs's own account of item {}", i + 1);
    }

    let db = LabelDb::open(&db_file.0).expect("reopen the label db");
    let subs: Vec<StoredSubmission> = db.submissions().expect("read submissions");
    assert_eq!(subs.len(), 3, "{subs:#?}");
    let mut seen_items = Vec::new();
    for (i, d) in done.iter().enumerate() {
        let assignment = d["assignment"].as_i64().expect("assignment");
        let sub = subs.iter().find(|s| s.assignment == assignment).unwrap_or_else(|| panic!("no submission for {d}"));
        assert_eq!(sub.item, d["item"].as_i64().unwrap(), "{sub:?}");
        assert_eq!(sub.annotator, "alice");
        // The page shows the prompt verbatim (markup as text, line breaks kept).
        assert_eq!(d["prompt"].as_str(), Some(prompts[&sub.item].as_str()), "prompt of item {}", sub.item);
        let mut all: Vec<i64> = served[i].clone();
        all.sort_unstable();
        let mut stored: Vec<i64> = sub.tiers.concat();
        stored.sort_unstable();
        match i {
            0 | 1 => {
                assert_eq!(sub.action, "submit");
                assert_eq!(sub.tiers, expected[i], "stored ranking of item {}", sub.item);
                assert_eq!(stored, all, "item {} ranks each served response once", sub.item);
                assert_eq!(sub.flag, None);
            }
            _ => {
                assert_eq!(sub.action, "flag");
                assert_eq!(sub.flag.as_deref(), Some("broken"));
                assert!(sub.tiers.is_empty(), "{sub:?}");
            }
        }
        assert_eq!(sub.comment.as_deref(), d["comment"].as_str(), "comment of item {}", sub.item);
        seen_items.push(sub.item);
    }
    assert_eq!(
        Some(db.guidelines().expect("guidelines").as_str()),
        report["guidelines"].as_str(),
        "guidelines saved by the admin"
    );
    seen_items.sort_unstable();
    assert_eq!(seen_items, prompts.keys().copied().collect::<Vec<_>>(), "each item labelled once");

    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} is not a real PNG", screenshot.display());
}
