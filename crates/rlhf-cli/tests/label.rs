//! The human-feedback commands end to end on a tiny model: collect → serve → scripted annotators
//! over HTTP → stats → export → `rlhf reward`; and the SIGKILL load test.

mod common;

use common::{fails, ok, p};
use serde_json::Value;

fn setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    common::setup(&format!("label-{name}"))
}

#[test]
fn collect_rank_over_http_export_and_train_a_reward_model() {
    let (dir, model, data) = setup("loop");
    let db = dir.join("labels.db");
    let prompts = data.join("prompts.jsonl");
    let out = ok(&[
        "collect",
        "--model",
        p(&model),
        "--prompts",
        p(&prompts),
        "--limit",
        "6",
        "--k",
        "4",
        "--temperatures",
        "0.8,1.2",
        "--max-new-tokens",
        "6",
        "--db",
        p(&db),
    ]);
    assert!(out.contains("queued 6 prompts"), "{out}");
    let grader = ok(&["label", "add-annotator", "--db", p(&db), "--name", "grader"]).trim().to_string();
    let noisy = ok(&["label", "add-annotator", "--db", p(&db), "--name", "noisy"]).trim().to_string();
    assert!(grader.starts_with("rlhf_") && grader != noisy);
    assert!(fails(&["label", "add-annotator", "--db", p(&db), "--name", "grader"]).contains("already exists"));

    let server = common::spawn_listening(&["label", "serve", "--db", p(&db), "--port", "0", "--overlap", "1"]);
    // A random tiny model rarely writes the answer, so both rank at random (different seeds).
    for (token, seed) in [(&grader, "1"), (&noisy, "2")] {
        let done: Value = serde_json::from_str(
            ok(&[
                "label",
                "simulate",
                "--url",
                &server.base,
                "--token",
                token,
                "--answers",
                p(&prompts),
                "--noise",
                "1",
                "--seed",
                seed,
            ])
            .trim(),
        )
        .unwrap();
        assert_eq!(done["submitted"], 6, "{done}");
    }
    drop(server);

    let stats: Value = serde_json::from_str(&ok(&["label", "stats", "--db", p(&db), "--json"])).unwrap();
    assert_eq!(stats["items"]["complete"], 6, "{stats}");
    assert_eq!(stats["agreement"]["items_with_overlap"], 6);
    assert_eq!(stats["agreement"]["pairs"][0]["comparisons"], 36, "6 items × C(4,2) pairs");
    assert!(stats["agreement"]["pairs"][0]["kappa"].is_number());
    let table = ok(&["label", "stats", "--db", p(&db)]);
    assert!(table.contains("κ") && table.contains("Krippendorff"), "{table}");

    let pairs = dir.join("pairs.jsonl");
    let out = ok(&["label", "export", "--db", p(&db), "--format", "pairs", "--out", p(&pairs)]);
    assert!(out.contains("72 rows from 12 rankings"), "{out}");
    let rows = common::lines(&pairs);
    assert_eq!(rows.len(), 72);
    assert!(rows.iter().all(|r| r["prompt"].is_array() && r["chosen"].is_string() && r["agreement"].is_number()));
    let rankings = dir.join("rankings.jsonl");
    ok(&["label", "export", "--db", p(&db), "--format", "rankings", "--out", p(&rankings)]);
    assert_eq!(common::lines(&rankings).len(), 12);

    // Both exports are what `rlhf reward` reads.
    for data in [&pairs, &rankings] {
        let rm = dir.join(format!("rm-{}", data.file_stem().unwrap().to_str().unwrap()));
        let out = ok(&[
            "reward",
            "--model",
            p(&model),
            "--data",
            p(data),
            "--out",
            p(&rm),
            "--set",
            "train.max_steps=2",
            "--set",
            "train.batch_size=2",
            "--set",
            "stats_examples=4",
        ]);
        assert!(out.contains("reward mean"), "{out}");
        assert!(rm.join("final/reward_stats.json").exists());
    }
}

#[test]
fn the_load_test_loses_nothing_across_a_sigkill() {
    let out = ok(&["label", "bench", "--annotators", "8", "--rankings", "1000", "--kill-after", "300", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["acknowledged"].as_u64().unwrap() >= 1000, "{v}");
    assert_eq!(v["restarts"], 1, "{v}");
    for key in ["lost", "stored_twice", "altered", "stored_unacknowledged"] {
        assert_eq!(v[key], 0, "{key}: {v}");
    }
    assert_eq!(v["stored"], v["acknowledged"]);
    eprintln!("label load test: {v}");
}

#[test]
fn labelling_commands_explain_bad_input() {
    let (dir, model, data) = setup("errors");
    let db = dir.join("labels.db");
    let prompts = data.join("prompts.jsonl");
    let err = fails(&["collect", "--model", p(&model), "--prompts", p(&prompts), "--k", "12", "--db", p(&db)]);
    assert!(err.contains("--k 12: use 2 to 9"), "{err}");
    let err =
        fails(&["collect", "--model", p(&model), "--prompts", p(&prompts), "--temperatures", "0.7,-1", "--db", p(&db)]);
    assert!(err.contains("positive temperatures"), "{err}");
    let err = fails(&["label", "export", "--db", p(&db), "--format", "csv", "--out", p(&dir.join("x"))]);
    assert!(err.contains("--format csv: use `pairs` or `rankings`"), "{err}");
    let err = fails(&["label", "serve", "--db", p(&db), "--overlap", "1.5"]);
    assert!(err.contains("--overlap 1.5"), "{err}");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"Q\", \"answer\": 3}\n{\"prompt\": \"R\"}\n").unwrap();
    let err = fails(&["label", "simulate", "--url", "http://127.0.0.1:9", "--token", "t", "--answers", p(&bad)]);
    assert!(err.contains("bad.jsonl:2: field \"answer\""), "{err}");
}
