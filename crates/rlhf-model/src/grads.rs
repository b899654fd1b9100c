//! Gradients of weights that bypass candle's `GradStore`.
//!
//! The fused decoder layer (`llama_layer.rs`) computes its own backward pass and writes weight
//! gradients straight into persistent per-weight buffers here, with gemm accumulating in place:
//! no zero-filled buffer and no extra addition per weight per step, and nothing reallocated
//! between steps. Several backward passes before `clear` accumulate (micro-batches).
//! [`Grads`] merges these with candle's `GradStore` so optimisers and tests see one set.

use crate::ops::cpu::Real;
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use std::collections::HashMap;
use std::sync::Mutex;

pub enum GradData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Element types a gradient buffer can hold.
pub trait GradElem: Real {
    fn buffer(d: &mut GradData) -> Option<&mut Vec<Self>>;
    fn wrap(v: Vec<Self>) -> GradData;
}

impl GradElem for f32 {
    fn buffer(d: &mut GradData) -> Option<&mut Vec<f32>> {
        match d {
            GradData::F32(v) => Some(v),
            GradData::F64(_) => None,
        }
    }
    fn wrap(v: Vec<f32>) -> GradData {
        GradData::F32(v)
    }
}

impl GradElem for f64 {
    fn buffer(d: &mut GradData) -> Option<&mut Vec<f64>> {
        match d {
            GradData::F64(v) => Some(v),
            GradData::F32(_) => None,
        }
    }
    fn wrap(v: Vec<f64>) -> GradData {
        GradData::F64(v)
    }
}

struct Slot {
    data: GradData,
    shape: Vec<usize>,
    /// False after `clear`: the next write overwrites instead of adding.
    valid: bool,
}

#[derive(Default)]
pub struct GradSink {
    slots: Mutex<HashMap<String, Slot>>,
}

impl GradSink {
    /// Adds to the gradient of `name` through `f(buffer, overwrite)`: when `overwrite` is true
    /// the buffer holds stale values and `f` must write every element instead of adding.
    pub fn accumulate<T: GradElem>(&self, name: &str, shape: &[usize], f: impl FnOnce(&mut [T], bool)) -> Result<()> {
        let mut slots = self.slots.lock().map_err(|_| candle_core::Error::Msg("gradient sink lock poisoned".into()))?;
        let len: usize = shape.iter().product();
        let slot = slots.entry(name.to_string()).or_insert_with(|| Slot {
            data: T::wrap(vec![T::zero(); len]),
            shape: shape.to_vec(),
            valid: false,
        });
        let overwrite = !slot.valid;
        let Some(buf) = T::buffer(&mut slot.data).filter(|b| b.len() == len) else {
            candle_core::bail!("gradient sink: `{name}` changed dtype or shape");
        };
        f(buf, overwrite);
        slot.valid = true;
        Ok(())
    }

    /// Forgets all gradients (buffers are kept for reuse).
    pub fn clear(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.values_mut().for_each(|s| s.valid = false);
        }
    }

    /// Whether the buffer of `name` holds f64 (a model trained in f64), so a caller that must
    /// touch it in place picks the right element type.
    pub fn holds_f64(&self, name: &str) -> bool {
        self.slots.lock().map(|s| s.get(name).is_some_and(|x| matches!(x.data, GradData::F64(_)))).unwrap_or(false)
    }

    pub fn has(&self, name: &str) -> bool {
        self.slots.lock().map(|s| s.get(name).is_some_and(|x| x.valid)).unwrap_or(false)
    }

    /// Runs `f` on the f32 gradient of `name`, if there is one.
    pub fn with_f32<R>(&self, name: &str, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        let mut slots = self.slots.lock().ok()?;
        let slot = slots.get_mut(name).filter(|s| s.valid)?;
        f32::buffer(&mut slot.data).map(|b| f(b))
    }

    /// A copy of the gradient of `name` as a tensor.
    pub fn tensor(&self, name: &str, device: &candle_core::Device) -> Result<Option<Tensor>> {
        let mut slots = self.slots.lock().map_err(|_| candle_core::Error::Msg("gradient sink lock poisoned".into()))?;
        let Some(slot) = slots.get_mut(name).filter(|s| s.valid) else {
            return Ok(None);
        };
        let t = match &slot.data {
            GradData::F32(v) => Tensor::from_slice(v, slot.shape.as_slice(), device)?,
            GradData::F64(v) => Tensor::from_slice(v, slot.shape.as_slice(), device)?,
        };
        Ok(Some(t))
    }
}

/// All gradients of a backward pass: candle's `GradStore` plus a model's [`GradSink`].
pub struct Grads<'a> {
    pub store: &'a GradStore,
    pub sink: Option<&'a GradSink>,
}

impl Grads<'_> {
    /// The gradient of parameter `name` (held by `var`), as an owned tensor.
    pub fn get(&self, name: &str, var: &Var) -> Result<Option<Tensor>> {
        if let Some(sink) = self.sink {
            if let Some(t) = sink.tensor(name, var.device())? {
                return Ok(Some(t));
            }
        }
        Ok(self.store.get(var.as_tensor()).cloned())
    }

    /// Runs `f` on the f32 gradient of `name` without copying it (for optimisers).
    pub fn with_f32<R>(&self, name: &str, var: &Var, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
        if let Some(sink) = self.sink.filter(|s| s.has(name)) {
            return Ok(sink.with_f32(name, f));
        }
        match self.store.get(var.as_tensor()) {
            None => Ok(None),
            Some(g) if g.dtype() == DType::F32 => crate::ops::cpu::with_slice::<f32, R>(g, "gradient", f).map(Some),
            Some(g) => crate::ops::cpu::with_slice::<f32, R>(&g.to_dtype(DType::F32)?, "gradient", f).map(Some),
        }
    }
}
