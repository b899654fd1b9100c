//! One Llama decoder layer as a single autograd node with a hand-written backward pass.
//!
//! Composed from candle ops, a layer is ~25 graph nodes, and candle's backward gives each one a
//! zero-filled gradient buffer plus an addition: as much time as the backward matmuls
//! themselves. Here the forward keeps exactly the activations the backward needs, the backward
//! runs the chain rule over them with the same fused kernels, and weight gradients go straight
//! into the model's [`GradSink`] (gemm accumulates in place). Candle sees one node per layer
//! whose only differentiable input is the residual stream.
//!
//! Shapes: N = B·T rows, d model width, H query heads and G key/value heads of width D,
//! R = H/G query heads per KV head, F MLP width.

use crate::grads::{GradElem, GradSink};
use crate::lora::{Adapter, LowRank};
use crate::ops::cpu::{slice, Real};
use crate::ops::linear::{fwd as linear_fwd, gemm_into};
use crate::ops::norm::{norm_bwd, norm_fwd, NormSpec};
use crate::ops::rope::{rope_bwd, rope_fwd, Dims};
use crate::ops::softmax::{softmax_bwd, softmax_fwd};
use crate::ops::swiglu::{swiglu_bwd, swiglu_fwd};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::any::Any;
use std::sync::{Arc, Mutex};

/// One projection of a layer, `y = x·Wᵀ + b` (plus a LoRA term when an adapter is attached),
/// with its parameter names and which parts are trainable (frozen ones get no gradient buffer).
#[derive(Clone)]
pub(crate) struct Linear {
    /// `[dout, din]`
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub weight_name: String,
    pub bias_name: String,
    pub weight_grad: bool,
    pub bias_grad: bool,
    pub adapter: Option<Adapter>,
    /// Seeds this projection's LoRA dropout masks: its position among the layer's parameters
    /// (each weight followed by its bias, in HF order), as masks have always been drawn.
    pub dropout_stream: usize,
}

/// An RMSNorm weight.
#[derive(Clone)]
pub(crate) struct Norm {
    pub weight: Tensor,
    pub name: String,
    pub requires_grad: bool,
}

