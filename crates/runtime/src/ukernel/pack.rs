//! Packing operand blocks into the slivers the microkernels stream through:
//! A rows in `mr`-tall slivers (`[p][i]`), B columns in `nr`-wide slivers
//! (`[p][j]`), zero-padded past the matrix edge so that every tile reads
//! whole slivers. Contiguous rows or columns are copied as slices. Packed
//! blocks live in 64-byte aligned storage ([`AlignedBuf`]) so that vector
//! loads never straddle cache lines.

use super::MatRef;

fn at(x: &MatRef, r: usize, c: usize) -> usize {
    (x.offset as isize + r as isize * x.rs + c as isize * x.cs) as usize
}

/// One cache line of f32s.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable f32 buffer whose start is 64-byte aligned.
#[derive(Clone, Default)]
pub(super) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// Sets the length to `len`, zeroing any new elements.
    pub(super) fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        self.len = len;
    }

    pub(super) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]` (64 bytes, no
        // padding), so the lines are `16 · lines.len() ≥ len` contiguous
        // initialised f32s, borrowed with `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, borrowed mutably with `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }
}

/// Builds an [`AlignedBuf`] by appending, so large packed matrices are
/// written once (no zeroing pass over fresh pages first).
pub(super) struct LineWriter {
    lines: Vec<Line>,
    part: [f32; 16],
    fill: usize,
    len: usize,
}

impl LineWriter {
    pub(super) fn with_capacity(len: usize) -> LineWriter {
        LineWriter {
            lines: Vec::with_capacity(len.div_ceil(16)),
            part: [0.0; 16],
            fill: 0,
            len: 0,
        }
    }

    pub(super) fn extend(&mut self, mut xs: &[f32]) {
        self.len += xs.len();
        if self.fill > 0 {
            let t = (16 - self.fill).min(xs.len());
            self.part[self.fill..self.fill + t].copy_from_slice(&xs[..t]);
            self.fill += t;
            xs = &xs[t..];
            if self.fill < 16 {
                return;
            }
            self.lines.push(Line(self.part));
            self.fill = 0;
        }
        let mut chunks = xs.chunks_exact(16);
        self.lines.extend(
            chunks
                .by_ref()
                .map(|c| Line(c.try_into().expect("chunks of 16"))),
        );
        let rest = chunks.remainder();
        self.part[..rest.len()].copy_from_slice(rest);
        self.fill = rest.len();
    }

    pub(super) fn finish(mut self) -> AlignedBuf {
        if self.fill > 0 {
            self.part[self.fill..].fill(0.0);
            self.lines.push(Line(self.part));
        }
        AlignedBuf {
            lines: self.lines,
            len: self.len,
        }
    }
}

fn copy_n<const N: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; N] = dst.try_into().expect("N floats");
    *d = src.try_into().expect("N floats");
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

/// Packs `B[p0..p0+kc, j0..j0+cols]` into `dst`: `dst.len() / (kc·nr)`
/// slivers of `kc × nr`, columns past `cols` zero.
pub(super) fn pack_b(
    dst: &mut [f32],
    b: &MatRef,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
) {
    let slivers = dst.len() / (kc * nr);
    assert!(slivers * nr >= cols, "pack_b: destination too small");
    if b.cs == 1 {
        for p in 0..kc {
            let start = at(b, p0 + p, j0);
            let row = &b.data[start..start + cols];
            for s in 0..slivers {
                let d = &mut dst[(s * kc + p) * nr..(s * kc + p + 1) * nr];
                let lo = (s * nr).min(cols);
                let valid = nr.min(cols - lo);
                let src = &row[lo..lo + valid];
                // Whole slivers as fixed-size moves (a call to memcpy per
                // row of a sliver would cost more than the copy).
                match (valid == nr, nr) {
                    (true, 32) => copy_n::<32>(d, src),
                    (true, 16) => copy_n::<16>(d, src),
                    (true, 8) => copy_n::<8>(d, src),
                    _ => {
                        d[..valid].copy_from_slice(src);
                        d[valid..].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for s in 0..slivers {
        let d = &mut dst[s * kc * nr..(s + 1) * kc * nr];
        let valid = nr.min(cols.saturating_sub(s * nr));
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
