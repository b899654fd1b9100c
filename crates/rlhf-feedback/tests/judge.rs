//! The LLM judge against a real HTTP/1.1 server on 127.0.0.1 written here (std::net + threads),
//! scripted per test: position bias, ties, timeouts, 429/5xx retries, protocol errors, the
//! resumable cache and the API key.

use rlhf_feedback::judge::{
    judge, parse_item, read_items, ClientError, JudgeConfig, JudgeError, JudgeItem, Outcome, ReplyCache, Verdict,
    VerdictMode,
};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    authorization: Option<String>,
    body: Value,
    /// The texts under "[Response A]" and "[Response B]".
    a: String,
    b: String,
}

struct Reply {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    delay: Duration,
}

fn answer(content: &str) -> Reply {
    let body = json!({
        "id": "x", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    Reply { status: 200, body: body.to_string(), headers: vec![], delay: Duration::ZERO }
}

fn status(status: u16, body: &str) -> Reply {
    Reply { status, body: body.to_string(), headers: vec![], delay: Duration::ZERO }
}

type Handler = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

/// A fake OpenAI-compatible endpoint; `handler` gets the 1-based hit number and the request.
struct Fake {
    base: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn fake(handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let (h, s) = (Arc::clone(&hits), Arc::clone(&seen));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (handler, hits, seen) = (Arc::clone(&handler), Arc::clone(&h), Arc::clone(&s));
            std::thread::spawn(move || serve_one(stream, &*handler, &hits, &seen));
        }
    });
    Fake { base, hits, seen }
}

fn serve_one(stream: TcpStream, handler: &Handler, hits: &AtomicUsize, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut authorization, mut request_line) = (0usize, None, String::new());
    reader.read_line(&mut request_line).unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.trim_end().split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    assert!(request_line.starts_with("POST /v1/chat/completions "), "{request_line}");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let user = body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    let between = |from: &str, to: &str| user.split(from).nth(1).unwrap().split(to).next().unwrap().to_string();
    let request = Seen {
        authorization,
        a: between("[Response A]\n", "\n[Response B]\n"),
        b: between("[Response B]\n", "\nWhich response"),
        body,
    };
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    seen.lock().unwrap().push(request.clone());
    let reply = handler(n, &request);
    std::thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut stream = stream;
    // The client may have given up (timeout tests): a failed write is expected then.
    let _ = stream.write_all(format!("{head}\r\n{}", reply.body).as_bytes());
}

fn config(fake: &Fake) -> JudgeConfig {
    let mut c = JudgeConfig::new(&fake.base, "judge-model");
    c.guidelines = "Be fair.".into();
    c.timeout = Duration::from_secs(5);
    c.max_retries = 2;
    c.backoff_base = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(200);
    c.max_tokens = 16;
    c
}

fn items(lines: &[Value]) -> Vec<JudgeItem> {
    lines.iter().enumerate().map(|(i, l)| parse_item(&l.to_string(), &format!("t:{}", i + 1)).unwrap()).collect()
}

/// A candidate set of three (3 pairs) and a pair stored with the shorter response as `chosen`.
fn four_pairs() -> Vec<JudgeItem> {
    items(&[
        json!({"prompt": "Name a colour.", "responses": ["red", "deep blue", "a pale green"]}),
        json!({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "It is 4."}),
    ])
}

