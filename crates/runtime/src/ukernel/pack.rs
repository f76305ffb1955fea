//! Packing operand blocks into the slivers the microkernels stream through:
//! A rows in `mr`-tall slivers (`[p][i]`), B columns in `nr`-wide slivers
//! (`[p][j]`), zero-padded past the matrix edge so that every tile reads
//! whole slivers. Contiguous rows or columns are copied as slices. Packed
//! blocks live in 64-byte aligned storage ([`AlignedBuf`]) so that vector
//! loads never straddle cache lines. A convolution's B is packed from the
//! image itself ([`pack_b_im2col`]).

use super::MatRef;
use super::conv::Im2col;

fn at(x: &MatRef, r: usize, c: usize) -> usize {
    (x.offset as isize + r as isize * x.rs + c as isize * x.cs) as usize
}

/// Points per vector of a tile that reads B from the image in place
/// (`super::DirectFn`).
pub(super) const DIRECT_VEC: usize = 16;

/// The image offsets of a depth block's taps, for tiles that read B
/// straight from a convolution's image: depth `p0 + p` (tap `(c, kh, kw)`)
/// of the point whose tap `(0, 0, 0)` is `x[base]` is `x[base +
/// offsets()[p]]`, so a vector of [`DIRECT_VEC`] points along an output
/// row is `x[base + offsets()[p]..][..DIRECT_VEC]`. `lo` and `hi` are the
/// least and greatest offset, set with the offsets (fields private to this
/// module), so [`Taps::fits`] can vouch for every read of a tile at once.
pub(super) struct Taps {
    offs: Vec<isize>,
    lo: isize,
    hi: isize,
}

impl Taps {
    /// The taps of depths `p0..p0 + kc` of `src` (image rows with unit
    /// element stride; the caller checked [`Im2col::direct`]).
    pub(super) fn new(src: &Im2col, p0: usize, kc: usize) -> Taps {
        let z = &src.shape;
        let (kh_n, kw_n) = (z.kernel_h, z.kernel_w);
        let [cs, hs, ws] = src.strides;
        let offs: Vec<isize> = (p0..p0 + kc)
            .map(|r| {
                let (c, kh, kw) = (r / (kh_n * kw_n), r / kw_n % kh_n, r % kw_n);
                c as isize * cs
                    + (kh * z.dilation_h) as isize * hs
                    + (kw * z.dilation_w) as isize * ws
            })
            .collect();
        let lo = offs.iter().copied().min().unwrap_or(0);
        let hi = offs.iter().copied().max().unwrap_or(0);
        Taps { offs, lo, hi }
    }

    pub(super) fn offsets(&self) -> &[isize] {
        &self.offs
    }

