//! `rlhf_eval::policy` on tiny models: a model compared with itself is level with it on every
//! measure (KL 0, win rates ½, accuracy difference 0 with p = 1) and a different model is not.

use candle_core::DType;
use rlhf_data::{load_prompts, LoadOptions, PromptExample, Tokenizer};
use rlhf_eval::policy::{against, evaluate, Scorers, Settings, Verifier};
use rlhf_model::{tiny, CausalLm};
use rlhf_reward::{MathVerifier, RewardSource, Sample, Score};

fn tiny_model(seed: u64) -> CausalLm {
    let tok = rlhf_data::tiny::tokenizer();
    let cfg = tiny::llama_config(tok.vocab_size());
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, seed, 0.05, DType::F32).unwrap()).unwrap()
}

fn prompts(tok: &Tokenizer) -> Vec<PromptExample> {
    let dir = std::env::temp_dir().join(format!("rlhf-eval-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prompts.jsonl");
    let lines: String = ["1+1", "2+3", "ab", "hello", "xyz", "q"]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{\"prompt\": \"{p}\", \"answer\": \"{i}\"}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    let loaded = load_prompts(&path, tok, &LoadOptions { max_length: 0, ..Default::default() }).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    loaded.examples
}

/// A "reward model" that tells answers apart: the sum of their token ids.
struct TokenSum;

impl RewardSource for TokenSum {
    fn name(&self) -> &str {
        "token_sum"
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> rlhf_reward::Result<Vec<Score>> {
        Ok(samples.iter().map(|s| Score::value(s.response_ids.iter().map(|&t| t as f64).sum())).collect())
    }
}

fn scorers() -> Scorers {
    Scorers {
        verifier: Box::new(MathVerifier::new(Default::default())),
        format: Box::new(MathVerifier::last_integer()),
        reward_model: Some(Box::new(TokenSum)),
    }
}

#[test]
fn a_model_is_level_with_itself_and_not_with_another() {
    let tok = rlhf_data::tiny::tokenizer();
    let prompts = prompts(&tok);
    let (a, b) = (tiny_model(1), tiny_model(2));
    let s =
        Settings { verifier: Verifier::Math, max_new_tokens: 8, batch_size: 4, samples: 3, sample_temperature: 1.0 };
    let mut sc = scorers();
    let rows = vec![
        evaluate("a", &a, &a, &prompts, &mut sc, &s, &tok).unwrap(),
        evaluate("a again", &a, &a, &prompts, &mut sc, &s, &tok).unwrap(),
        evaluate("b", &b, &a, &prompts, &mut sc, &s, &tok).unwrap(),
    ];
    assert_eq!(rows[0].kl, 0.0, "KL of a model to itself");
    assert!(rows[2].kl.is_finite() && rows[2].kl != 0.0, "KL of another model: {}", rows[2].kl);
    assert_eq!(rows[0].verifier_scores.len(), prompts.len());
    for r in &rows {
        let pass = r.pass_at_1.expect("samples were asked for");
        assert!((0.0..=1.0).contains(&pass) && (0.0..=1.0).contains(&r.maj_at_k.unwrap()));
        assert!((0.0..=1.0).contains(&r.repetition));
        // The random tiny models never stop early: every answer has the cap's length, so the
        // length–reward correlation is undefined, reported as missing rather than 0 or NaN.
        assert_eq!(r.length, 8.0);
        assert_eq!(r.length_rm_correlation, None, "{}", r.name);
    }
    let versus = against(&rows, 0);
    for v in &versus[..2] {
        assert_eq!((v.win_rate_verifier, v.win_rate_rm), (0.5, Some(0.5)));
        let (d, p) = v.accuracy.unwrap();
        assert_eq!((d.diff, d.lo, d.hi, p), (0.0, 0.0, 0.0, 1.0));
    }
    assert_eq!(rows[1].rm_scores, rows[0].rm_scores, "greedy answers do not depend on the evaluation order");
    assert_ne!(rows[2].rm_scores, rows[0].rm_scores, "another model answers otherwise");
    assert_ne!(versus[2].win_rate_rm, Some(0.5));
}
