//! Candidate sampling on a tiny model: at most K responses per prompt, none empty, no two the
//! same up to whitespace, each tagged with a temperature it was sampled at; seeded; and prompts
//! that keep producing duplicates get extra rounds.

use candle_core::DType;
use rlhf_feedback::candidates::{dedup_key, sample, Settings};
use rlhf_model::{tiny, CausalLm};
use std::collections::HashSet;

fn tiny_model(seed: u64) -> CausalLm {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

#[test]
fn k_distinct_responses_at_the_given_temperatures() {
    let tok = rlhf_data::tiny::tokenizer();
    let model = tiny_model(3);
    let prompts: Vec<Vec<u32>> = ["ab", "hello", "xyz"].iter().map(|p| tok.encode(p, false).unwrap()).collect();
    let ids: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let s = Settings {
        k: 4,
        temperatures: vec![0.8, 1.2],
        max_new_tokens: 6,
        top_p: None,
        batch_size: 4,
        max_tries: 2,
        seed: 1,
    };
    let mut last = 0;
    let got = sample(&model, &ids, &s, &tok, &mut |n| last = last.max(n)).unwrap();
    assert_eq!(got.len(), 3);
    assert!(last > 0, "progress was reported");
    for responses in &got {
        assert!(responses.len() <= 4 && responses.len() >= 2, "{responses:?}");
        let keys: HashSet<String> = responses.iter().map(|(t, _)| dedup_key(t)).collect();
        assert_eq!(keys.len(), responses.len(), "no duplicates: {responses:?}");
        assert!(responses.iter().all(|(t, temp)| !t.is_empty() && t.trim() == t && s.temperatures.contains(temp)));
    }
    assert_eq!(got, sample(&model, &ids, &s, &tok, &mut |_| {}).unwrap(), "seeded");
    // Near-greedy sampling repeats itself: the extra rounds ask again only for missing slots,
    // and what comes back is still distinct.
    let cold = Settings { temperatures: vec![0.01], max_tries: 3, ..s.clone() };
    for responses in sample(&model, &ids, &cold, &tok, &mut |_| {}).unwrap() {
        let keys: HashSet<String> = responses.iter().map(|(t, _)| dedup_key(t)).collect();
        assert_eq!(keys.len(), responses.len());
        assert!(responses.len() < 4, "a near-greedy model cannot give 4 distinct answers: {responses:?}");
    }
    assert_eq!(dedup_key(" a  b\n"), "a b");
}
