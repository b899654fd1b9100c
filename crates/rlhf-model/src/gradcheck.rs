//! Central finite-difference checks of autograd gradients, for tests of anything that trains
//! (ops, models, losses). Run in f64: the truncation error of a central difference with step h
//! is O(h²), so analytic and numeric gradients agree to ~1e-8 relative when the backward is right.

use crate::model::CausalLm;
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// Largest disagreement found, for assertion messages.
#[derive(Debug, Clone)]
pub struct GradReport {
    pub worst_rel_err: f64,
    pub worst: String,
    pub checked: usize,
}

/// Compares `d loss / d var` from `backward()` with central differences for up to `per_var`
/// evenly spaced elements of every var. Errors if a var gets no gradient or an all-zero one.
pub fn check_gradients(
    vars: &[(String, Var)],
    loss: &dyn Fn() -> Result<Tensor>,
    h: f64,
    per_var: usize,
) -> Result<GradReport> {
    check(vars, loss, h, per_var, &|store, _, var| Ok(store.get(var.as_tensor()).cloned()))
}

/// Like [`check_gradients`] for a model's parameters, reading gradients through
/// [`CausalLm::grads`] (fused layers keep theirs outside candle's `GradStore`).
pub fn check_model_gradients(
    model: &CausalLm,
    vars: &[(String, Var)],
    loss: &dyn Fn() -> Result<Tensor>,
    h: f64,
    per_var: usize,
) -> Result<GradReport> {
    model.zero_grad();
    check(vars, loss, h, per_var, &|store, name, var| model.grads(store).get(name, var))
}

type GradOf<'a> = dyn Fn(&GradStore, &str, &Var) -> Result<Option<Tensor>> + 'a;

fn check(
    vars: &[(String, Var)],
    loss: &dyn Fn() -> Result<Tensor>,
    h: f64,
    per_var: usize,
    grad_of: &GradOf,
) -> Result<GradReport> {
    let store = loss()?.backward()?;
    let mut report = GradReport { worst_rel_err: 0.0, worst: String::new(), checked: 0 };
    for (name, var) in vars {
        if var.dtype() != DType::F64 {
            candle_core::bail!("gradcheck: {name} must be f64");
        }
        let Some(g) = grad_of(&store, name, var)? else {
            candle_core::bail!("gradcheck: {name} received no gradient");
        };
        let analytic = g.flatten_all()?.to_vec1::<f64>()?;
        if analytic.iter().all(|&x| x == 0.0) {
            candle_core::bail!("gradcheck: {name} received an all-zero gradient");
        }
        let original = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let n = original.len();
        let step = (n / per_var.max(1)).max(1);
        for i in (0..n).step_by(step).take(per_var) {
            let at = |delta: f64| -> Result<f64> {
                let mut v = original.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), var.device())?)?;
                loss()?.to_scalar::<f64>()
            };
            let numeric = (at(h)? - at(-h)?) / (2.0 * h);
            var.set(&Tensor::from_vec(original.clone(), var.shape(), var.device())?)?;
            let a = analytic[i];
            // Relative error, with an absolute floor: gradients below 1e-3 are compared to 1e-3
            // (round-off of a central difference is ~1e-9 absolute on losses of size ~10²).
            let rel = (a - numeric).abs() / (a.abs().max(numeric.abs()).max(1e-3));
            report.checked += 1;
            if rel > report.worst_rel_err {
                report.worst_rel_err = rel;
                report.worst = format!("{name}[{i}]: analytic {a:e} vs numeric {numeric:e}");
            }
        }
    }
    Ok(report)
}

/// Largest absolute elementwise difference of two tensors of the same shape, in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
    d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}
