//! What every attention layer shares: positions and the additive mask derived from the
//! attention mask, rotary tables, and the scaled-dot-product core with grouped KV heads.
//!
//! Positions are `cumsum(mask) − 1` clamped at 0 (docs/ARCHITECTURE.md, "Padding and positions"), in generation and
//! in training alike, so a left-padded row gets exactly the positions it would get alone.

use crate::config::{ModelConfig, RopeScaling};
use crate::ops::Kernels;
use candle_core::{bail, DType, Device, Result, Tensor};

/// Per-forward inputs derived from the `[B, Tk]` attention mask for `T` new tokens.
pub struct AttnContext {
    /// `[B, T]` position of each new token.
    pub positions: Vec<Vec<u32>>,
    /// `[B, 1, T, Tk]` additive mask: 0 where a query may attend, −∞ elsewhere.
    pub mask: Tensor,
}

impl AttnContext {
    /// `attention_mask`: `[B, Tk]` with 1 for real tokens and 0 for padding, covering the cached
    /// tokens and the `new_tokens` being fed now (the last `new_tokens` columns).
    pub fn new(attention_mask: &Tensor, new_tokens: usize, window: Option<usize>, dtype: DType) -> Result<Self> {
        let rows = attention_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let b = rows.len();
        let tk = rows.first().map_or(0, Vec::len);
        if new_tokens == 0 || new_tokens > tk {
            bail!("attention mask has {tk} columns, cannot cover {new_tokens} new tokens");
        }
        let past = tk - new_tokens;
        let mut positions = Vec::with_capacity(b);
        let mut mask = Vec::with_capacity(b * new_tokens * tk);
        for row in &rows {
            if let Some(&bad) = row.iter().find(|&&m| m > 1) {
                bail!("attention mask values must be 0 or 1, found {bad}");
            }
            let mut cum = 0u32;
            let mut pos = Vec::with_capacity(new_tokens);
            for (j, &m) in row.iter().enumerate() {
                cum += m;
                if j >= past {
                    pos.push(cum.saturating_sub(1));
                }
            }
            positions.push(pos);
            for i in 0..new_tokens {
                let qi = past + i;
                for (j, &m) in row.iter().enumerate() {
                    // A padded query attends to itself only, so no softmax row is empty; real
                    // queries never see padded keys.
                    let causal = j <= qi && window.is_none_or(|w| qi - j < w);
                    let allowed = causal && (m == 1 || j == qi);
                    mask.push(if allowed { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, new_tokens, tk), attention_mask.device())?.to_dtype(dtype)?;
        Ok(Self { positions, mask })
    }

    pub fn batch(&self) -> usize {
        self.positions.len()
    }

    pub fn new_tokens(&self) -> usize {
        self.positions.first().map_or(0, Vec::len)
    }

    /// Positions as a `[B, T]` u32 tensor (GPT-2's learned position embeddings).
    pub fn positions_tensor(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = self.positions.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (self.batch(), self.new_tokens()), device)
    }
}

/// Rotary inverse frequencies with HF's scaling rules.
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let d = cfg.head_dim;
    let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
    match &cfg.rope_scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
            let old = *original_max_position_embeddings as f64;
            let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wl {
                        f
                    } else if wavelen > low_wl {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `cos`, `sin`: `[B, T, D/2]` for the given positions. In f32 the angles are formed in f32 as
/// HF does (`inv_freq @ positions` in float32), so logits match transformers closely.
pub fn rope_tables(
    inv_freq: &[f64],
    positions: &[Vec<u32>],
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (b, t, h) = (positions.len(), positions.first().map_or(0, Vec::len), inv_freq.len());
    if dtype == DType::F64 {
        let (mut cos, mut sin) = (Vec::with_capacity(b * t * h), Vec::with_capacity(b * t * h));
        for &p in positions.iter().flatten() {
            for &f in inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        return Ok((Tensor::from_vec(cos, (b, t, h), device)?, Tensor::from_vec(sin, (b, t, h), device)?));
    }
    let (cos32, sin32) = rope_angles_f32(inv_freq, positions.iter().flatten().copied());
    let cos = Tensor::from_vec(cos32, (b, t, h), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin32, (b, t, h), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// `(cos, sin)`, `[positions, D/2]` row-major, with the angles formed in f32 (see
/// [`rope_tables`]).
pub(crate) fn rope_angles_f32(inv_freq: &[f64], positions: impl Iterator<Item = u32>) -> (Vec<f32>, Vec<f32>) {
    let inv32: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in positions {
        for &f in &inv32 {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// Scaled dot-product attention. `q: [B, H, T, D]` (contiguous), `k`, `v`: `[B, G, Tk, D]` with
/// H a multiple of G; returns `[B·T, H·D]`. Query heads are grouped per KV head by a reshape,
/// so K and V are never repeated.
pub fn attend(kernels: Kernels, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let g = k.dim(1)?;
    let q = q.reshape((b, g, (h / g) * t, d))?;
    let scores = q.matmul(&k.t()?)?; // [B, G, R·T, Tk]
    let p = kernels.masked_softmax(&scores, mask, 1.0 / (d as f64).sqrt())?;
    let o = p.matmul(v)?; // [B, G, R·T, D]
    o.reshape((b, h, t, d))?.transpose(1, 2)?.contiguous()?.reshape((b * t, h * d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny;

    fn ctx(rows: &[&[u32]], new: usize, window: Option<usize>) -> (Vec<Vec<u32>>, Vec<f32>) {
        let t = rows[0].len();
        let m = Tensor::from_vec(rows.concat(), (rows.len(), t), &Device::Cpu).unwrap();
        let c = AttnContext::new(&m, new, window, DType::F32).unwrap();
        (c.positions, c.mask.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    }

    #[test]
    fn positions_count_real_tokens_only() {
        let (pos, _) = ctx(&[&[0, 0, 1, 1, 1], &[1, 1, 1, 1, 1]], 5, None);
        assert_eq!(pos, vec![vec![0, 0, 0, 1, 2], vec![0, 1, 2, 3, 4]]);
        // Decoding the 5th column only: positions continue from the cache.
        let (pos, _) = ctx(&[&[0, 0, 1, 1, 1]], 1, None);
        assert_eq!(pos, vec![vec![2]]);
    }

    #[test]
    fn mask_is_causal_skips_padding_and_respects_the_window() {
        let ok = |v: f32| v == 0.0;
        let (_, m) = ctx(&[&[0, 1, 1, 1]], 4, None);
        let at = |q: usize, k: usize| ok(m[q * 4 + k]);
        assert!(at(0, 0), "a padded query attends to itself");
        assert!(!at(1, 0) && !at(3, 0), "real queries never see padding");
        assert!(at(3, 1) && at(3, 3) && !at(1, 2), "causal");
        let (_, m) = ctx(&[&[1, 1, 1, 1, 1]], 5, Some(2));
        let at = |q: usize, k: usize| ok(m[q * 5 + k]);
        assert!(at(4, 4) && at(4, 3) && !at(4, 2), "sliding window of 2");
    }

    #[test]
    fn llama3_rope_scaling_keeps_high_and_divides_low_frequencies() {
        let mut cfg = tiny::llama_config(10);
        cfg.head_dim = 64;
        cfg.rope_theta = 500_000.0;
        let base = rope_inv_freq(&cfg);
        cfg.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        let scaled = rope_inv_freq(&cfg);
        // Wavelength 2π/f below 8192/4 = 2048 is kept; above 8192 it is stretched 8×.
        for (b, s) in base.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f64::consts::PI / b;
            if wavelen < 2048.0 {
                assert_eq!(b, s);
            } else if wavelen > 8192.0 {
                assert!((b / 8.0 - s).abs() < 1e-15);
            } else {
                assert!(*s < *b && *s > b / 8.0);
            }
        }
        assert_eq!(base[0], scaled[0]);
        assert!(scaled[31] < base[31]);
    }
}
