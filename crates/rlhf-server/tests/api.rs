//! The label API over real HTTP on loopback: what it refuses (and that a refusal stores
//! nothing), how it shares items out, idempotent resubmission, and the export formats.

use rlhf_feedback::labels::export::{export, ExportFormat, ExportOptions};
use rlhf_feedback::labels::{Allocation, LabelDb, NewItem, NewResponse, Role};
use rlhf_server::label::{spawn, RunningServer, ServerOptions};
use serde_json::{json, Value};
use std::path::PathBuf;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-label-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("labels.db")
}

fn item(i: usize, k: usize) -> NewItem {
    NewItem {
        prompt: format!("prompt {i}"),
        prompt_json: None,
        source: Some(format!("test:{i}")),
        responses: (0..k)
            .map(|r| NewResponse { text: format!("answer {r} of {i}"), temperature: Some(0.7), model: None })
            .collect(),
    }
}

struct Fixture {
    server: RunningServer,
    path: PathBuf,
    alice: String,
    bob: String,
    admin: String,
}

fn fixture(name: &str, items: usize, allocation: Allocation) -> Fixture {
    let path = temp_db(name);
    let mut db = LabelDb::open(&path).unwrap();
    for i in 0..items {
        db.add_item(&item(i, 4)).unwrap();
    }
    let alice = db.add_annotator("alice", Role::Annotator).unwrap();
    let bob = db.add_annotator("bob", Role::Annotator).unwrap();
    let admin = db.add_annotator("lead", Role::Admin).unwrap();
    let opts = ServerOptions { allocation, max_body_bytes: 4096, ..ServerOptions::default() };
    let server = spawn("127.0.0.1:0".parse().unwrap(), &path, opts).unwrap();
    Fixture { server, path, alice, bob, admin }
}

/// (status, JSON body) of one request; `token` None sends no Authorization header.
fn call(f: &Fixture, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, &format!("http://{}{path}", f.server.addr));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = r.status();
    (status, r.into_json().unwrap_or(Value::Null))
}

fn stored(f: &Fixture) -> usize {
    LabelDb::open(&f.path).unwrap().submissions().unwrap().len()
}

fn task(f: &Fixture, token: &str) -> Value {
    let (status, t) = call(f, "GET", "/api/task", Some(token), None);
    assert_eq!(status, 200, "{t}");
    t
}

