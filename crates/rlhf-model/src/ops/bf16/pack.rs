//! Operand packing for the tile products: A into 1 KiB tiles, B into pair-interleaved panels,
//! both rounded to bf16 on the way. Where the build has AVX-512 the whole tiles and panel blocks
//! go through the registers (rounding with the same integer steps as [`round`], and 16×16
//! transposes of 32-bit pairs); edges and other builds take the scalar loops. Both give the same
//! bits (tested), so a run does not depend on which one packed its operands.

use super::{round, Strided};
use rayon::prelude::*;

/// Whether this build packs whole tiles with AVX-512.
const SIMD: bool = cfg!(all(target_arch = "x86_64", target_feature = "avx512bw"));

fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, parallel: bool, fill: impl Fn(usize, &mut [T]) + Sync) {
    if parallel {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i, c));
    }
}

/// Sets `buf` to `len` elements without zeroing what it already holds (the packers write
/// every element, padding included).
pub(super) fn reuse<T: Copy + Default>(buf: &mut Vec<T>, len: usize) {
    if buf.len() < len {
        buf.resize(len, T::default());
    } else {
        buf.truncate(len);
    }
}

/// Strips of A per packing task. A column-major A (a transposed operand, e.g. the output
/// gradient in a weight gradient) is then read 256 contiguous bytes per row of its storage and
/// K-tile instead of 64: its rows lie a whole matrix width apart (192 KiB for the LM head).
const A_STRIPS: usize = 4;

/// A (m×k) → tiles: for each 16-row strip, `kp / 32` tiles of 16 rows × 32 values (1 KiB,
/// contiguous), zero-padded. A tile load then reads one contiguous KiB: no cache-set conflicts
/// from a power-of-two row stride. Every element of `out` is written.
pub(super) fn pack_a(out: &mut Vec<u16>, a: Strided, m: usize, k: usize, m_pad: usize, kp: usize, parallel: bool) {
    pack_a_with(out, a, (m, k, m_pad, kp), parallel, SIMD)
}

fn pack_a_with(
    out: &mut Vec<u16>,
    a: Strided,
    (m, k, m_pad, kp): (usize, usize, usize, usize),
    parallel: bool,
    simd: bool,
) {
    reuse(out, m_pad * kp);
    let tiles = kp / 32;
    for_each_chunk(out, A_STRIPS * 16 * kp, parallel, |c, chunk| {
        let strips = chunk.len() / (16 * kp);
        for q in 0..tiles {
            for sl in 0..strips {
                let tile = &mut chunk[(sl * tiles + q) * 512..][..512];
                a_tile(tile, a, (m, k), ((c * A_STRIPS + sl) * 16, q * 32), simd);
            }
        }
    });
}

