//! Scalar head: init scale, last-real-token scoring under any padding, HF folder round trip.

use candle_core::{DType, Device, Tensor};
use rlhf_model::heads::{
    init_scalar_head, last_real_positions, load_sequence_classifier, save_sequence_classifier, score_last_token,
    RewardStats,
};
use rlhf_model::{tiny, CausalLm};

fn model() -> CausalLm {
    let cfg = tiny::llama_config(40);
    CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 3, 0.1, DType::F32).unwrap()).unwrap()
}

#[test]
fn head_init_has_the_documented_scale() {
    let d = 4095;
    let w = init_scalar_head(d, 1, DType::F64, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let std = (w.iter().map(|x| x * x).sum::<f64>() / d as f64).sqrt();
    assert!((std - 1.0 / 64.0).abs() < 0.1 / 64.0, "std {std}");
}

#[test]
fn score_reads_the_last_real_token_whatever_the_padding() {
    let m = model();
    let head = init_scalar_head(16, 2, DType::F32, &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let alone = Tensor::new(&[[5u32, 6, 7, 8]], &dev).unwrap();
    let ones = Tensor::new(&[[1u32, 1, 1, 1]], &dev).unwrap();
    let s_alone = score_last_token(&m, &head, &alone, &ones).unwrap().to_vec1::<f32>().unwrap()[0];
    // Right padding, and left padding, in a batch with a longer row.
    let ids = Tensor::new(&[[5u32, 6, 7, 8, 0, 0], [0, 0, 5, 6, 7, 8], [9, 9, 9, 9, 9, 9]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], &dev).unwrap();
    assert_eq!(last_real_positions(&mask).unwrap(), vec![3, 5, 5]);
    let s = score_last_token(&m, &head, &ids, &mask).unwrap().to_vec1::<f32>().unwrap();
    assert!((s[0] - s_alone).abs() < 1e-5 && (s[1] - s_alone).abs() < 1e-5, "{s:?} vs {s_alone}");
    // Manual: head · final hidden state of token 8.
    let h = m.hidden(&alone, &ones, None).unwrap().narrow(1, 3, 1).unwrap().flatten_all().unwrap();
    let manual = (h * head.flatten_all().unwrap()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((manual - s_alone).abs() < 1e-5);
}

#[test]
fn sequence_classifier_folder_round_trips() {
    let m = model();
    let head = init_scalar_head(16, 4, DType::F32, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("rlhf-heads-{}", std::process::id()));
    let stats = RewardStats { mean: 0.25, std: 1.5, count: 10 };
    save_sequence_classifier(&m, &head, Some(stats), 0, &dir).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(cfg["num_labels"], 1);
    assert_eq!(cfg["pad_token_id"], 0);
    let (m2, head2, stats2) = load_sequence_classifier(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(stats2, Some(stats));
    let ids = Tensor::new(&[[3u32, 4, 5]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu).unwrap();
    let a = score_last_token(&m, &head, &ids, &mask).unwrap().to_vec1::<f32>().unwrap();
    let b = score_last_token(&m2, &head2, &ids, &mask).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
    let err = load_sequence_classifier(&std::env::temp_dir().join("rlhf-no-such-rm"), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rlhf-no-such-rm"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
