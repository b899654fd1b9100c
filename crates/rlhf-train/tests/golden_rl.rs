//! GRPO/PPO pieces against fixtures/golden (TRL 1.16's own GRPO code and an independent PPO
//! reference, float64; conventions in its README), plus the invariants of docs/ARCHITECTURE.md, details 6, 7, 13–26.
//! Golden inputs are (B, T) with masks; we select the masked positions into the trainers' flattened
//! `[N]` / ragged-row forms, never reading a padded slot.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlhf_model::gradcheck::check_gradients;
use rlhf_train::advantage::*;
use rlhf_train::aggregate::{flat_token_weights, token_weights, LossAggregation};
use rlhf_train::kl::*;
use rlhf_train::policy_loss::*;
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// JSON null stands for NaN.
fn vec1(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn mat(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(vec1).collect()
}

/// The masked positions of each row of `v`.
fn select(v: &Value, mask: &[Vec<f64>]) -> Vec<Vec<f64>> {
    mat(v)
        .iter()
        .zip(mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &m)| m == 1.0).map(|(x, _)| *x).collect())
        .collect()
}

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

fn close(what: &str, ours: f64, theirs: f64, tol: f64) {
    let ok = (ours.is_nan() && theirs.is_nan()) || (ours - theirs).abs() <= tol * theirs.abs().max(1.0);
    assert!(ok, "{what}: ours {ours} vs golden {theirs}");
}

fn close_all(what: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (o, g)) in ours.iter().zip(theirs).enumerate() {
        close(&format!("{what}[{i}]"), *o, *g, tol);
    }
}

fn stat(stats: &PolicyStats, name: &str) -> f64 {
    stats.rows().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no metric {name}")).1
}

#[test]
fn grpo_advantages_match_trl() {
    let g = golden("grpo_advantages.json");
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut seen: Vec<Vec<f64>> = Vec::new();
    for case in cases {
        let (name, p, i, o) = (case["name"].as_str().unwrap(), &case["params"], &case["inputs"], &case["outputs"]);
        let scale = match p["scale_rewards"].as_str().unwrap() {
            "group" => StdScale::Group,
            "batch" => StdScale::Batch,
            "none" => StdScale::None,
            s => panic!("{name}: scale {s}"),
        };
        let agg = match p["multi_objective_aggregation"].as_str().unwrap() {
            "sum_then_normalize" => MultiRewardAggregation::SumThenNormalize,
            "normalize_then_sum" => MultiRewardAggregation::NormalizeThenSum,
            s => panic!("{name}: aggregation {s}"),
        };
        let g_size = p["num_generations"].as_u64().unwrap() as usize;
        let (rpf, w) = (mat(&i["rewards_per_func"]), vec1(&i["reward_weights"]));
        let out = group_advantages(&rpf, &w, g_size, scale, agg).unwrap();
        close_all(&format!("{name} advantages"), &out.advantages, &vec1(&o["advantages"]), 1e-12);
        close_all(&format!("{name} rewards"), &out.rewards, &vec1(&o["rewards"]), 1e-12);
        close_all(&format!("{name} std_rewards"), &out.std_rewards, &vec1(&o["std_rewards"]), 1e-12);
        let zero: Vec<bool> = vec1(&o["is_std_zero"]).iter().map(|&z| z == 1.0).collect();
        assert_eq!(out.is_std_zero, zero, "{name} is_std_zero");
        // The option matters where TRL uses it: with sum_then_normalize another scale gives other
        // advantages; normalize_then_sum z-scores each function by its group std whatever the
        // scale, so there it must make no difference.
        let other = if scale == StdScale::None { StdScale::Group } else { StdScale::None };
        let alt = group_advantages(&rpf, &w, g_size, other, agg).unwrap().advantages;
        let differs = alt.iter().zip(&out.advantages).any(|(a, b)| (a - b).abs() > 1e-6);
        match agg {
            MultiRewardAggregation::SumThenNormalize => assert!(differs, "{name}: scale has no effect"),
            MultiRewardAggregation::NormalizeThenSum => assert!(!differs, "{name}: TRL ignores the scale here"),
        }
        seen.push(out.advantages);
    }
    seen.dedup();
    assert_eq!(seen.len(), cases.len(), "golden cases must differ");
    assert!(group_advantages(&vec![vec![1.0]; 6], &[1.0], 4, StdScale::Group, Default::default()).is_err());
    assert!(group_advantages(&vec![vec![1.0, 2.0]; 4], &[1.0], 4, StdScale::Group, Default::default()).is_err());
}

