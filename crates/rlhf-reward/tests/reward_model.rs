//! The reward-model source over a tiny random classifier: same scores as a direct
//! `score_last_token` call, whatever the batch size or company, and normalised on request.

use candle_core::{DType, Device, Tensor};
use rlhf_model::heads::{init_scalar_head, save_sequence_classifier, score_last_token, RewardStats};
use rlhf_model::{tiny, CausalLm};
use rlhf_reward::{RewardModel, RewardSource, Sample};

fn model() -> CausalLm {
    let cfg = tiny::llama_config(40);
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 3, 0.1, DType::F32).unwrap()).unwrap()
}

fn direct(m: &CausalLm, head: &Tensor, seq: &[u32]) -> f64 {
    let ids = Tensor::new(seq, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mask = Tensor::ones_like(&ids).unwrap();
    score_last_token(m, head, &ids, &mask).unwrap().to_vec1::<f32>().unwrap()[0] as f64
}

/// (prompt, response) pairs of different lengths.
const PAIRS: [(&[u32], &[u32]); 5] = [
    (&[5, 6, 7], &[8, 9, 2]),
    (&[10], &[11]),
    (&[12, 13, 14, 15, 16], &[17, 18, 19, 20, 21, 22, 2]),
    (&[3, 4], &[]),
    (&[30, 31], &[32, 33, 34]),
];

fn samples() -> Vec<Sample<'static>> {
    PAIRS
        .iter()
        .map(|&(p, r)| Sample {
            prompt: "",
            response: "",
            prompt_ids: p,
            response_ids: r,
            answer: None,
            tests: None,
            finished: true,
        })
        .collect()
}

#[test]
fn scores_match_direct_calls_for_any_batching() {
    let m = model();
    let head = init_scalar_head(16, 7, DType::F32, &Device::Cpu).unwrap();
    let want: Vec<f64> = PAIRS.iter().map(|(p, r)| direct(&m, &head, &[*p, *r].concat())).collect();
    let samples = samples();
    for batch in [1, 2, 3, 8] {
        let mut rm = RewardModel::new(&m, &head, None, 0).unwrap().with_batch_size(batch);
        let got: Vec<f64> = rm.score(&samples).unwrap().iter().map(|s| s.value.unwrap()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5, "batch {batch}: {got:?} vs {want:?}");
        }
        // In other company (reversed, with a long padded neighbour) the scores stay the same.
        let mut rev = samples.clone();
        rev.reverse();
        let got_rev: Vec<f64> = rm.score(&rev).unwrap().iter().rev().map(|s| s.value.unwrap()).collect();
        for (g, w) in got_rev.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5, "batch {batch}, reversed: {got_rev:?} vs {want:?}");
        }
    }
    // Scores differ between sequences (the test would not notice a constant output otherwise).
    assert!((want[0] - want[1]).abs() > 1e-4, "{want:?}");
}

#[test]
fn loads_a_saved_classifier_and_normalises_with_its_stats() {
    let m = model();
    let head = init_scalar_head(16, 9, DType::F32, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("rlhf-reward-rm-{}", std::process::id()));
    let stats = RewardStats { mean: 0.5, std: 2.0, count: 100 };
    save_sequence_classifier(&m, &head, Some(stats), 0, &dir).unwrap();
    let raw_rm = RewardModel::load(&dir, 0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(raw_rm.stats(), Some(stats));
    let mut raw_rm = raw_rm.with_name("rm");
    let mut norm_rm = RewardModel::load(&dir, 0, DType::F32, &Device::Cpu).unwrap().normalized(true).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let s = samples();
    let raw = raw_rm.score(&s).unwrap();
    let norm = norm_rm.score(&s).unwrap();
    for (r, n) in raw.iter().zip(&norm) {
        let (r, n) = (r.value.unwrap(), n.value.unwrap());
        assert!((n - (r - 0.5) / 2.0).abs() < 1e-12);
    }
    let want = direct(&m, &head, &[PAIRS[0].0, PAIRS[0].1].concat());
    assert!((raw[0].value.unwrap() - want).abs() <= 1e-5);
    let err = RewardModel::new(&m, &head, None, 0).unwrap().normalized(true).err().unwrap().to_string();
    assert!(err.contains("no reward statistics"), "{err}");
}

#[test]
fn empty_and_overlong_sequences() {
    let m = model();
    let head = init_scalar_head(16, 1, DType::F32, &Device::Cpu).unwrap();
    let mut rm = RewardModel::new(&m, &head, None, 0).unwrap();
    let empty = Sample {
        prompt: "",
        response: "",
        prompt_ids: &[],
        response_ids: &[],
        answer: None,
        tests: None,
        finished: true,
    };
    let s = rm.score(&[empty, samples()[0]]).unwrap();
    assert_eq!(s[0].value, None);
    assert!(s[1].value.is_some());
    let long = vec![5u32; 300];
    let err = rm.score(&[Sample { prompt_ids: &long, ..empty }]).unwrap_err().to_string();
    assert!(err.contains("300 tokens"), "{err}");
    let bad_head = Tensor::zeros((1, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(RewardModel::new(&m, &bad_head, None, 0).is_err());
}