fn ids(task: &Value) -> Vec<i64> {
    task["responses"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

fn submit_body(tiers: &[Vec<i64>]) -> String {
    json!({ "action": "submit", "ranking": tiers }).to_string()
}

#[test]
fn refusals_are_4xx_with_a_message_and_store_nothing() {
    let f = fixture("refusals", 3, Allocation { overlap: 0.0, overlap_annotators: 2 });
    let t = task(&f, &f.alice);
    let a = t["assignment"].as_i64().unwrap();
    let r = ids(&t);
    let url = format!("/api/assignments/{a}");
    let good = submit_body(&[vec![r[0]], vec![r[1]], vec![r[2]], vec![r[3]]]);
    let injection = "'; DROP TABLE submissions; --";
    let cases: Vec<(&str, Option<String>, String, u16, &str)> = vec![
        ("no token", None, good.clone(), 401, "missing `Authorization: Bearer <token>`"),
        ("unknown token", Some("rlhf_not-a-token".into()), good.clone(), 401, "unknown token"),
        ("injected token", Some(format!("x' OR '1'='1{injection}")), good.clone(), 401, "unknown token"),
        ("another annotator's assignment", Some(f.bob.clone()), good.clone(), 404, "is not one of yours"),
        ("missing response", Some(f.alice.clone()), submit_body(&[vec![r[0]], vec![r[1], r[2]]]), 400, "are missing"),
        (
            "duplicate response",
            Some(f.alice.clone()),
            submit_body(&[vec![r[0], r[1]], vec![r[1]], vec![r[2], r[3]]]),
            400,
            "appears more than once",
        ),
        (
            "foreign response",
            Some(f.alice.clone()),
            submit_body(&[vec![r[0], r[1], r[2]], vec![r[3] + 1000]]),
            400,
            "is not one of this item's responses",
        ),
        (
            "empty tier",
            Some(f.alice.clone()),
            submit_body(&[vec![r[0], r[1], r[2], r[3]], vec![]]),
            400,
            "tier 1 is empty",
        ),
        ("empty ranking", Some(f.alice.clone()), submit_body(&[]), 400, "ranking: is empty"),
        (
            "ids as text",
            Some(f.alice.clone()),
            json!({"action": "submit", "ranking": [[injection]]}).to_string(),
            400,
            "not valid JSON for this call",
        ),
        (
            "injected action",
            Some(f.alice.clone()),
            json!({"action": injection}).to_string(),
            400,
            "is not one of \"submit\", \"skip\", \"flag\"",
        ),
        (
            "injected flag",
            Some(f.alice.clone()),
            json!({"action": "flag", "flag": injection}).to_string(),
            400,
            "must be \"unsafe\" or \"broken\"",
        ),
        (
            "injected comment, bad ranking",
            Some(f.alice.clone()),
            json!({"action": "submit", "ranking": [[r[0]]], "comment": injection}).to_string(),
            400,
            "are missing",
        ),
        (
            "unknown field",
            Some(f.alice.clone()),
            json!({"action": "skip", "rankng": []}).to_string(),
            400,
            "unknown field `rankng`",
        ),
        (
            "ranking with skip",
            Some(f.alice.clone()),
            json!({"action": "skip", "ranking": [[r[0]]]}).to_string(),
            400,
            "\"ranking\" only with \"submit\"",
        ),
        (
            "submit without ranking",
            Some(f.alice.clone()),
            json!({"action": "submit"}).to_string(),
            400,
            "needs a \"ranking\"",
        ),
        ("not JSON", Some(f.alice.clone()), "{\"action\": ".into(), 400, "not valid JSON"),
        (
            "oversized body",
            Some(f.alice.clone()),
            json!({"action": "skip", "comment": "x".repeat(5000)}).to_string(),
            413,
            "larger than the limit of 4096 bytes",
        ),
    ];
    for (what, token, body, status, message) in &cases {
        let (got, reply) = call(&f, "POST", &url, token.as_deref(), Some(body));
        assert_eq!(got, *status, "{what}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{what}: `{error}` should say `{message}`");
        assert_eq!(stored(&f), 0, "{what}: a refused request stored something");
    }
    // Names and paths are checked too.
    let (status, reply) = call(&f, "POST", "/api/assignments/1%20OR%201=1", Some(&f.alice), Some(&good));
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap_or_default().contains("must be a number"), "{reply}");
    assert_eq!(call(&f, "GET", "/api/task", None, None).0, 401);
    assert_eq!(call(&f, "GET", "/api/admin/summary", Some(&f.alice), None).0, 403);
    assert_eq!(call(&f, "PUT", "/api/guidelines", Some(&f.alice), Some(r#"{"text": "mine"}"#)).0, 403);
    assert_eq!(call(&f, "POST", "/api/login", None, Some(&json!({"token": injection}).to_string())).0, 401);
    assert_eq!(call(&f, "GET", "/api/nothing-here", Some(&f.alice), None).0, 404);
    let mut db = LabelDb::open(&f.path).unwrap();
    assert!(db.add_annotator(injection, Role::Annotator).is_ok(), "a name is data, not SQL");
    assert!(db.add_annotator("alice", Role::Annotator).unwrap_err().to_string().contains("already exists"));
    assert_eq!(stored(&f), 0);

    // A comment that looks like SQL is stored verbatim with a valid answer, and executes nothing.
    let body =
        json!({"action": "submit", "ranking": [[r[0]], [r[1]], [r[2]], [r[3]]], "comment": injection}).to_string();
    let (status, reply) = call(&f, "POST", &url, Some(&f.alice), Some(&body));
    assert_eq!((status, reply["duplicate"].clone()), (200, json!(false)), "{reply}");
    let subs = LabelDb::open(&f.path).unwrap().submissions().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].comment.as_deref(), Some(injection));
}

#[test]
fn a_resent_answer_is_a_duplicate_and_a_changed_one_is_refused() {
    let f = fixture("idempotent", 2, Allocation { overlap: 0.0, overlap_annotators: 2 });
    let t = task(&f, &f.alice);
    assert_eq!(
        task(&f, &f.alice)["assignment"],
        t["assignment"],
        "an open assignment is handed out again, not a new one"
    );
    let r = ids(&t);
    let url = format!("/api/assignments/{}", t["assignment"]);
    let body = submit_body(&[vec![r[2]], vec![r[0], r[1]], vec![r[3]]]);
    let (s1, first) = call(&f, "POST", &url, Some(&f.alice), Some(&body));
    let (s2, again) = call(&f, "POST", &url, Some(&f.alice), Some(&body));
    assert_eq!((s1, first["duplicate"].clone(), s2, again["duplicate"].clone()), (200, json!(false), 200, json!(true)));
    let (s3, changed) =
        call(&f, "POST", &url, Some(&f.alice), Some(&submit_body(&[vec![r[0]], vec![r[1]], vec![r[2]], vec![r[3]]])));
    assert_eq!(s3, 409, "{changed}");
    let subs = LabelDb::open(&f.path).unwrap().submissions().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].tiers, vec![vec![r[2]], vec![r[0], r[1]], vec![r[3]]]);
    assert_ne!(task(&f, &f.alice)["item"], t["item"], "the next task is a new item");
}

