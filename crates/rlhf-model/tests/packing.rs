//! Shared-prompt packing gives what the unpacked, right-padded batch gives: logprobs, the states
//! before each response token, last-token states and every parameter gradient, on each family,
//! on the fused and composed paths, with a sliding window too.

use candle_core::{DType, Device, Tensor};
use rlhf_model::gradcheck::max_abs_diff;
use rlhf_model::{
    last_states_packed, response_logprobs_packed, response_states_packed, tiny, token_logprobs_and_states_at, CausalLm,
    Kernels, ModelConfig, PackedRows,
};

const V: usize = 40;
const PAD: u32 = 0;

fn configs() -> Vec<(&'static str, ModelConfig)> {
    let mut windowed = tiny::llama_config(V);
    windowed.sliding_window = Some(3);
    vec![
        ("llama", tiny::llama_config(V)),
        ("qwen2", tiny::qwen2_config(V)),
        ("gpt2", tiny::gpt2_config(V)),
        ("mistral-window", windowed),
    ]
}

/// Two prompts shared by three and two responses (one of them empty), one prompt alone, mixed
/// lengths and order.
fn rows() -> Vec<(Vec<u32>, Vec<u32>)> {
    let (a, b, c) = (vec![5u32, 9, 3, 7], vec![4u32, 8], vec![11u32, 12, 13]);
    vec![
        (a.clone(), vec![21, 22, 23]),
        (b.clone(), vec![30]),
        (a.clone(), vec![24]),
        (c, vec![31, 32, 33, 34, 35]),
        (b, vec![]),
        (a, vec![25, 26, 27, 28]),
    ]
}

fn borrowed(rows: &[(Vec<u32>, Vec<u32>)]) -> Vec<(&[u32], &[u32])> {
    rows.iter().map(|(p, r)| (p.as_slice(), r.as_slice())).collect()
}

/// The unpacked reference: one right-padded row per (prompt, response).
fn unpacked(m: &CausalLm, rows: &[(&[u32], &[u32])]) -> (Tensor, Tensor, Tensor) {
    let t = rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap();
    let (mut ids, mut mask, mut targets, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (p, r)) in rows.iter().enumerate() {
        let n = p.len() + r.len();
        ids.extend(p.iter().chain(r.iter()).copied().chain(std::iter::repeat_n(PAD, t - n)));
        mask.extend(std::iter::repeat_n(1u32, n).chain(std::iter::repeat_n(0, t - n)));
        targets.extend((p.len()..n).map(|pos| (i, pos)));
        last.push((i * t + n - 1) as u32);
    }
    let ids = Tensor::from_vec(ids, (rows.len(), t), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (rows.len(), t), &Device::Cpu).unwrap();
    let (lp, states) = token_logprobs_and_states_at(m, &ids, &mask, 0.8, &targets).unwrap();
    let d = m.config().hidden_size;
    let h = m.hidden(&ids, &mask, None).unwrap().reshape((rows.len() * t, d)).unwrap();
    let last = h.index_select(&Tensor::from_vec(last, rows.len(), &Device::Cpu).unwrap(), 0).unwrap();
    (lp, states, last)
}

#[test]
fn packed_rows_equal_unpacked_rows_in_values_and_gradients() {
    let owned = rows();
    let rows = borrowed(&owned);
    for (name, cfg) in configs() {
        for kernels in [Kernels::Fused, Kernels::Composed] {
            let w = tiny::random_weights(&cfg, 7, 0.3, DType::F64).unwrap();
            let (m, vars) = CausalLm::new(cfg.clone(), w).unwrap().with_kernels(kernels).trainable().unwrap();
            let (lp, states, last) = unpacked(&m, &rows);
            let (plp, pstates) = response_logprobs_packed(&m, &rows, PAD, 0.8).unwrap();
            let (plast, tokens) = last_states_packed(&m, &rows, PAD).unwrap();
            let tag = format!("{name} {kernels:?}");
            assert_eq!(plp.dims(), [14], "{tag}");
            assert!(max_abs_diff(&lp, &plp).unwrap() < 1e-10, "{tag}: logprobs");
            assert!(max_abs_diff(&states, &pstates).unwrap() < 1e-10, "{tag}: states");
            let critic = response_states_packed(&m, &rows, PAD).unwrap();
            assert!(max_abs_diff(&states, &critic).unwrap() < 1e-10, "{tag}: critic states");
            assert!(max_abs_diff(&last, &plast).unwrap() < 1e-10, "{tag}: last states");
            // Prompts 4 + 2 + 3 tokens once each, responses 3 + 1 + 1 + 5 + 0 + 4.
            assert_eq!(tokens, 9 + 14, "{tag}");

            // Gradients of a loss touching every output: weighted logprobs plus last states.
            let weights = Tensor::arange(1.0, 15.0, &Device::Cpu).unwrap();
            let grads_of = |lp: &Tensor, last: &Tensor| {
                m.zero_grad();
                let loss =
                    ((lp * &weights).unwrap().sum_all().unwrap() + last.sqr().unwrap().sum_all().unwrap()).unwrap();
                let store = loss.backward().unwrap();
                let g = m.grads(&store);
                vars.iter().map(|(n, v)| (n.clone(), g.get(n, v).unwrap())).collect::<Vec<_>>()
            };
            let reference = grads_of(&lp, &last);
            let packed = grads_of(&plp, &plast);
            let mut checked = 0;
            for ((n, a), (_, b)) in reference.iter().zip(&packed) {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap().max(1.0);
                        assert!(max_abs_diff(a, b).unwrap() / scale < 1e-10, "{tag}: gradient of {n}");
                        checked += 1;
                    }
                    (None, None) => {}
                    _ => panic!("{tag}: {n} has a gradient on one path only"),
                }
            }
            assert_eq!(checked, vars.len(), "{tag}: every parameter has a gradient");
        }
    }
}

#[test]
fn packing_runs_each_shared_prompt_once() {
    let owned = rows();
    let packed = PackedRows::new(&borrowed(&owned), PAD).unwrap();
    // Three distinct prompts → three packed rows; the longest is prompt a + 3 + 1 + 4.
    assert_eq!((packed.rows, packed.len), (3, 12));
    assert_eq!(packed.num_targets(), 14);
    let unpacked: usize = owned.iter().map(|(p, r)| p.len() + r.len()).sum();
    assert_eq!((packed.real_tokens(), unpacked), (23, 33));
}
