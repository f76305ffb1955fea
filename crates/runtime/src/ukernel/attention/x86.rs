//! Explicit AVX-512 / AVX2 kernels where the portable loops do not
//! vectorise well: block-row maxima and bias bit scans, the online-softmax
//! step with a shorter exponential, the 8 × 32 P·V tile, and register
//! transposes for packing K and Q. Written with plain loops and no
//! closures: a closure does not inherit `#[target_feature]` and would pass
//! vectors through memory.

use super::{NK, PAD};
use std::arch::x86_64::*;

/// OR and AND of the bits of `x` (the classification of bias blocks:
/// LLVM leaves the plain loops scalar).
#[target_feature(enable = "avx512f")]
pub(super) fn or_and_avx512(x: &[f32]) -> (u32, u32) {
    let (n, p) = (x.len(), x.as_ptr().cast::<i32>());
    let ones = _mm512_set1_epi32(-1);
    let (mut o, mut a) = (_mm512_setzero_si512(), ones);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: the load reads elements `i .. i+16 ≤ n` of `x`.
        let v = unsafe { _mm512_loadu_epi32(p.add(i)) };
        o = _mm512_or_si512(o, v);
        a = _mm512_and_si512(a, v);
        i += 16;
    }
    if i < n {
        // The tail through a mask: lanes past the end read as 0 for
        // the OR and all ones for the AND.
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: the masked loads read elements `i .. n` of `x` only
        // (masked-off lanes are not accessed).
        let (vo, va) = unsafe {
            (
                _mm512_maskz_loadu_epi32(m, p.add(i)),
                _mm512_mask_loadu_epi32(ones, m, p.add(i)),
            )
        };
        o = _mm512_or_si512(o, vo);
        a = _mm512_and_si512(a, va);
    }
    (
        _mm512_reduce_or_epi32(o) as u32,
        _mm512_reduce_and_epi32(a) as u32,
    )
}

/// Degree-5 polynomial (`1 + c₁r + … + c₅r⁵`, near-minimax on
/// `|r| ≤ ln 2 / 2`, as oneDNN's) for `exp(r)`.
const EXP_POLY: [u32; 5] = [
    0x3f7f_fffb,
    0x3eff_fee3,
    0x3e2a_ad40,
    0x3d2b_9d0d,
    0x3c07_cfce,
];

/// `exp(x)` lane by lane for `x ≤ 0` (as [`super::exp_nonpositive`]:
/// 0 below ln 2⁻¹²⁶ and for −∞, NaN stays NaN) with fewer
/// instructions: Cody–Waite reduction by ln 2, a degree-5 polynomial
/// and `vscalefps` for `2ⁿ` (11 vector operations; the measured
/// relative error is in the tests).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp_avx512(x: __m512) -> __m512 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let shift = _mm512_set1_ps(SHIFT);
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), shift);
    let n = _mm512_sub_ps(t, shift);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm512_set1_ps(f32::from_bits(EXP_POLY[4]));
    for &c in EXP_POLY[..4].iter().rev() {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(f32::from_bits(c)));
    }
    let y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0));
    // (Not-less-than, unordered: NaN lanes are kept, −∞ and the
    // underflowing ones are zeroed.)
    let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(-87.3));
    _mm512_maskz_scalef_ps(keep, y, n)
}

