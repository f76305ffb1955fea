//! x86-64 tiles. A values are broadcast, B rows loaded as vectors, one
//! accumulator register per (row, vector of columns):
//!
//! * AVX-512F: up to 12 rows × 32 columns (24 zmm accumulators) over
//!   packed slivers, and a small tile of up to [`SMALL_ROWS`] rows × 64
//!   columns (two slivers, 16 accumulators) reading A in place.
//! * AVX2+FMA: up to 6 rows × 16 columns (12 ymm accumulators).
//!
//! Each tile is compiled for every row count, so a row tail computes only
//! its rows. C rows are stored as (masked, on AVX-512) vectors when C's
//! columns are contiguous; otherwise the tile goes through
//! [`generic::store`].

use super::generic;
use super::pack::{DIRECT_VEC, Taps};
use super::{At, COut, MatRef, SMALL_ROWS, Tile, fits};
use std::arch::x86_64::*;

pub(super) const AVX512: Tile = Tile {
    mr: 12,
    nr: 32,
    run: avx512,
    small: Some((64, avx512_small)),
    direct: Some(avx512_direct),
    small_direct: Some(avx512_small_direct),
};

pub(super) const AVX2: Tile = Tile {
    mr: 6,
    nr: 16,
    run: avx2,
    small: None,
    direct: None,
    small_direct: None,
};

/// Calls `$f::<R>($args)` for the row count `$rows` (1..=max).
macro_rules! by_rows {
    ($rows:expr, $f:ident, [$($r:literal),*], $args:tt) => {
        match $rows {
            $($r => $f::<$r> $args,)*
            _ => unreachable!("row count checked by the caller"),
        }
    };
}

fn avx512(kc: usize, a: &[f32], b: &[f32], c: COut, at: &At) {
    const MR: usize = 12;
    const NR: usize = 32;
    assert!((1..=MR).contains(&at.rows) && (1..=NR).contains(&at.cols));
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    at.check(c);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: this tile is only selected when `Isa::available` detected
    // avx512f on this CPU; the slivers hold `kc` steps of `MR` and `NR`
    // floats (checked above), and `at.check` proved the tile's valid
    // corner lies inside `c`.
    unsafe {
        by_rows!(
            at.rows,
            tile512,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            (kc, a, b, c, at)
        )
    }
}

/// `R` rows of a packed 12-row A sliver times one 32-column B sliver.
///
/// # Safety
///
/// avx512f is available; `a` holds `kc·12` floats, `b` `kc·32`; the
/// `R × at.cols` corner of C at `at` lies inside `c`.
#[target_feature(enable = "avx512f")]
unsafe fn tile512<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: COut, at: &At) {
    prefetch_c::<R>(c, at);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads 12 floats of A (R of them) and 32 of B
        // inside the slivers (caller), then advances by as many.
        unsafe {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                r[0] = _mm512_fmadd_ps(ai, b0, r[0]);
                r[1] = _mm512_fmadd_ps(ai, b1, r[1]);
            }
            ap = ap.wrapping_add(12);
            bp = bp.wrapping_add(32);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store512(&acc, c, at) }
}

fn avx512_direct(
    kc: usize,
    a: &[f32],
    x: &[f32],
    taps: &Taps,
    bases: [isize; 2],
    c: COut,
    at: &At,
) {
    const MR: usize = 12;
    const NR: usize = 2 * DIRECT_VEC;
    assert!((1..=MR).contains(&at.rows) && (1..=NR).contains(&at.cols));
    assert!(a.len() >= kc * MR && taps.offsets().len() == kc);
    assert!(
        bases.iter().all(|&b| taps.fits(b, x.len())),
        "conv: direct tile reads outside the image"
    );
    at.check(c);
    let (a, x) = (a.as_ptr(), x.as_ptr());
    let offs = taps.offsets().as_ptr();
    // SAFETY: avx512f was detected (as for `avx512`); the A sliver holds
    // `kc` steps, `offs` `kc` offsets, and `Taps::fits` proved
    // `x[base + off..][..16]` inside `x` for both bases and every offset;
    // `at.check` proved the valid corner of C inside `c`.
    unsafe {
        by_rows!(
            at.rows,
            direct512,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            (kc, a, x, offs, bases, c, at)
        )
    }
}

