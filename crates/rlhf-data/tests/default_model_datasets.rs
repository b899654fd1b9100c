//! The arithmetic datasets through the default model's real tokenizer and chat template
//! (SmolLM2: a default system prompt, `<|im_end|>` as EOS, `<|endoftext|>` as pad). Skipped with a
//! note when the model file has not been fetched.

mod common;

use rlhf_data::{load_preferences, load_prompts, load_sft, write_arithmetic, Batch, LoadOptions, Tokenizer};
use rlhf_model::default_model;

#[test]
fn arithmetic_files_load_with_the_default_tokenizer() {
    let Ok(path) = default_model::locate() else {
        eprintln!("skipped: {}", default_model::locate().unwrap_err());
        return;
    };
    let t = Tokenizer::load(&path).unwrap();
    let dir = common::scratch("default-model-arith");
    let set = write_arithmetic(&dir, 20, 5).unwrap();
    let o = LoadOptions::default();
    let bos = t.bos_id();
    let sft = load_sft(&dir.join("sft.jsonl"), &t, &o).unwrap().examples;
    let e = &sft[0];
    assert!(bos.is_none() || e.input_ids[..2] != [bos.unwrap(), bos.unwrap()], "double BOS");
    let learned: Vec<u32> = e.input_ids.iter().zip(&e.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
    let text = t.decode(&learned, false).unwrap();
    assert!(text.starts_with(&set.problems[0].correct_formatted), "{text:?}");
    assert!(learned.iter().any(|id| t.eos_ids().contains(id)), "the assistant turn's end is learned: {text:?}");

    let groups = load_preferences(&dir.join("rankings.jsonl"), &t, &o).unwrap().examples;
    assert!(groups.iter().all(|g| g.pairs.len() == 6));
    let pairs: Vec<_> = groups[0].pair_examples().collect();
    let batch = Batch::from_pairs(&pairs, t.pad_id(), 8);
    assert!(!t.eos_ids().contains(&t.pad_id()));
    assert_eq!((batch.batch, batch.seq_len % 8), (12, 0));

    let prompts = load_prompts(&dir.join("prompts.jsonl"), &t, &o).unwrap().examples;
    let rendered = t.decode(&prompts[0].prompt_ids, false).unwrap();
    assert!(rendered.contains(&set.problems[0].question) && rendered.ends_with("assistant\n"), "{rendered:?}");
}