#[test]
fn overlapping_items_go_to_two_annotators_and_the_rest_to_one() {
    // Everything overlaps: both annotators get both items, each in their own response order.
    let f = fixture("overlap", 2, Allocation { overlap: 1.0, overlap_annotators: 2 });
    let mut seen = std::collections::BTreeMap::new();
    for token in [&f.alice, &f.bob] {
        for _ in 0..2 {
            let t = task(&f, token);
            let r = ids(&t);
            seen.entry(t["item"].as_i64().unwrap()).or_insert_with(Vec::new).push(r.clone());
            let (s, reply) = call(
                &f,
                "POST",
                &format!("/api/assignments/{}", t["assignment"]),
                Some(token),
                Some(&submit_body(&[r.clone()[..2].to_vec(), r[2..].to_vec()])),
            );
            assert_eq!(s, 200, "{reply}");
        }
        let last = task(&f, token);
        assert_eq!(last["done"], json!(true), "{last}");
        assert_eq!(last["progress"], json!({"done": 2, "total": 2}));
    }
    assert_eq!(seen.len(), 2);
    assert!(seen.values().all(|orders| orders.len() == 2));
    let (status, summary) = call(&f, "GET", "/api/admin/summary", Some(&f.admin), None);
    assert_eq!(status, 200);
    assert_eq!(summary["items"]["complete"], 2);
    assert_eq!(summary["agreement"]["items_with_overlap"], 2);

    // Nothing overlaps: two annotators split three items.
    let g = fixture("no-overlap", 3, Allocation { overlap: 0.0, overlap_annotators: 2 });
    let mut items = vec![];
    for token in [&g.alice, &g.bob, &g.alice, &g.bob] {
        let t = task(&g, token);
        if t["done"] == json!(true) {
            continue;
        }
        items.push(t["item"].as_i64().unwrap());
        let (s, _) = call(
            &g,
            "POST",
            &format!("/api/assignments/{}", t["assignment"]),
            Some(token),
            Some(r#"{"action": "skip"}"#),
        );
        assert_eq!(s, 200);
    }
    // A skip gives the item back to the pool for someone else: alice's skipped item goes to bob.
    assert_eq!(items, vec![1, 1, 2, 2]);
}

#[test]
fn pages_carry_a_strict_content_security_policy() {
    let f = fixture("headers", 1, Allocation::default());
    for path in ["/", "/static/app.js", "/static/app.css", "/api/task"] {
        let r = match ureq::get(&format!("http://{}{path}", f.server.addr)).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("set-cookie").is_none(), "{path}: the app never sets cookies");
    }
}

