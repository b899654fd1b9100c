//! The low-rank term inside the fused CPU decoder layer (`llama_layer.rs`).
//!
//! Computed unmerged: `y += s·(x Aᵀ) Bᵀ` costs N·r·(in + out) instead of forming
//! `W + s·B A` (a full `[out, in]` copy per weight kept alive until backward) and the frozen
//! weight's gradient `dyᵀ x` (N·in·out) that the merged form would need. The backward is
//! dx += s·(dy B) A, dA = s·(dy B)ᵀ x, dB = s·dyᵀ (x Aᵀ); the `[N, r]` products are recomputed
//! rather than saved (r ≪ in, out).

use crate::grads::{GradElem, GradSink};
use crate::ops::cpu::Real;
use crate::ops::linear::gemm_into;
use candle_core::Result;

/// One adapter's data for the duration of a fused forward or backward.
pub(crate) struct LowRank<'a, T> {
    /// `[r, in]`
    pub a: &'a [T],
    /// `[out, r]`
    pub b: &'a [T],
    pub r: usize,
    pub scale: T,
}

impl<T: Real> LowRank<'_, T> {
    /// `s · x Aᵀ`: `[N, r]` for `x: [N, in]`.
    fn scaled_down(&self, x: &[T], n: usize, din: usize) -> Vec<T> {
        let mut u = vec![T::zero(); n * self.r];
        gemm_into(&mut u, false, (n, self.r, din), x, (din, 1), self.a, (1, din), true);
        u.iter_mut().for_each(|v| *v *= self.scale);
        u
    }

    /// `s · dy B`: `[N, r]` for `dy: [N, out]`.
    fn scaled_up_grad(&self, dy: &[T], n: usize, dout: usize) -> Vec<T> {
        let mut g = vec![T::zero(); n * self.r];
        gemm_into(&mut g, false, (n, self.r, dout), dy, (dout, 1), self.b, (self.r, 1), true);
        g.iter_mut().for_each(|v| *v *= self.scale);
        g
    }

    /// `y[N, out] += s · x Aᵀ Bᵀ`.
    pub fn add_forward(&self, y: &mut [T], x: &[T], n: usize, din: usize, dout: usize) {
        let u = self.scaled_down(x, n, din);
        gemm_into(y, true, (n, dout, self.r), &u, (self.r, 1), self.b, (1, self.r), true);
    }

    /// `dx[N, in] += s · dy B A`.
    pub fn add_input_grad(&self, dx: &mut [T], dy: &[T], n: usize, din: usize, dout: usize) {
        let g = self.scaled_up_grad(dy, n, dout);
        gemm_into(dx, true, (n, din, self.r), &g, (self.r, 1), self.a, (din, 1), true);
    }

    /// Adds `dA[r, in] = s·(dy B)ᵀ x` and `dB[out, r] = s·dyᵀ (x Aᵀ)` to the sink.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate_grads(
        &self,
        sink: &GradSink,
        (a_name, b_name): (&str, &str),
        dy: &[T],
        x: &[T],
        n: usize,
        din: usize,
        dout: usize,
    ) -> Result<()>
    where
        T: GradElem,
    {
        let r = self.r;
        let g = self.scaled_up_grad(dy, n, dout);
        sink.accumulate::<T>(a_name, &[r, din], |buf, overwrite| {
            gemm_into(buf, !overwrite, (r, din, n), &g, (1, r), x, (din, 1), true)
        })?;
        let u = self.scaled_down(x, n, din);
        sink.accumulate::<T>(b_name, &[dout, r], |buf, overwrite| {
            gemm_into(buf, !overwrite, (dout, r, n), dy, (1, dout), &u, (r, 1), true)
        })
    }
}