/// A layer's weights, named as HF names the modules.
#[derive(Clone)]
pub(crate) struct LayerParams {
    pub input_layernorm: Norm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: Norm,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl LayerParams {
    /// The projections with their HF module paths (what LoRA targets), in HF order.
    pub fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("self_attn.q_proj", &self.q_proj),
            ("self_attn.k_proj", &self.k_proj),
            ("self_attn.v_proj", &self.v_proj),
            ("self_attn.o_proj", &self.o_proj),
            ("mlp.gate_proj", &self.gate_proj),
            ("mlp.up_proj", &self.up_proj),
            ("mlp.down_proj", &self.down_proj),
        ]
    }

    pub fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("self_attn.q_proj", &mut self.q_proj),
            ("self_attn.k_proj", &mut self.k_proj),
            ("self_attn.v_proj", &mut self.v_proj),
            ("self_attn.o_proj", &mut self.o_proj),
            ("mlp.gate_proj", &mut self.gate_proj),
            ("mlp.up_proj", &mut self.up_proj),
            ("mlp.down_proj", &mut self.down_proj),
        ]
    }

    /// Every weight and bias tensor.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        [&self.input_layernorm.weight, &self.post_attention_layernorm.weight]
            .into_iter()
            .chain(self.linears().into_iter().flat_map(|(_, l)| std::iter::once(&l.weight).chain(l.bias.as_ref())))
    }

    /// Replaces every weight, bias and adapter matrix by `f` of it.
    pub fn map_tensors(&mut self, mut f: impl FnMut(&Tensor) -> Result<Tensor>) -> Result<()> {
        for norm in [&mut self.input_layernorm, &mut self.post_attention_layernorm] {
            norm.weight = f(&norm.weight)?;
        }
        for (_, l) in self.linears_mut() {
            l.weight = f(&l.weight)?;
            if let Some(b) = &mut l.bias {
                *b = f(b)?;
            }
            if let Some(a) = &mut l.adapter {
                (a.a, a.b) = (f(&a.a)?, f(&a.b)?);
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
pub(crate) struct LayerDims {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub h: usize,
    pub g: usize,
    pub hd: usize,
    pub f: usize,
    pub eps: f64,
}

impl LayerDims {
    fn n(&self) -> usize {
        self.b * self.t
    }
    fn rms(&self) -> NormSpec {
        NormSpec { eps: self.eps, center: false }
    }
}

struct Saved<T> {
    hn1: Vec<T>,
    q: Vec<T>, // [B,H,T,D] rotated
    k: Vec<T>, // [B,G,T,D] rotated
    v: Vec<T>, // [B,G,T,D]
    p: Vec<T>, // [B,G,R·T,T]
    attn: Vec<T>,
    x_mid: Vec<T>,
    hn2: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    act: Vec<T>,
}

pub(crate) struct FusedLayer {
    pub dims: LayerDims,
    pub params: LayerParams,
    /// `[B,T,D/2]` rotary tables and the `[B,1,T,T]` additive mask.
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: Tensor,
    pub sink: Arc<GradSink>,
    /// Keep activations for a backward pass (false when nothing needs gradients).
    pub train: bool,
    /// Activation checkpointing: keep nothing but the input (which candle holds anyway) and
    /// recompute the layer's forward in its backward. Same arithmetic, so the same gradients bit
    /// for bit, for one more forward pass; the activations of one layer are live at a time.
    pub checkpoint: bool,
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

impl FusedLayer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dims: LayerDims,
        params: LayerParams,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor,
        sink: Arc<GradSink>,
        train: bool,
        checkpoint: bool,
    ) -> Self {
        Self { dims, params, cos, sin, mask, sink, train, checkpoint, saved: Mutex::new(None) }
    }
}

/// `x[N, din] · w[dout, din]ᵀ + b`.
fn lin<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, n: usize, din: usize, dout: usize) -> Vec<T> {
    let mut y = linear_fwd(x, w, n, din, dout);
    if let Some(b) = b {
        y.par_chunks_mut(dout).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += *b));
    }
    y
}

/// `[B, T, H, D]` ↔ `[B, H, T, D]` (the same permutation swaps back with t and h exchanged).
fn swap_th<T: Real>(x: &[T], t: usize, h: usize, d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(t * d).enumerate().for_each(|(bh, o)| {
        let (bi, hi) = (bh / h, bh % h);
        for ti in 0..t {
            o[ti * d..][..d].copy_from_slice(&x[((bi * t + ti) * h + hi) * d..][..d]);
        }
    });
    out
}

/// Column sums of a `[rows, cols]` matrix, added to (or written into) `dst`.
fn colsum_into<T: Real>(dst: &mut [T], overwrite: bool, g: &[T], cols: usize) {
    if overwrite {
        dst.iter_mut().for_each(|x| *x = T::zero());
    }
    for row in g.chunks(cols) {
        dst.iter_mut().zip(row).for_each(|(d, v)| *d += *v);
    }
}

/// One operand of [`batched`]: `blocks` consecutive matrices of `len` elements, each read
/// with (row, column) strides.
struct Blocks<'a, T> {
    data: &'a [T],
    len: usize,
    strides: (usize, usize),
}

fn blocks<T>(data: &[T], len: usize, rs: usize, cs: usize) -> Blocks<'_, T> {
    Blocks { data, len, strides: (rs, cs) }
}

/// Per (batch, KV head) block: `out[i] = lhs[i] · rhs[i]`, blocks in parallel.
fn batched<T: Real>(count: usize, mnk: (usize, usize, usize), lhs: Blocks<T>, rhs: Blocks<T>) -> Vec<T> {
    let (m, n, _) = mnk;
    let mut out = vec![T::zero(); count * m * n];
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| {
        let l = &lhs.data[i * lhs.len..][..lhs.len];
        let r = &rhs.data[i * rhs.len..][..rhs.len];
        gemm_into(o, false, mnk, l, lhs.strides, r, rhs.strides, false);
    });
    out
}