fn aggregation(p: &Value, lengths: &[usize], num_items: usize) -> Vec<f64> {
    let max_len = p["max_completion_length"].as_u64().unwrap() as usize;
    match p["loss_type"].as_str().unwrap() {
        "grpo" => flat_token_weights(LossAggregation::SequenceMean, lengths, max_len, None),
        "dapo" => flat_token_weights(LossAggregation::TokenMean, lengths, max_len, Some(num_items)),
        "bnpo" => flat_token_weights(LossAggregation::Bnpo, lengths, max_len, None),
        "dr_grpo" => flat_token_weights(LossAggregation::ConstantDivisor, lengths, max_len, None),
        s => panic!("loss type {s}"),
    }
}

/// One golden GRPO case, flattened: (cfg, logp, old, ref, advantages per token, lengths).
struct GrpoCase {
    cfg: ClipConfig,
    logp: Vec<f64>,
    old: Vec<f64>,
    reference: Vec<f64>,
    adv: Vec<f64>,
    lengths: Vec<usize>,
}

fn grpo_case(p: &Value, i: &Value) -> GrpoCase {
    assert_eq!(p["importance_sampling_level"], "token");
    for k in ["gradient_accumulation_steps", "steps_per_generation", "num_processes"] {
        assert_eq!(p[k].as_u64(), Some(1), "{k}");
    }
    let mask = mat(&i["completion_mask"]);
    let logp = select(&i["per_token_logps"], &mask);
    let lengths: Vec<usize> = logp.iter().map(Vec::len).collect();
    let adv = vec1(&i["advantages"]).iter().zip(&lengths).flat_map(|(&a, &n)| vec![a; n]).collect();
    let cfg = ClipConfig {
        epsilon_low: p["epsilon"].as_f64().unwrap(),
        epsilon_high: p["epsilon_high"].as_f64().unwrap(),
        dual_clip: None,
    };
    GrpoCase {
        cfg,
        logp: logp.concat(),
        old: select(&i["old_per_token_logps"], &mask).concat(),
        reference: select(&i["ref_per_token_logps"], &mask).concat(),
        adv,
        lengths,
    }
}