fn one_pair() -> Vec<JudgeItem> {
    items(&[json!({"prompt": "q", "responses": ["short", "longer one"]})])
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rlhf-judge-{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn prefer_longer(_: usize, s: &Seen) -> Reply {
    let v = if s.a.len() > s.b.len() { "A" } else { "B" };
    answer(&format!("Comparing lengths.\nVerdict: {v}"))
}

#[test]
fn a_position_biased_judge_gives_only_ties() {
    let fake = fake(|_, _| answer("A"));
    let report = judge(&config(&fake), &four_pairs(), None).unwrap();
    let c = report.counts;
    assert_eq!((c.pairs, c.ties, c.preferences, c.invalid, c.http_calls, c.retries), (4, 4, 0, 0, 8, 0));
    assert!(report.rows(&four_pairs(), "judge-model").is_empty());
    assert_eq!(report.position_bias(), None, "text verdicts carry no log-odds");
    // Each pair was shown in both orders.
    let orders: Vec<(String, String)> = fake.seen().iter().map(|s| (s.a.clone(), s.b.clone())).collect();
    for (x, y) in [("red", "deep blue"), ("red", "a pale green"), ("deep blue", "a pale green"), ("4", "It is 4.")] {
        assert!(
            orders.contains(&(x.into(), y.into())) && orders.contains(&(y.into(), x.into())),
            "{x}/{y}: {orders:?}"
        );
    }
    assert!(report.judgements.iter().all(|j| j.forward == Verdict::A && j.reversed == Verdict::A));
}

#[test]
fn a_consistent_judge_prefers_the_longer_response_in_input_order() {
    let fake = fake(prefer_longer);
    let mut cfg = config(&fake);
    cfg.concurrency = 4;
    let data = four_pairs();
    let report = judge(&cfg, &data, None).unwrap();
    assert_eq!((report.counts.preferences, report.counts.ties, report.counts.http_calls), (4, 0, 8));
    let rows = report.rows(&data, "judge-model");
    let chosen: Vec<&str> = rows.iter().map(|r| r["chosen"].as_str().unwrap()).collect();
    let rejected: Vec<&str> = rows.iter().map(|r| r["rejected"].as_str().unwrap()).collect();
    assert_eq!(chosen, ["deep blue", "a pale green", "a pale green", "It is 4."]);
    assert_eq!(rejected, ["red", "red", "deep blue", "4"], "the stored label of the pair is re-judged");
    assert_eq!(rows[3]["prompt"], json!([{"role": "user", "content": "2+2?"}]), "prompt kept as in the input");
    for r in &rows {
        assert_eq!(
            (&r["judge"], &r["annotator"], &r["agreement"], &r["orders"]),
            (&json!("judge-model"), &json!("judge:judge-model"), &json!(1.0), &json!(2))
        );
    }
    // The request carries what the config says, the guidelines as system prompt.
    let body = &fake.seen()[0].body;
    assert_eq!(
        (&body["model"], &body["temperature"], &body["max_tokens"]),
        (&json!("judge-model"), &json!(0.0), &json!(16))
    );
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be fair."}));
    // The message-list prompt is rendered as text for the judge.
    assert!(fake
        .seen()
        .iter()
        .any(|s| s.body["messages"][1]["content"].as_str().unwrap().starts_with("[Prompt]\n2+2?\n")));
}

/// A one-token reply with alternatives: always "A" first, by `bias` nats over " B", and the
/// letter of the longer response `lean` nats more likely than it would be otherwise.
fn biased_logprobs(s: &Seen, bias: f64, lean: f64) -> Reply {
    let towards_a = if s.a.len() > s.b.len() { lean } else { -lean };
    let (a, b) = (-0.1 + towards_a / 2.0, -0.1 - bias - towards_a / 2.0);
    let body = json!({
        "id": "x", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "length",
            "logprobs": {"content": [{"token": "A", "logprob": a, "top_logprobs": [
                {"token": "A", "logprob": a}, {"token": " B", "logprob": b}, {"token": "The", "logprob": -6.0}
            ]}]}}],
    });
    Reply { status: 200, body: body.to_string(), headers: vec![], delay: Duration::ZERO }
}