/// A projection's operands as slices.
struct Proj<'a, T> {
    w: &'a [T],
    b: Option<&'a [T]>,
    lora: Option<LowRank<'a, T>>,
}

impl<T: Real> Proj<'_, T> {
    /// `x[N, din]` → `[N, dout]`, with the bias and the LoRA term.
    fn forward(&self, x: &[T], n: usize, din: usize, dout: usize) -> Vec<T> {
        let mut y = lin(x, self.w, self.b, n, din, dout);
        if let Some(lora) = &self.lora {
            lora.add_forward(&mut y, x, n, din, dout);
        }
        y
    }

    /// `dx[N, din] (+)= dy[N, dout] · w[dout, din]` (plus the LoRA term).
    #[allow(clippy::too_many_arguments)]
    fn input_grad(&self, dx: &mut [T], accumulate: bool, dy: &[T], n: usize, din: usize, dout: usize) {
        gemm_into(dx, accumulate, (n, din, dout), dy, (dout, 1), self.w, (din, 1), true);
        if let Some(lora) = &self.lora {
            lora.add_input_grad(dx, dy, n, din, dout);
        }
    }
}

struct Slices<'a, T> {
    input_layernorm: &'a [T],
    q_proj: Proj<'a, T>,
    k_proj: Proj<'a, T>,
    v_proj: Proj<'a, T>,
    o_proj: Proj<'a, T>,
    post_attention_layernorm: &'a [T],
    gate_proj: Proj<'a, T>,
    up_proj: Proj<'a, T>,
    down_proj: Proj<'a, T>,
    cos: &'a [T],
    sin: &'a [T],
    mask: &'a [T],
}

fn layer_fwd<T: Real>(dm: LayerDims, s: &Slices<T>, x: &[T]) -> (Vec<T>, Saved<T>) {
    let (n, d, hd, f) = (dm.n(), dm.d, dm.hd, dm.f);
    let (qd, kvd) = (dm.h * hd, dm.g * hd);
    let r = dm.h / dm.g;
    let hn1 = norm_fwd(x, s.input_layernorm, None, dm.rms());
    let q = s.q_proj.forward(&hn1, n, d, qd);
    let k = s.k_proj.forward(&hn1, n, d, kvd);
    let v = s.v_proj.forward(&hn1, n, d, kvd);
    let q = rope_fwd(&q, s.cos, s.sin, Dims { b: dm.b, t: dm.t, h: dm.h, d: hd });
    let k = rope_fwd(&k, s.cos, s.sin, Dims { b: dm.b, t: dm.t, h: dm.g, d: hd });
    let v = swap_th(&v, dm.t, dm.g, hd);
    let (rt, t, nblocks) = (r * dm.t, dm.t, dm.b * dm.g);
    // scores[bg] = q[bg] (R·T × D) · k[bg]ᵀ (D × T)
    let scores = batched(nblocks, (rt, t, hd), blocks(&q, rt * hd, hd, 1), blocks(&k, t * hd, 1, hd));
    let scale = T::from(1.0 / (hd as f64).sqrt()).expect("finite scale");
    let p = softmax_fwd(&scores, s.mask, dm.b, nblocks * rt, t, t, scale);
    // o[bg] = p[bg] (R·T × T) · v[bg] (T × D): [B,G,R·T,D] = [B,H,T,D]
    let o = batched(nblocks, (rt, hd, t), blocks(&p, rt * t, t, 1), blocks(&v, t * hd, hd, 1));
    let attn = swap_th(&o, dm.h, dm.t, hd); // [B,T,H,D] = [N, H·D]
    let mut x_mid = s.o_proj.forward(&attn, n, qd, d);
    x_mid.par_iter_mut().zip(x.par_iter()).for_each(|(a, b)| *a += *b);
    let hn2 = norm_fwd(&x_mid, s.post_attention_layernorm, None, dm.rms());
    let gate = s.gate_proj.forward(&hn2, n, d, f);
    let up = s.up_proj.forward(&hn2, n, d, f);
    let act = swiglu_fwd(&gate, &up);
    let mut y = s.down_proj.forward(&act, n, f, d);
    y.par_iter_mut().zip(x_mid.par_iter()).for_each(|(a, b)| *a += *b);
    (y, Saved { hn1, q, k, v, p, attn, x_mid, hn2, gate, up, act })
}