/// [`tile512`] with B row `p` read from the image: its two 16-column
/// vectors start at `x + bases[v] + offs[p]`. The same FMAs in the same
/// order as on a packed copy of those rows, so results are bit-identical
/// to the packed path.
///
/// # Safety
///
/// avx512f is available; `a` holds `kc·12` floats, `offs` `kc` offsets;
/// `x + bases[v] + offs[p]` starts 16 readable floats for every `v`, `p`;
/// the `R × at.cols` corner of C at `at` lies inside `c`.
#[target_feature(enable = "avx512f")]
unsafe fn direct512<const R: usize>(
    kc: usize,
    a: *const f32,
    x: *const f32,
    offs: *const isize,
    bases: [isize; 2],
    c: COut,
    at: &At,
) {
    prefetch_c::<R>(c, at);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (x0, x1) = (x.wrapping_offset(bases[0]), x.wrapping_offset(bases[1]));
    let mut ap = a;
    for p in 0..kc {
        // SAFETY: step p reads offset p, 12 floats of the A sliver and
        // the two 16-float image runs the caller vouches for.
        unsafe {
            let o = *offs.add(p);
            let b0 = _mm512_loadu_ps(x0.wrapping_offset(o));
            let b1 = _mm512_loadu_ps(x1.wrapping_offset(o));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                r[0] = _mm512_fmadd_ps(ai, b0, r[0]);
                r[1] = _mm512_fmadd_ps(ai, b1, r[1]);
            }
            ap = ap.wrapping_add(12);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store512(&acc, c, at) }
}

fn avx512_small(kc: usize, a: &MatRef, b: &[f32], c: COut, at: &At) {
    assert!((1..=SMALL_ROWS).contains(&at.rows) && (1..=64).contains(&at.cols));
    assert!(b.len() >= kc * 64);
    assert!(
        fits(a.data.len(), a.offset, at.rows, kc, a.rs, a.cs),
        "sgemm: A outside its slice"
    );
    at.check(c);
    // SAFETY: offset of A's element (0, 0) inside `a.data` (just checked).
    let a0 = unsafe { a.data.as_ptr().add(a.offset) };
    // SAFETY: as for `avx512`; A's `rows × kc` block lies inside `a.data`
    // (checked above), `b` holds two `kc × 32` slivers.
    unsafe {
        by_rows!(
            at.rows,
            small512,
            [1, 2, 3, 4],
            (kc, a0, a.rs, a.cs, b.as_ptr(), c, at)
        )
    }
}

/// `R` rows of A read in place (`(i, p)` at `a + i·rs + p·cs`) times two
/// consecutive 32-column B slivers.
///
/// # Safety
///
/// avx512f is available; A's `R × kc` block is readable, `b` holds
/// `kc·64` floats; the `R × at.cols` corner of C at `at` lies inside `c`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn small512<const R: usize>(
    kc: usize,
    a: *const f32,
    rs: isize,
    cs: isize,
    b: *const f32,
    c: COut,
    at: &At,
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut rows: [*const f32; R] = std::array::from_fn(|i| a.wrapping_offset(i as isize * rs));
    let (mut b0, mut b1) = (b, b.wrapping_add(kc * 32));
    for _ in 0..kc {
        // B streams from memory once per product (weights, read by no
        // other tile), so the hardware prefetcher's page-bounded run-ahead
        // leaves each step waiting on DRAM; requests `PF_DIST` steps ahead
        // keep more lines in flight. Prefetches never fault, so running
        // past the slivers is harmless.
        for q in [b0, b1] {
            let q = q.wrapping_add(PF_DIST * 32) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(q);
            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64));
        }
        // SAFETY: step p reads A's (i, p) for i < R (inside the block) and
        // 32 floats of each sliver, then advances.
        unsafe {
            let x = [
                _mm512_loadu_ps(b0),
                _mm512_loadu_ps(b0.add(16)),
                _mm512_loadu_ps(b1),
                _mm512_loadu_ps(b1.add(16)),
            ];
            for (r, row) in acc.iter_mut().zip(rows.iter_mut()) {
                let ai = _mm512_set1_ps(**row);
                for (v, xv) in r.iter_mut().zip(x) {
                    *v = _mm512_fmadd_ps(ai, xv, *v);
                }
                *row = row.wrapping_offset(cs);
            }
            b0 = b0.wrapping_add(32);
            b1 = b1.wrapping_add(32);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store512(&acc, c, at) }
}

