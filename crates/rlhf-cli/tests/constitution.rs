//! `rlhf constitution`: against a scripted fake endpoint (exact rows, principle rotation, the
//! unchanged-revision skip, a rerun from the cache, outputs that `rlhf sft`/`reward` accept),
//! end to end against our own `rlhf serve` on the tiny model (structure and counts only), and
//! the input errors.

mod common;

use common::p;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The text between `from` and the next `to` (or the end).
fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let rest = text.split_once(from).unwrap_or_else(|| panic!("no {from:?} in {text:?}")).1;
    rest.split(to).next().unwrap()
}

/// A fake OpenAI endpoint that tells the three stages apart by their prompt text:
/// - answer: `Answer to <prompt>`;
/// - critique: `Fails <principle>`;
/// - revision: `<response> + <principle>`, or the response unchanged when the request holds "SAME".
///
/// Returns the base URL and the number of requests served.
fn fake_model() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let base = common::fake_chat_endpoint(move |body, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        let user = body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap();
        if user.contains("falls short of the principle") {
            format!("Fails {}", between(user, "Principle: ", "\n"))
        } else if user.contains("Rewrite the response") {
            let response = between(user, "\nResponse: ", "\nCritique: ");
            if between(user, "\nRequest: ", "\nResponse: ").contains("SAME") {
                response.to_string()
            } else {
                format!("{response} + {}", between(user, "Principle: ", "\n"))
            }
        } else {
            format!("Answer to {user}")
        }
    });
    (base, hits)
}