/// [`super::online`] on AVX-512: the block row in four registers
/// throughout (max, exponentials, lane sums).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn online_avx512(srow: &mut [f32; NK], m: &mut f32, l: &mut [f32; PAD]) -> f32 {
    let p = srow.as_mut_ptr();
    // (Plain loops, no closures: see `pv8x32_avx512`.)
    let mut v = [_mm512_setzero_ps(); 4];
    for (k, x) in v.iter_mut().enumerate() {
        // SAFETY: the load reads elements 16k .. 16k+16 of `srow`.
        *x = unsafe { _mm512_loadu_ps(p.add(16 * k)) };
    }
    let block_max = _mm512_reduce_max_ps(_mm512_max_ps(
        _mm512_max_ps(v[0], v[1]),
        _mm512_max_ps(v[2], v[3]),
    ));
    let m_new = if block_max > *m { block_max } else { *m };
    if m_new == f32::NEG_INFINITY {
        srow.fill(0.0);
        return 1.0;
    }
    let mn = _mm512_set1_ps(m_new);
    let mut e = [_mm512_setzero_ps(); 4];
    for (k, (e, &x)) in e.iter_mut().zip(&v).enumerate() {
        *e = exp_avx512(_mm512_sub_ps(x, mn));
        // SAFETY: the store writes elements 16k .. 16k+16 of `srow`.
        unsafe { _mm512_storeu_ps(p.add(16 * k), *e) };
    }
    let sum = _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(e[2], e[3]));
    // (`exp(0) = 1` exactly: skipping the exponential when the max
    // stays changes nothing.)
    let alpha = if m_new == *m {
        1.0
    } else {
        _mm512_cvtss_f32(exp_avx512(_mm512_set1_ps(*m - m_new)))
    };
    let lp = l.as_mut_ptr();
    // SAFETY: the load and store access the 16 elements of `l`.
    unsafe {
        let lv = _mm512_fmadd_ps(_mm512_loadu_ps(lp), _mm512_set1_ps(alpha), sum);
        _mm512_storeu_ps(lp, lv);
    }
    *m = m_new;
    alpha
}

/// `dst[e][r] = scale · src[r][e]` for 4 rows of 16: a 4 × 16
/// transpose through registers.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn interleave4_avx512(src: [&[f32; PAD]; 4], scale: f32, dst: &mut [[f32; 4]; PAD]) {
    let mut r = [_mm512_setzero_ps(); 4];
    for (x, row) in r.iter_mut().zip(src) {
        // SAFETY: the load reads the 16 elements of one `src` row.
        *x = unsafe { _mm512_loadu_ps(row.as_ptr()) };
    }
    let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(r[0], r[1]));
    let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(r[0], r[1]));
    let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(r[2], r[3]));
    let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(r[2], r[3]));
    // u[c], 128-bit lane L: the 4 rows' element 4L + c.
    let u = [
        _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)),
        _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3)),
    ];
    let x0 = _mm512_shuffle_f32x4::<0x44>(u[0], u[1]);
    let x1 = _mm512_shuffle_f32x4::<0xee>(u[0], u[1]);
    let y0 = _mm512_shuffle_f32x4::<0x44>(u[2], u[3]);
    let y1 = _mm512_shuffle_f32x4::<0xee>(u[2], u[3]);
    let out = [
        _mm512_shuffle_f32x4::<0x88>(x0, y0),
        _mm512_shuffle_f32x4::<0xdd>(x0, y0),
        _mm512_shuffle_f32x4::<0x88>(x1, y1),
        _mm512_shuffle_f32x4::<0xdd>(x1, y1),
    ];
    let s = _mm512_set1_ps(scale);
    let p = dst.as_mut_ptr().cast::<f32>();
    for (k, &v) in out.iter().enumerate() {
        // SAFETY: the store writes floats 16k .. 16k+16 of the 64 in
        // `dst`.
        unsafe { _mm512_storeu_ps(p.add(16 * k), _mm512_mul_ps(v, s)) };
    }
}

