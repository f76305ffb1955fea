//! x86-64 tiles: AVX-512F (12 rows × 32 columns, 24 zmm accumulators) and
//! AVX2+FMA (6 × 16, 12 ymm accumulators). A values are broadcast, B rows
//! loaded as vectors, so C rows are stored as vectors when C's columns are
//! contiguous and the tile is whole; otherwise the tile goes through
//! [`generic::store`].

use super::generic;
use super::{At, Tile};
use std::arch::x86_64::*;

pub(super) const AVX512: Tile = Tile {
    mr: 12,
    nr: 32,
    run: avx512,
};

pub(super) const AVX2: Tile = Tile {
    mr: 6,
    nr: 16,
    run: avx2,
};

fn avx512(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], at: &At) {
    const MR: usize = 12;
    const NR: usize = 32;
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    at.check(c.len());
    // SAFETY: this tile is only selected when `Isa::available` detected
    // avx512f on this CPU; the slivers hold `kc` steps (checked above).
    let acc = unsafe { avx512_dot(kc, a, b) };
    let full = at.rows == MR && at.cols == NR && at.cs == 1;
    if full {
        // SAFETY: as above for the feature; `at.check` proved that every
        // element of the 12 × 32 tile (rows `offset + i·rs`, 32 contiguous
        // columns) lies inside `c`.
        unsafe { avx512_store(&acc, c, at) };
    } else {
        let mut tile = [0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                // SAFETY: `tile` has MR·NR elements; row i, half h is in range.
                unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + h * 16), *v) };
            }
        }
        generic::store(&tile, NR, c, at);
    }
}

#[target_feature(enable = "avx512f")]
fn avx512_dot(kc: usize, a: &[f32], b: &[f32]) -> [[__m512; 2]; 12] {
    let mut acc = [[_mm512_setzero_ps(); 2]; 12];
    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
    for _ in 0..kc {
        // SAFETY: the caller checked `a` holds kc·12 and `b` kc·32 floats;
        // each step reads 12 of A and 32 of B and advances by as many.
        unsafe {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                r[0] = _mm512_fmadd_ps(ai, b0, r[0]);
                r[1] = _mm512_fmadd_ps(ai, b1, r[1]);
            }
            ap = ap.add(12);
            bp = bp.add(32);
        }
    }
    acc
}

#[target_feature(enable = "avx512f")]
fn avx512_store(acc: &[[__m512; 2]; 12], c: &mut [f32], at: &At) {
    let base = c.as_mut_ptr();
    for (i, r) in acc.iter().enumerate() {
        // SAFETY: the caller proved the whole tile lies inside `c`, with
        // contiguous columns (`cs == 1`).
        unsafe {
            let p = base.offset(at.offset as isize + i as isize * at.rs);
            let (mut v0, mut v1) = (r[0], r[1]);
            if at.accumulate {
                v0 = _mm512_add_ps(_mm512_loadu_ps(p), v0);
                v1 = _mm512_add_ps(_mm512_loadu_ps(p.add(16)), v1);
            }
            _mm512_storeu_ps(p, v0);
            _mm512_storeu_ps(p.add(16), v1);
        }
    }
}

fn avx2(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], at: &At) {
    const MR: usize = 6;
    const NR: usize = 16;
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    at.check(c.len());
    // SAFETY: this tile is only selected when `Isa::available` detected
    // avx2 and fma; the slivers hold `kc` steps (checked above).
    let acc = unsafe { avx2_dot(kc, a, b) };
    let full = at.rows == MR && at.cols == NR && at.cs == 1;
    if full {
        // SAFETY: features as above; `at.check` proved the 6 × 16 tile
        // with contiguous columns lies inside `c`.
        unsafe { avx2_store(&acc, c, at) };
    } else {
        let mut tile = [0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                // SAFETY: `tile` has MR·NR elements; row i, half h is in range.
                unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + h * 8), *v) };
            }
        }
        generic::store(&tile, NR, c, at);
    }
}

#[target_feature(enable = "avx2,fma")]
fn avx2_dot(kc: usize, a: &[f32], b: &[f32]) -> [[__m256; 2]; 6] {
    let mut acc = [[_mm256_setzero_ps(); 2]; 6];
    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
    for _ in 0..kc {
        // SAFETY: the caller checked `a` holds kc·6 and `b` kc·16 floats.
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ap.add(i));
                r[0] = _mm256_fmadd_ps(ai, b0, r[0]);
                r[1] = _mm256_fmadd_ps(ai, b1, r[1]);
            }
            ap = ap.add(6);
            bp = bp.add(16);
        }
    }
    acc
}

#[target_feature(enable = "avx2,fma")]
fn avx2_store(acc: &[[__m256; 2]; 6], c: &mut [f32], at: &At) {
    let base = c.as_mut_ptr();
    for (i, r) in acc.iter().enumerate() {
        // SAFETY: the caller proved the whole tile lies inside `c`, with
        // contiguous columns (`cs == 1`).
        unsafe {
            let p = base.offset(at.offset as isize + i as isize * at.rs);
            let (mut v0, mut v1) = (r[0], r[1]);
            if at.accumulate {
                v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
    }
}