/// Gradients of a projection's trainable parts: `dy[N, dout]ᵀ · x[N, din]` for the weight,
/// column sums of `dy` for the bias, A and B for a LoRA adapter.
#[allow(clippy::too_many_arguments)]
fn weight_grad<T: GradElem>(
    sink: &GradSink,
    l: &Linear,
    p: &Proj<T>,
    dy: &[T],
    x: &[T],
    n: usize,
    din: usize,
    dout: usize,
) -> Result<()> {
    if l.weight_grad {
        sink.accumulate::<T>(&l.weight_name, &[dout, din], |buf, overwrite| {
            gemm_into(buf, !overwrite, (dout, din, n), dy, (1, dout), x, (din, 1), true)
        })?;
    }
    if l.bias_grad {
        sink.accumulate::<T>(&l.bias_name, &[dout], |buf, overwrite| colsum_into(buf, overwrite, dy, dout))?;
    }
    if let (Some(lora), Some(adapter)) = (&p.lora, &l.adapter) {
        lora.accumulate_grads(sink, (&adapter.a_name, &adapter.b_name), dy, x, n, din, dout)?;
    }
    Ok(())
}

fn norm_weight_grad<T: GradElem>(sink: &GradSink, norm: &Norm, dw: &[T]) -> Result<()> {
    if !norm.requires_grad {
        return Ok(());
    }
    sink.accumulate::<T>(&norm.name, &[dw.len()], |buf, overwrite| {
        if overwrite {
            buf.copy_from_slice(dw);
        } else {
            buf.iter_mut().zip(dw).for_each(|(a, b)| *a += *b);
        }
    })
}