/// `dst[e][c0 + r] = src[r][e]` for a 16 × 16 tile, through registers
/// (unpacks of 32- and 64-bit pairs, then two rounds of 128-bit lane
/// shuffles).
/// `acc[r] += Σ_j p[r][j]·v[j]` for 8 rows and a 32-column panel: 16
/// accumulators across the block, per key 2 loads and 8 broadcasts
/// for 16 multiply-adds (the plain loops leave 8 rows × 2 vectors
/// in memory).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn pv8x32_avx512(p: &[[f32; NK]; 8], v: &[[f32; 32]], acc: &mut [[f32; 32]; 8]) {
    // (Plain loops, no closures: a closure does not inherit the target
    // feature and would pass vectors through memory.)
    let mut a = [[_mm512_setzero_ps(); 2]; 8];
    for (ar, r) in a.iter_mut().zip(acc.iter()) {
        // SAFETY: the loads read elements 0..32 of an `acc` row.
        unsafe {
            ar[0] = _mm512_loadu_ps(r.as_ptr());
            ar[1] = _mm512_loadu_ps(r.as_ptr().add(16));
        }
    }
    for (j, vj) in v.iter().enumerate().take(NK) {
        // SAFETY: the loads read elements 0..32 of `vj`.
        let (v0, v1) = unsafe {
            (
                _mm512_loadu_ps(vj.as_ptr()),
                _mm512_loadu_ps(vj.as_ptr().add(16)),
            )
        };
        for (ar, pr) in a.iter_mut().zip(p) {
            let x = _mm512_set1_ps(pr[j]);
            ar[0] = _mm512_fmadd_ps(x, v0, ar[0]);
            ar[1] = _mm512_fmadd_ps(x, v1, ar[1]);
        }
    }
    for (r, ar) in acc.iter_mut().zip(a) {
        // SAFETY: the stores write elements 0..32 of an `acc` row.
        unsafe {
            _mm512_storeu_ps(r.as_mut_ptr(), ar[0]);
            _mm512_storeu_ps(r.as_mut_ptr().add(16), ar[1]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16_avx512(src: [&[f32; PAD]; PAD], dst: &mut [[f32; NK]; PAD], c0: usize) {
    // (Plain loops, no closures: see `pv8x32_avx512`.)
    let mut r = [_mm512_setzero_ps(); 16];
    for (x, row) in r.iter_mut().zip(src) {
        // SAFETY: the load reads the 16 elements of one `src` row.
        *x = unsafe { _mm512_loadu_ps(row.as_ptr()) };
    }
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4i + c], 128-bit lane L: rows 4i .. 4i+3 of column 4L + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        for h in 0..2 {
            let a = _mm512_castps_pd(t[4 * i + h]);
            let b = _mm512_castps_pd(t[4 * i + 2 + h]);
            u[4 * i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let y1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        let cols = [
            _mm512_shuffle_f32x4::<0x88>(x0, y0),
            _mm512_shuffle_f32x4::<0x88>(x1, y1),
            _mm512_shuffle_f32x4::<0xdd>(x0, y0),
            _mm512_shuffle_f32x4::<0xdd>(x1, y1),
        ];
        for l in 0..4 {
            let v = cols[l];
            let row: &mut [f32; PAD] = (&mut dst[4 * l + c][c0..c0 + PAD])
                .try_into()
                .expect("PAD columns");
            // SAFETY: the store writes the 16 elements of `row`.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
        }
    }
}

/// [`super::online`] for four rows at once (`RQ = 4`): row `k`'s max
/// and `alpha` travel in 128-bit lane `k` of one register.
// (Row and register indices side by side read better than zips of
// four arrays here.)
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn online4_avx512(
    s: &mut [[f32; NK]; 4],
    m: &mut [f32; 4],
    l: &mut [[f32; PAD]; 4],
) -> [f32; 4] {
    // (Plain loops, no closures: see `pv8x32_avx512`.)
    let mut v = [[_mm512_setzero_ps(); 4]; 4];
    let mut mx = [_mm512_setzero_ps(); 4];
    for k in 0..4 {
        let p = s[k].as_ptr();
        for c in 0..4 {
            // SAFETY: the load reads elements 16c .. 16c+16 of row k.
            v[k][c] = unsafe { _mm512_loadu_ps(p.add(16 * c)) };
        }
        mx[k] = _mm512_max_ps(
            _mm512_max_ps(v[k][0], v[k][1]),
            _mm512_max_ps(v[k][2], v[k][3]),
        );
    }
    // Lanes of rows 0, 1 (then 2, 3) folded pairwise by 128-bit lane,
    // then the four rows' lanes side by side, then within each lane.
    let x = _mm512_max_ps(
        _mm512_shuffle_f32x4::<0x44>(mx[0], mx[1]),
        _mm512_shuffle_f32x4::<0xee>(mx[0], mx[1]),
    );
    let y = _mm512_max_ps(
        _mm512_shuffle_f32x4::<0x44>(mx[2], mx[3]),
        _mm512_shuffle_f32x4::<0xee>(mx[2], mx[3]),
    );
    let z = _mm512_max_ps(
        _mm512_shuffle_f32x4::<0x88>(x, y),
        _mm512_shuffle_f32x4::<0xdd>(x, y),
    );
    let z = _mm512_max_ps(z, _mm512_permute_ps::<0xb1>(z));
    let block_max = _mm512_max_ps(z, _mm512_permute_ps::<0x4e>(z));
    // SAFETY: the load reads the 4 elements of `m`.
    let m4 = unsafe { _mm_loadu_ps(m.as_ptr()) };
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let m_old = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(m4));
    // (`max` keeps the second operand when the first is NaN, as the
    // scalar step keeps `m`.)
    let m_new = _mm512_max_ps(block_max, m_old);
    // Rows that have seen only −∞: exponentials against 0 (all 0) and
    // `alpha = 1`.
    let none = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m_new, _mm512_set1_ps(f32::NEG_INFINITY));
    let base = _mm512_mask_blend_ps(none, m_new, _mm512_setzero_ps());
    // (`exp(0) = 1` exactly where the max stays.)
    let alpha = _mm512_mask_blend_ps(
        none,
        exp_avx512(_mm512_sub_ps(m_old, base)),
        _mm512_set1_ps(1.0),
    );
    let bases = [
        _mm512_shuffle_f32x4::<0x00>(base, base),
        _mm512_shuffle_f32x4::<0x55>(base, base),
        _mm512_shuffle_f32x4::<0xaa>(base, base),
        _mm512_shuffle_f32x4::<0xff>(base, base),
    ];
    let alphas = [
        _mm512_shuffle_f32x4::<0x00>(alpha, alpha),
        _mm512_shuffle_f32x4::<0x55>(alpha, alpha),
        _mm512_shuffle_f32x4::<0xaa>(alpha, alpha),
        _mm512_shuffle_f32x4::<0xff>(alpha, alpha),
    ];
    for k in 0..4 {
        let p = s[k].as_mut_ptr();
        let mut e = [_mm512_setzero_ps(); 4];
        for c in 0..4 {
            e[c] = exp_avx512(_mm512_sub_ps(v[k][c], bases[k]));
            // SAFETY: the store writes elements 16c .. 16c+16 of row k.
            unsafe { _mm512_storeu_ps(p.add(16 * c), e[c]) };
        }
        let sum = _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(e[2], e[3]));
        let lp = l[k].as_mut_ptr();
        // SAFETY: the load and store access the 16 elements of `l[k]`.
        unsafe {
            let lv = _mm512_fmadd_ps(_mm512_loadu_ps(lp), alphas[k], sum);
            _mm512_storeu_ps(lp, lv);
        }
    }
    let (mut mo, mut ao) = ([0f32; 16], [0f32; 16]);
    // SAFETY: each store writes the 16 elements of its array.
    unsafe {
        _mm512_storeu_ps(mo.as_mut_ptr(), m_new);
        _mm512_storeu_ps(ao.as_mut_ptr(), alpha);
    }
    let mut out = [1.0; 4];
    for k in 0..4 {
        m[k] = mo[4 * k];
        out[k] = ao[4 * k];
    }
    out
}