fn avx512_small_direct(
    kc: usize,
    a: &MatRef,
    x: &[f32],
    taps: &Taps,
    bases: [isize; 4],
    c: COut,
    at: &At,
) {
    assert!((1..=SMALL_ROWS).contains(&at.rows) && (1..=4 * DIRECT_VEC).contains(&at.cols));
    assert!(taps.offsets().len() == kc);
    assert!(
        fits(a.data.len(), a.offset, at.rows, kc, a.rs, a.cs),
        "sgemm: A outside its slice"
    );
    assert!(
        bases.iter().all(|&b| taps.fits(b, x.len())),
        "conv: direct tile reads outside the image"
    );
    at.check(c);
    // SAFETY: offset of A's element (0, 0) inside `a.data` (just checked).
    let a0 = unsafe { a.data.as_ptr().add(a.offset) };
    let offs = taps.offsets().as_ptr();
    // SAFETY: as for `avx512_small` for A and C; `Taps::fits` proved every
    // 16-float image run the tile reads inside `x`.
    unsafe {
        by_rows!(
            at.rows,
            small_direct512,
            [1, 2, 3, 4],
            (kc, a0, a.rs, a.cs, x.as_ptr(), offs, bases, c, at)
        )
    }
}

/// [`small512`] with B row `p`'s four 16-column vectors read from
/// `x + bases[v] + offs[p]`: the same FMAs in the same order, so
/// bit-identical to the packed path.
///
/// # Safety
///
/// avx512f is available; A's `R × kc` block is readable, `offs` holds
/// `kc` offsets, `x + bases[v] + offs[p]` starts 16 readable floats for
/// every `v`, `p`; the `R × at.cols` corner of C at `at` lies inside `c`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn small_direct512<const R: usize>(
    kc: usize,
    a: *const f32,
    rs: isize,
    cs: isize,
    x: *const f32,
    offs: *const isize,
    bases: [isize; 4],
    c: COut,
    at: &At,
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut rows: [*const f32; R] = std::array::from_fn(|i| a.wrapping_offset(i as isize * rs));
    let xb = bases.map(|b| x.wrapping_offset(b));
    for p in 0..kc {
        // SAFETY: step p reads A's (i, p) for i < R (inside the block),
        // offset p and the four image runs the caller vouches for.
        unsafe {
            let o = *offs.add(p);
            let xv = xb.map(|q| _mm512_loadu_ps(q.wrapping_offset(o)));
            for (r, row) in acc.iter_mut().zip(rows.iter_mut()) {
                let ai = _mm512_set1_ps(**row);
                for (v, b) in r.iter_mut().zip(xv) {
                    *v = _mm512_fmadd_ps(ai, b, *v);
                }
                *row = row.wrapping_offset(cs);
            }
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store512(&acc, c, at) }
}

/// Steps of B the small tile requests ahead of its loads: 2 KiB per
/// sliver (measured on M = 1..4 products with B cold: 16 steps gained
/// 5..15 % on M = 2, 4; 64 and 128 were no better).
const PF_DIST: usize = 16;

/// Starts loading the tile's C rows (32 columns each) into L1 while the
/// products run, so the store at the end does not wait on them (small
/// products keep their few C rows in L1 anyway). Prefetches never fault,
/// so the addresses need not be in bounds.
#[target_feature(enable = "avx512f")]
fn prefetch_c<const R: usize>(c: COut, at: &At) {
    if at.cs != 1 {
        return;
    }
    for i in 0..R {
        let row = c
            .ptr
            .wrapping_offset(at.offset as isize + i as isize * at.rs);
        for j in [0, 16, 31] {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(j) as *const i8);
        }
    }
}

