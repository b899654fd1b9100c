//! Loading SFT, preference and prompt datasets from JSON lines with the tiny tokenizer: the
//! tokenisation contract (separate prompt/response tokens, EOS, one BOS, assistant-only loss),
//! TRL's column conventions, and bad records named by file, line and field.

mod common;

use common::{scratch, write_lines};
use rlhf_data::{
    load_preferences, load_prompts, load_sft, tiny, LoadOptions, Message, OnBadRecord, TextOrMessages, Tokenizer,
};

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn enc(t: &Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text, false).unwrap()
}

#[test]
fn standard_pair_tokenises_prompt_and_response_separately_and_appends_eos() {
    let dir = scratch("standard-pair");
    let path = write_lines(&dir, "p.jsonl", &[r#"{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}"#]);
    let t = tiny::tokenizer_with(Some(tiny::CHATML_TEMPLATE), true);
    let loaded = load_preferences(&path, &t, &opts()).unwrap();
    let g = &loaded.examples[0];
    assert_eq!(g.prompt, [vec![1], enc(&t, "2+2=")].concat(), "one BOS then the prompt");
    assert_eq!(g.pairs, vec![([enc(&t, " 4"), vec![2]].concat(), [enc(&t, " 5"), vec![2]].concat())]);
    assert_eq!(g.source.to_string(), format!("{}:1", path.display()));
}

#[test]
fn conversational_pair_response_is_the_template_suffix() {
    let dir = scratch("chat-pair");
    let path = write_lines(
        &dir,
        "p.jsonl",
        &[
            r#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go away"}]}"#,
        ],
    );
    let t = tiny::tokenizer();
    let g = &load_preferences(&path, &t, &opts()).unwrap().examples[0];
    assert_eq!(g.prompt, enc(&t, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    // A response ends at its end-of-turn token, as a sampled one does (the template's "\n"
    // after it is dropped), so a reward model is trained where PPO and eval will read it.
    assert_eq!(g.pairs[0].0, enc(&t, "hello<|im_end|>"));
    assert_eq!(g.pairs[0].1, enc(&t, "go away<|im_end|>"));
    assert!(t.eos_ids().contains(g.pairs[0].0.last().unwrap()));
}

#[test]
fn a_template_that_renders_bos_gives_one_bos() {
    let dir = scratch("bos");
    let path = write_lines(&dir, "p.jsonl", &[r#"{"prompt": [{"role": "user", "content": "hi"}]}"#]);
    let template = format!("{{{{ bos_token }}}}{}", tiny::CHATML_TEMPLATE);
    let t = tiny::tokenizer_with(Some(&template), true);
    let p = &load_prompts(&path, &t, &opts()).unwrap().examples[0];
    assert_eq!(&p.prompt_ids[..2], &[1, 3], "{:?}", p.prompt_ids);
    assert_eq!(p.prompt, TextOrMessages::Messages(vec![Message::user("hi")]));
}

#[test]
fn implicit_prompts_are_the_shared_beginning() {
    let dir = scratch("implicit");
    let path = write_lines(
        &dir,
        "p.jsonl",
        &[
            r#"{"chosen": "The sky is blue", "rejected": "The sky is green"}"#,
            r#"{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]}"#,
        ],
    );
    let t = tiny::tokenizer();
    let groups = load_preferences(&path, &t, &opts()).unwrap().examples;
    assert_eq!(groups[0].prompt, enc(&t, "The sky is"));
    assert_eq!(groups[0].pairs[0].0, [enc(&t, " blue"), vec![2]].concat());
    assert_eq!(groups[1].prompt, enc(&t, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"));
    assert_eq!(groups[1].pairs[0].1, enc(&t, "bad<|im_end|>"));
}

#[test]
fn a_ranking_of_k_gives_k_choose_2_pairs_in_one_group() {
    let dir = scratch("ranking");
    let path = write_lines(
        &dir,
        "r.jsonl",
        &[r#"{"prompt": "Q", "responses": ["a", "b", "c", "d"], "ranking": [2, 0, 3, 1]}"#],
    );
    let t = tiny::tokenizer();
    let g = &load_preferences(&path, &t, &opts()).unwrap().examples[0];
    let r = |s: &str| [enc(&t, s), vec![2]].concat();
    let expected: Vec<_> = [("c", "a"), ("c", "d"), ("c", "b"), ("a", "d"), ("a", "b"), ("d", "b")]
        .iter()
        .map(|(w, l)| (r(w), r(l)))
        .collect();
    assert_eq!(g.pairs, expected);
    assert_eq!(g.pair_examples().count(), 6);
}

#[test]
fn a_tied_tier_is_compared_with_other_tiers_but_not_within() {
    let dir = scratch("ranking-ties");
    let path = write_lines(
        &dir,
        "r.jsonl",
        &[r#"{"prompt": "Q", "responses": ["a", "b", "c", "d"], "ranking": [[2], [0, 3], 1]}"#],
    );
    let t = tiny::tokenizer();
    let g = &load_preferences(&path, &t, &opts()).unwrap().examples[0];
    let r = |s: &str| [enc(&t, s), vec![2]].concat();
    let expected: Vec<_> =
        [("c", "a"), ("c", "d"), ("c", "b"), ("a", "b"), ("d", "b")].iter().map(|(w, l)| (r(w), r(l))).collect();
    assert_eq!(g.pairs, expected);
}

#[test]
fn sft_learns_every_assistant_turn_and_nothing_else() {
    let dir = scratch("sft-multi");
    let path = write_lines(
        &dir,
        "s.jsonl",
        &[
            r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]}"#,
            r#"{"prompt": "P", "completion": "C"}"#,
        ],
    );
    let t = tiny::tokenizer();
    let examples = load_sft(&path, &t, &opts()).unwrap().examples;
    let e = &examples[0];
    let full = t
        .apply_chat_template(
            &[
                Message::system("S"),
                Message::user("U1"),
                Message::assistant("A1"),
                Message::user("U2"),
                Message::assistant("A2"),
            ],
            false,
        )
        .unwrap();
    // The whole rendering, up to the final end-of-turn token (where generation stops).
    let full = full.strip_suffix('\n').unwrap();
    assert_eq!(e.input_ids, enc(&t, full));
    let learned: Vec<u32> = e.input_ids.iter().zip(&e.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
    assert_eq!(t.decode(&learned, false).unwrap(), "A1<|im_end|>\nA2<|im_end|>");
    assert_eq!(examples[1].input_ids, [enc(&t, "P"), enc(&t, "C"), vec![2]].concat());
    assert_eq!(examples[1].loss_mask, vec![0, 1, 1]);
}

#[test]
fn prompts_keep_answers_and_tests() {
    let dir = scratch("prompts");
    let path = write_lines(
        &dir,
        "q.jsonl",
        &[
            r#"{"prompt": "What is 2+2?", "answer": 4}"#,
            "",
            r#"{"prompt": "Write f", "tests": "assert f() == 1", "answer": null}"#,
        ],
    );
    let t = tiny::tokenizer();
    let ex = load_prompts(&path, &t, &opts()).unwrap().examples;
    assert_eq!((ex[0].answer.as_deref(), ex[0].tests.as_deref()), (Some("4"), None));
    assert_eq!((ex[1].answer.as_deref(), ex[1].tests.as_deref()), (None, Some("assert f() == 1")));
    assert_eq!(ex[1].source.to_string(), format!("{}:3", path.display()), "blank lines still count");
}

type LoadError = fn(&std::path::Path, &Tokenizer, &LoadOptions) -> Option<String>;

/// Loads a file of `good` then `bad` with Fail; returns the error text and the expected
/// `path:2: ` start.
fn error_for(name: &str, good: &str, bad: &str, load: LoadError) -> (String, String) {
    let dir = scratch(name);
    let path = write_lines(&dir, "data.jsonl", &[good, bad]);
    let err = load(
        &path,
        &tiny::tokenizer(),
        &LoadOptions { max_length: 16, max_prompt_length: 0, on_bad_record: OnBadRecord::Fail },
    )
    .unwrap();
    (err, format!("{}:2: ", path.display()))
}

fn pref_error(path: &std::path::Path, t: &Tokenizer, o: &LoadOptions) -> Option<String> {
    load_preferences(path, t, o).err().map(|e| e.to_string())
}

#[test]
fn bad_records_name_file_line_and_field() {
    let cases = [
        (r#"{"prompt": "Q", "rejected": "b"}"#, "field \"chosen\": missing"),
        (
            r#"{"prompt": "Q", "chosen": 3, "rejected": "b"}"#,
            "field \"chosen\": expected a string or a list of messages, found number",
        ),
        (r#"{"prompt": "Q", "chosen": "a", "rejected": ""}"#, "field \"rejected\": empty response"),
        (
            r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "  "}], "rejected": "b"}"#,
            "field \"chosen\": empty response",
        ),
        (
            r#"{"prompt": "Q", "chosen": "a much too long answer", "rejected": "b"}"#,
            "field \"chosen\": prompt + response is 24 tokens (1 + 23), longer than max_length 16",
        ),
        (r#"{"prompt": "Q", "chosen": "a", "rejected": "b""#, "not valid JSON"),
        (
            r#"{"prompt": "Q", "responses": ["a", "b"], "ranking": [0, 0]}"#,
            "field \"ranking\": [0, 0] is not a permutation of 0..2",
        ),
        (
            r#"{"prompt": "Q", "responses": ["a", "b", "c"], "ranking": [0, 1]}"#,
            "field \"ranking\": has 2 entries for 3 responses",
        ),
        (
            r#"{"prompt": "Q", "responses": ["a", "b"], "ranking": [[0, 1]]}"#,
            "field \"ranking\": every response is tied",
        ),
        (
            r#"{"prompt": "Q", "responses": ["a", "b"], "ranking": [[0], []]}"#,
            "field \"ranking\": item 1: an empty tie group",
        ),
        (
            r#"{"prompt": "Q", "responses": ["a", "b"], "ranking": [0, "1"]}"#,
            "field \"ranking\": item 1: expected an index or a list of tied indices",
        ),
        (
            r#"{"prompt": "Q", "responses": ["a"], "ranking": [0]}"#,
            "field \"responses\": a ranking needs at least 2 responses",
        ),
        (
            r#"{"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}"#,
            "field \"prompt\": message 0: missing \"content\"",
        ),
        (r#"["not", "an", "object"]"#, "expected a JSON object, found list"),
    ];
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let good = r#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#;
        let (err, at) = error_for(&format!("bad-{i}"), good, bad, pref_error);
        assert!(err.starts_with(&at) && err.contains(expected), "case {i}: {err}\n  expected `{at}…{expected}`");
    }
}

#[test]
fn bad_sft_and_prompt_records() {
    let sft = |p: &std::path::Path, t: &Tokenizer, o: &LoadOptions| load_sft(p, t, o).err().map(|e| e.to_string());
    let (err, at) = error_for(
        "bad-sft",
        r#"{"prompt": "Q", "completion": "a"}"#,
        r#"{"messages": [{"role": "user", "content": "Q"}]}"#,
        sft,
    );
    assert!(err.starts_with(&at) && err.contains("field \"messages\": no assistant message"), "{err}");
    let prompts =
        |p: &std::path::Path, t: &Tokenizer, o: &LoadOptions| load_prompts(p, t, o).err().map(|e| e.to_string());
    let (err, at) = error_for("bad-prompt", r#"{"prompt": "Q"}"#, r#"{"prompt": "Q", "answer": [1]}"#, prompts);
    assert!(
        err.starts_with(&at) && err.contains("field \"answer\": expected a string or a number, found list"),
        "{err}"
    );
}

#[test]
fn a_line_that_is_not_utf8_is_one_bad_record() {
    let dir = scratch("utf8");
    let path = dir.join("p.jsonl");
    let mut bytes = br#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"prompt\": \"\xff\xfe\", \"chosen\": \"a\", \"rejected\": \"b\"}\r\n");
    bytes.extend_from_slice(br#"{"prompt": "Q", "chosen": "c", "rejected": "d"}"#);
    std::fs::write(&path, bytes).unwrap();
    let err = load_preferences(&path, &tiny::tokenizer(), &LoadOptions::default()).unwrap_err().to_string();
    assert_eq!(err, format!("{}:2: not valid UTF-8 (byte 13 of the line)", path.display()));
    let o = LoadOptions { on_bad_record: "skip".parse().unwrap(), ..LoadOptions::default() };
    let loaded = load_preferences(&path, &tiny::tokenizer(), &o).unwrap();
    assert_eq!((loaded.examples.len(), loaded.skipped.len()), (2, 1), "the lines around it still load");
}

#[test]
fn a_record_too_long_for_max_length_is_refused_before_tokenising() {
    let dir = scratch("huge");
    let long = "7 ".repeat(2_500_000); // 5 MB
    let record = serde_json::json!({"prompt": "Q", "chosen": long, "rejected": "b"}).to_string();
    let path = write_lines(&dir, "p.jsonl", &[&record, r#"{"prompt": "Q", "chosen": "c", "rejected": "d"}"#]);
    let tok = tiny::tokenizer();
    let o = LoadOptions { max_length: 16, ..LoadOptions::default() };
    let err = load_preferences(&path, &tok, &o).unwrap_err().to_string();
    let bound = 16 * tok.max_token_bytes();
    assert!(
        err.starts_with(&format!("{}:1: 5000002 bytes of text cannot fit in max_length 16", path.display())),
        "{err}"
    );
    assert!(err.contains(&format!("no token is longer than {} bytes", tok.max_token_bytes())) && bound < 5_000_002);
    // At the bound the tokenizer decides, as before.
    let o = LoadOptions { max_length: 1024, ..LoadOptions::default() };
    let short = write_lines(&dir, "q.jsonl", &[r#"{"prompt": "Q", "chosen": "c", "rejected": "d"}"#]);
    assert_eq!(load_preferences(&short, &tok, &o).unwrap().examples.len(), 1);
}

#[test]
fn skip_mode_reports_every_bad_record() {
    let dir = scratch("skip");
    let path = write_lines(
        &dir,
        "p.jsonl",
        &[
            r#"{"prompt": "Q", "chosen": "a", "rejected": "b"}"#,
            r#"{"prompt": "Q", "chosen": "", "rejected": "b"}"#,
            "{oops",
            r#"{"prompt": "Q", "chosen": "c", "rejected": "d"}"#,
        ],
    );
    let o = LoadOptions { on_bad_record: "skip".parse().unwrap(), ..LoadOptions::default() };
    let loaded = load_preferences(&path, &tiny::tokenizer(), &o).unwrap();
    assert_eq!(loaded.examples.len(), 2);
    assert_eq!(loaded.skipped.len(), 2);
    assert_eq!(loaded.skipped[0].field.as_deref(), Some("chosen"));
    assert!(loaded.skipped[1].to_string().starts_with(&format!("{}:3: not valid JSON", path.display())));
}

#[test]
fn conversational_data_without_a_template_stops_even_when_skipping() {
    let dir = scratch("no-template");
    let path = write_lines(&dir, "p.jsonl", &[r#"{"prompt": [{"role": "user", "content": "hi"}]}"#]);
    let o = LoadOptions { on_bad_record: OnBadRecord::Skip, ..LoadOptions::default() };
    let err = load_prompts(&path, &tiny::tokenizer_with(None, false), &o).unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");
}

#[test]
fn missing_and_unknown_files_are_named() {
    let dir = scratch("files");
    let t = tiny::tokenizer();
    let missing = dir.join("nope.jsonl");
    let err = load_sft(&missing, &t, &opts()).unwrap_err().to_string();
    assert!(err.contains("nope.jsonl") && err.contains("no such file"), "{err}");
    let csv = write_lines(&dir, "d.csv", &["a,b"]);
    let err = load_sft(&csv, &t, &opts()).unwrap_err().to_string();
    assert!(err.contains("d.csv") && err.contains(".parquet"), "{err}");
    let empty = write_lines(&dir, "e.jsonl", &[""]);
    assert!(load_sft(&empty, &t, &opts()).unwrap_err().to_string().contains("no records"));
}

#[test]
fn on_bad_record_deserialises_from_lowercase() {
    let o: LoadOptions = serde_json::from_str(r#"{"on_bad_record": "skip"}"#).unwrap();
    assert_eq!((o.on_bad_record, o.max_length), (OnBadRecord::Skip, 1024));
    assert!("ignore".parse::<OnBadRecord>().is_err());
}

/// Mutated JSON lines (broken syntax, wrong types, odd bytes) are bad records or errors naming
/// the file, never a panic, in both bad-record modes and for every kind of dataset.
#[test]
fn fuzzed_jsonl_records_never_panic() {
    use rlhf_model::fuzz::{cases, Mutator};
    let dir = scratch("jsonl-fuzz");
    let valid = [
        r#"{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}"#,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
        r#"{"prompt": "Q", "completion": "A", "answer": 3}"#,
        r#"{"prompt": "Q", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}"#,
        r#"{"text": "plain text"}"#,
    ]
    .join("\n");
    let t = tiny::tokenizer();
    let path = dir.join("case.jsonl");
    for seed in 0..cases(2000) as u64 {
        std::fs::write(&path, Mutator::new(seed).mutate(valid.as_bytes())).unwrap();
        for mode in [OnBadRecord::Fail, OnBadRecord::Skip] {
            let o = LoadOptions { on_bad_record: mode, max_length: 64, max_prompt_length: 0 };
            let outcome = std::panic::catch_unwind(|| {
                let a = load_preferences(&path, &t, &o).err();
                let b = load_sft(&path, &t, &o).err();
                let c = load_prompts(&path, &t, &o).err();
                [a, b, c].into_iter().flatten().map(|e| e.to_string()).collect::<Vec<_>>()
            });
            let errors = outcome.unwrap_or_else(|_| panic!("seed {seed}, {mode:?}: loading panicked"));
            for e in errors {
                assert!(e.contains("case.jsonl") || e.starts_with("chat template"), "seed {seed}: {e}");
            }
        }
    }
}

/// Mutated `tokenizer.json` and `tokenizer_config.json` load or fail with an error, never a panic;
/// a tokenizer that loads encodes and renders its chat template without one either.
#[test]
fn fuzzed_tokenizer_files_never_panic() {
    use rlhf_model::fuzz::{cases, Mutator};
    let dir = scratch("tokenizer-fuzz");
    tiny::tokenizer().save_hf(&dir).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        let path = dir.join(file);
        let valid = std::fs::read(&path).unwrap();
        for seed in 0..cases(300) as u64 {
            std::fs::write(&path, Mutator::new(seed).mutate(&valid)).unwrap();
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(t) = Tokenizer::load(&dir) {
                    let ids = t.encode("What is 2 + 2? Héllo", true);
                    let _ = ids.map(|ids| t.decode(&ids, false));
                    let _ = t.apply_chat_template(&[Message::new("user", "Hi")], true);
                }
            });
            assert!(outcome.is_ok(), "{file} seed {seed}: panicked");
        }
        std::fs::write(&path, &valid).unwrap();
    }
}

/// `max_prompt_length` limits the prompt of every record kind that has one, names the prompt,
/// and leaves whole-text SFT records and conversations to `max_length`.
#[test]
fn max_prompt_length_limits_prompts_of_every_kind() {
    let dir = scratch("max-prompt-length");
    let t = tiny::tokenizer();
    let o = LoadOptions { max_prompt_length: 4, ..LoadOptions::default() };
    let long = "a prompt longer than four tokens";
    let n = enc(&t, long).len();
    let want =
        format!("{}:1: field \"prompt\": {n} tokens, longer than max_prompt_length 4", dir.join("x.jsonl").display());

    let pairs = write_lines(&dir, "x.jsonl", &[&format!(r#"{{"prompt": "{long}", "chosen": "a", "rejected": "b"}}"#)]);
    assert!(load_preferences(&pairs, &t, &o).unwrap_err().to_string().starts_with(&want));
    let ranked = write_lines(
        &dir,
        "x.jsonl",
        &[&format!(r#"{{"prompt": "{long}", "responses": ["a", "b"], "ranking": [1, 0]}}"#)],
    );
    assert!(load_preferences(&ranked, &t, &o).unwrap_err().to_string().starts_with(&want));
    let sft = write_lines(&dir, "x.jsonl", &[&format!(r#"{{"prompt": "{long}", "completion": "a"}}"#)]);
    assert!(load_sft(&sft, &t, &o).unwrap_err().to_string().starts_with(&want));
    let prompts = write_lines(&dir, "x.jsonl", &[&format!(r#"{{"prompt": "{long}"}}"#)]);
    assert!(load_prompts(&prompts, &t, &o).unwrap_err().to_string().starts_with(&want));

    // At the limit, and with no limit, the same records load.
    let short = write_lines(&dir, "x.jsonl", &[r#"{"prompt": "abcd", "chosen": "a", "rejected": "b"}"#]);
    assert_eq!(enc(&t, "abcd").len(), 4, "the tiny tokenizer has one token per byte");
    assert_eq!(load_preferences(&short, &t, &o).unwrap().examples.len(), 1);
    assert_eq!(load_prompts(&prompts, &t, &LoadOptions::default()).unwrap().examples.len(), 1);
    // A plain-text SFT record has no prompt: only max_length applies.
    let text = write_lines(&dir, "x.jsonl", &[&format!(r#"{{"text": "{long}"}}"#)]);
    assert_eq!(load_sft(&text, &t, &o).unwrap().examples.len(), 1);
}