#[test]
fn export_gives_c_k_2_pairs_drops_ties_and_leaves_out_flagged_items() {
    let path = temp_db("export");
    let mut db = LabelDb::open(&path).unwrap();
    for i in 0..3 {
        db.add_item(&item(i, 4)).unwrap();
    }
    let alice = db.add_annotator("alice", Role::Annotator).unwrap();
    let bob = db.add_annotator("bob", Role::Annotator).unwrap();
    let everyone = Allocation { overlap: 1.0, overlap_annotators: 2 };
    let who = |db: &LabelDb, t: &str| db.annotator_by_token(t).unwrap().unwrap();
    let (a, b) = (who(&db, &alice), who(&db, &bob));
    use rlhf_feedback::labels::Decision;
    // Item 1: alice ranks without ties (6 pairs), bob ties the middle two (5 pairs).
    let ta = db.next_task(&a, everyone).unwrap().unwrap();
    let tb = db.next_task(&b, everyone).unwrap().unwrap();
    assert_eq!(ta.item, tb.item);
    let r: Vec<i64> = {
        let mut r: Vec<i64> = ta.responses.iter().map(|x| x.id).collect();
        r.sort();
        r
    };
    db.submit(
        &a,
        ta.assignment,
        &Decision::Submit { ranking: vec![vec![r[0]], vec![r[1]], vec![r[2]], vec![r[3]]] },
        None,
    )
    .unwrap();
    db.submit(&b, tb.assignment, &Decision::Submit { ranking: vec![vec![r[0]], vec![r[1], r[2]], vec![r[3]]] }, None)
        .unwrap();
    // Item 2: alice ranks it, bob flags it: left out.
    let ta = db.next_task(&a, everyone).unwrap().unwrap();
    let tb = db.next_task(&b, everyone).unwrap().unwrap();
    let r2: Vec<i64> = ta.responses.iter().map(|x| x.id).collect();
    db.submit(&a, ta.assignment, &Decision::Submit { ranking: r2.iter().map(|&x| vec![x]).collect() }, None).unwrap();
    db.submit(&b, tb.assignment, &Decision::Flag { flag: "broken".into() }, None).unwrap();

    let (pairs, counts) = export(&db, ExportFormat::Pairs, ExportOptions::default()).unwrap();
    assert_eq!(pairs.len(), 6 + 5);
    assert_eq!((counts.flagged_items, counts.tied_pairs), (1, 1));
    let first = &pairs[0];
    assert_eq!(
        (first["prompt"].as_str(), first["chosen"].as_str(), first["rejected"].as_str()),
        (Some("prompt 0"), Some("answer 0 of 0"), Some("answer 1 of 0"))
    );
    assert_eq!(
        (first["annotator"].as_str(), first["annotators"].as_u64(), first["agreement"].as_f64()),
        (Some("alice"), Some(2), Some(1.0))
    );
    // alice's r1 ≻ r2 is not shared by bob (who tied them): agreement 1/2.
    let split = pairs.iter().find(|p| p["chosen"] == "answer 1 of 0" && p["rejected"] == "answer 2 of 0").unwrap();
    assert_eq!(split["agreement"], 0.5);
    let (strict, c) = export(&db, ExportFormat::Pairs, ExportOptions { min_agreement: 0.75 }).unwrap();
    assert_eq!((strict.len(), c.below_agreement), (10, 1));

    let (rankings, _) = export(&db, ExportFormat::Rankings, ExportOptions::default()).unwrap();
    assert_eq!(rankings.len(), 2);
    assert_eq!(rankings[0]["ranking"], json!([0, 1, 2, 3]));
    assert_eq!(rankings[1]["ranking"], json!([0, [1, 2], 3]));
    assert_eq!(rankings[1]["responses"][1], "answer 1 of 0");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let f = fixture("bearer-case", 1, Allocation::default());
    let get =
        |auth: &str| match ureq::get(&format!("http://{}/api/task", f.server.addr)).set("Authorization", auth).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        };
    // RFC 7235: the scheme is a case-insensitive token.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        assert_eq!(get(&format!("{scheme} {}", f.alice)), 200, "{scheme}");
    }
    assert_eq!(get(&format!("Basic {}", f.alice)), 401);
    assert_eq!(get(&format!("Bearer{}", f.alice)), 401);
    assert_eq!(get("bearer "), 401);
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    use std::io::{Read, Write};
    let path = temp_db("slowloris");
    let opts = ServerOptions { header_timeout: std::time::Duration::from_millis(500), ..ServerOptions::default() };
    let server = spawn("127.0.0.1:0".parse().unwrap(), &path, opts).unwrap();
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /api/task HTTP/1.1\r\nHost: x\r\nX-Never: ").unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    // The server ends the connection (EOF, possibly after a 408) instead of waiting for ever.
    let _ = slow.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(waited < std::time::Duration::from_secs(10), "closed after {waited:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    // Meanwhile complete requests are served as before.
    let status = match ureq::get(&format!("http://{}/api/task", server.addr)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 401);
    server.stop().unwrap();
}

/// Mutated request bodies and paths get a 2xx or 4xx answer, never a 5xx, and the server keeps
/// serving.
#[test]
fn fuzzed_requests_never_break_the_server() {
    use rlhf_model::fuzz::{cases, Mutator};
    let f = fixture("fuzz", 4, Allocation::default());
    let t = task(&f, &f.alice);
    let a = t["assignment"].as_i64().unwrap();
    let submit = submit_body(&[ids(&t)]);
    let bodies = [
        (format!("/api/assignments/{a}"), "POST", submit.clone()),
        ("/api/login".to_string(), "POST", json!({"token": f.bob}).to_string()),
        ("/api/guidelines".to_string(), "PUT", json!({"text": "Be kind."}).to_string()),
    ];
    for seed in 0..cases(300) as u64 {
        let mut m = Mutator::new(seed);
        let (path, method, body) = &bodies[m.below(bodies.len())];
        let body = String::from_utf8_lossy(&m.mutate(body.as_bytes())).into_owned();
        let token = [&f.alice, &f.admin][m.below(2)];
        let (status, _) = call(&f, method, path, Some(token), Some(&body));
        assert!(status < 500, "seed {seed}: {method} {path} {body:?} → {status}");
        let path = String::from_utf8_lossy(&m.mutate(path.as_bytes())).into_owned();
        if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) {
            let (status, _) = call(&f, "GET", &path, Some(token), None);
            assert!(status < 500, "seed {seed}: GET {path} → {status}");
        }
    }
    assert_eq!(call(&f, "GET", "/api/task", Some(&f.bob), None).0, 200, "still serving");
}