fn layer_bwd<T: GradElem>(
    dm: LayerDims,
    s: &Slices<T>,
    sv: &Saved<T>,
    x: &[T],
    gy: &[T],
    sink: &GradSink,
    params: &LayerParams,
) -> Result<Vec<T>> {
    let (n, d, hd, f) = (dm.n(), dm.d, dm.hd, dm.f);
    let (qd, kvd) = (dm.h * hd, dm.g * hd);
    let r = dm.h / dm.g;
    let (rt, t, nblocks) = (r * dm.t, dm.t, dm.b * dm.g);

    // MLP: y = x_mid + down(swiglu(gate(hn2), up(hn2)))
    let mut d_act = vec![T::zero(); n * f];
    s.down_proj.input_grad(&mut d_act, false, gy, n, f, d);
    weight_grad(sink, &params.down_proj, &s.down_proj, gy, &sv.act, n, f, d)?;
    let (d_gate, d_up) = swiglu_bwd(&sv.gate, &sv.up, &d_act);
    drop(d_act);
    let mut d_hn2 = vec![T::zero(); n * d];
    s.gate_proj.input_grad(&mut d_hn2, false, &d_gate, n, d, f);
    s.up_proj.input_grad(&mut d_hn2, true, &d_up, n, d, f);
    weight_grad(sink, &params.gate_proj, &s.gate_proj, &d_gate, &sv.hn2, n, d, f)?;
    weight_grad(sink, &params.up_proj, &s.up_proj, &d_up, &sv.hn2, n, d, f)?;
    let (mut d_xmid, dw_post, _) = norm_bwd(&sv.x_mid, s.post_attention_layernorm, &d_hn2, dm.rms());
    norm_weight_grad(sink, &params.post_attention_layernorm, &dw_post)?;
    d_xmid.par_iter_mut().zip(gy.par_iter()).for_each(|(a, b)| *a += *b);

    // Attention output projection: x_mid = x + o_proj(attn)
    let mut d_attn = vec![T::zero(); n * qd];
    s.o_proj.input_grad(&mut d_attn, false, &d_xmid, n, qd, d);
    weight_grad(sink, &params.o_proj, &s.o_proj, &d_xmid, &sv.attn, n, qd, d)?;
    let d_o = swap_th(&d_attn, dm.t, dm.h, hd); // [B,H,T,D] = [B,G,R·T,D]
    drop(d_attn);
    // o = p·v → dp = d_o·vᵀ, dv = pᵀ·d_o
    let dp = batched(nblocks, (rt, t, hd), blocks(&d_o, rt * hd, hd, 1), blocks(&sv.v, t * hd, 1, hd));
    let dv = batched(nblocks, (t, hd, rt), blocks(&sv.p, rt * t, 1, t), blocks(&d_o, rt * hd, hd, 1));
    let scale = T::from(1.0 / (hd as f64).sqrt()).expect("finite scale");
    let ds = softmax_bwd(&sv.p, &dp, t, scale);
    drop(dp);
    // scores = q·kᵀ → dq = ds·k, dk = dsᵀ·q
    let dq = batched(nblocks, (rt, hd, t), blocks(&ds, rt * t, t, 1), blocks(&sv.k, t * hd, hd, 1));
    let dk = batched(nblocks, (t, hd, rt), blocks(&ds, rt * t, 1, t), blocks(&sv.q, rt * hd, hd, 1));
    drop(ds);
    let dq = rope_bwd(&dq, s.cos, s.sin, Dims { b: dm.b, t: dm.t, h: dm.h, d: hd }); // [N, H·D]
    let dk = rope_bwd(&dk, s.cos, s.sin, Dims { b: dm.b, t: dm.t, h: dm.g, d: hd }); // [N, G·D]
    let dv = swap_th(&dv, dm.g, dm.t, hd); // [N, G·D]
    let mut d_hn1 = vec![T::zero(); n * d];
    s.q_proj.input_grad(&mut d_hn1, false, &dq, n, d, qd);
    s.k_proj.input_grad(&mut d_hn1, true, &dk, n, d, kvd);
    s.v_proj.input_grad(&mut d_hn1, true, &dv, n, d, kvd);
    weight_grad(sink, &params.q_proj, &s.q_proj, &dq, &sv.hn1, n, d, qd)?;
    weight_grad(sink, &params.k_proj, &s.k_proj, &dk, &sv.hn1, n, d, kvd)?;
    weight_grad(sink, &params.v_proj, &s.v_proj, &dv, &sv.hn1, n, d, kvd)?;
    let (mut dx, dw_in, _) = norm_bwd(x, s.input_layernorm, &d_hn1, dm.rms());
    norm_weight_grad(sink, &params.input_layernorm, &dw_in)?;
    dx.par_iter_mut().zip(d_xmid.par_iter()).for_each(|(a, b)| *a += *b);
    Ok(dx)
}

fn cpu<'a, T: Real>(g: &'a (candle_core::StorageRef<'_>, &Layout)) -> Result<&'a [T]> {
    match &*g.0 {
        Storage::Cpu(c) => slice::<T>(c, g.1, "fused llama layer"),
        _ => bail!("fused llama layer runs on the CPU only"),
    }
}

type Guard<'a> = (candle_core::StorageRef<'a>, &'a Layout);

/// Read guards on a projection's tensors (and its adapter's, with the adapter).
struct LinearGuards<'a> {
    w: Guard<'a>,
    b: Option<Guard<'a>>,
    lora: Option<(Guard<'a>, Guard<'a>, &'a Adapter)>,
}

impl<'a> LinearGuards<'a> {
    fn new(l: &'a Linear) -> Self {
        LinearGuards {
            w: l.weight.storage_and_layout(),
            b: l.bias.as_ref().map(Tensor::storage_and_layout),
            lora: l.adapter.as_ref().map(|a| (a.a.storage_and_layout(), a.b.storage_and_layout(), a)),
        }
    }

    fn proj<T: Real>(&self) -> Result<Proj<'_, T>> {
        let lora = match &self.lora {
            Some((ga, gb, adapter)) => {
                let scale = T::from(adapter.scale).expect("finite LoRA scale");
                Some(LowRank { a: cpu(ga)?, b: cpu(gb)?, r: adapter.rank(), scale })
            }
            None => None,
        };
        Ok(Proj { w: cpu(&self.w)?, b: self.b.as_ref().map(cpu).transpose()?, lora })
    }
}