#[target_feature(enable = "avx512f")]
pub(super) fn max_avx512(x: &[f32; NK]) -> f32 {
    let p = x.as_ptr();
    // SAFETY: the loads read elements 0..64 of `x`.
    unsafe {
        let a = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let b = _mm512_max_ps(_mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48)));
        _mm512_reduce_max_ps(_mm512_max_ps(a, b))
    }
}

/// Eight 8-lane vectors folded by `f` into one, then its lanes.
#[target_feature(enable = "avx2")]
fn fold8(x: &[f32; NK], f: impl Fn(__m256, __m256) -> __m256, g: fn(f32, f32) -> f32) -> f32 {
    let p = x.as_ptr();
    // SAFETY: the loads read elements 0..64 of `x`.
    let v = unsafe {
        let l = |i: usize| _mm256_loadu_ps(p.add(8 * i));
        let a = f(f(l(0), l(1)), f(l(2), l(3)));
        let b = f(f(l(4), l(5)), f(l(6), l(7)));
        f(a, b)
    };
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes[1..].iter().fold(lanes[0], |a, &b| g(a, b))
}

#[target_feature(enable = "avx2")]
pub(super) fn max_avx2(x: &[f32; NK]) -> f32 {
    fold8(
        x,
        |a, b| _mm256_max_ps(a, b),
        |a, b| if b > a { b } else { a },
    )
}
