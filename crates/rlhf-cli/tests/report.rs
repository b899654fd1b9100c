//! `rlhf report` on a real (tiny) SFT run and an eval file: the HTML renders in headless
//! Chromium without errors, with a chart per metric; the screenshot is kept as an artifact.

mod common;

use common::{fails, ok, p};
use std::process::Command;

#[test]
fn the_report_renders_in_a_browser_without_errors() {
    let (dir, model, data) = common::setup("report");
    let run = dir.join("sft");
    ok(&[
        "sft",
        "--model",
        p(&model),
        "--data",
        p(&data.join("sft.jsonl")),
        "--eval-data",
        p(&data.join("sft_eval.jsonl")),
        "--out",
        p(&run),
        "--set",
        "train.max_steps=4",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.save_steps=0",
        "--set",
        "train.eval_steps=2",
    ]);
    let eval = dir.join("eval.jsonl");
    std::fs::write(&eval, "{\"model\": \"base\", \"accuracy\": 0.083, \"mean_length\": 38.5}\n{\"model\": \"sft <b>\", \"accuracy\": 0.433}\n").unwrap();
    let html = dir.join("report.html");
    let out = ok(&["report", "--run", p(&dir), "--eval", p(&eval), "--out", p(&html), "--title", "tiny"]);
    assert!(out.contains("1 run(s), 1 evaluation table(s)"), "{out}");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<td>sft &lt;b&gt;</td>"), "names are escaped");
    assert!(text.contains("<th>model</th><th>accuracy</th>"), "the naming column comes first");
    assert!(!text.contains("http://") && !text.contains("https://"), "nothing is fetched: no CDN");

    let browser = concat!(env!("CARGO_MANIFEST_DIR"), "/../rlhf-server/tests/browser");
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new(browser).join("node_modules/playwright-core").exists();
    assert!(ready, "Chromium or playwright-core is missing: run ./scripts/setup-browser-tests.sh");
    let artifacts = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/test-artifacts"));
    std::fs::create_dir_all(artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let r = Command::new("node").current_dir(browser).args(["report.mjs", p(&html), p(&shot)]).output().unwrap();
    let summary = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{summary}\n{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert!(v["charts"].as_u64().unwrap() >= 4, "{v}");
    assert_eq!(v["tables"], 1);
    assert!(shot.exists());

    assert!(fails(&["report", "--out", p(&html)]).contains("nothing to report"));
    std::fs::write(dir.join("bad.jsonl"), "{\"a\": 1}\n{oops\n").unwrap();
    assert!(fails(&["report", "--eval", p(&dir.join("bad.jsonl"))]).contains("bad.jsonl:2: not valid JSON"));
}