fn summary(stdout: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn revisions_become_sft_rows_and_pairs_and_rerun_from_the_cache() {
    let (dir, model, _data) = common::setup("constitution-fake");
    let (url, hits) = fake_model();
    let data = write(
        &dir.join("prompts.jsonl"),
        concat!(
            r#"{"prompt": "Name a colour."}"#,
            "\n",
            r#"{"prompt": [{"role": "user", "content": "Say hi."}]}"#,
            "\n\n",
            r#"{"prompt": "Repeat SAME."}"#,
            "\n",
            r#"{"prompt": "Count to 3.", "extra": 1}"#,
            "\n",
        ),
    );
    let principles = write(&dir.join("principles.txt"), "# mine\nBe helpful.\n\n  Be honest.\n# x\nBe harmless.\n");
    let (sft, pairs) = (dir.join("out/sft.jsonl"), dir.join("out/pairs.jsonl"));
    let args = [
        "constitution",
        "--url",
        &url,
        "--model",
        "fake",
        "--data",
        p(&data),
        "--principles",
        p(&principles),
        "--sft-out",
        p(&sft),
        "--pairs-out",
        p(&pairs),
        "--concurrency",
        "3",
        "--json",
    ];
    let first = summary(&common::ok(&args));
    let expect = json!({"prompts": 4, "sft_rows": 4, "pairs": 3, "unchanged": 1, "empty": 0, "requests": 12,
        "cache_hits": 0, "http_calls": 12, "retries": 0});
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&first[k], v, "{k}: {first}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 12);

    let rows = common::lines(&pairs);
    let got: Vec<(&Value, &Value, &Value, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                &r["prompt"],
                &r["chosen"],
                &r["rejected"],
                r["principle"].as_str().unwrap(),
                r["critique"].as_str().unwrap(),
            )
        })
        .collect();
    let say_hi = json!([{"role": "user", "content": "Say hi."}]);
    let turn = |t: &str| json!([{"role": "assistant", "content": t}]);
    assert_eq!(
        got,
        [
            (
                &json!("Name a colour."),
                &json!("Answer to Name a colour. + Be helpful."),
                &json!("Answer to Name a colour."),
                "Be helpful.",
                "Fails Be helpful."
            ),
            (
                &say_hi,
                &turn("Answer to Say hi. + Be honest."),
                &turn("Answer to Say hi."),
                "Be honest.",
                "Fails Be honest."
            ),
            // Item 3 ("Repeat SAME.", principle 3) came back unchanged: no pair; item 4 wraps round.
            (
                &json!("Count to 3."),
                &json!("Answer to Count to 3. + Be helpful."),
                &json!("Answer to Count to 3."),
                "Be helpful.",
                "Fails Be helpful."
            ),
        ]
    );
    assert!(rows.iter().all(|r| r["annotator"] == "constitution:fake" && r.get("rounds").is_none()), "{rows:?}");
    let sft_rows = common::lines(&sft);
    let completions: Vec<&Value> = sft_rows.iter().map(|r| &r["completion"]).collect();
    assert_eq!(
        completions,
        [
            &json!("Answer to Name a colour. + Be helpful."),
            &turn("Answer to Say hi. + Be honest."),
            &json!("Answer to Repeat SAME."),
            &json!("Answer to Count to 3. + Be helpful."),
        ]
    );
    assert_eq!(sft_rows[1]["prompt"], say_hi);
    let cache = PathBuf::from(format!("{}.cache.jsonl", pairs.display()));
    assert_eq!(common::lines(&cache).len(), 12, "one cache line per call");

    // The rerun sends nothing and writes the same files.
    let before = (std::fs::read_to_string(&sft).unwrap(), std::fs::read_to_string(&pairs).unwrap());
    let second = summary(&common::ok(&args));
    assert_eq!((&second["cache_hits"], &second["http_calls"]), (&json!(12), &json!(0)), "{second}");
    assert_eq!(hits.load(Ordering::SeqCst), 12, "no request reached the server");
    assert_eq!((std::fs::read_to_string(&sft).unwrap(), std::fs::read_to_string(&pairs).unwrap()), before);
    assert!(!dir.join("out/sft.jsonl.tmp").exists() && !dir.join("out/pairs.jsonl.tmp").exists());

    // Two rounds, a limit and a separate cache: each round takes the next principle and revises
    // the previous revision; the pair keeps the whole history.
    let (sft2, pairs2, cache2) = (dir.join("sft2.jsonl"), dir.join("pairs2.jsonl"), dir.join("c2.jsonl"));
    let mut more = args[..9].to_vec(); // up to --principles
    more.extend([
        "--sft-out",
        p(&sft2),
        "--pairs-out",
        p(&pairs2),
        "--cache",
        p(&cache2),
        "--revisions",
        "2",
        "--limit",
        "1",
        "--json",
    ]);
    let two = summary(&common::ok(&more));
    assert_eq!((&two["prompts"], &two["pairs"], &two["http_calls"]), (&json!(1), &json!(1), &json!(5)), "{two}");
    let row = &common::lines(&pairs2)[0];
    assert_eq!(row["chosen"], "Answer to Name a colour. + Be helpful. + Be honest.");
    assert_eq!(row["rejected"], "Answer to Name a colour.");
    assert_eq!((&row["principle"], &row["critique"]), (&json!("Be honest."), &json!("Fails Be honest.")));
    assert_eq!(row["rounds"][0]["revision"], "Answer to Name a colour. + Be helpful.");
    assert_eq!(common::lines(&cache2).len(), 5);

    // What was written trains: SFT rows (string and conversational) and reward pairs.
    let run = |cmd: &str, data: &Path, out: &str| {
        common::ok(&[
            cmd,
            "--model",
            p(&model),
            "--data",
            p(data),
            "--out",
            p(&dir.join(out)),
            "--set",
            "train.max_steps=1",
            "--set",
            "train.batch_size=2",
        ]);
        assert!(dir.join(out).join("final").is_dir(), "{cmd} saved no model");
    };
    run("sft", &sft, "sft-run");
    run("reward", &pairs, "rm-run");
}