#[test]
fn logprob_verdicts_see_through_a_position_bias_that_text_verdicts_cannot() {
    // Text verdicts from this judge are "A" every time: all ties (see the test above). Its
    // logprobs still lean towards the longer response by 0.4 nats on top of a 3-nat A bias.
    let leaning = fake(|_, s| biased_logprobs(s, 3.0, 0.4));
    let mut cfg = config(&leaning);
    cfg.verdict = VerdictMode::Logprobs { tie_margin: 0.05 };
    let data = four_pairs();
    let report = judge(&cfg, &data, None).unwrap();
    assert_eq!((report.counts.preferences, report.counts.ties, report.counts.invalid), (4, 0, 0));
    let rows = report.rows(&data, "judge-model");
    let chosen: Vec<&str> = rows.iter().map(|r| r["chosen"].as_str().unwrap()).collect();
    assert_eq!(chosen, ["deep blue", "a pale green", "a pale green", "It is 4."]);
    for (r, j) in rows.iter().zip(&report.judgements) {
        let s = j.log_odds().unwrap();
        assert!((s.abs() - 0.4).abs() < 1e-9, "debiased log-odds {s}, want ±0.4");
        assert!((r["judge_log_odds"].as_f64().unwrap() - 0.4).abs() < 1e-9, "{r}");
    }
    // The summary sees the 3-nat lean towards "A" that the swap cancels, and the 0.4 left.
    let bias = report.position_bias().unwrap();
    assert!((bias.bias - 3.0).abs() < 1e-6 && (bias.mean_abs_log_odds - 0.4).abs() < 1e-9, "{bias:?}");
    let body = &leaning.seen()[0].body;
    assert_eq!(
        (&body["max_tokens"], &body["logprobs"], &body["top_logprobs"], &body["temperature"]),
        (&json!(1), &json!(true), &json!(20), &json!(0.0)),
        "a one-token answer with OpenAI's maximum of alternatives"
    );
    assert!(body["messages"][1]["content"].as_str().unwrap().ends_with("Answer with the letter alone: A or B."));

    // Within the margin it is a tie, from the same replies.
    let weak = fake(|_, s| biased_logprobs(s, 3.0, 0.04));
    let mut cfg = config(&weak);
    cfg.verdict = VerdictMode::Logprobs { tie_margin: 0.05 };
    let report = judge(&cfg, &data, None).unwrap();
    assert_eq!((report.counts.preferences, report.counts.ties), (0, 4));
}

#[test]
fn logprob_verdicts_need_an_endpoint_that_returns_top_logprobs() {
    let fake = fake(|_, _| answer("A"));
    let mut cfg = config(&fake);
    cfg.concurrency = 1;
    cfg.verdict = VerdictMode::Logprobs { tie_margin: 0.0 };
    let err = judge(&cfg, &one_pair(), None).unwrap_err();
    assert!(matches!(err, JudgeError::Client(ClientError::Protocol { .. })), "{err:?}");
    assert!(err.to_string().contains("logprobs"), "{err}");
    assert_eq!(fake.hits(), 1, "a reply without logprobs is not retried");
}

#[test]
fn a_tie_verdict_is_a_tie_and_noise_is_invalid() {
    let fake =
        fake(|_, s| if s.a == "red" || s.b == "red" { answer("They are equal.\nTie") } else { answer("no idea") });
    let report = judge(&config(&fake), &four_pairs(), None).unwrap();
    let c = report.counts;
    assert_eq!((c.pairs, c.ties, c.invalid, c.preferences), (4, 2, 2, 0));
    assert_eq!(report.judgements[0].outcome, Outcome::Tie);
    assert_eq!(report.judgements[2].forward, Verdict::Invalid { reply: "no idea".into() }, "the reply is kept");
}

#[test]
fn a_reply_slower_than_the_timeout_is_retried() {
    let fake = fake(|n, s| {
        let mut r = prefer_longer(n, s);
        if n == 1 {
            r.delay = Duration::from_millis(1500);
        }
        r
    });
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_millis(300);
    cfg.concurrency = 1;
    let start = Instant::now();
    let report = judge(&cfg, &one_pair(), None).unwrap();
    assert_eq!((report.counts.preferences, report.counts.http_calls, report.counts.retries), (1, 3, 1));
    assert!(start.elapsed() < Duration::from_millis(1400), "did not wait for the slow reply: {:?}", start.elapsed());
}

#[test]
fn without_retries_a_timeout_is_a_clear_error() {
    let fake = fake(|n, s| Reply { delay: Duration::from_millis(1500), ..prefer_longer(n, s) });
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_millis(300);
    cfg.max_retries = 0;
    cfg.concurrency = 1;
    let err = judge(&cfg, &one_pair(), None).unwrap_err();
    assert!(matches!(err, JudgeError::Client(ClientError::Timeout { attempts: 1, .. })), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}/chat/completions", fake.base)) && msg.contains("timed out after 0.3 s"), "{msg}");
    assert_eq!(fake.hits(), 1);
}

