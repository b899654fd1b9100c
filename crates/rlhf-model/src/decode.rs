//! Decoding steps of a Llama-family model in bf16 precision: one token per row per step from a
//! bfloat16 copy of the weights, with the keys and values cached in bfloat16.
//!
//! A decoding step reads every weight once for a handful of rows, so its time is the bytes of
//! the weights (docs/ARCHITECTURE.md, "Precision"); bf16 halves them. The copy is made from the
//! fp32 master weights and refreshed whenever they change (see [`crate::weights::epoch`]): after
//! each optimiser step, rollouts sample from the policy as it now is. Each product takes bf16
//! operands (the activations are rounded as the model's bf16 products round them) and sums in
//! fp32; everything else — norms, rotary angles, softmax, residuals — is fp32, so the step is the
//! composed decoder layer (`llama.rs`) in bf16 precision with its keys/values cached in bf16.
//!
//! The prompt is prefilled by the model itself (a matrix product per layer, where bf16 runs on
//! the matrix units), and its cache handed over once ([`DecodeCache::from_prefill`]).

use crate::attention::rope_angles_f32;
use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::llama_layer::Linear;
use crate::ops::bf16::{gemm_packed, quantise, PackedB, Strided};
use crate::ops::cpu::with_slice;
use crate::ops::gemv::{dot_bf16, gemv_bf16, to_bf16};
use crate::ops::norm::{norm_fwd, NormSpec};
use crate::ops::precision;
use crate::ops::rope::{rope_fwd, Dims};
use crate::ops::swiglu::swiglu_fwd;
use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

/// One matrix in bf16 with its fp32 bias: packed for the matrix unit where there is one,
/// otherwise rows of bf16 values (`[out, in]`, HF layout) for the widening products of `gemv`.
struct Matrix {
    w: Bf16Rows,
    bias: Option<Vec<f32>>,
    din: usize,
    dout: usize,
}

enum Bf16Rows {
    Tiles(PackedB),
    Rows(Vec<u16>),
}

impl Matrix {
    /// `w` (`[dout, din]`, fp32) in bf16, packed for the tiles when `tiles`.
    fn new(w: &[f32], bias: Option<Vec<f32>>, din: usize, dout: usize, tiles: bool) -> Self {
        let w = if tiles {
            // B = wᵀ: column j of B is row j of w.
            Bf16Rows::Tiles(PackedB::new(Strided { data: w, rs: 1, cs: din }, din, dout))
        } else {
            Bf16Rows::Rows(to_bf16(w))
        };
        Self { w, bias, din, dout }
    }

    /// `parts` stacked by rows (q, k and v as one `[(H + 2G)·D, d]` matrix: one sweep and one
    /// parallel section instead of three); a missing bias counts as zeros.
    fn stack(parts: &[&Linear], tiles: bool) -> Result<Self> {
        let (mut bias, mut dout, mut din) = (Vec::new(), 0, 0);
        let mut any_bias = false;
        for part in parts {
            let (rows, cols) = part.weight.dims2()?;
            match &part.bias {
                Some(b) => {
                    any_bias = true;
                    bias.extend(host(b)?);
                }
                None => bias.extend(std::iter::repeat_n(0f32, rows)),
            }
            (dout, din) = (dout + rows, cols);
        }
        let bias = any_bias.then_some(bias);
        if let [single] = parts {
            return with_slice::<f32, _>(&single.weight, "decode", |w| Self::new(w, bias, din, dout, tiles));
        }
        let mut w = Vec::with_capacity(dout * din);
        for part in parts {
            with_slice::<f32, _>(&part.weight, "decode", |slice| w.extend_from_slice(slice))?;
        }
        Ok(Self::new(&w, bias, din, dout, tiles))
    }

