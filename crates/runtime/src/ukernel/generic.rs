//! The portable tile (plain Rust; the compiler vectorises what it can), and
//! the shared store of a finished tile through general strides.

use super::{At, Tile};

pub(super) const PORTABLE: Tile = Tile {
    mr: 4,
    nr: 8,
    run: portable,
};

fn portable(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], at: &At) {
    const MR: usize = 4;
    const NR: usize = 8;
    at.check(c.len());
    let mut acc = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    store(&acc.concat(), NR, c, at);
}

/// Adds (or stores) the valid corner of a row-major tile (`nr` columns)
/// into C; safe indexing, for tails and strided C.
pub(super) fn store(tile: &[f32], nr: usize, c: &mut [f32], at: &At) {
    for i in 0..at.rows {
        for j in 0..at.cols {
            let idx = (at.offset as isize + i as isize * at.rs + j as isize * at.cs) as usize;
            let v = tile[i * nr + j];
            c[idx] = if at.accumulate { c[idx] + v } else { v };
        }
    }
}