#[test]
fn a_429_is_retried_after_the_servers_retry_after() {
    // Retry-After 1 s, then 0 s; the exponential backoff would be 5–10 s, so finishing in under
    // 4 s shows the header was used, and taking at least 1 s that it was waited for.
    let fake = fake(|n, s| match n {
        1 | 2 => Reply {
            headers: vec![("Retry-After".into(), if n == 1 { "1" } else { "0" }.into())],
            ..status(429, r#"{"error": {"message": "slow down", "type": "rate_limit"}}"#)
        },
        _ => prefer_longer(n, s),
    });
    let mut cfg = config(&fake);
    cfg.concurrency = 1;
    cfg.backoff_base = Duration::from_secs(10);
    cfg.max_backoff = Duration::from_secs(20);
    let start = Instant::now();
    let report = judge(&cfg, &one_pair(), None).unwrap();
    let took = start.elapsed();
    assert_eq!((report.counts.retries, report.counts.http_calls, report.counts.preferences), (2, 4, 1));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn retry_after_is_capped_and_5xx_is_retried_until_retries_run_out() {
    let fake = fake(|n, s| match n {
        1 => Reply { headers: vec![("Retry-After".into(), "3600".into())], ..status(429, "{}") },
        2 => status(503, r#"{"error": {"message": "overloaded"}}"#),
        _ => prefer_longer(n, s),
    });
    let mut cfg = config(&fake);
    cfg.concurrency = 1;
    let start = Instant::now();
    let report = judge(&cfg, &one_pair(), None).unwrap();
    assert_eq!(report.counts.retries, 2);
    assert!(start.elapsed() < Duration::from_secs(2), "Retry-After not capped: {:?}", start.elapsed());

    let down = self::fake(|_, _| status(502, r#"{"error": {"message": "bad gateway upstream"}}"#));
    let mut cfg = config(&down);
    cfg.concurrency = 1;
    let err = judge(&cfg, &one_pair(), None).unwrap_err().to_string();
    assert!(err.contains("HTTP 502 after 3 attempt(s): bad gateway upstream"), "{err}");
    assert_eq!(down.hits(), 3);
}

#[test]
fn a_malformed_200_is_a_protocol_error_and_not_retried() {
    for (body, want) in [
        ("<html>proxy login</html>", "the body is not JSON"),
        (r#"{"choices": []}"#, "no choices[0].message.content"),
        (r#"{"choices": [{"message": {"content": null}}]}"#, "choices[0].message.content is null"),
    ] {
        let fake = fake(move |_, _| status(200, body));
        let mut cfg = config(&fake);
        cfg.concurrency = 1;
        let err = judge(&cfg, &one_pair(), None).unwrap_err();
        assert!(matches!(err, JudgeError::Client(ClientError::Protocol { .. })), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(want) && msg.contains(&fake.base) && msg.contains("not an OpenAI chat completion"),
            "{msg}"
        );
        assert_eq!(fake.hits(), 1, "{body}");
    }
}

#[test]
fn a_400_reports_the_servers_message_and_is_not_retried() {
    let fake = fake(|_, _| {
        status(
            400,
            r#"{"error": {"message": "The model `judge-model` does not exist", "type": "invalid_request_error"}}"#,
        )
    });
    let mut cfg = config(&fake);
    cfg.concurrency = 1; // one request at a time, so every hit past the first would be a retry
    let err = judge(&cfg, &one_pair(), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("HTTP 400 after 1 attempt(s): The model `judge-model` does not exist"), "{msg}");
    assert_eq!(fake.hits(), 1);
}

#[test]
fn a_refused_connection_is_retried_then_reported() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let mut cfg = JudgeConfig::new(&format!("http://127.0.0.1:{port}/v1/"), "m");
    cfg.backoff_base = Duration::from_millis(5);
    cfg.max_retries = 2;
    let err = judge(&cfg, &one_pair(), None).unwrap_err();
    assert!(matches!(err, JudgeError::Client(ClientError::Transport { attempts: 3, .. })), "{err:?}");
    assert!(err.to_string().contains(&format!("http://127.0.0.1:{port}/v1/chat/completions")), "{err}");
}

#[test]
fn a_crashed_run_resumes_from_the_cache_without_resending() {
    let data = four_pairs(); // 8 requests
    let path = temp("resume");
    // Run 1: the server answers 3 requests, then fails hard.
    let failing = fake(|n, s| if n <= 3 { prefer_longer(n, s) } else { status(500, "{}") });
    let mut cfg = config(&failing);
    cfg.max_retries = 0;
    cfg.concurrency = 2;
    let (cache, load) = ReplyCache::open(&path).unwrap();
    assert_eq!(load.entries, 0);
    assert!(matches!(
        judge(&cfg, &data, Some(&cache)),
        Err(JudgeError::Client(ClientError::Status { status: 500, .. }))
    ));
    drop(cache);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "every answered call is on disk:\n{text}");
    // A crash in the middle of writing the third line.
    let cut = text.len() - text.lines().last().unwrap().len() / 2 - 1;
    std::fs::write(&path, &text[..cut]).unwrap();

    // Run 2: a healthy server gets only what is missing.
    let healthy = fake(prefer_longer);
    let mut cfg = config(&healthy);
    cfg.concurrency = 3;
    let (cache, load) = ReplyCache::open(&path).unwrap();
    assert_eq!((load.entries, load.warnings.len()), (2, 1), "{:?}", load.warnings);
    let report = judge(&cfg, &data, Some(&cache)).unwrap();
    assert_eq!((report.counts.cache_hits, report.counts.http_calls, healthy.hits()), (2, 6, 6));
    assert_eq!(report.counts.preferences, 4);
    drop(cache);

    // Run 3: everything is cached, nothing is sent, and the answer is what a fresh run gives.
    let (cache, load) = ReplyCache::open(&path).unwrap();
    assert_eq!((load.entries, load.warnings.len()), (8, 0));
    let again = judge(&cfg, &data, Some(&cache)).unwrap();
    assert_eq!((again.counts.cache_hits, again.counts.http_calls, healthy.hits()), (8, 0, 6));
    let fresh = judge(&config(&fake(prefer_longer)), &data, None).unwrap();
    assert_eq!(again.rows(&data, "m"), fresh.rows(&data, "m"));
    // The cache key ignores the URL: the same judge elsewhere reuses it.
    let elsewhere = fake(prefer_longer);
    let moved = judge(&config(&elsewhere), &data, Some(&cache)).unwrap();
    assert_eq!((moved.counts.cache_hits, elsewhere.hits()), (8, 0));
    // ...but not other guidelines.
    let mut other = config(&elsewhere);
    other.guidelines = "Prefer brevity.".into();
    assert_eq!(judge(&other, &data, Some(&cache)).unwrap().counts.cache_hits, 0);
}

#[test]
fn the_api_key_is_a_bearer_token_and_never_in_errors() {
    const KEY: &str = "sk-test-5ecret";
    let fake = fake(|_, s| match s.authorization.as_deref() {
        Some(auth) if auth == format!("Bearer {KEY}") => answer("A"),
        other => status(
            401,
            &json!({"error": {"message": format!("Incorrect API key provided: {}", other.unwrap_or("none"))}})
                .to_string(),
        ),
    });
    let mut cfg = config(&fake);
    cfg.api_key = Some(KEY.into());
    judge(&cfg, &one_pair(), None).unwrap();
    assert!(fake.seen().iter().all(|s| s.authorization.as_deref() == Some("Bearer sk-test-5ecret")));

    // A server that echoes the (wrong) key back: the message survives, the key does not.
    cfg.api_key = Some("sk-wrong-k3y".into());
    let err = judge(&cfg, &one_pair(), None).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("Incorrect API key provided: Bearer <api key>"), "{shown}");
    assert!(!shown.contains("sk-wrong-k3y"), "{shown}");
    // No key, no header.
    cfg.api_key = None;
    assert!(judge(&cfg, &one_pair(), None).unwrap_err().to_string().contains("provided: none"));
}

#[test]
fn bad_input_lines_name_file_line_and_field() {
    let path = temp("input");
    std::fs::write(
        &path,
        "{\"prompt\": \"q\", \"responses\": [\"a\", \"b\"]}\n\n{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": 5}\n",
    )
    .unwrap();
    let err = read_items(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3: field `rejected`: must be a string", path.display())), "{err}");
    std::fs::write(&path, "{\"prompt\": \"q\", \"responses\": [\"a\", \"b\"]}\n\n").unwrap();
    assert_eq!(read_items(&path).unwrap().len(), 1);
}