/// Read guards on the layer's tensors, turned into slices for the duration of `f`.
fn with_slices<T: Real, R>(op: &FusedLayer, f: impl FnOnce(&Slices<T>) -> Result<R>) -> Result<R> {
    let p = &op.params;
    let (n1, n2) =
        (p.input_layernorm.weight.storage_and_layout(), p.post_attention_layernorm.weight.storage_and_layout());
    let [q, k, v, o, gate, up, down] = p.linears().map(|(_, l)| LinearGuards::new(l));
    let (cg, sg, mg) = (op.cos.storage_and_layout(), op.sin.storage_and_layout(), op.mask.storage_and_layout());
    let slices = Slices {
        input_layernorm: cpu(&n1)?,
        q_proj: q.proj()?,
        k_proj: k.proj()?,
        v_proj: v.proj()?,
        o_proj: o.proj()?,
        post_attention_layernorm: cpu(&n2)?,
        gate_proj: gate.proj()?,
        up_proj: up.proj()?,
        down_proj: down.proj()?,
        cos: cpu(&cg)?,
        sin: cpu(&sg)?,
        mask: cpu(&mg)?,
    };
    f(&slices)
}

impl FusedLayer {
    fn forward<T: GradElem>(&self, x: &[T]) -> Result<Vec<T>> {
        let (y, saved) = with_slices(self, |s| Ok(layer_fwd(self.dims, s, x)))?;
        if self.train && !self.checkpoint {
            *self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))? = Some(Box::new(saved));
        }
        Ok(y)
    }

    fn backward<T: GradElem>(&self, x: &Tensor, gy: &Tensor) -> Result<Tensor> {
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))?.take();
        let saved = match saved {
            Some(b) => Some(
                b.downcast::<Saved<T>>()
                    .map_err(|_| candle_core::Error::Msg("fused llama layer: dtype changed".into()))?,
            ),
            None if self.checkpoint => None,
            None => bail!("fused llama layer: backward without saved activations (run it once per forward)"),
        };
        let dx = crate::ops::cpu::with_slice::<T, _>(x, "fused llama layer", |xs| {
            crate::ops::cpu::with_slice::<T, _>(gy, "fused llama layer", |gs| {
                with_slices(self, |s| {
                    let recomputed;
                    let sv: &Saved<T> = match &saved {
                        Some(sv) => sv,
                        None => {
                            recomputed = layer_fwd(self.dims, s, xs).1;
                            &recomputed
                        }
                    };
                    layer_bwd(self.dims, s, sv, xs, gs, &self.sink, &self.params)
                })
            })
        })???;
        Tensor::from_vec(dx, x.shape(), x.device())
    }
}

impl CustomOp2 for FusedLayer {
    fn name(&self) -> &'static str {
        "fused-llama-layer"
    }

    /// `x: [N, d]`; the second argument only anchors the node in the autograd graph (it is one
    /// of the layer's weights, so the layer is differentiated even if `x` is not).
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = self.dims.n();
        if xl.dims() != [n, self.dims.d] {
            bail!("fused llama layer: input {:?}, expected [{n}, {}]", xl.dims(), self.dims.d);
        }
        let out = match xs.dtype() {
            DType::F32 => CpuStorage::F32(self.forward::<f32>(slice(xs, xl, "fused llama layer")?)?),
            DType::F64 => CpuStorage::F64(self.forward::<f64>(slice(xs, xl, "fused llama layer")?)?),
            dt => bail!("fused llama layer: unsupported dtype {dt:?}"),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match x.dtype() {
            DType::F32 => self.backward::<f32>(x, gy)?,
            DType::F64 => self.backward::<f64>(x, gy)?,
            dt => bail!("fused llama layer: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), None))
    }
}