#[test]
fn grpo_loss_matches_trl() {
    let g = golden("grpo_loss.json");
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut losses = Vec::new();
    for case in cases {
        let (name, p, i, o) = (case["name"].as_str().unwrap(), &case["params"], &case["inputs"], &case["outputs"]);
        let c = grpo_case(p, i);
        let mask = mat(&i["completion_mask"]);
        let num_items = i["num_items_in_batch"].as_f64().unwrap() as usize;
        let beta = p["beta"].as_f64().unwrap();
        let w = aggregation(p, &c.lengths, num_items);
        let (logp, old, reference, adv, weights) = (t(&c.logp), t(&c.old), t(&c.reference), t(&c.adv), t(&w));
        let x = PolicyLossInputs {
            logp: &logp,
            old_logp: &old,
            advantages: &adv,
            weights: &weights,
            ref_logp: Some(&reference),
            kl_coef: beta,
            kl_estimator: KlEstimator::K3,
        };
        let (per_token, ratio) = per_token_policy_loss(&c.cfg, &x).unwrap();
        close_all(&format!("{name} coef_1"), &host(&ratio), &select(&o["coef_1"], &mask).concat(), 1e-12);
        close_all(
            &format!("{name} per_token_loss"),
            &host(&per_token),
            &select(&o["per_token_loss"], &mask).concat(),
            1e-12,
        );
        let kl: Vec<f64> =
            c.logp.iter().zip(&c.reference).map(|(&l, &r)| kl_value(KlEstimator::K3, l, r, None)).collect();
        close_all(&format!("{name} per_token_kl"), &kl, &select(&o["per_token_kl"], &mask).concat(), 1e-12);

        let (loss, stats) = clipped_policy_loss(&c.cfg, &x).unwrap();
        let loss = scalar(&loss);
        close(&format!("{name} loss"), loss, o["loss"].as_f64().unwrap(), 1e-12);
        if let Some(kl) = o["kl"].as_f64() {
            close(&format!("{name} kl"), stat(&stats, "kl"), kl, 1e-12);
        }
        for m in ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"] {
            close(&format!("{name} {m}"), stat(&stats, m), o[m].as_f64().unwrap(), 1e-7);
        }
        // Per-row means, from one call per row (a fully masked row has no tokens and is skipped, as
        // TRL's nanmin/nanmax skip its NaN).
        let (mut low_min, mut high_max, mut start) = (f64::INFINITY, f64::NEG_INFINITY, 0);
        let mut merged = PolicyStats::default();
        for &n in &c.lengths {
            let sl = |v: &Tensor| v.narrow(0, start, n).unwrap();
            let (lp, ol, rf, ad, wt) = (sl(&logp), sl(&old), sl(&reference), sl(&adv), sl(&weights));
            let xr =
                PolicyLossInputs { logp: &lp, old_logp: &ol, advantages: &ad, weights: &wt, ref_logp: Some(&rf), ..x };
            let (_, s) = clipped_policy_loss(&c.cfg, &xr).unwrap();
            if n > 0 {
                low_min = low_min.min(stat(&s, "clip_ratio/low_mean"));
                high_max = high_max.max(stat(&s, "clip_ratio/high_mean"));
            }
            merged.merge(&s);
            start += n;
        }
        close(&format!("{name} low_min"), low_min, o["clip_ratio/low_min"].as_f64().unwrap(), 1e-7);
        close(&format!("{name} high_max"), high_max, o["clip_ratio/high_max"].as_f64().unwrap(), 1e-7);
        assert_eq!(merged.tokens, stats.tokens);
        for ((n1, v1), (n2, v2)) in merged.rows().iter().zip(stats.rows()) {
            assert_eq!(n1, &n2);
            close(&format!("{name} merged {n1}"), *v1, v2, 1e-12);
        }
        // Another aggregation gives another loss: the mode is really exercised.
        let other = if p["loss_type"] == "grpo" { LossAggregation::Bnpo } else { LossAggregation::SequenceMean };
        let alt = flat_token_weights(other, &c.lengths, 7, None);
        let alt_loss = scalar(&clipped_policy_loss(&c.cfg, &PolicyLossInputs { weights: &t(&alt), ..x }).unwrap().0);
        assert!((alt_loss - loss).abs() > 1e-6, "{name}: aggregation has no effect");

        // The same case in f32 agrees to f32 precision.
        let f = |v: &Tensor| v.to_dtype(DType::F32).unwrap();
        let (l32, o32, r32, a32, w32) = (f(&logp), f(&old), f(&reference), f(&adv), f(&weights));
        let x32 =
            PolicyLossInputs { logp: &l32, old_logp: &o32, advantages: &a32, weights: &w32, ref_logp: Some(&r32), ..x };
        let (loss32, _) = clipped_policy_loss(&c.cfg, &x32).unwrap();
        assert_eq!(loss32.dtype(), DType::F32);
        close(&format!("{name} f32 loss"), scalar(&loss32), loss, 1e-5);
        losses.push(loss);
    }
    losses.dedup();
    assert_eq!(losses.len(), cases.len(), "golden losses must differ across cases");
}

