use super::*;
use crate::gradcheck::check_gradients;
use candle_core::{Device, Var};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values in (-1, 1) without an RNG dependency in tests.
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn var(shape: &[usize], seed: u64) -> Var {
    Var::from_tensor(&randn(shape, seed)).unwrap()
}

/// A fixed random projection of the output to a scalar, so every output element matters.
fn project(y: &Tensor, seed: u64) -> Result<Tensor> {
    let w = randn(y.dims(), seed);
    (y * w)?.sum_all()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    crate::gradcheck::max_abs_diff(a, b).unwrap()
}

/// Checks fused == composed (forward, f64 and f32) and both against finite differences.
fn check(name: &str, vars: Vec<(String, Var)>, f: &dyn Fn(Kernels) -> Result<Tensor>) {
    let fused = f(Kernels::Fused).unwrap();
    let composed = f(Kernels::Composed).unwrap();
    assert!(
        max_diff(&fused, &composed) < 1e-12,
        "{name}: fused and composed differ by {}",
        max_diff(&fused, &composed)
    );
    for k in [Kernels::Fused, Kernels::Composed] {
        let r = check_gradients(&vars, &|| project(&f(k)?, 99), 1e-5, 40).unwrap();
        assert!(r.worst_rel_err < 1e-6, "{name} {k:?}: {r:?}");
    }
}

#[test]
fn rms_norm_matches_and_has_correct_gradients() {
    let (x, w) = (var(&[3, 5, 8], 1), var(&[8], 2));
    let vars = vec![("x".into(), x.clone()), ("w".into(), w.clone())];
    check("rms_norm", vars, &|k| k.rms_norm(&x, &w, 1e-5));
}

#[test]
fn layer_norm_matches_and_has_correct_gradients() {
    let (x, w, b) = (var(&[4, 6], 3), var(&[6], 4), var(&[6], 5));
    let vars = vec![("x".into(), x.clone()), ("w".into(), w.clone()), ("b".into(), b.clone())];
    check("layer_norm", vars, &|k| k.layer_norm(&x, &w, &b, 1e-5));
}

#[test]
fn rope_matches_and_has_correct_gradients() {
    let x = var(&[2, 3, 4, 6], 6);
    let (cos, sin) = (randn(&[2, 3, 3], 7), randn(&[2, 3, 3], 8));
    check("rope", vec![("x".into(), x.clone())], &|k| k.rope(&x, &cos, &sin));
}

#[test]
fn masked_softmax_matches_and_has_correct_gradients() {
    // B=2, 2 KV heads, 2 query heads per KV head, Tq=3, Tk=4; causal mask with a padded key.
    let scores = var(&[2, 2, 6, 4], 9);
    let inf = f64::NEG_INFINITY;
    let mut m = vec![];
    for b in 0..2 {
        for q in 0..3 {
            for k in 0..4 {
                let allowed = k <= q + 1 && !(b == 1 && k == 0);
                m.push(if allowed { 0.0 } else { inf });
            }
        }
    }
    let mask = Tensor::from_vec(m, (2, 1, 3, 4), &Device::Cpu).unwrap();
    check("masked_softmax", vec![("scores".into(), scores.clone())], &|k| k.masked_softmax(&scores, &mask, 0.7));
    let p = Kernels::Fused.masked_softmax(&scores, &mask, 0.7).unwrap();
    let sums = p.sum(3).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-12));
}

#[test]
fn swiglu_matches_and_has_correct_gradients() {
    let (g, u) = (var(&[5, 7], 10), var(&[5, 7], 11));
    let vars = vec![("gate".into(), g.clone()), ("up".into(), u.clone())];
    check("swiglu", vars, &|k| k.swiglu(&g, &u));
}

#[test]
fn gather_log_softmax_matches_and_has_correct_gradients() {
    let logits = Var::from_tensor(&(randn(&[6, 11], 12) * 4.0).unwrap()).unwrap();
    let ids = Tensor::new(&[0u32, 3, 10, 5, 5, 1], &Device::Cpu).unwrap();
    check("gather_log_softmax", vec![("logits".into(), logits.clone())], &|k| k.gather_log_softmax(&logits, &ids, 0.7));
}

#[test]
fn linear_matches_and_has_correct_gradients() {
    let (x, w, b) = (var(&[5, 7], 16), var(&[3, 7], 17), var(&[3], 18));
    let vars = vec![("x".into(), x.clone()), ("w".into(), w.clone()), ("b".into(), b.clone())];
    check("linear", vars, &|k| k.linear(&x, &w, Some(&b)));
}

#[test]
fn linear_small_and_large_batches_match_composed() {
    // Both forward kernels: the weight-streaming one (≤ 16 rows) and gemm.
    for rows in [1, 3, 16, 17, 40] {
        let x = randn(&[rows, 37], 19 + rows as u64);
        let w = randn(&[29, 37], 20);
        let d =
            max_diff(&Kernels::Fused.linear(&x, &w, None).unwrap(), &Kernels::Composed.linear(&x, &w, None).unwrap());
        assert!(d < 1e-12, "{rows} rows: {d}");
    }
}

#[test]
fn fused_f32_matches_composed_f32() {
    let x = randn(&[4, 64], 13).to_dtype(DType::F32).unwrap();
    let w = randn(&[64], 14).to_dtype(DType::F32).unwrap();
    let a = Kernels::Fused.rms_norm(&x, &w, 1e-5).unwrap();
    let b = Kernels::Composed.rms_norm(&x, &w, 1e-5).unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
}

#[test]
fn gather_log_softmax_rejects_out_of_vocab_targets() {
    let logits = randn(&[2, 5], 15);
    let ids = Tensor::new(&[1u32, 5], &Device::Cpu).unwrap();
    let err = Kernels::Fused.gather_log_softmax(&logits, &ids, 1.0).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}
