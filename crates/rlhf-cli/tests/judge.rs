//! `rlhf judge` end to end against our own `rlhf serve` on a tiny random model. Its verdicts are
//! noise, so the test checks structure and counts: every pair judged in both orders, rows in the
//! pairs format, and a rerun answered entirely from the cache.

mod common;

use common::p;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn serve(model: &Path) -> common::Background {
    common::spawn_listening(&["serve", "--model", p(model), "--port", "0"])
}

fn counts(stdout: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn judges_every_pair_in_both_orders_and_reruns_from_the_cache() {
    let (dir, model, _data) = common::setup("judge");
    let server = serve(&model);
    // Short texts: the tiny model's context is 256 byte-level tokens, judge prompt included.
    let data = dir.join("candidates.jsonl");
    std::fs::write(
        &data,
        concat!(
            r#"{"prompt": "2+3=?", "responses": ["5", "6", "It is 5."]}"#,
            "\n",
            r#"{"prompt": [{"role": "user", "content": "1+1=?"}], "chosen": "2", "rejected": "3"}"#,
            "\n",
        ),
    )
    .unwrap();
    let guidelines = dir.join("guidelines.txt");
    std::fs::write(&guidelines, "Be fair.\n").unwrap();
    let out = dir.join("out/judged.jsonl");
    let url = format!("{}/v1", server.base);
    let args = [
        "judge",
        "--url",
        &url,
        "--model",
        "model",
        "--data",
        p(&data),
        "--out",
        p(&out),
        "--guidelines",
        p(&guidelines),
        "--max-tokens",
        "6",
        "--concurrency",
        "3",
        "--json",
    ];
    let first = counts(&common::ok(&args));
    assert_eq!(first["pairs"], 4, "{first}");
    assert_eq!(
        (&first["requests"], &first["http_calls"], &first["retries"], &first["cache_hits"]),
        (&Value::from(8), &Value::from(8), &Value::from(0), &Value::from(0))
    );
    let outcomes = ["preferences", "ties", "invalid"].map(|k| first[k].as_u64().unwrap());
    assert_eq!(outcomes.iter().sum::<u64>(), 4, "{first}");
    assert_eq!(first["rows"], outcomes[0]);

    let rows = common::lines(&out);
    assert_eq!(rows.len() as u64, outcomes[0]);
    for r in &rows {
        let (chosen, rejected) = (r["chosen"].as_str().unwrap(), r["rejected"].as_str().unwrap());
        assert_ne!(chosen, rejected);
        assert!(r["prompt"].is_string() || r["prompt"].is_array(), "{r}");
        assert_eq!(
            (&r["judge"], &r["annotator"], &r["orders"]),
            (&Value::from("model"), &Value::from("judge:model"), &Value::from(2))
        );
        assert_eq!(r["agreement"], 1.0);
    }
    let cache = PathBuf::from(format!("{}.cache.jsonl", out.display()));
    let cached = common::lines(&cache);
    assert_eq!(cached.len(), 8, "one line per call");
    assert!(cached.iter().all(|c| c["key"].as_str().is_some_and(|k| k.len() == 64) && c["reply"].is_string()));

    // The rerun sends nothing and writes the same rows.
    let before = std::fs::read_to_string(&out).unwrap();
    let second = counts(&common::ok(&args));
    assert_eq!((&second["cache_hits"], &second["http_calls"]), (&Value::from(8), &Value::from(0)), "{second}");
    assert_eq!(["preferences", "ties", "invalid"].map(|k| second[k].as_u64().unwrap()), outcomes);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);

    // Logprob verdicts from the same server: other requests (one token, top_logprobs), so
    // nothing comes from the text verdicts' cache; each reply keeps the letters' logprobs.
    let mut lp_args = args.to_vec();
    lp_args.extend(["--verdict", "logprobs", "--tie-margin", "0"]);
    let third = counts(&common::ok(&lp_args));
    assert_eq!((&third["cache_hits"], &third["http_calls"]), (&Value::from(0), &Value::from(8)), "{third}");
    let cached = common::lines(&cache);
    assert_eq!(cached.len(), 16);
    for c in &cached[8..] {
        let reply: Value = serde_json::from_str(c["reply"].as_str().unwrap()).unwrap();
        assert!(reply["floor"].as_f64().is_some_and(|f| f <= 0.0), "{reply}");
        for letter in ["A", "B"] {
            assert!(reply[letter].is_null() || reply[letter].as_f64().unwrap() >= reply["floor"].as_f64().unwrap());
        }
    }
    let outcomes = ["preferences", "ties", "invalid"].map(|k| third[k].as_u64().unwrap());
    assert_eq!(outcomes.iter().sum::<u64>(), 4, "{third}");
    for r in common::lines(&out) {
        assert!(r["judge_log_odds"].as_f64().is_some_and(|s| s > 0.0), "margin 0: every row has log-odds > 0: {r}");
    }
}