#[test]
fn ppo_pipeline_matches_reference() {
    let g = golden("ppo_reference.json");
    let cases = g["cases"].as_array().unwrap();
    let (mut pipelines, mut whitens) = (0, 0);
    for case in cases {
        let (name, p, i, o) = (case["name"].as_str().unwrap(), &case["params"], &case["inputs"], &case["outputs"]);
        let f = |k: &str| p[k].as_f64().unwrap();
        let unbiased = p["unbiased"].as_bool().unwrap();
        if p["kind"] == "whiten" {
            assert_eq!(f("eps"), 1e-8);
            let mask = mat(&i["mask"]);
            let values = select(&i["values"], &mask);
            let ours = masked_whiten(&values, p["shift_mean"].as_bool().unwrap(), unbiased);
            close_all(&format!("{name} whitened"), &ours.concat(), &select(&o["whitened"], &mask).concat(), 1e-12);
            let (mean, var) = mean_var(&values, unbiased);
            close(&format!("{name} mean"), mean, o["masked_mean"].as_f64().unwrap(), 1e-12);
            close(&format!("{name} var"), var, o["masked_var"].as_f64().unwrap(), 1e-12);
            whitens += 1;
            continue;
        }
        assert_eq!(p["kind"], "pipeline");
        pipelines += 1;
        let mask = mat(&i["response_mask"]);
        let sel = |k: &str| select(&i[k], &mask);
        let (logp, reference, values) = (sel("logprobs"), sel("ref_logprobs"), sel("values"));
        let lengths: Vec<usize> = logp.iter().map(Vec::len).collect();
        let last: Vec<f64> = lengths.iter().map(|&n| n as f64 - 1.0).collect();
        assert_eq!(last, vec1(&o["last_token_index"]), "{name}: right padding");
        let est = match p["kl_estimator"].as_str().unwrap() {
            "k1" => KlEstimator::K1,
            "k3" => KlEstimator::K3,
            s => panic!("{name}: estimator {s}"),
        };
        let kl: Vec<Vec<f64>> = logp
            .iter()
            .zip(&reference)
            .map(|(l, r)| l.iter().zip(r).map(|(&l, &r)| kl_value(est, l, r, None)).collect())
            .collect();
        let cmp = |what: &str, ours: &[Vec<f64>]| {
            close_all(&format!("{name} {what}"), &ours.concat(), &select(&o[what], &mask).concat(), 1e-12)
        };
        cmp("kl", &kl);
        let kl_coef = f("kl_coef");
        cmp("non_score_reward", &kl_penalised_rewards(&kl, &vec![0.0; kl.len()], kl_coef));
        let mut rewards = kl_penalised_rewards(&kl, &vec1(&i["scores"]), kl_coef);
        if p["whiten_rewards"].as_bool().unwrap() {
            rewards = masked_whiten(&rewards, false, unbiased);
        }
        cmp("rewards", &rewards);
        let (adv_raw, returns) = gae(&rewards, &values, f("gamma"), f("lam"));
        cmp("advantages_raw", &adv_raw);
        cmp("returns", &returns);
        let adv = masked_whiten(&adv_raw, true, unbiased);
        cmp("advantages", &adv);

        let w = flat_token_weights(LossAggregation::Bnpo, &lengths, 0, None);
        let (new_logp, old_logp, a, wt) =
            (t(&sel("new_logprobs").concat()), t(&logp.concat()), t(&adv.concat()), t(&w));
        let clip = ClipConfig { epsilon_low: f("cliprange"), epsilon_high: f("cliprange"), dual_clip: None };
        let x = PolicyLossInputs {
            logp: &new_logp,
            old_logp: &old_logp,
            advantages: &a,
            weights: &wt,
            ref_logp: None,
            kl_coef: 0.0,
            kl_estimator: KlEstimator::K1,
        };
        let (_, ratio) = per_token_policy_loss(&clip, &x).unwrap();
        close_all(&format!("{name} ratio"), &host(&ratio), &select(&o["ratio"], &mask).concat(), 1e-12);
        let (pg, stats) = clipped_policy_loss(&clip, &x).unwrap();
        let pg = scalar(&pg);
        close(&format!("{name} pg_loss"), pg, o["pg_loss"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} pg_clipfrac"), stat(&stats, "pg_clipfrac"), o["pg_clipfrac"].as_f64().unwrap(), 1e-12);
        assert!(stats.rows().iter().all(|(n, _)| n != "kl"), "no reference, no kl metric");

        let (nv, v, ret) = (t(&sel("new_values").concat()), t(&values.concat()), t(&returns.concat()));
        let (vf, vf_clipped) = clipped_value_loss(&nv, &v, &ret, &wt, Some(f("cliprange_value"))).unwrap();
        let vf = scalar(&vf);
        close(&format!("{name} vf_loss"), vf, o["vf_loss"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} vf_clipfrac"), vf_clipped / w.len() as f64, o["vf_clipfrac"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} loss"), pg + f("vf_coef") * vf, o["loss"].as_f64().unwrap(), 1e-12);
        // Without the value clip the loss is the plain squared error, and it differs here.
        let (plain, n0) = clipped_value_loss(&nv, &v, &ret, &wt, None).unwrap();
        let mse: f64 = host(&nv).iter().zip(host(&ret)).map(|(v, r)| (v - r) * (v - r)).sum::<f64>() / w.len() as f64;
        close(&format!("{name} unclipped vf"), scalar(&plain), 0.5 * mse, 1e-12);
        assert_eq!(n0, 0.0);
        assert!(vf_clipped == 0.0 || (scalar(&plain) - vf).abs() > 1e-9, "{name}: value clip has no effect");
    }
    assert!(pipelines >= 4 && whitens >= 2, "{pipelines} pipeline and {whitens} whitening cases");
}

