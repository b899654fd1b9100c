//! The tokenizer and chat template rebuilt from the default model's GGUF metadata against what
//! Python transformers produced from the same file (fixtures/smollm2_transformers.json).

use rlhf_data::{Message, Tokenizer};
use rlhf_model::default_model;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/smollm2_transformers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tokenizer() -> Tokenizer {
    let path = default_model::locate().unwrap_or_else(|msg| panic!("{msg}"));
    Tokenizer::load(&path).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn encodings_match_transformers() {
    let t = tokenizer();
    let fx = fixture();
    let mut cases: Vec<&Value> = fx["tokenizer"].as_array().unwrap().iter().collect();
    cases.extend(fx["logprobs"].as_array().unwrap());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(t.encode(text, false).unwrap(), ids(&case["ids"]), "{text:?}");
        assert_eq!(t.decode(&ids(&case["ids"]), false).unwrap(), text, "decode {text:?}");
    }
}

#[test]
fn chat_template_matches_transformers() {
    let t = tokenizer();
    let fx = fixture();
    for case in fx["chat_template"]["cases"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(t.apply_chat_template(&messages, gen).unwrap(), case["rendered"].as_str().unwrap());
        assert_eq!(t.encode_chat(&messages, gen).unwrap(), ids(&case["ids"]));
    }
}

#[test]
fn special_ids_and_pad() {
    let t = tokenizer();
    assert_eq!(t.bos_id(), Some(1));
    assert_eq!(t.eos_ids(), vec![2]);
    // The GGUF declares pad = eos (2); we pad with <|endoftext|> (0) instead.
    assert_eq!(t.pad_id(), 0);
}
