//! DPO-family and Bradley–Terry losses against values computed by TRL 1.16's own code in float64
//! (fixtures/golden, see its README), plus the invariants and gradients of docs/ARCHITECTURE.md, details 6 and 27.

use candle_core::{Device, Tensor, Var};
use rlhf_model::gradcheck::check_gradients;
use rlhf_train::dpo::{dpo_loss, sequence_logps, DpoLossConfig, DpoLossType, PairLogps};
use rlhf_train::reward::bradley_terry_loss;
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = format!("{}/../../fixtures/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn t1(v: &Value) -> Tensor {
    Tensor::new(vec1(v), &Device::Cpu).unwrap()
}

fn t2(v: &Value) -> Tensor {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(vec1).collect();
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

fn lengths(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn close(name: &str, ours: f64, theirs: f64, rel: f64) {
    let tol = rel * theirs.abs().max(1.0);
    assert!((ours - theirs).abs() <= tol, "{name}: ours {ours} vs TRL {theirs}");
}

#[test]
fn dpo_losses_and_metrics_match_trl() {
    let g = golden("dpo.json");
    assert!(g["cases"].as_array().unwrap().len() >= 5);
    for case in g["cases"].as_array().unwrap() {
        let (name, p, i, o) = (case["name"].as_str().unwrap(), &case["params"], &case["inputs"], &case["outputs"]);
        let cfg = DpoLossConfig {
            beta: p["beta"].as_f64().unwrap(),
            label_smoothing: p["label_smoothing"].as_f64().unwrap(),
            loss_type: match p["loss_type"].as_str().unwrap() {
                "sigmoid" => DpoLossType::Sigmoid,
                "ipo" => DpoLossType::Ipo,
                "robust" => DpoLossType::Robust,
                other => panic!("{name}: unexpected loss type {other}"),
            },
        };
        // Sequence logps are masked sums of the per-token ones (masked slots hold junk).
        let chosen = sequence_logps(&t2(&i["chosen_per_token_logps"]), &t2(&i["chosen_loss_mask"])).unwrap();
        for (ours, theirs) in chosen.to_vec1::<f64>().unwrap().iter().zip(vec1(&i["chosen_logps"])) {
            close(&format!("{name} sequence logp"), *ours, theirs, 1e-12);
        }
        let (ct, rt) = (lengths(&i["chosen_num_tokens"]), lengths(&i["rejected_num_tokens"]));
        let out = dpo_loss(
            &cfg,
            &PairLogps {
                chosen: &t1(&i["chosen_logps"]),
                rejected: &t1(&i["rejected_logps"]),
                ref_chosen: &t1(&i["ref_chosen_logps"]),
                ref_rejected: &t1(&i["ref_rejected_logps"]),
                chosen_tokens: &ct,
                rejected_tokens: &rt,
            },
        )
        .unwrap();
        close(&format!("{name} loss"), out.loss.to_scalar::<f64>().unwrap(), o["loss"].as_f64().unwrap(), 1e-12);
        for (a, b) in out.per_pair.to_vec1::<f64>().unwrap().iter().zip(vec1(&o["per_pair_loss"])) {
            close(&format!("{name} per-pair"), *a, b, 1e-12);
        }
        let m = &out.metrics;
        close(&format!("{name} rewards/chosen"), m.rewards_chosen, o["rewards/chosen"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} rewards/rejected"), m.rewards_rejected, o["rewards/rejected"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} rewards/margins"), m.rewards_margins, o["rewards/margins"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} logps/chosen"), m.logps_chosen, o["logps/chosen"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} logps/rejected"), m.logps_rejected, o["logps/rejected"].as_f64().unwrap(), 1e-12);
        // TRL rounds boolean means to float32.
        close(&format!("{name} accuracies"), m.rewards_accuracies, o["rewards/accuracies"].as_f64().unwrap(), 1e-7);
    }
}