#[test]
fn end_to_end_against_rlhf_serve() {
    let (dir, model, _data) = common::setup("constitution-serve");
    let server = common::spawn_listening(&["serve", "--model", p(&model), "--port", "0"]);
    let url = format!("{}/v1", server.base);
    // Short texts: the tiny model's context is 256 byte-level tokens, instructions included.
    let data = write(
        &dir.join("prompts.jsonl"),
        concat!(r#"{"prompt": "1+1=?"}"#, "\n", r#"{"prompt": [{"role": "user", "content": "2+2=?"}]}"#, "\n"),
    );
    let principles = write(&dir.join("p.txt"), "Be kind.\nBe true.\n");
    let (sft, pairs) = (dir.join("sft.jsonl"), dir.join("pairs.jsonl"));
    let args = [
        "constitution",
        "--url",
        &url,
        "--model",
        "model",
        "--data",
        p(&data),
        "--principles",
        p(&principles),
        "--sft-out",
        p(&sft),
        "--pairs-out",
        p(&pairs),
        "--max-tokens",
        "6",
        // Greedy decoding of the random model gives blank lines (empty revisions, no pairs);
        // seeded sampling gives noise that is the same on every run.
        "--critique-temperature",
        "1",
        "--seed",
        "3",
        "--concurrency",
        "2",
        "--json",
    ];
    let out = common::rlhf(&args);
    assert!(out.status.success(), "{}\nserver:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let first = summary(&String::from_utf8(out.stdout).unwrap());
    let n = |k: &str| first[k].as_u64().unwrap_or_else(|| panic!("{k}: {first}"));
    assert_eq!(n("prompts"), 2);
    assert_eq!(n("sft_rows") + n("empty"), 2, "{first}");
    assert_eq!(n("pairs") + n("unchanged"), n("sft_rows"), "{first}");
    assert!(n("pairs") >= 1, "seeded noise revises something: {first}");
    // An answer and two calls per round, fewer only where an empty reply ended the item.
    assert!((2..=6).contains(&n("requests")), "{first}");
    assert_eq!((n("http_calls"), n("cache_hits"), n("retries")), (n("requests"), 0, 0), "{first}");

    let rows = common::lines(&pairs);
    assert_eq!(rows.len() as u64, n("pairs"));
    for r in &rows {
        assert_ne!(r["chosen"], r["rejected"], "{r}");
        assert!(["Be kind.", "Be true."].contains(&r["principle"].as_str().unwrap()), "{r}");
        assert!(r["critique"].is_string(), "{r}");
        assert_eq!(r["prompt"].is_array(), r["chosen"].is_array(), "responses take the prompt's shape: {r}");
    }
    let sft_rows = common::lines(&sft);
    assert_eq!(sft_rows.len() as u64, n("sft_rows"));
    assert!(sft_rows.iter().all(|r| r["prompt"].is_string() || r["prompt"].is_array()), "{sft_rows:?}");

    let second = summary(&common::ok(&args));
    assert_eq!((&second["http_calls"], &second["cache_hits"]), (&json!(0), &json!(n("requests"))), "{second}");
    assert_eq!(second["pairs"], first["pairs"]);
}

#[test]
fn bad_principles_and_bad_data_are_clear_errors() {
    let dir = common::tempdir("constitution-errors");
    let good = write(&dir.join("good.jsonl"), "{\"prompt\": \"q\"}\n");
    let principles = write(&dir.join("p.txt"), "Be honest.\n");
    let (sft, pairs) = (dir.join("sft.jsonl"), dir.join("pairs.jsonl"));
    let run = |data: &Path, principles: &Path| {
        common::fails(&[
            "constitution",
            "--url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--data",
            p(data),
            "--principles",
            p(principles),
            "--sft-out",
            p(&sft),
            "--pairs-out",
            p(&pairs),
            "--max-retries",
            "0",
        ])
    };
    let missing = dir.join("nope.txt");
    let err = run(&good, &missing);
    assert!(err.contains(&format!("--principles {}: cannot read", missing.display())), "{err}");
    let empty = write(&dir.join("empty.txt"), "# only a comment\n\n   \n");
    let err = run(&good, &empty);
    assert!(err.contains(&format!("--principles {}: no principles", empty.display())), "{err}");

    for (line, expected) in [
        ("{\"prompt\": 3}", "field `prompt`: must be a string or a list of messages, got a number"),
        ("{\"question\": \"q\"}", "field `prompt`: missing"),
        ("{\"prompt\": [{\"role\": \"user\"}]}", "field `prompt`: [0].content: missing"),
        ("{\"prompt\": \"  \"}", "field `prompt`: empty prompt"),
        ("not json", "not valid JSON"),
    ] {
        let bad = write(&dir.join("bad.jsonl"), &format!("{{\"prompt\": \"ok\"}}\n\n{line}\n"));
        let err = run(&bad, &principles);
        assert!(err.contains(&format!("{}:3: {expected}", bad.display())), "{line}: {err}");
    }
    // The endpoint is unreachable: had the input passed, the run would have failed on the call.
    let err = run(&good, &principles);
    assert!(err.contains("127.0.0.1:9") && err.contains("rerun the same command to resume"), "{err}");
    assert!(!sft.exists() && !pairs.exists());
}
