//! Helpers shared by the fused CPU kernels: typed access to contiguous storage, dtype dispatch.

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor, WithDType};

/// Scalar types the fused kernels are written for: f32 for speed, f64 for gradient checks.
pub trait Real: WithDType + num_traits::Float + Send + Sync + std::iter::Sum {}
impl Real for f32 {}
impl Real for f64 {}

/// The contiguous data of a kernel input; the public wrappers make inputs contiguous first.
pub fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expects a contiguous input"),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (used inside backward passes).
pub fn with_slice<T: WithDType, R>(t: &Tensor, op: &str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(slice::<T>(cpu, layout, op)?)),
        _ => bail!("{op}: fused kernels run on the CPU only"),
    }
}

/// Rows per rayon task so that each task does at least ~32K element operations.
pub fn rows_per_task(row_len: usize) -> usize {
    (32 * 1024 / row_len.max(1)).max(1)
}
