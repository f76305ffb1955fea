//! aarch64 tile: NEON 8 rows × 8 columns (16 q-register accumulators).

use super::generic;
use super::{At, COut, Tile};
use std::arch::aarch64::*;

pub(super) const NEON: Tile = Tile {
    mr: 8,
    nr: 8,
    run: neon,
    small: None,
    direct: None,
    small_direct: None,
};

fn neon(kc: usize, a: &[f32], b: &[f32], c: COut, at: &At) {
    const MR: usize = 8;
    const NR: usize = 8;
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    // SAFETY: this tile is only selected when `Isa::available` detected
    // NEON; the slivers hold `kc` steps (checked above).
    let tile = unsafe { neon_dot(kc, a, b) };
    generic::store(&tile, NR, c, at);
}

#[target_feature(enable = "neon")]
fn neon_dot(kc: usize, a: &[f32], b: &[f32]) -> [f32; 64] {
    let mut acc = [[vdupq_n_f32(0.0); 2]; 8];
    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
    for _ in 0..kc {
        // SAFETY: the caller checked `a` holds kc·8 and `b` kc·8 floats.
        unsafe {
            let b0 = vld1q_f32(bp);
            let b1 = vld1q_f32(bp.add(4));
            for (i, r) in acc.iter_mut().enumerate() {
                let ai = vdupq_n_f32(*ap.add(i));
                r[0] = vfmaq_f32(r[0], ai, b0);
                r[1] = vfmaq_f32(r[1], ai, b1);
            }
            ap = ap.add(8);
            bp = bp.add(8);
        }
    }
    let mut out = [0f32; 64];
    for (i, r) in acc.iter().enumerate() {
        // SAFETY: `out` has 64 elements; row i covers 8 of them.
        unsafe {
            vst1q_f32(out.as_mut_ptr().add(i * 8), r[0]);
            vst1q_f32(out.as_mut_ptr().add(i * 8 + 4), r[1]);
        }
    }
    out
}
