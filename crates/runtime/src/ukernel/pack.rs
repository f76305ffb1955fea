//! Packing operand blocks into the slivers the microkernels stream through:
//! A rows in `mr`-tall slivers (`[p][i]`), B columns in `nr`-wide slivers
//! (`[p][j]`), zero-padded past the matrix edge so that every tile runs
//! full width. Contiguous rows or columns are copied as slices.

use super::MatRef;

fn at(x: &MatRef, r: usize, c: usize) -> usize {
    (x.offset as isize + r as isize * x.rs + c as isize * x.cs) as usize
}

/// Packs `A[i0..i0+rows, p0..p0+kc]` into `dst` (`⌈rows/mr⌉` slivers of
/// `kc × mr`).
pub(super) fn pack_a(
    dst: &mut [f32],
    a: &MatRef,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    mr: usize,
) {
    let slivers = rows.div_ceil(mr);
    for s in 0..slivers {
        let d = &mut dst[s * kc * mr..(s + 1) * kc * mr];
        let valid = mr.min(rows - s * mr);
        if valid < mr {
            d.fill(0.0);
        }
        for ii in 0..valid {
            let i = i0 + s * mr + ii;
            if a.cs == 1 {
                let start = at(a, i, p0);
                let row = &a.data[start..start + kc];
                for (p, &x) in row.iter().enumerate() {
                    d[p * mr + ii] = x;
                }
            } else {
                for p in 0..kc {
                    d[p * mr + ii] = a.data[at(a, i, p0 + p)];
                }
            }
        }
    }
}

/// Packs `B[p0..p0+kc, j0..j0+cols]` into `dst` (`⌈cols/nr⌉` slivers of
/// `kc × nr`).
pub(super) fn pack_b(
    dst: &mut [f32],
    b: &MatRef,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
) {
    let slivers = cols.div_ceil(nr);
    if b.cs == 1 {
        for p in 0..kc {
            let start = at(b, p0 + p, j0);
            let row = &b.data[start..start + cols];
            for s in 0..slivers {
                let d = &mut dst[(s * kc + p) * nr..(s * kc + p + 1) * nr];
                let valid = nr.min(cols - s * nr);
                d[..valid].copy_from_slice(&row[s * nr..s * nr + valid]);
                d[valid..].fill(0.0);
            }
        }
        return;
    }
    for s in 0..slivers {
        let d = &mut dst[s * kc * nr..(s + 1) * kc * nr];
        let valid = nr.min(cols - s * nr);
        if valid < nr {
            d.fill(0.0);
        }
        for jj in 0..valid {
            let j = j0 + s * nr + jj;
            if b.rs == 1 {
                let start = at(b, p0, j);
                let col = &b.data[start..start + kc];
                for (p, &x) in col.iter().enumerate() {
                    d[p * nr + jj] = x;
                }
            } else {
                for p in 0..kc {
                    d[p * nr + jj] = b.data[at(b, p0 + p, j)];
                }
            }
        }
    }
}