#[test]
fn bradley_terry_loss_and_metrics_match_trl() {
    let g = golden("reward.json");
    assert!(g["cases"].as_array().unwrap().len() >= 4);
    for case in g["cases"].as_array().unwrap() {
        let (name, p, i, o) = (case["name"].as_str().unwrap(), &case["params"], &case["inputs"], &case["outputs"]);
        let margin = i.get("margin").filter(|m| !m.is_null()).map(t1);
        let out = bradley_terry_loss(
            &t1(&i["rewards_chosen"]),
            &t1(&i["rewards_rejected"]),
            margin.as_ref(),
            p["center_rewards_coefficient"].as_f64(),
        )
        .unwrap();
        close(&format!("{name} loss"), out.loss.to_scalar::<f64>().unwrap(), o["loss"].as_f64().unwrap(), 1e-12);
        for (a, b) in out.per_pair.to_vec1::<f64>().unwrap().iter().zip(vec1(&o["per_pair_bt_loss"])) {
            close(&format!("{name} per-pair"), *a, b, 1e-12);
        }
        let m = &out.metrics;
        close(&format!("{name} bt_loss"), m.bt_loss, o["bt_loss"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} margin"), m.margin, o["margin"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} min"), m.min_reward, o["min_reward"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} mean"), m.mean_reward, o["mean_reward"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} max"), m.max_reward, o["max_reward"].as_f64().unwrap(), 1e-12);
        close(&format!("{name} accuracy"), m.accuracy, o["accuracy"].as_f64().unwrap(), 1e-7);
    }
}

#[test]
fn dpo_at_init_is_ln2_with_tied_accuracy() {
    let logps = Tensor::new(&[-3.0f64, -7.5, -0.2], &Device::Cpu).unwrap();
    let n = [2usize, 5, 1];
    let out = dpo_loss(
        &DpoLossConfig::default(),
        &PairLogps {
            chosen: &logps,
            rejected: &(&logps - 1.0).unwrap(),
            ref_chosen: &logps,
            ref_rejected: &(&logps - 1.0).unwrap(),
            chosen_tokens: &n,
            rejected_tokens: &n,
        },
    )
    .unwrap();
    assert!((out.loss.to_scalar::<f64>().unwrap() - std::f64::consts::LN_2).abs() < 1e-15);
    assert_eq!(out.metrics.accuracy_ties_half, 0.5);
    assert_eq!(out.metrics.rewards_accuracies, 0.0, "TRL's strict accuracy counts ties as wrong");
}

#[test]
fn dpo_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let chosen = Var::new(&[-2.0f64, -30.0, -4.0], &dev).unwrap();
    let rejected = Var::new(&[-3.0f64, -1.0, -4.5], &dev).unwrap();
    let (rc, rr) =
        (Tensor::new(&[-2.5f64, -20.0, -4.2], &dev).unwrap(), Tensor::new(&[-2.0f64, -3.0, -4.0], &dev).unwrap());
    let n = [3usize, 4, 1];
    let vars = vec![("chosen".to_string(), chosen.clone()), ("rejected".to_string(), rejected.clone())];
    for (loss_type, eps) in
        [(DpoLossType::Sigmoid, 0.0), (DpoLossType::Sigmoid, 0.2), (DpoLossType::Ipo, 0.0), (DpoLossType::Robust, 0.1)]
    {
        let cfg = DpoLossConfig { beta: 0.5, loss_type, label_smoothing: eps };
        let loss = || {
            let p = PairLogps {
                chosen: &chosen,
                rejected: &rejected,
                ref_chosen: &rc,
                ref_rejected: &rr,
                chosen_tokens: &n,
                rejected_tokens: &n,
            };
            Ok(dpo_loss(&cfg, &p)?.loss)
        };
        let r = check_gradients(&vars, &loss, 1e-6, 3).unwrap();
        assert!(r.worst_rel_err < 1e-6, "{loss_type:?} ε={eps}: {r:?}");
    }
}

#[test]
fn bradley_terry_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let c = Var::new(&[0.3f64, -40.0, 2.0, 1.0], &dev).unwrap();
    let r = Var::new(&[0.1f64, 5.0, -1.0, 1.0], &dev).unwrap();
    let margin = Tensor::new(&[0.0f64, 1.0, 0.5, 2.0], &dev).unwrap();
    let vars = vec![("c".to_string(), c.clone()), ("r".to_string(), r.clone())];
    let loss = || Ok(bradley_terry_loss(&c, &r, Some(&margin), Some(0.01))?.loss);
    let rep = check_gradients(&vars, &loss, 1e-6, 4).unwrap();
    assert!(rep.worst_rel_err < 1e-6, "{rep:?}");
}