/// The tile of A at rows `i0..`, columns `k0..`.
fn a_tile(tile: &mut [u16], a: Strided, (m, k): (usize, usize), (i0, k0): (usize, usize), simd: bool) {
    let rows = 16.min(m.saturating_sub(i0));
    let cols = 32.min(k - k0.min(k));
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512bw"))]
    if simd && rows == 16 && cols == 32 {
        // SAFETY: the whole tile lies inside A (rows i0..i0 + 16 < m, columns k0..k0 + 32 <= k),
        // and the callers checked that A's storage reaches its last element.
        if a.cs == 1 {
            return unsafe { simd::a_tile_rows(tile, a.data[i0 * a.rs + k0..].as_ptr(), a.rs) };
        }
        if a.rs == 1 {
            return unsafe { simd::a_tile_columns(tile, a.data[k0 * a.cs + i0..].as_ptr(), a.cs) };
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512bw")))]
    let _ = simd;
    let mut t = [[0u16; 32]; 16];
    if a.cs == 1 {
        for (r, row) in t.iter_mut().enumerate().take(rows) {
            let src = &a.data[(i0 + r) * a.rs + k0..][..cols];
            row.iter_mut().zip(src).for_each(|(d, &x)| *d = round(x));
        }
    } else if a.rs == 1 && rows > 0 {
        // Column-major (a transposed operand): 16 consecutive values per k.
        for c in 0..cols {
            let src = &a.data[(k0 + c) * a.cs + i0..][..rows];
            for (r, &x) in src.iter().enumerate() {
                t[r][c] = round(x);
            }
        }
    } else {
        for (r, row) in t.iter_mut().enumerate().take(rows) {
            for (c, d) in row.iter_mut().enumerate().take(cols) {
                *d = round(a.at(i0 + r, k0 + c));
            }
        }
    }
    tile.copy_from_slice(t.as_flattened());
}

/// Columns of B per packing task: 16 panels, so that a row-major B is read 1 KiB at a time
/// and the writes stay within 16 panels (few pages, few TLB entries).
const PACK_COLS: usize = 256;

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    round(lo) as u32 | (round(hi) as u32) << 16
}

/// B (k×n) → `n_pad / 16` panels of `kp / 2` rows × 16 pairs: row q of a panel holds, for each
/// of its 16 columns, the pair (B[2q, j], B[2q+1, j]) in one u32 — the layout of the second
/// operand of `tdpbf16ps`.
pub(super) fn pack_b(out: &mut Vec<u32>, b: Strided, k: usize, n: usize, n_pad: usize, kp: usize, parallel: bool) {
    pack_b_with(out, b, (k, n, n_pad, kp), parallel, SIMD)
}

fn pack_b_with(
    out: &mut Vec<u32>,
    b: Strided,
    (k, n, n_pad, kp): (usize, usize, usize, usize),
    parallel: bool,
    simd: bool,
) {
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512bw")))]
    let _ = simd;
    reuse(out, n_pad * kp / 2);
    let panel_len = 8 * kp;
    let at = |kk: usize, j: usize| if kk < k && j < n { b.at(kk, j) } else { 0.0 };
    let fill = |g: usize, group: &mut [u32]| {
        let j_group = g * PACK_COLS;
        for (p, panel) in group.chunks_mut(panel_len).enumerate() {
            let j0 = j_group + p * 16;
            if j0 >= n {
                panel.fill(0);
                continue;
            }
            let cols = 16.min(n - j0);
            // The pairs past K, and the columns past N, are zero.
            panel[k.div_ceil(2) * 16..].fill(0);
            if cols < 16 {
                panel.chunks_mut(16).for_each(|row| row[cols..].fill(0));
            }
            if b.rs == 1 && b.cs != 1 && cols == 16 {
                // Column j of B is contiguous (B = wᵀ for a row-major w): transpose 16 columns
                // × 16 values at a time through a register-sized block.
                let col = |jj: usize| &b.data[(j0 + jj) * b.cs..][..k];
                let mut q0 = 0;
                #[cfg(all(target_arch = "x86_64", target_feature = "avx512bw"))]
                while simd && 2 * q0 + 32 <= k {
                    // SAFETY: columns j0..j0 + 16 <= n each hold k values, rows 2·q0..2·q0 + 32
                    // of them are read; the panel has kp / 2 >= q0 + 16 rows of 16.
                    unsafe {
                        simd::b_block_columns(&mut panel[q0 * 16..][..256], b.data[j0 * b.cs + 2 * q0..].as_ptr(), b.cs)
                    };
                    q0 += 16;
                }
                while 2 * q0 + 16 <= k {
                    let mut block = [[0u32; 8]; 16];
                    for (jj, out) in block.iter_mut().enumerate() {
                        let c = &col(jj)[2 * q0..][..16];
                        for (qq, o) in out.iter_mut().enumerate() {
                            *o = pair(c[2 * qq], c[2 * qq + 1]);
                        }
                    }
                    for qq in 0..8 {
                        let row = &mut panel[(q0 + qq) * 16..][..16];
                        for (jj, o) in row.iter_mut().enumerate() {
                            *o = block[jj][qq];
                        }
                    }
                    q0 += 8;
                }
                for q in q0..k.div_ceil(2) {
                    for jj in 0..16 {
                        panel[q * 16 + jj] = pair(at(2 * q, j0 + jj), at(2 * q + 1, j0 + jj));
                    }
                }
            } else if b.cs == 1 && cols == 16 {
                // Row-major B: done for the whole group below, rows outermost.
                continue;
            } else {
                for q in 0..k.div_ceil(2) {
                    for jj in 0..cols {
                        panel[q * 16 + jj] = pair(at(2 * q, j0 + jj), at(2 * q + 1, j0 + jj));
                    }
                }
            }
        }
    };
    // Row-major B, whole panels: each pair of rows is read once, in order, and two rows'
    // 16-value segments zip into one 64-byte panel row.
    let fill_rows = |g: usize, group: &mut [u32]| {
        let j_group = g * PACK_COLS;
        let panels = group.len() / panel_len;
        let full = (0..panels).take_while(|p| j_group + p * 16 + 16 <= n).count();
        for q in 0..k.div_ceil(2) {
            let r0 = &b.data[2 * q * b.rs..];
            let r1 = (2 * q + 1 < k).then(|| &b.data[(2 * q + 1) * b.rs..]);
            for p in 0..full {
                let j0 = j_group + p * 16;
                let row = &mut group[p * panel_len + q * 16..][..16];
                #[cfg(all(target_arch = "x86_64", target_feature = "avx512bw"))]
                if simd {
                    // SAFETY: columns j0..j0 + 16 <= n of rows 2q and 2q + 1 < k.
                    unsafe { simd::b_row(row, r0[j0..j0 + 16].as_ptr(), r1.map(|r1| r1[j0..j0 + 16].as_ptr())) };
                    continue;
                }
                match r1 {
                    Some(r1) => {
                        for ((o, &lo), &hi) in row.iter_mut().zip(&r0[j0..j0 + 16]).zip(&r1[j0..j0 + 16]) {
                            *o = pair(lo, hi);
                        }
                    }
                    None => row.iter_mut().zip(&r0[j0..j0 + 16]).for_each(|(o, &lo)| *o = pair(lo, 0.0)),
                }
            }
        }
    };
    let fill = |g: usize, group: &mut [u32]| {
        if b.cs == 1 {
            fill_rows(g, group);
        }
        fill(g, group);
    };
    for_each_chunk(out, PACK_COLS / 16 * panel_len, parallel, fill);
}

/// The packers' whole tiles and panel blocks on AVX-512 registers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512bw"))]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::round`] on 16 lanes, each lane's bf16 left in its upper half (lower half zero).
    #[inline(always)]
    unsafe fn round_high(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(v);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
        let magnitude = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
        let quiet_nan = _mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000));
        _mm512_and_si512(_mm512_mask_blend_epi32(nan, rounded, quiet_nan), _mm512_set1_epi32(0xffff_0000_u32 as i32))
    }

    /// [`super::pair`] on 16 lanes.
    #[inline(always)]
    unsafe fn pairs(lo: __m512, hi: __m512) -> __m512i {
        _mm512_or_si512(_mm512_srli_epi32::<16>(round_high(lo)), round_high(hi))
    }

    /// 32 consecutive f32 → 32 consecutive bf16 (16 pairs of neighbours).
    #[inline(always)]
    unsafe fn round32(p: *const f32) -> __m512i {
        let half = |p: *const f32| _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(round_high(_mm512_loadu_ps(p))));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half(p)), half(p.add(16)))
    }

    /// Transposes a 16×16 matrix of 32-bit values held one row per register: 32-bit and
    /// 64-bit interleaves make 4×4 blocks inside each 128-bit lane, two rounds of lane
    /// shuffles move the blocks.
    #[inline(always)]
    unsafe fn transpose(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + c], lane L: rows 4g..4g + 4 of column 4L + c.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let t = &t[4 * g..];
            u[4 * g] = _mm512_unpacklo_epi64(t[0], t[2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
        }
        for c in 0..4 {
            let (v0, v1, v2, v3) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
            let low01 = _mm512_shuffle_i32x4::<0x44>(v0, v1);
            let high01 = _mm512_shuffle_i32x4::<0xee>(v0, v1);
            let low23 = _mm512_shuffle_i32x4::<0x44>(v2, v3);
            let high23 = _mm512_shuffle_i32x4::<0xee>(v2, v3);
            r[c] = _mm512_shuffle_i32x4::<0x88>(low01, low23);
            r[4 + c] = _mm512_shuffle_i32x4::<0xdd>(low01, low23);
            r[8 + c] = _mm512_shuffle_i32x4::<0x88>(high01, high23);
            r[12 + c] = _mm512_shuffle_i32x4::<0xdd>(high01, high23);
        }
    }

    /// A whole tile (16 rows × 32 values) of a row-major A, `p` at its first value.
    ///
    /// SAFETY: `p` reaches 16 rows of 32 f32, `rs` apart; `tile` holds 512 values.
    pub(super) unsafe fn a_tile_rows(tile: &mut [u16], p: *const f32, rs: usize) {
        for r in 0..16 {
            _mm512_storeu_si512(tile[r * 32..].as_mut_ptr().cast(), round32(p.add(r * rs)));
        }
    }

    /// A whole tile of a column-major A: its 32 values of K are rows of the storage, `cs`
    /// apart, each holding the tile's 16 rows contiguously. Pairs of them make 16 registers of
    /// (row, pair) values, transposed into the tile's rows.
    ///
    /// SAFETY: `p` reaches 32 runs of 16 f32, `cs` apart; `tile` holds 512 values.
    pub(super) unsafe fn a_tile_columns(tile: &mut [u16], p: *const f32, cs: usize) {
        let mut v = [_mm512_setzero_si512(); 16];
        for (q, v) in v.iter_mut().enumerate() {
            *v = pairs(_mm512_loadu_ps(p.add(2 * q * cs)), _mm512_loadu_ps(p.add((2 * q + 1) * cs)));
        }
        transpose(&mut v);
        for (r, v) in v.iter().enumerate() {
            _mm512_storeu_si512(tile[r * 32..].as_mut_ptr().cast(), *v);
        }
    }

    /// 16 rows of a B panel (16 pairs of K for its 16 columns) from a B whose columns are
    /// contiguous (B = wᵀ): `p` at the first value of the first column, columns `cs` apart.
    ///
    /// SAFETY: `p` reaches 16 runs of 32 f32, `cs` apart; `rows` holds 256 values.
    pub(super) unsafe fn b_block_columns(rows: &mut [u32], p: *const f32, cs: usize) {
        let mut v = [_mm512_setzero_si512(); 16];
        for (j, v) in v.iter_mut().enumerate() {
            *v = round32(p.add(j * cs));
        }
        transpose(&mut v);
        for (q, v) in v.iter().enumerate() {
            _mm512_storeu_si512(rows[q * 16..].as_mut_ptr().cast(), *v);
        }
    }

    /// One panel row (16 pairs) from two rows of a row-major B; past the last row of B, the
    /// upper halves are zero.
    ///
    /// SAFETY: `lo` (and `hi`) reach 16 f32; `row` holds 16 values.
    pub(super) unsafe fn b_row(row: &mut [u32], lo: *const f32, hi: Option<*const f32>) {
        let hi = hi.map_or(_mm512_setzero_ps(), |p| _mm512_loadu_ps(p));
        _mm512_storeu_si512(row.as_mut_ptr().cast(), pairs(_mm512_loadu_ps(lo), hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1e-40, -3e-39, f32::MAX];
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 97 == 5 {
                    specials[(s % specials.len() as u64) as usize]
                } else {
                    // Values with low mantissa bits on both sides of every rounding boundary.
                    f32::from_bits((s >> 32) as u32 & 0xbfff_ffff)
                }
            })
            .collect()
    }

    /// The register paths and the scalar loops pack every layout and edge to the same bits.
    #[test]
    fn simd_and_scalar_packing_agree() {
        for (m, k) in [(16, 32), (33, 70), (64, 128), (5, 200), (48, 31)] {
            let a = values(m * k, 1);
            let (m_pad, kp) = (m.div_ceil(32) * 32, k.div_ceil(32) * 32);
            for a_s in [Strided { data: &a, rs: k, cs: 1 }, Strided { data: &a, rs: 1, cs: m }] {
                let (mut fast, mut slow) = (vec![7u16; 3], vec![9u16; 3]);
                pack_a_with(&mut fast, a_s, (m, k, m_pad, kp), true, true);
                pack_a_with(&mut slow, a_s, (m, k, m_pad, kp), false, false);
                assert_eq!(fast, slow, "A {m}×{k} rs {} cs {}", a_s.rs, a_s.cs);
            }
        }
        for (k, n) in [(32, 16), (70, 33), (128, 64), (200, 5), (31, 48), (64, 300)] {
            let b = values(k * n, 2);
            let (n_pad, kp) = (n.div_ceil(32) * 32, k.div_ceil(32) * 32);
            for b_s in [Strided { data: &b, rs: n, cs: 1 }, Strided { data: &b, rs: 1, cs: k }] {
                let (mut fast, mut slow) = (vec![7u32; 3], vec![9u32; 3]);
                pack_b_with(&mut fast, b_s, (k, n, n_pad, kp), true, true);
                pack_b_with(&mut slow, b_s, (k, n, n_pad, kp), false, false);
                assert_eq!(fast, slow, "B {k}×{n} rs {} cs {}", b_s.rs, b_s.cs);
            }
        }
    }

    /// Against the definition of the layouts, element by element.
    #[test]
    fn packed_layouts_hold_the_rounded_operands() {
        let (m, k, n) = (40, 70, 35);
        let a = values(m * k, 3);
        let (m_pad, kp, n_pad) = (64, 96, 64);
        let mut tiles = Vec::new();
        pack_a(&mut tiles, Strided { data: &a, rs: 1, cs: m }, m, k, m_pad, kp, true);
        for i in 0..m_pad {
            for kk in 0..kp {
                let want = if i < m && kk < k { round(a[kk * m + i]) } else { 0 };
                let got = tiles[(i / 16 * (kp / 32) + kk / 32) * 512 + (i % 16) * 32 + kk % 32];
                assert_eq!(got, want, "A[{i}, {kk}]");
            }
        }
        let b = values(k * n, 4);
        let mut panels = Vec::new();
        pack_b(&mut panels, Strided { data: &b, rs: 1, cs: k }, k, n, n_pad, kp, true);
        for kk in 0..kp {
            for j in 0..n_pad {
                let want = if kk < k && j < n { round(b[j * k + kk]) } else { 0 };
                let word = panels[(j / 16) * 8 * kp + (kk / 2) * 16 + j % 16];
                let got = if kk % 2 == 0 { word as u16 } else { (word >> 16) as u16 };
                assert_eq!(got, want, "B[{kk}, {j}]");
            }
        }
    }
}