#[test]
fn first_minibatch_ratio_is_one_and_gradient_is_minus_advantage() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 40;
    let logp: Vec<f64> = (0..n).map(|_| -rng.random_range(0.0..4.0)).collect();
    let adv: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    let lengths = [7, 0, 13, 1, 19];
    let w = flat_token_weights(LossAggregation::SequenceMean, &lengths, 20, None);
    let var = Var::new(logp.as_slice(), &Device::Cpu).unwrap();
    let (old, a, wt) = (t(&logp), t(&adv), t(&w));
    for est in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
        let cfg = ClipConfig { epsilon_low: 0.2, epsilon_high: 0.28, dual_clip: Some(3.0) };
        let x = PolicyLossInputs {
            logp: var.as_tensor(),
            old_logp: &old,
            advantages: &a,
            weights: &wt,
            ref_logp: Some(&old),
            kl_coef: 0.04,
            kl_estimator: est,
        };
        let (loss, stats) = clipped_policy_loss(&cfg, &x).unwrap();
        assert_eq!(stat(&stats, "ratio/mean"), 1.0);
        assert_eq!(stat(&stats, "ratio/max"), 1.0);
        for m in ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "pg_clipfrac", "kl"] {
            assert_eq!(stat(&stats, m), 0.0, "{m}");
        }
        // loss = −Σ w·A (zero only on average); d loss / d logp_t = −w_t·A_t. k2 and k3 have zero
        // slope at π = π_ref; k1's is 1, so its β·k1 term still pushes logp down.
        let expected: f64 = -w.iter().zip(&adv).map(|(w, a)| w * a).sum::<f64>();
        close("loss at ratio 1", scalar(&loss), expected, 1e-14);
        let grad = host(loss.backward().unwrap().get(var.as_tensor()).unwrap());
        let kl_slope = if est == KlEstimator::K1 { 0.04 } else { 0.0 };
        for ((g, w), a) in grad.iter().zip(&w).zip(&adv) {
            close(&format!("{est:?} gradient"), *g, -w * a + kl_slope * w, 1e-14);
            if est != KlEstimator::K1 {
                assert!(*g * a <= 0.0, "gradient ascends the advantage");
            }
        }
    }
}

#[test]
fn kl_estimators() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let logp: Vec<f64> = (0..500).map(|_| -rng.random_range(0.0..12.0)).collect();
    let reference: Vec<f64> = (0..500).map(|_| -rng.random_range(0.0..12.0)).collect();
    for est in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
        for clamp in [None, Some(10.0)] {
            let ours = host(&kl_tensor(est, &t(&logp), &t(&reference), clamp).unwrap());
            for (k, (&l, &r)) in ours.iter().zip(logp.iter().zip(&reference)) {
                close("tensor vs host", *k, kl_value(est, l, r, clamp), 1e-13);
                if est != KlEstimator::K1 {
                    assert!(*k >= 0.0, "{est:?} negative: {k}");
                }
                if let Some(c) = clamp {
                    assert!(k.abs() <= c);
                }
            }
            assert!(ours.iter().any(|k| k.abs() > 10.0) == clamp.is_none(), "{est:?} {clamp:?}: clamp exercised");
        }
        assert_eq!(kl_value(est, -1.3, -1.3, None), 0.0);
        assert_eq!(host(&kl_tensor(est, &t(&logp), &t(&logp), None).unwrap()), vec![0.0; 500]);
    }
    assert!(logp.iter().zip(&reference).any(|(l, r)| kl_value(KlEstimator::K1, *l, *r, None) < 0.0));
    close("k3", kl_value(KlEstimator::K3, 0.5, 0.0, None), (-0.5f64).exp() - 0.5, 1e-15);
    close("k2", kl_value(KlEstimator::K2, 0.5, 0.0, None), 0.125, 1e-15);
    assert_eq!(serde_json::to_string(&KlEstimator::K3).unwrap(), "\"k3\"");
}

