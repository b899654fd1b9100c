//! A byte-level BPE tokenizer written into a small GGUF by the test, rebuilt by
//! `Tokenizer::from_gguf`, saved as tokenizer.json and reloaded: both give the same ids, special
//! tokens are matched whole, digits split per the `smollm` pre-tokenizer, decode round-trips.

use candle_core::quantized::gguf_file::{self, Value};
use rlhf_data::{Message, Tokenizer};
use rlhf_model::gguf::GgufFile;
use std::path::{Path, PathBuf};

/// GPT-2's reversible byte → printable-char map.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> =
        ('!' as u32..='~' as u32).chain('¡' as u32..='¬' as u32).chain('®' as u32..='ÿ' as u32).collect();
    let mut out = vec![' '; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if let Some(pos) = printable.iter().position(|&c| c == b) {
            out[b as usize] = char::from_u32(printable[pos]).unwrap();
        } else {
            out[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    printable.clear();
    out
}

const SPECIAL: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"];
const MERGES: [&str; 8] = ["h e", "l l", "he ll", "Ġ t", "Ġt he", "o r", "Ġ w", "1 2"];
const TEMPLATE: &str = "{% for m in messages %}{{ bos_token }}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn write_tokenizer_gguf(path: &Path, pre: &str, add_bos: bool) {
    let mut tokens: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_chars().into_iter().map(|c| c.to_string()));
    for m in MERGES {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![3i32; SPECIAL.len()];
    types.resize(tokens.len(), 1);
    let s = |x: &str| Value::String(x.to_string());
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s(pre)),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges", Value::Array(MERGES.iter().map(|m| s(m)).collect())),
        ("tokenizer.ggml.bos_token_id", Value::U32(3)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(add_bos)),
        ("tokenizer.chat_template", s(TEMPLATE)),
    ];
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &refs, &[]).unwrap();
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const TEXTS: [&str; 8] = [
    "hello the world",
    " the  the\n\tthe",
    "12345 or 1212",
    "<|im_start|>user\nhello<|im_end|>",
    "",
    "naïve café ☕",
    "   ",
    "x<|endoftext|>y",
];

#[test]
fn gguf_tokenizer_equals_its_tokenizer_json() {
    let path = tmp("smollm.gguf");
    write_tokenizer_gguf(&path, "smollm", false);
    let from_gguf = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let dir = tmp("hf");
    from_gguf.save_hf(&dir).unwrap();
    let from_json = Tokenizer::from_hf_dir(&dir).unwrap();
    for text in TEXTS {
        let a = from_gguf.encode(text, true).unwrap();
        let b = from_json.encode(text, true).unwrap();
        assert_eq!(a, b, "{text:?}");
        assert_eq!(from_gguf.decode(&a, false).unwrap(), text, "decode round trip of {text:?}");
    }
    assert_eq!(from_json.chat_template(), Some(TEMPLATE));
    assert_eq!(from_json.eos_ids(), vec![2]);
    assert_eq!(from_json.pad_id(), from_gguf.pad_id());
}

#[test]
fn merges_specials_and_digit_splitting() {
    let path = tmp("merges.gguf");
    write_tokenizer_gguf(&path, "smollm", false);
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let id = |s: &str| t.token_to_id(s).unwrap();
    assert_eq!(t.encode("hell", false).unwrap(), vec![id("hell")]);
    assert_eq!(t.encode(" the", false).unwrap(), vec![id("Ġthe")]);
    // Special tokens are single ids inside text.
    assert_eq!(t.encode("<|im_end|>", false).unwrap(), vec![2]);
    // smollm splits digits one by one, so the "1 2" merge never applies…
    assert_eq!(t.encode("12", false).unwrap(), vec![id("1"), id("2")]);
    // …while plain GPT-2 pre-tokenization keeps "12" together and merges it.
    let path2 = tmp("gpt2.gguf");
    write_tokenizer_gguf(&path2, "gpt-2", false);
    let g = Tokenizer::from_gguf(&GgufFile::open(&path2).unwrap()).unwrap();
    assert_eq!(g.encode("12", false).unwrap(), vec![id("12")]);
}

#[test]
fn pad_is_never_eos() {
    let path = tmp("pad.gguf");
    write_tokenizer_gguf(&path, "smollm", false);
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    // The file declares pad = eos = 2; we pick a distinct special token.
    assert_eq!(t.eos_ids(), vec![2]);
    assert_eq!(t.pad_id(), 0);
}

#[test]
fn chat_prompt_has_exactly_one_bos() {
    let path = tmp("bos.gguf");
    write_tokenizer_gguf(&path, "smollm", true);
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    // The template itself renders bos_token; add_bos_token must not add a second one.
    let ids = t.encode_chat(&[Message::user("hello")], true).unwrap();
    assert_eq!(ids[0], 3);
    assert_eq!(ids[1], 1, "expected <|im_start|> right after one BOS: {ids:?}");
    // A plain prompt gets BOS from add_bos_token.
    assert_eq!(t.encode("hello", true).unwrap()[0], 3);
    assert_ne!(t.encode("hello", false).unwrap()[0], 3);
}

#[test]
fn unsupported_gguf_tokenizers_are_clear_errors() {
    let path = tmp("weird.gguf");
    write_tokenizer_gguf(&path, "some-new-pre", false);
    let err = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).err().unwrap().to_string();
    assert!(err.contains("weird.gguf") && err.contains("some-new-pre"), "{err}");
}

#[test]
fn stop_strings_end_a_row_once_the_text_contains_them() {
    use rlhf_model::StopCondition;
    let path = tmp("stop.gguf");
    write_tokenizer_gguf(&path, "smollm", false);
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let stop = rlhf_data::StopStrings::new(&t, vec!["or".into()]);
    let ids = t.encode("hello w", false).unwrap();
    assert!(!stop.should_stop(0, &ids));
    let ids = t.encode("hello world", false).unwrap();
    assert!(stop.should_stop(0, &ids));
}