/// A judge endpoint that prefers the longer response and records each request's Authorization
/// header: (base URL, headers seen).
fn fake_judge() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    let base = common::fake_chat_endpoint(move |body, auth| {
        let user = body["messages"][1]["content"].as_str().unwrap().to_string();
        let part = |from: &str, to: &str| user.split(from).nth(1).unwrap().split(to).next().unwrap().len();
        let verdict =
            if part("[Response A]\n", "\n[Response B]") > part("[Response B]\n", "\nWhich") { "A" } else { "B" };
        keep.lock().unwrap().push(auth.map(str::to_string));
        format!("Longer wins.\n{verdict}")
    });
    (base, seen)
}

#[test]
fn a_consistent_judge_gives_rows_and_the_key_stays_secret() {
    let dir = common::tempdir("judge-rows");
    let data = dir.join("pairs.jsonl");
    std::fs::write(
        &data,
        concat!(
            r#"{"prompt": "Say hi.", "chosen": "hi", "rejected": "Hello there!"}"#,
            "\n",
            r#"{"prompt": "Count.", "responses": ["1 2 3", "1", "1 2"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let (url, seen) = fake_judge();
    let out = dir.join("rows.jsonl");
    let cache = dir.join("replies.jsonl");
    let var = "RLHF_JUDGE_TEST_KEY";
    let output = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["judge", "--url", &url, "--model", "fake", "--api-key-env", var, "--data", p(&data)])
        .args(["--out", p(&out), "--cache", p(&cache)])
        .env(var, "sk-cli-secret")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("4 pairs judged: 4 preferences, 0 ties"), "{stdout}");
    assert!(stdout.contains("8 requests: 0 from the cache, 8 HTTP calls (0 retries)"), "{stdout}");
    assert!(!stdout.contains("sk-cli-secret") && !stderr.contains("sk-cli-secret"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|a| a.as_deref() == Some("Bearer sk-cli-secret")), "{seen:?}");
    let rows = common::lines(&out);
    let pairs: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["chosen"].as_str().unwrap(), r["rejected"].as_str().unwrap())).collect();
    assert_eq!(pairs, [("Hello there!", "hi"), ("1 2 3", "1"), ("1 2 3", "1 2"), ("1 2", "1")]);
    assert!(rows.iter().all(|r| r["annotator"] == "judge:fake" && r["orders"] == 2 && r["agreement"] == 1.0));
    assert_eq!(rows[1]["prompt"], "Count.");
    assert_eq!(common::lines(&cache).len(), 8);
}

#[test]
fn bad_input_and_a_missing_key_variable_are_clear_errors() {
    let dir = common::tempdir("judge-errors");
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"q\", \"responses\": [\"a\", \"b\"]}\n{\"prompt\": \"q\", \"responses\": [\"a\"]}\n",
    )
    .unwrap();
    let out = dir.join("out.jsonl");
    let base = ["judge", "--url", "http://127.0.0.1:9/v1", "--model", "m", "--data", p(&data), "--out", p(&out)];
    let err = common::fails(&base);
    assert!(err.contains(&format!("{}:2: field `responses`: needs at least 2", data.display())), "{err}");

    let var = "RLHF_JUDGE_TEST_KEY_THAT_IS_NOT_SET";
    let err = common::fails(&[&base[..], &["--api-key-env", var]].concat());
    assert!(err.contains(var) && err.contains("not set"), "{err}");
    assert!(!out.exists());
}