#[test]
fn kl_controller() {
    let cfg = KlControllerConfig::default();
    assert_eq!((cfg.kind, cfg.init_kl_coef, cfg.target, cfg.horizon), (KlControl::Adaptive, 0.05, 6.0, 10000.0));
    cfg.validate().unwrap();
    let mut c = KlController::new(&cfg);
    c.update(6.0, 256);
    assert_eq!(c.coef, 0.05);
    c.update(60.0, 256); // error clipped to +0.2
    close("adaptive up", c.coef, 0.05 * (1.0 + 0.2 * 256.0 / 10000.0), 1e-15);
    let before = c.coef;
    c.update(5.4, 100); // error −0.1
    close("adaptive down", c.coef, before * (1.0 - 0.1 * 100.0 / 10000.0), 1e-15);
    let mut fixed = KlController::new(&KlControllerConfig { kind: KlControl::Fixed, ..cfg.clone() });
    fixed.update(60.0, 256);
    assert_eq!(fixed.coef, 0.05);
    assert!(KlControllerConfig { target: 0.0, ..cfg.clone() }.validate().is_err());
    let parsed: KlControllerConfig = serde_json::from_str(r#"{"kind": "fixed", "init_kl_coef": 0.1}"#).unwrap();
    assert_eq!((parsed.kind, parsed.init_kl_coef, parsed.target), (KlControl::Fixed, 0.1, 6.0));
    assert!(serde_json::from_str::<KlControllerConfig>(r#"{"horizn": 1}"#).is_err());
}

#[test]
fn gae_by_hand() {
    // γ = 0.9, λ = 0.8: δ = [1 + 0.9·0.2 − 0.5, 0 + 0.9·1 − 0.2, 2 − 1] = [0.68, 0.7, 1]
    // A₂ = 1, A₁ = 0.7 + 0.72·1 = 1.42, A₀ = 0.68 + 0.72·1.42 = 1.7024.
    let (a, r) = gae(&[vec![1.0, 0.0, 2.0], vec![]], &[vec![0.5, 0.2, 1.0], vec![]], 0.9, 0.8);
    close_all("A", &a[0], &[1.7024, 1.42, 1.0], 1e-14);
    close_all("R", &r[0], &[2.2024, 1.62, 2.0], 1e-14);
    assert!(a[1].is_empty() && r[1].is_empty());
    // γ = λ = 1: Monte Carlo, A_t = Σ_{l≥t} r_l − V_t; λ = 0: one-step TD.
    let (a, _) = gae(&[vec![1.0, 0.0, 2.0]], &[vec![0.5, 0.2, 1.0]], 1.0, 1.0);
    close_all("MC", &a[0], &[2.5, 1.8, 1.0], 1e-14);
    let (a, _) = gae(&[vec![1.0, 0.0, 2.0]], &[vec![0.5, 0.2, 1.0]], 0.9, 0.0);
    close_all("TD", &a[0], &[0.68, 0.7, 1.0], 1e-14);
    // Score on the last token only; empty rows stay empty.
    let r = kl_penalised_rewards(&[vec![0.1, -0.2], vec![]], &[3.0, 5.0], 0.5);
    assert_eq!(r, vec![vec![-0.05, 0.1 + 3.0], vec![]]);
}

#[test]
fn micro_batches_sum_to_the_whole_batch() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let lengths = [5usize, 0, 9, 1, 12, 3, 7];
    let n: usize = lengths.iter().sum();
    let per_token: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let logp: Vec<f64> = (0..n).map(|_| -rng.random_range(0.1..3.0)).collect();
    let old: Vec<f64> = logp.iter().map(|l| l + rng.random_range(-0.4..0.4)).collect();
    let adv: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    let cfg = ClipConfig { epsilon_low: 0.2, epsilon_high: 0.28, dual_clip: Some(3.0) };
    for mode in [
        LossAggregation::SequenceMean,
        LossAggregation::TokenMean,
        LossAggregation::Bnpo,
        LossAggregation::ConstantDivisor,
    ] {
        let w = token_weights(mode, &lengths, 16, Some(n + 11));
        let total: f64 = w.concat().iter().sum();
        let expected = match mode {
            LossAggregation::SequenceMean => 6.0 / 7.0, // the empty row counts in B
            LossAggregation::TokenMean => n as f64 / (n + 11) as f64,
            LossAggregation::Bnpo => 1.0,
            LossAggregation::ConstantDivisor => n as f64 / (7.0 * 16.0),
        };
        close(&format!("{mode:?} total weight"), total, expected, 1e-14);
        let flat = w.concat();
        let whole: f64 = flat.iter().zip(&per_token).map(|(w, l)| w * l).sum();
        // Tensors: the whole batch against uneven micro-batches of rows (3 + 1 + 3 rows).
        let run = |range: std::ops::Range<usize>| {
            let (lp, ol, ad, wt) =
                (t(&logp[range.clone()]), t(&old[range.clone()]), t(&adv[range.clone()]), t(&flat[range]));
            let var = Var::from_tensor(&lp).unwrap();
            let x = PolicyLossInputs {
                logp: var.as_tensor(),
                old_logp: &ol,
                advantages: &ad,
                weights: &wt,
                ref_logp: Some(&ol),
                kl_coef: 0.1,
                kl_estimator: KlEstimator::K3,
            };
            let (loss, stats) = clipped_policy_loss(&cfg, &x).unwrap();
            let grad = host(loss.backward().unwrap().get(var.as_tensor()).unwrap());
            (scalar(&loss), grad, stats)
        };
        let (loss_all, grad_all, stats_all) = run(0..n);
        let (mut sum, mut split, mut grad, mut stats) = (0.0, 0.0, Vec::new(), PolicyStats::default());
        let mut start = 0;
        for rows in [&lengths[..3], &lengths[3..4], &lengths[4..]] {
            let len: usize = rows.iter().sum();
            split +=
                flat[start..start + len].iter().zip(&per_token[start..start + len]).map(|(w, l)| w * l).sum::<f64>();
            let (l, g, s) = run(start..start + len);
            sum += l;
            grad.extend(g);
            stats.merge(&s);
            start += len;
        }
        close(&format!("{mode:?} host split"), split, whole, 1e-14);
        close(&format!("{mode:?} loss split"), sum, loss_all, 1e-14);
        close_all(&format!("{mode:?} grad split"), &grad, &grad_all, 1e-14);
        assert_eq!(stats.tokens, stats_all.tokens);
        for ((n1, v1), (_, v2)) in stats.rows().iter().zip(stats_all.rows()) {
            close(&format!("{mode:?} {n1}"), *v1, v2, 1e-14);
        }
        assert!(stat(&stats_all, "pg_clipfrac") > 0.0, "clipping exercised");
    }
    assert_eq!(LossAggregation::default(), LossAggregation::TokenMean);
    assert_eq!(serde_json::to_string(&LossAggregation::ConstantDivisor).unwrap(), "\"constant_divisor\"");
    assert_eq!(serde_json::to_string(&LossAggregation::SequenceMean).unwrap(), "\"sequence_mean\"");
    assert!(token_weights(LossAggregation::TokenMean, &[0, 0], 4, None).iter().all(Vec::is_empty));
}

#[test]
fn policy_loss_gradient_matches_finite_differences() {
    // Ratios spread over every branch (inside, below, above, beyond the dual clip at 3), each
    // far (≥ 1e-3) from a kink so the central difference is smooth.
    let delta = [0.0, 0.1, -0.1, 0.4, -0.5, 0.3, -0.35, 1.5, 1.3, -1.0, 0.05, 2.0];
    let adv = [1.0, -0.5, 0.7, 1.2, -1.1, -0.9, 0.8, -2.0, 0.6, 0.4, 0.0, -0.3];
    let old: Vec<f64> = (0..12).map(|i| -0.2 - 0.15 * i as f64).collect();
    let logp: Vec<f64> = old.iter().zip(delta).map(|(o, d)| o + d).collect();
    let reference: Vec<f64> = old.iter().map(|o| o - 0.3).collect();
    let w = flat_token_weights(LossAggregation::SequenceMean, &[5, 7], 7, None);
    let var = Var::new(logp.as_slice(), &Device::Cpu).unwrap();
    let (o, a, r, wt) = (t(&old), t(&adv), t(&reference), t(&w));
    let cfg = ClipConfig { epsilon_low: 0.2, epsilon_high: 0.28, dual_clip: Some(3.0) };
    let x = PolicyLossInputs {
        logp: var.as_tensor(),
        old_logp: &o,
        advantages: &a,
        weights: &wt,
        ref_logp: Some(&r),
        kl_coef: 0.05,
        kl_estimator: KlEstimator::K3,
    };
    // A < 0 with r = e^1.5 and e^2 > c: the loss is capped at −c·A (plus β·k3).
    let (per_token, _) = per_token_policy_loss(&cfg, &PolicyLossInputs { kl_coef: 0.0, ..x }).unwrap();
    let per_token = host(&per_token);
    close("dual clip", per_token[7], 6.0, 1e-14);
    close("dual clip", per_token[11], 0.9, 1e-14);
    close("clip high", per_token[3], -1.2 * 1.28, 1e-14);
    close("unclipped", per_token[1], 0.5 * 0.1f64.exp(), 1e-14);
    let (_, stats) = clipped_policy_loss(&cfg, &x).unwrap();
    assert!(stats.dual_clipped > 0 && stats.clipped_low > 0 && stats.clipped_high > 0, "{stats:?}");
    let vars = vec![("logp".to_string(), var.clone())];
    let rep = check_gradients(&vars, &|| Ok(clipped_policy_loss(&cfg, &x)?.0), 1e-6, 12).unwrap();
    assert!(rep.worst_rel_err < 1e-7, "{rep:?}");

    let values = Var::new(&[0.5f64, -0.3, 1.2, 0.0, 2.0], &Device::Cpu).unwrap();
    let (old_v, ret, wv) = (t(&[0.45, 0.1, 0.5, 0.05, 2.5]), t(&[1.0, -1.0, 0.2, 0.3, 2.2]), t(&[0.2; 5]));
    let vars = vec![("values".to_string(), values.clone())];
    let loss = || Ok(clipped_value_loss(values.as_tensor(), &old_v, &ret, &wv, Some(0.2))?.0);
    let rep = check_gradients(&vars, &loss, 1e-6, 5).unwrap();
    assert!(rep.worst_rel_err < 1e-7, "{rep:?}");
    assert!(clipped_value_loss(values.as_tensor(), &old_v, &ret, &wv, Some(0.2)).unwrap().1 > 0.0);
}

#[test]
fn rloo_process_supervision_and_explained_variance() {
    let a = rloo_advantages(&[1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, 1.0], 4).unwrap();
    close_all(
        "rloo",
        &a,
        &[
            1.0 - 11.0 / 3.0,
            2.0 - 10.0 / 3.0,
            3.0 - 3.0,
            6.0 - 2.0,
            -2.0 / 3.0,
            -2.0 / 3.0,
            1.0 - 1.0 / 3.0,
            1.0 - 1.0 / 3.0,
        ],
        1e-14,
    );
    assert!(rloo_advantages(&[1.0, 2.0], 1).is_err() && rloo_advantages(&[1.0, 2.0, 3.0], 2).is_err());

    // Step rewards of the group [1, 0, 2]: mean 1, unbiased std 1.
    let z = 1.0 / (1.0 + 1e-4);
    let steps = vec![vec![(1, 1.0), (3, 0.0)], vec![(2, 2.0)], vec![], vec![(0, 5.0)]];
    let adv = process_advantages(&steps, &[4, 3, 2, 1], 2).unwrap();
    close_all("row 0", &adv[0], &[-z, -z, -z, -z], 1e-14);
    close_all("row 1", &adv[1], &[z, z, z], 1e-14);
    assert_eq!(adv[2], vec![0.0, 0.0]); // no steps
    assert_eq!(adv[3], vec![0.0]); // a lone step is its group's mean
    let adv = process_advantages(&[vec![(0, 1.0), (2, 0.0)], vec![(1, 2.0)]], &[3, 2], 2).unwrap();
    close_all("cumulative", &adv[0], &[0.0 - z, -z, -z], 1e-14);
    let adv = process_advantages(&[vec![(0, 3.0), (2, 0.0)], vec![(1, 0.0)]], &[3, 2], 2).unwrap();
    let (m, s) = (1.0, (3.0f64).sqrt() + 1e-4);
    close_all("suffix sums", &adv[0], &[(3.0 - m) / s + (0.0 - m) / s, (0.0 - m) / s, (0.0 - m) / s], 1e-14);
    assert!(process_advantages(&[vec![(3, 1.0)], vec![]], &[3, 2], 2).is_err());

    assert_eq!(explained_variance(&[1.0, 2.0, 4.0], &[1.0, 2.0, 4.0]), 1.0);
    close("ev mean", explained_variance(&[7.0 / 3.0; 3], &[1.0, 2.0, 4.0]), 0.0, 1e-14);
    assert!(explained_variance(&[0.0; 3], &[1.0; 3]).is_nan());
}