    /// Every run `x[base + off..][..DIRECT_VEC]` lies in `0..len`.
    pub(super) fn fits(&self, base: isize, len: usize) -> bool {
        base.checked_add(self.lo).is_some_and(|l| l >= 0)
            && base
                .checked_add(self.hi)
                .and_then(|h| h.checked_add(DIRECT_VEC as isize))
                .is_some_and(|h| h <= len as isize)
    }
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
        if valid == mr && a.cs == 1 {
            let row = |ii: usize| {
                let start = at(a, i0 + s * mr + ii, p0);
                &a.data[start..start + kc]
            };
            let done = match mr {
                12 => transpose_rows::<12>(d, std::array::from_fn(row), kc),
                8 => transpose_rows::<8>(d, std::array::from_fn(row), kc),
                6 => transpose_rows::<6>(d, std::array::from_fn(row), kc),
                4 => transpose_rows::<4>(d, std::array::from_fn(row), kc),
                _ => false,
            };
            if done {
                continue;
            }
        }
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

/// `d[p·MR + ii] = rows[ii][p]` for `p < kc` (one full sliver). On x86-64
/// four rows at a time go through SSE 4×4 transposes (LLVM keeps the plain
/// loop scalar, with spills: 2–3 cycles per element, ~9 % of a small-K
/// model's time). Returns false (nothing written) when the shapes do not
/// match.
fn transpose_rows<const MR: usize>(d: &mut [f32], rows: [&[f32]; MR], kc: usize) -> bool {
    if d.len() != kc * MR || rows.iter().any(|r| r.len() != kc) {
        return false;
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if MR.is_multiple_of(4) {
        done = kc / 4 * 4;
        for g in 0..MR / 4 {
            let four: [&[f32]; 4] = std::array::from_fn(|i| rows[4 * g + i]);
            transpose4_sse(d, four, done, MR, 4 * g);
        }
    }
    for p in done..kc {
        let o = &mut d[p * MR..(p + 1) * MR];
        for (ii, x) in o.iter_mut().enumerate() {
            *x = rows[ii][p];
        }
    }
    true
}

/// `d[p·stride + col + i] = rows[i][p]` for `p < kc` (a multiple of 4),
/// `i < 4`.
#[cfg(target_arch = "x86_64")]
fn transpose4_sse(d: &mut [f32], rows: [&[f32]; 4], kc: usize, stride: usize, col: usize) {
    use std::arch::x86_64::*;
    assert!(kc.is_multiple_of(4) && col + 4 <= stride && rows.iter().all(|r| r.len() >= kc));
    assert!(kc == 0 || (kc - 1) * stride + col + 4 <= d.len());
    for p in (0..kc).step_by(4) {
        // SAFETY: SSE is part of x86-64. Reads `rows[i][p..p + 4]` (p + 4 ≤
        // kc ≤ each row's length) and writes `d[(p + q)·stride + col..][..4]`
        // for q < 4, inside `d` by the assertions above.
        unsafe {
            let x: [__m128; 4] = std::array::from_fn(|i| _mm_loadu_ps(rows[i].as_ptr().add(p)));
            let t0 = _mm_unpacklo_ps(x[0], x[1]);
            let t1 = _mm_unpacklo_ps(x[2], x[3]);
            let t2 = _mm_unpackhi_ps(x[0], x[1]);
            let t3 = _mm_unpackhi_ps(x[2], x[3]);
            let y = [
                _mm_movelh_ps(t0, t1),
                _mm_movehl_ps(t1, t0),
                _mm_movelh_ps(t2, t3),
                _mm_movehl_ps(t3, t2),
            ];
            let o = d.as_mut_ptr().add(p * stride + col);
            for (q, v) in y.into_iter().enumerate() {
                _mm_storeu_ps(o.add(q * stride), v);
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

/// The outputs `o` in `lo..hi` (within `0..outs`) whose input coordinate
/// `o·stride + base` lies in `0..len`.
fn inside(base: isize, stride: usize, len: usize, outs: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if base >= 0 { 0 } else { (-base + s - 1) / s };
    let room = len as isize - base;
    let hi = if room <= 0 { 0 } else { (room + s - 1) / s };
    let hi = (hi as usize).min(outs);
    ((lo as usize).min(hi), hi)
}

/// A run of `seg.len()` points of one output row reading a contiguous
/// image row from `x[first..]`, of which points `keep_lo..keep_hi` lie
/// inside the image: for runs of 8, 16 or 32 points whose window lies in
/// `x`, copied as one fixed-size move and the points outside the image
/// zeroed by a fixed-width select (variable-length copies and fills would
/// each cost a call for a handful of floats). `false` (nothing written)
/// otherwise.
fn window(seg: &mut [f32], x: &[f32], first: isize, keep_lo: usize, keep_hi: usize) -> bool {
    fn fixed<const N: usize>(d: &mut [f32], x: &[f32], first: usize, lo: usize, hi: usize) -> bool {
        let (Ok(d), Some(Ok(src))) = (
            <&mut [f32; N]>::try_from(d),
            x.get(first..first.wrapping_add(N))
                .map(<&[f32; N]>::try_from),
        ) else {
            return false;
        };
        if lo == 0 && hi >= N {
            *d = *src;
            return true;
        }
        // Branch-free in 32-bit lanes, so that it vectorises.
        let lo = lo.min(N) as u32;
        let width = hi.min(N).saturating_sub(lo as usize) as u32;
        for (j, (v, s)) in d.iter_mut().zip(src).enumerate() {
            let keep = ((j as u32).wrapping_sub(lo) < width) as u32;
            *v = f32::from_bits(s.to_bits() & keep.wrapping_neg());
        }
        true
    }
    let Ok(first) = usize::try_from(first) else {
        return false;
    };
    match seg.len() {
        32 => fixed::<32>(seg, x, first, keep_lo, keep_hi),
        16 => fixed::<16>(seg, x, first, keep_lo, keep_hi),
        8 => fixed::<8>(seg, x, first, keep_lo, keep_hi),
        _ => false,
    }
}

/// One row of the im2col matrix, a tap `(c, kh, kw)`: its points read
/// `x[plane + iy·hs + ix·ws]` with `iy = oh·sh + by`, `ix = ow·sw + bx`,
/// and `ix` lies in the image for `ow` in `lo..hi`.
#[derive(Clone, Copy, Default)]
struct Tap {
    plane: isize,
    by: isize,
    bx: isize,
    lo: usize,
    hi: usize,
}

/// Rows whose taps are worked out at once (bounds a stack table).
const TAPS: usize = 64;

/// Packs rows `p0..p0+kc`, columns (points) `j0..j0+cols` of the im2col
/// matrix `src` into `dst`, laid out as [`pack_b`] lays out a strided B:
/// `dst.len() / (kc·nr)` slivers of `kc × nr`, columns past `cols` zero.
///
/// Row `r` is one tap `(c, kh, kw)`: within one output row `oh` its points
/// read one input row (or none, in the padding), and with unit stride
/// along `w` a contiguous run of it, zero-bordered where the tap reaches
/// past the image. Slivers are written one after another (sequential
/// stores); the taps of a few rows read nearby image rows, which stay in
/// cache.
pub(super) fn pack_b_im2col(
    dst: &mut [f32],
    src: &Im2col,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
) {
    let slivers = dst.len() / (kc * nr);
    assert!(slivers * nr >= cols, "pack_b_im2col: destination too small");
    if src.inside() && src.shape.stride_w == 1 && src.strides[2] == 1 {
        return pack_inside(dst, src, p0, kc, j0, cols, nr);
    }
    let z = &src.shape;
    let (kh_n, kw_n) = (z.kernel_h, z.kernel_w);
    let [cs, _, _] = src.strides;
    let mut taps = [Tap::default(); TAPS];
    for pt in (0..kc).step_by(TAPS) {
        let rows = TAPS.min(kc - pt);
        for (i, t) in taps[..rows].iter_mut().enumerate() {
            let r = p0 + pt + i;
            let (c, kh, kw) = (r / (kh_n * kw_n), r / kw_n % kh_n, r % kw_n);
            let bx = (kw * z.dilation_w) as isize - z.pad_w as isize;
            let (lo, hi) = inside(bx, z.stride_w, z.in_w, z.out_w);
            *t = Tap {
                plane: src.offset as isize + c as isize * cs,
                by: (kh * z.dilation_h) as isize - z.pad_h as isize,
                bx,
                lo,
                hi,
            };
        }
        let (mut oh, mut ow) = (j0 / z.out_w, j0 % z.out_w);
        for s in 0..slivers {
            let valid = nr.min(cols.saturating_sub(s * nr));
            for (i, t) in taps[..rows].iter().enumerate() {
                let p = pt + i;
                let d = &mut dst[(s * kc + p) * nr..(s * kc + p + 1) * nr];
                tap_row(d, src, t, valid, oh, ow);
            }
            ow += valid;
            oh += ow / z.out_w;
            ow %= z.out_w;
        }
    }
}

/// One sliver row: the `valid` points from `(oh, ow)` on of tap `t`, then
/// zeros.
fn tap_row(d: &mut [f32], src: &Im2col, t: &Tap, valid: usize, mut oh: usize, mut ow: usize) {
    let z = &src.shape;
    let [_, hs, ws] = src.strides;
    let x = src.x;
    let contiguous = z.stride_w == 1 && ws == 1;
    let mut q = 0;
    while q < valid {
        let len = (z.out_w - ow).min(valid - q);
        let seg = &mut d[q..q + len];
        let iy = (oh * z.stride_h) as isize + t.by;
        if iy < 0 || iy >= z.in_h as isize {
            seg.fill(0.0);
        } else {
            let row = t.plane + iy * hs;
            let (keep_lo, keep_hi) = (t.lo.saturating_sub(ow), t.hi - ow.min(t.hi));
            let fast = contiguous && window(seg, x, row + ow as isize + t.bx, keep_lo, keep_hi);
            if !fast {
                // Points `a..b` of the run read the image.
                let (a, b) = (t.lo.clamp(ow, ow + len), t.hi.clamp(ow, ow + len));
                let (head, rest) = seg.split_at_mut(a - ow);
                let (mid, tail) = rest.split_at_mut(b - a);
                head.fill(0.0);
                tail.fill(0.0);
                if a < b {
                    let first = row + ((a * z.stride_w) as isize + t.bx) * ws;
                    if contiguous {
                        mid.copy_from_slice(&x[first as usize..][..mid.len()]);
                    } else {
                        let step = z.stride_w as isize * ws;
                        for (i, d) in mid.iter_mut().enumerate() {
                            *d = x[(first + i as isize * step) as usize];
                        }
                    }
                }
            }
        }
        q += len;
        ow += len;
        if ow == z.out_w {
            ow = 0;
            oh += 1;
        }
    }
    if valid < d.len() {
        d[valid..].fill(0.0);
    }
}

/// Most runs of one output row a sliver holds (`nr ≤ 64` points, split
/// where output rows end).
const RUNS: usize = 66;

/// [`pack_b_im2col`] when every tap reads inside the image (no padding
/// reached: [`Im2col::inside`]) with unit stride along `w`: each run of a
/// sliver row within one output row is a plain copy of an image row, at an
/// offset that is the tap's plus the run's. The runs of a sliver are
/// worked out once for all its rows.
fn pack_inside(
    dst: &mut [f32],
    src: &Im2col,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
) {
    assert!(nr + 2 <= RUNS, "pack_b_im2col: sliver too wide");
    let slivers = dst.len() / (kc * nr);
    let z = &src.shape;
    let (kh_n, kw_n) = (z.kernel_h, z.kernel_w);
    let [cs, hs, _] = src.strides;
    let mut taps = [0isize; TAPS];
    // (first point in the sliver, length, offset of its first input).
    let mut runs = [(0usize, 0usize, 0isize); RUNS];
    for pt in (0..kc).step_by(TAPS) {
        let rows = TAPS.min(kc - pt);
        for (i, t) in taps[..rows].iter_mut().enumerate() {
            let r = p0 + pt + i;
            let (c, kh, kw) = (r / (kh_n * kw_n), r / kw_n % kh_n, r % kw_n);
            *t = src.offset as isize
                + c as isize * cs
                + (kh * z.dilation_h) as isize * hs
                + (kw * z.dilation_w) as isize;
        }
        let (mut oh, mut ow) = (j0 / z.out_w, j0 % z.out_w);
        for s in 0..slivers {
            let valid = nr.min(cols.saturating_sub(s * nr));
            let mut count = 0;
            let mut q = 0;
            while q < valid {
                let len = (z.out_w - ow).min(valid - q);
                runs[count] = (q, len, (oh * z.stride_h) as isize * hs + ow as isize);
                count += 1;
                q += len;
                ow += len;
                if ow == z.out_w {
                    ow = 0;
                    oh += 1;
                }
            }
            for (i, &t) in taps[..rows].iter().enumerate() {
                let p = pt + i;
                let d = &mut dst[(s * kc + p) * nr..(s * kc + p + 1) * nr];
                for &(q, len, off) in &runs[..count] {
                    let from = &src.x[(t + off) as usize..][..len];
                    let to = &mut d[q..q + len];
                    // Fixed-size moves for the common lengths (a call to
                    // memcpy per run would cost more than the copy).
                    match len {
                        32 => copy_n::<32>(to, from),
                        16 => copy_n::<16>(to, from),
                        8 => copy_n::<8>(to, from),
                        _ => to.copy_from_slice(from),
                    }
                }
                if valid < nr {
                    d[valid..].fill(0.0);
                }
            }
        }
    }
}