    /// `x[n, din] · wᵀ + bias` with both operands in bf16 and fp32 sums, as every product of
    /// the model in bf16 precision.
    fn apply(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = match &self.w {
            Bf16Rows::Tiles(packed) => {
                let mut y = vec![0f32; n * self.dout];
                gemm_packed(&mut y, n, Strided { data: x, rs: self.din, cs: 1 }, packed, true);
                y
            }
            Bf16Rows::Rows(rows) => {
                let x: Vec<f32> = x.iter().map(|&v| quantise(v)).collect();
                gemv_bf16(&x, rows, n, self.din, self.dout)
            }
        };
        if let Some(bias) = &self.bias {
            y.chunks_mut(self.dout).for_each(|r| r.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
        }
        y
    }
}

struct Layer {
    in_norm: Vec<f32>,
    qkv: Matrix,
    o: Matrix,
    post_norm: Vec<f32>,
    /// gate and up stacked: `[2F, d]`.
    gate_up: Matrix,
    down: Matrix,
}

/// The bf16 decoding copy of a Llama-family model.
pub struct DecodeWeights {
    cfg: ModelConfig,
    /// fp32 embeddings (the model's own tensor, not copied): one row per token is read.
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Matrix,
    inv_freq: Vec<f64>,
    /// [`crate::weights::epoch`] when the copy was made.
    pub(crate) epoch: u64,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl DecodeWeights {
    /// The copy of `m`, packed for the matrix unit where the CPU has one.
    pub(crate) fn new(m: &Llama, epoch: u64) -> Result<Self> {
        Self::build(m, epoch, precision::units().amx_bf16)
    }

    fn build(m: &Llama, epoch: u64, tiles: bool) -> Result<Self> {
        // Layers in parallel as well as within: 150 matrices, most too small to share out alone.
        let layers = m
            .layers
            .par_iter()
            .map(|l| {
                Ok(Layer {
                    in_norm: host(&l.input_layernorm.weight)?,
                    qkv: Matrix::stack(&[&l.q_proj, &l.k_proj, &l.v_proj], tiles)?,
                    o: Matrix::stack(&[&l.o_proj], tiles)?,
                    post_norm: host(&l.post_attention_layernorm.weight)?,
                    gate_up: Matrix::stack(&[&l.gate_proj, &l.up_proj], tiles)?,
                    down: Matrix::stack(&[&l.down_proj], tiles)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: m.cfg.clone(),
            embed: m.embed.clone(),
            layers,
            norm: host(&m.norm)?,
            lm_head: {
                let (vocab, d) = m.lm_head.dims2()?;
                with_slice::<f32, _>(&m.lm_head, "decode", |w| Matrix::new(w, None, d, vocab, tiles))?
            },
            inv_freq: m.inv_freq.clone(),
            epoch,
        })
    }

    /// Logits `[B][V]` of the next token for each row: `ids[b]` is row b's newest token and
    /// `mask[b]` its attention mask over every cached column plus this one (0 for padding and
    /// for rows that have stopped, which attend to themselves only, as in [`crate::attention`]).
    pub fn step(&self, cache: &mut DecodeCache, ids: &[u32], mask: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        // On a pool thread, the step's ~300 small parallel sections are jobs on its own queue;
        // from outside, each would be handed to the pool and waited for (a wake-up apiece).
        rayon::scope(|_| self.step_in_pool(cache, ids, mask))
    }

    fn step_in_pool(&self, cache: &mut DecodeCache, ids: &[u32], mask: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let (b, d, hd, f) = (ids.len(), c.hidden_size, c.head_dim, c.intermediate_size);
        let (h, g) = (c.num_attention_heads, c.num_key_value_heads);
        if cache.rows != b || mask.len() != b || mask.iter().any(|m| m.len() != cache.len + 1) {
            bail!(
                "decode step: {b} ids and {} mask rows for a cache of {} rows × {} tokens",
                mask.len(),
                cache.rows,
                cache.len
            );
        }
        if cache.len >= cache.capacity {
            bail!("decode step: the cache is full ({} tokens)", cache.capacity);
        }
        if let Some(&t) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
            bail!("decode step: token id {t} is outside the vocabulary of {}", c.vocab_size);
        }
        let positions = mask.iter().map(|m| m.iter().sum::<u32>().saturating_sub(1));
        let (cos, sin) = rope_angles_f32(&self.inv_freq, positions);
        let mut x = with_slice::<f32, _>(&self.embed, "decode", |e| {
            ids.iter().flat_map(|&t| e[t as usize * d..][..d].iter().copied()).collect::<Vec<f32>>()
        })?;
        let rms = NormSpec { eps: c.norm_eps, center: false };
        let (qd, kvd) = (h * hd, g * hd);
        let rope = |x: &[f32], heads: usize| rope_fwd(x, &cos, &sin, Dims { b, t: 1, h: heads, d: hd });
        for (li, l) in self.layers.iter().enumerate() {
            let hn = norm_fwd(&x, &l.in_norm, None, rms);
            let qkv = l.qkv.apply(&hn, b);
            let part = |from: usize, len: usize| -> Vec<f32> {
                qkv.chunks(qd + 2 * kvd).flat_map(|r| r[from..from + len].iter().copied()).collect()
            };
            let q = rope(&part(0, qd), h);
            let k = rope(&part(qd, kvd), g);
            cache.push(li, &k, &part(qd + kvd, kvd));
            let a = cache.attend(li, &q, mask, self.cfg.sliding_window);
            let o = l.o.apply(&a, b);
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let hn = norm_fwd(&x, &l.post_norm, None, rms);
            let gu = l.gate_up.apply(&hn, b);
            let (gate, up): (Vec<f32>, Vec<f32>) = (
                gu.chunks(2 * f).flat_map(|r| r[..f].iter().copied()).collect(),
                gu.chunks(2 * f).flat_map(|r| r[f..].iter().copied()).collect(),
            );
            let down = l.down.apply(&swiglu_fwd(&gate, &up), b);
            x.iter_mut().zip(&down).for_each(|(x, o)| *x += o);
        }
        cache.len += 1;
        let hn = norm_fwd(&x, &self.norm, None, rms);
        let logits = self.lm_head.apply(&hn, b);
        Ok(logits.chunks(c.vocab_size).map(<[f32]>::to_vec).collect())
    }
}

/// Keys and values of every layer in bf16, `[B, G, capacity, D]` each.
pub struct DecodeCache {
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    rows: usize,
    groups: usize,
    head_dim: usize,
    capacity: usize,
    /// Columns cached (prompt plus the tokens decoded so far).
    len: usize,
}

impl DecodeCache {
    /// The prefilled `cache` (fp32) rounded to bf16, with room for `capacity` columns in all.
    pub fn from_prefill(cache: &KvCache, capacity: usize) -> Result<Self> {
        let len = cache.len();
        if capacity < len {
            bail!("decode: capacity {capacity} is below the {len} prefilled tokens");
        }
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let (mut rows, mut groups, mut head_dim) = (0, 0, 0);
        for layer in 0..cache.num_layers() {
            let Some((kt, vt)) = cache.layer(layer) else { bail!("decode: layer {layer} was not prefilled") };
            (rows, groups, _, head_dim) = kt.dims4()?;
            let rounded = |t: &Tensor| -> Result<Vec<u16>> {
                let live = host(&t.narrow(2, 0, len)?)?;
                let mut out = vec![0u16; rows * groups * capacity * head_dim];
                for (bg, src) in live.chunks(len * head_dim).enumerate() {
                    out[bg * capacity * head_dim..][..src.len()].copy_from_slice(&to_bf16(src));
                }
                Ok(out)
            };
            k.push(rounded(kt)?);
            v.push(rounded(vt)?);
        }
        Ok(Self { k, v, rows, groups, head_dim, capacity, len })
    }

    /// Writes the new token's keys (`[B, G, 1, D]`, rotated) and values (`[B, 1, G, D]`) at
    /// column `len` of `layer`.
    fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (gn, dn, cap, len) = (self.groups, self.head_dim, self.capacity, self.len);
        for bg in 0..self.rows * gn {
            let at = (bg * cap + len) * dn;
            let src = bg * dn; // [B, G, D] either way for one token
            for i in 0..dn {
                self.k[layer][at + i] = crate::ops::bf16::round(k[src + i]);
                self.v[layer][at + i] = crate::ops::bf16::round(v[src + i]);
            }
        }
    }

    /// Attention of the new token's queries (`[B, H, 1, D]`, rotated) over columns `0..=len` of
    /// `layer`; returns `[B, H·D]`. Column j is visible to the query at column `len` when it is
    /// causal, inside the sliding window, and a real token (or the query itself).
    fn attend(&self, layer: usize, q: &[f32], mask: &[Vec<u32>], window: Option<usize>) -> Vec<f32> {
        let (gn, dn, cap, qi) = (self.groups, self.head_dim, self.capacity, self.len);
        let heads = q.len() / (self.rows * dn);
        let per_group = heads / gn;
        let scale = 1.0 / (dn as f32).sqrt();
        let (k, v) = (&self.k[layer], &self.v[layer]);
        let mut out = vec![0f32; self.rows * heads * dn];
        out.par_chunks_mut(dn).enumerate().for_each(|(bh, o)| {
            let (b, hh) = (bh / heads, bh % heads);
            let base = (b * gn + hh / per_group) * cap * dn;
            let qv = &q[bh * dn..][..dn];
            let visible = |j: usize| window.is_none_or(|w| qi - j < w) && (mask[b][j] == 1 || j == qi);
            let mut scores: Vec<(usize, f32)> = (0..=qi)
                .filter(|&j| visible(j))
                .map(|j| {
                    let kr = &k[base + j * dn..][..dn];
                    (j, dot_bf16(kr, qv) * scale)
                })
                .collect();
            let max = scores.iter().map(|s| s.1).fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in &mut scores {
                s.1 = (s.1 - max).exp();
                total += s.1;
            }
            for (j, p) in scores {
                let vr = &v[base + j * dn..][..dn];
                let p = p / total;
                o.iter_mut().zip(vr).for_each(|(o, &vv)| *o += p * crate::ops::bf16::widen(vv));
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate::left_pad, tiny, CausalLm};

    /// The two storages of the copy (tiles for AMX, rows for the widening products elsewhere)
    /// compute the same arithmetic, bf16 operands summed in fp32, in a different order.
    #[test]
    fn tiles_and_rows_compute_the_same_step() {
        let cfg = tiny::bf16_wide(tiny::qwen2_config(96));
        let m = CausalLm::new(cfg.clone(), tiny::random_weights(&cfg, 3, 0.08, DType::F32).unwrap()).unwrap();
        let (ids, mut mask) = left_pad(&[(3..12).collect(), vec![5, 9, 11]], 0);
        let p = ids[0].len();
        let rows = |r: &[Vec<u32>]| Tensor::new(r.to_vec(), &candle_core::Device::Cpu).unwrap();
        let mut kv = m.new_cache(p + 2);
        m.hidden(&rows(&ids), &rows(&mask), Some(&mut kv)).unwrap();
        mask.iter_mut().for_each(|r| r.push(1));
        let step = |tiles: bool| {
            let copy = DecodeWeights::build(m.llama().unwrap(), 0, tiles).unwrap();
            let mut cache = DecodeCache::from_prefill(&kv, p + 2).unwrap();
            copy.step(&mut cache, &[7, 8], &mask).unwrap()
        };
        let by_rows = step(false);
        assert_eq!(by_rows.len(), 2);
        assert!(by_rows.iter().flatten().all(|v| v.is_finite()));
        if !precision::units().amx_bf16 {
            return; // no tiles on this CPU: the rows are what decoding uses
        }
        let by_tiles = step(true);
        let worst =
            by_rows.iter().flatten().zip(by_tiles.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = by_rows.iter().flatten().map(|v| v.abs()).fold(0f32, f32::max);
        eprintln!("tiles vs rows: {worst:e} of {scale}");
        assert!(worst <= 1e-4 * scale.max(1.0), "tiles and rows differ by {worst} (logits up to {scale})");
    }
}