/// Adds (or stores) the first `at.cols` columns of each accumulator row
/// (`V` vectors of 16) into C: masked vector stores when C's columns are
/// contiguous, [`generic::store`] otherwise.
///
/// # Safety
///
/// avx512f is available; `acc.len() == at.rows` and the `rows × cols`
/// corner at `at` lies inside `c`.
#[target_feature(enable = "avx512f")]
unsafe fn store512<const V: usize>(acc: &[[__m512; V]], c: COut, at: &At) {
    if at.cs != 1 {
        let mut tile = [0f32; 12 * 32];
        let nr = V * 16;
        assert!(acc.len() * nr <= tile.len());
        for (i, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                // SAFETY: row i, vector v ends at `(i + 1)·nr ≤ tile.len()`.
                unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(i * nr + v * 16), *x) };
            }
        }
        generic::store(&tile, nr, c, at);
        return;
    }
    for (i, row) in acc.iter().enumerate() {
        let p = c
            .ptr
            .wrapping_offset(at.offset as isize + i as isize * at.rs);
        for (v, x) in row.iter().enumerate() {
            let lo = v * 16;
            if lo >= at.cols {
                break;
            }
            let mask: __mmask16 = match at.cols - lo {
                n if n >= 16 => 0xffff,
                n => (1u16 << n) - 1,
            };
            let q = p.wrapping_add(lo);
            // SAFETY: the lanes `mask` selects are columns `lo..cols` of
            // row i, inside `c` (caller); masked-off lanes are not
            // accessed.
            unsafe {
                let mut y = *x;
                if at.accumulate {
                    y = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, q), y);
                }
                _mm512_mask_storeu_ps(q, mask, y);
            }
        }
    }
}

fn avx2(kc: usize, a: &[f32], b: &[f32], c: COut, at: &At) {
    const MR: usize = 6;
    const NR: usize = 16;
    assert!((1..=MR).contains(&at.rows) && (1..=NR).contains(&at.cols));
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    at.check(c);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: this tile is only selected when `Isa::available` detected
    // avx2 and fma; the slivers hold `kc` steps (checked above), and
    // `at.check` proved the valid corner lies inside `c`.
    unsafe { by_rows!(at.rows, tile256, [1, 2, 3, 4, 5, 6], (kc, a, b, c, at)) }
}

/// `R` rows of a packed 6-row A sliver times one 16-column B sliver.
///
/// # Safety
///
/// avx2 and fma are available; `a` holds `kc·6` floats, `b` `kc·16`; the
/// `R × at.cols` corner of C at `at` lies inside `c`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: COut, at: &At) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads inside the slivers (caller).
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ap.add(i));
                r[0] = _mm256_fmadd_ps(ai, b0, r[0]);
                r[1] = _mm256_fmadd_ps(ai, b1, r[1]);
            }
            ap = ap.wrapping_add(6);
            bp = bp.wrapping_add(16);
        }
    }
    if at.cs == 1 && at.cols == 16 {
        for (i, r) in acc.iter().enumerate() {
            let p = c
                .ptr
                .wrapping_offset(at.offset as isize + i as isize * at.rs);
            // SAFETY: row i's 16 contiguous columns lie inside `c` (caller).
            unsafe {
                let (mut v0, mut v1) = (r[0], r[1]);
                if at.accumulate {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
                }
                _mm256_storeu_ps(p, v0);
                _mm256_storeu_ps(p.add(8), v1);
            }
        }
        return;
    }
    let mut tile = [0f32; 6 * 16];
    for (i, r) in acc.iter().enumerate() {
        for (h, v) in r.iter().enumerate() {
            // SAFETY: `tile` has 6·16 elements; row i < R ≤ 6, half h < 2.
            unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(i * 16 + h * 8), *v) };
        }
    }
    generic::store(&tile, 16, c, at);
}
