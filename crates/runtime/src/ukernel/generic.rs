//! The portable tile (plain Rust; the compiler vectorises what it can), and
//! the shared stores of a finished tile through general strides.

use super::{At, COut, Tile};

pub(super) const PORTABLE: Tile = Tile {
    mr: 4,
    nr: 8,
    run: portable,
    small: None,
    direct: None,
    small_direct: None,
};

fn portable(kc: usize, a: &[f32], b: &[f32], c: COut, at: &At) {
    const MR: usize = 4;
    const NR: usize = 8;
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
/// into C, through any strides (tails, strided C).
pub(super) fn store(tile: &[f32], nr: usize, c: COut, at: &At) {
    at.check(c);
    assert!(at.rows == 0 || tile.len() >= (at.rows - 1) * nr + at.cols);
    for i in 0..at.rows {
        for j in 0..at.cols {
            let idx = at.offset as isize + i as isize * at.rs + j as isize * at.cs;
            let v = tile[i * nr + j];
            // SAFETY: `at.check` proved every element of the `rows × cols`
            // corner lies in `0..c.len`, which the caller's `COut` makes
            // writable; no other thread writes this element.
            unsafe {
                let p = c.ptr.offset(idx);
                *p = if at.accumulate { *p + v } else { v };
            }
        }
    }
}

/// Adds `bias[i]` to row `i` of the `at.rows × at.cols` block of C at
/// `at` (a convolution's bias, right after the block's last depth block
/// so the block is still in L1): `C + bias` rounded once, as a separate
/// pass over the finished product would.
pub(super) fn add_rows(c: COut, at: &At, bias: &[f32]) {
    at.check(c);
    assert!(bias.len() >= at.rows, "conv bias shorter than the tile");
    for (i, &b) in bias[..at.rows].iter().enumerate() {
        for j in 0..at.cols {
            let idx = at.offset as isize + i as isize * at.rs + j as isize * at.cs;
            // SAFETY: as in `store`.
            unsafe {
                let p = c.ptr.offset(idx);
                *p += b;
            }
        }
    }
}

/// Adds `bias[j]` to column `j` of the `at.rows × at.cols` block of C at
/// `at`.
pub(super) fn add_cols(c: COut, at: &At, bias: &[f32]) {
    at.check(c);
    let bias = &bias[..at.cols];
    for i in 0..at.rows {
        let row = at.offset as isize + i as isize * at.rs;
        if at.cs == 1 {
            // SAFETY: `at.check` proved every element of the block inside
            // `c`; with unit column stride row `i`'s `at.cols` elements are
            // contiguous from `row`, and no other reference to them is
            // alive during this call (tiles write C only through `c`).
            let r = unsafe { std::slice::from_raw_parts_mut(c.ptr.offset(row), at.cols) };
            for (x, &b) in r.iter_mut().zip(bias) {
                *x += b;
            }
            continue;
        }
        for (j, &b) in bias.iter().enumerate() {
            // SAFETY: as in `store`.
            unsafe { *c.ptr.offset(row + j as isize * at.cs) += b };
        }
    }
}

/// Zeroes the `at.rows × at.cols` block of C at `at`.
pub(super) fn zero(c: COut, at: &At) {
    at.check(c);
    for i in 0..at.rows {
        for j in 0..at.cols {
            let idx = at.offset as isize + i as isize * at.rs + j as isize * at.cs;
            // SAFETY: as in `store`.
            unsafe { *c.ptr.offset(idx) = 0.0 };
        }
    }
}
