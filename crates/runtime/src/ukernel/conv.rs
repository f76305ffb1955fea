//! 2-D convolution as an implicit GEMM (group 1, zero padding):
//!
//! `y[n, m, oh, ow] = Σ_{c, kh, kw} w[m, c, kh, kw] · x[n, c, oh·sh + kh·dh − ph, ow·sw + kw·dw − pw]`
//!
//! Per image it is the product `C = A·B` with `A = W` as an `M × K` matrix
//! (`K = C·KH·KW`, depth index `r = (c·KH + kh)·KW + kw`), `B` the im2col
//! matrix (`K × OH·OW`, point `p = oh·OW + ow`) and `C[m, p] = y[n, m, p]`.
//! The im2col matrix never exists: the block loops of [`super::blocks`]
//! pack each B panel straight from the image ([`super::pack::pack_b_im2col`],
//! the same sliver layout as a packed strided B), so a panel costs one pass
//! over the (cache-resident) image rows it needs instead of a copy to
//! memory and a pack. Where taps reach the padding (or x's rows are
//! strided), a product first copies the image rows its points reach into
//! a zero-padded, contiguous scratch ([`Im2col::with_padded`]; about the
//! image's size, `KH·KW` times smaller than the im2col matrix), so that
//! every sliver row is plain copies of image rows. With the same depth
//! blocks and tiles, every output
//! is the very FMA chain `varc_sgemm` computes on the materialised im2col
//! matrix: results are bit-identical to that path and across thread
//! counts.

use super::blocks::{self, BSrc, Blocking, CView};
use super::pack::DIRECT_VEC;
use super::{
    Batch, COut, Isa, MatRef, PackedB, RawB, RawGemm, SMALL_ROWS, injective_axes, parallel_pool,
    run_cut,
};
use crate::ukernel::attention::span4;
use std::cell::RefCell;

/// The extents and geometry of a convolution: x `[batch, in_channels,
/// in_h, in_w]`, w `[out_channels, in_channels, kernel_h, kernel_w]`, y
/// `[batch, out_channels, out_h, out_w]`. The pads at the end are implied
/// by `out_h`, `out_w`: taps past the image are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl ConvShape {
    /// Depth of the product, `in_channels·kernel_h·kernel_w`.
    pub fn k(&self) -> usize {
        self.in_channels
            .saturating_mul(self.kernel_h)
            .saturating_mul(self.kernel_w)
    }

    /// Output points per image, `out_h·out_w`.
    pub fn points(&self) -> usize {
        self.out_h.saturating_mul(self.out_w)
    }

    /// Some extent is 0 (the convolution writes nothing).
    fn empty(&self) -> bool {
        [
            self.batch,
            self.in_channels,
            self.out_channels,
            self.in_h,
            self.in_w,
            self.out_h,
            self.out_w,
            self.kernel_h,
            self.kernel_w,
        ]
        .contains(&0)
    }

    /// Checks strides and dilations are at least 1 and that the products
    /// and input coordinates the packing computes fit in `isize`.
    pub fn check(&self) -> Result<(), String> {
        let z = self;
        if [z.stride_h, z.stride_w, z.dilation_h, z.dilation_w].contains(&0) {
            return Err(format!("conv2d: zero stride or dilation in {z:?}"));
        }
        // The farthest input coordinate a tap reaches, and how far before
        // the image it starts: both must fit (with room) in an isize.
        let reach = |out: usize, s: usize, kernel: usize, d: usize, pad: usize, inn: usize| {
            let far = (out.max(1) - 1)
                .checked_mul(s)?
                .checked_add((kernel.max(1) - 1).checked_mul(d)?)?;
            let lim = isize::MAX as usize / 4;
            (far <= lim && pad <= lim && inn <= lim).then_some(())
        };
        let ok = z
            .in_channels
            .checked_mul(z.kernel_h)
            .and_then(|t| t.checked_mul(z.kernel_w));
        let pts = z.out_h.checked_mul(z.out_w);
        if ok.is_none()
            || pts.is_none()
            || reach(
                z.out_h,
                z.stride_h,
                z.kernel_h,
                z.dilation_h,
                z.pad_h,
                z.in_h,
            )
            .is_none()
            || reach(
                z.out_w,
                z.stride_w,
                z.kernel_w,
                z.dilation_w,
                z.pad_w,
                z.in_w,
            )
            .is_none()
        {
            return Err(format!("conv2d: sizes overflow in {z:?}"));
        }
        Ok(())
    }
}

/// The im2col matrix of one image, read from the image: `B[r, p]` with
/// `r = (c·KH + kh)·KW + kw`, `p = oh·OW + ow` is `x[c, oh·sh + kh·dh − ph,
/// ow·sw + kw·dw − pw]`, 0 where that lies outside the image. `x[c, h, w]`
/// is `x[offset + c·strides[0] + h·strides[1] + w·strides[2]]`; reads are
/// bounds-checked.
pub(super) struct Im2col<'a> {
    pub x: &'a [f32],
    pub offset: usize,
    pub strides: [isize; 3],
    /// Passed [`ConvShape::check`].
    pub shape: ConvShape,
}

impl Im2col<'_> {
    /// Every tap of every output point lies inside the image (no padding
    /// reached).
    pub(super) fn inside(&self) -> bool {
        inside(&self.shape)
    }

    /// Tiles may read B from this image in place for the product's
    /// points from `j0` on ([`super::pack::Taps`]): no tap reaches the
    /// padding, rows are unit-stride and every vector of
    /// [`DIRECT_VEC`] points (from `j0`, in steps of `DIRECT_VEC`) lies in
    /// one output row, i.e. is `DIRECT_VEC` consecutive image floats.
    pub(super) fn direct(&self, j0: usize) -> bool {
        let z = &self.shape;
        self.inside()
            && z.stride_w == 1
            && self.strides[2] == 1
            && z.out_w.is_multiple_of(DIRECT_VEC)
            && j0.is_multiple_of(DIRECT_VEC)
    }

    /// The offset in `x` of point `p`'s tap `(0, 0, 0)` (an image with
    /// [`Im2col::direct`]: no padding, `stride_w == 1`).
    pub(super) fn point_base(&self, p: usize) -> isize {
        let z = &self.shape;
        let (oh, ow) = (p / z.out_w.max(1), p % z.out_w.max(1));
        self.offset as isize + (oh * z.stride_h) as isize * self.strides[1] + ow as isize
    }

    /// Runs `f(image, j0')` for the product's points `j0..j0 + n`: on this
    /// image (`j0' = j0`), or, when packing from that is cheaper, on a copy
    /// of the rows those points reach, zero-padded to every tap's reach
    /// so that the taps are [`Im2col::inside`] and rows contiguous (the
    /// copy's output rows start at the first the points touch, `j0'` is
    /// `j0` in them). The copy is about the image's size (`KH·KW` times
    /// smaller than the im2col matrix) and spares the packing its
    /// bounds and zero borders on each of the `KH·KW` passes over the
    /// image.
    pub(super) fn with_padded<R>(
        &self,
        j0: usize,
        n: usize,
        f: impl FnOnce(&Im2col, usize) -> R,
    ) -> R {
        let z = &self.shape;
        let worth = n > 0 && padded_copy(z, self.strides[2]);
        let (oh0, oh1) = (
            j0 / z.out_w.max(1),
            (j0 + n.max(1) - 1) / z.out_w.max(1) + 1,
        );
        let rows = reach(oh1 - oh0, z.stride_h, z.kernel_h, z.dilation_h);
        let cols = reach(z.out_w, z.stride_w, z.kernel_w, z.dilation_w);
        let size = z.in_channels.saturating_mul(rows).saturating_mul(cols);
        let image = z.in_channels.saturating_mul(z.in_h).saturating_mul(z.in_w);
        if !worth || size > PAD_MAX || size > 4 * image + (1 << 16) {
            return f(self, j0);
        }
        PADDED.with(|cell| {
            let mut pad = cell.borrow_mut();
            let Padded { buf, zeros } = &mut *pad;
            let [cs, hs, ws] = self.strides;
            // Input columns `lo..hi` of a padded row lie in the image.
            let lo = z.pad_w.min(cols);
            let hi = (z.pad_w + z.in_w).clamp(lo, cols);
            // Padded rows `y0..y1` of a plane lie in the image.
            let y_of = |yy: usize| (oh0 * z.stride_h + yy) as isize - z.pad_h as isize;
            let inside = |yy: usize| (0..z.in_h as isize).contains(&y_of(yy));
            let y0 = (0..rows).find(|&yy| inside(yy)).unwrap_or(rows);
            let y1 = (y0..rows).find(|&yy| !inside(yy)).unwrap_or(rows);
            let (y0, y1) = if lo == hi { (rows, rows) } else { (y0, y1) };
            let layout = [size, rows, cols, lo, hi, y0, y1];
            if buf.len() < size {
                buf.resize(size, 0.0);
                *zeros = None;
            }
            // The zero borders are where the last copy of this layout
            // left them (the copy writes only the image's floats), so
            // only the image is copied again.
            let fresh = *zeros != Some(layout);
            for (c, plane) in buf[..size].chunks_exact_mut(rows * cols).enumerate() {
                let (top, rest) = plane.split_at_mut(y0 * cols);
                let (mid, bottom) = rest.split_at_mut((y1 - y0) * cols);
                if fresh {
                    top.fill(0.0);
                    bottom.fill(0.0);
                }
                let first = self.offset as isize + c as isize * cs + y_of(y0) * hs;
                for (r, row) in mid.chunks_exact_mut(cols).enumerate() {
                    let (left, rest) = row.split_at_mut(lo);
                    let (body, right) = rest.split_at_mut(hi - lo);
                    if fresh {
                        left.fill(0.0);
                        right.fill(0.0);
                    }
                    let from = first + r as isize * hs + (lo - z.pad_w) as isize * ws;
                    if ws == 1 {
                        copy_row(body, &self.x[from as usize..][..hi - lo]);
                    } else {
                        for (i, d) in body.iter_mut().enumerate() {
                            *d = self.x[(from + i as isize * ws) as usize];
                        }
                    }
                }
            }
            *zeros = Some(layout);
            let padded = Im2col {
                x: &buf[..size],
                offset: 0,
                strides: [(rows * cols) as isize, cols as isize, 1],
                shape: ConvShape {
                    in_h: rows,
                    in_w: cols,
                    out_h: oh1 - oh0,
                    pad_h: 0,
                    pad_w: 0,
                    ..*z
                },
            };
            f(&padded, j0 - oh0 * z.out_w)
        })
    }
}

/// Every tap of every output point lies inside the image.
fn inside(z: &ConvShape) -> bool {
    z.pad_h == 0
        && z.pad_w == 0
        && reach(z.out_h, z.stride_h, z.kernel_h, z.dilation_h) <= z.in_h
        && reach(z.out_w, z.stride_w, z.kernel_w, z.dilation_w) <= z.in_w
}

/// Products on an image of this shape (element stride `ws` along w) are
/// packed from a padded copy ([`Im2col::with_padded`], size permitting):
/// several taps per point, some reaching the padding or rows strided.
fn padded_copy(z: &ConvShape, ws: isize) -> bool {
    z.stride_w == 1 && z.kernel_h * z.kernel_w > 1 && !(inside(z) && ws == 1)
}

/// Bytes of a depth block of weights past which cutting channels across
/// tasks beats cutting points (when no task copies the image): about
/// half of a 48 KiB L1d, the rest for the image's runs the tiles read.
const A_BLOCK_L1: usize = 24 << 10;

/// Input rows (columns) `out` outputs reach: `(out − 1)·s + (k − 1)·d + 1`
/// (sizes that passed [`ConvShape::check`]).
fn reach(out: usize, s: usize, k: usize, d: usize) -> usize {
    (out.max(1) - 1) * s + (k.max(1) - 1) * d + 1
}

/// Largest padded image copy (floats); larger ones are packed in place.
const PAD_MAX: usize = 1 << 24;

/// The padded image copy of [`Im2col::with_padded`], kept between calls.
struct Padded {
    buf: Vec<f32>,
    /// The layout (`[size, rows, cols, lo, hi, y0, y1]`) whose zero
    /// borders `buf` holds, if any.
    zeros: Option<[usize; 7]>,
}

thread_local! {
    static PADDED: RefCell<Padded> = const {
        RefCell::new(Padded {
            buf: Vec::new(),
            zeros: None,
        })
    };
}

/// `dst.copy_from_slice(src)` for the short rows of small images: whole
/// 16-float blocks are fixed-size copies the compiler inlines, where a
/// slice copy is a `memcpy` call per row.
fn copy_row(dst: &mut [f32], src: &[f32]) {
    const B: usize = 16;
    let mut d = dst.chunks_exact_mut(B);
    let mut s = src.chunks_exact(B);
    for (d, s) in (&mut d).zip(&mut s) {
        if let (Ok(d), Ok(s)) = (<&mut [f32; B]>::try_from(d), <&[f32; B]>::try_from(s)) {
            *d = *s;
        }
    }
    d.into_remainder().copy_from_slice(s.remainder());
}

/// An image as the C ABI entry receives it (see [`Im2col`]).
#[derive(Clone, Copy)]
pub(super) struct RawIm2col {
    pub ptr: usize,
    pub strides: [isize; 3],
    pub shape: ConvShape,
    /// The weights packed ahead ([`PackedB::conv_weights`] of this
    /// convolution's w), or 0.
    pub packed_a: usize,
    /// The bias (`bias[m·stride]` for output channel `m`), or address 0.
    pub bias: (usize, isize),
}

impl RawIm2col {
    /// The bias of output channels `i0..i1`, if any.
    ///
    /// # Safety
    ///
    /// `bias.0` is 0 or `bias.0 + m·bias.1` is a live readable f32 for
    /// every output channel `m`.
    pub(super) unsafe fn bias(&self, i0: usize, i1: usize) -> Option<Vec<f32>> {
        let (ptr, stride) = self.bias;
        (ptr != 0).then(|| {
            (i0..i1)
                // SAFETY: the caller's contract, channel `m < out_channels`.
                .map(|m| unsafe { *(ptr as *const f32).offset(m as isize * stride) })
                .collect()
        })
    }

    /// The weights packed ahead, if any.
    ///
    /// # Safety
    ///
    /// `packed_a` is 0 or points to a live [`PackedB`] not dropped while
    /// the result lives.
    pub(super) unsafe fn packed_a<'a>(&self) -> Option<&'a PackedB> {
        // SAFETY: the caller's contract.
        (self.packed_a != 0).then(|| unsafe { &*(self.packed_a as *const PackedB) })
    }

    /// The image over a slice covering its elements.
    ///
    /// # Safety
    ///
    /// Every element `[c, h, w]` of the `in_channels × in_h × in_w` view
    /// lies in one live allocation of f32s that is not written while the
    /// result lives.
    pub(super) unsafe fn view<'a>(&self) -> Im2col<'a> {
        let z = &self.shape;
        let ext = [1, z.in_channels, z.in_h, z.in_w];
        let [cs, hs, ws] = self.strides;
        let (x, offset) = match span4(ext, [0, cs, hs, ws]) {
            // SAFETY: the caller guarantees the view's elements are in one
            // allocation; `lo..=hi` are the lowest and highest it touches.
            Some((lo, hi)) => unsafe {
                let p = (self.ptr as *const f32).offset(lo);
                (
                    std::slice::from_raw_parts(p, (hi - lo + 1) as usize),
                    (-lo) as usize,
                )
            },
            // Empty (or unaddressable) views read nothing: every access
            // fails the bounds check instead.
            None => (&[][..], 0),
        };
        Im2col {
            x,
            offset,
            strides: self.strides,
            shape: self.shape,
        }
    }
}

/// A read-only 4-D f32 tensor: element `[a, b, c, d]` is
/// `data[offset + Σ strides[i]·index[i]]` (strides of any sign).
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub strides: [isize; 4],
}

/// A writable 4-D f32 tensor (see [`Tensor`]).
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub strides: [isize; 4],
}

/// The stride of consecutive indices of the row-major flattening of axes
/// `(extent, stride)`, when the axes flatten to one strided axis. Axes of
/// extent 1 are never stepped, so their strides do not matter.
fn flat_stride(axes: &[(usize, isize)]) -> Option<isize> {
    let mut unit = None;
    let mut inner = 1usize;
    for &(n, s) in axes.iter().rev() {
        if n > 1 {
            match unit {
                None => unit = Some(s),
                Some(u) => {
                    if (inner as isize).checked_mul(u) != Some(s) {
                        return None;
                    }
                }
            }
        }
        inner = inner.checked_mul(n)?;
    }
    Some(unit.unwrap_or(axes.last().map_or(1, |a| a.1)))
}

/// W as the `M × K` matrix A: `(rs_a, cs_a)`, or why it is not a plain
/// matrix.
pub(super) fn weight_matrix(z: &ConvShape, w: [isize; 4]) -> Result<[isize; 2], String> {
    let [rs_a, cs_a, _, _] = matrices(z, w, [0, 0, z.out_w as isize, 1])?;
    Ok([rs_a, cs_a])
}

/// W as the `M × K` matrix A and Y as the per-image `M × points` matrix C:
/// `(rs_a, cs_a, rs_c, cs_c)`, or why they are not plain matrices.
fn matrices(z: &ConvShape, w: [isize; 4], y: [isize; 4]) -> Result<[isize; 4], String> {
    let cs_a = flat_stride(&[
        (z.in_channels, w[1]),
        (z.kernel_h, w[2]),
        (z.kernel_w, w[3]),
    ])
    .ok_or_else(|| format!("conv2d: w strides {w:?} do not flatten (c, kh, kw)"))?;
    let cs_c = flat_stride(&[(z.out_h, y[2]), (z.out_w, y[3])])
        .ok_or_else(|| format!("conv2d: y strides {y:?} do not flatten (oh, ow)"))?;
    Ok([w[0], cs_a, y[1], cs_c])
}

/// `y = conv(x, w)` (see the module) on this thread with instruction set
/// `isa` (one of [`Isa::available`]; others fall back to the portable
/// tile). x is `[batch, in_channels, in_h, in_w]`, w `[out_channels,
/// in_channels, kernel_h, kernel_w]`, y `[batch, out_channels, out_h,
/// out_w]`.
///
/// Panics when a tensor does not fit its slice, when w's `(c, kh, kw)` or
/// y's `(oh, ow)` axes do not flatten to one strided axis, when two output
/// indices are the same element, or when `shape` fails
/// [`ConvShape::check`].
pub fn conv2d(isa: Isa, x: Tensor, w: Tensor, y: TensorMut, shape: &ConvShape) {
    let z = *shape;
    if let Err(e) = z.check() {
        panic!("{e}");
    }
    let xe = [z.batch, z.in_channels, z.in_h, z.in_w];
    let we = [z.out_channels, z.in_channels, z.kernel_h, z.kernel_w];
    let ye = [z.batch, z.out_channels, z.out_h, z.out_w];
    for (what, t, e) in [
        ("x", (x.data.len(), x.offset, x.strides), xe),
        ("w", (w.data.len(), w.offset, w.strides), we),
        ("y", (y.data.len(), y.offset, y.strides), ye),
    ] {
        assert!(
            fits4(t.0, t.1, e, t.2),
            "conv2d: {what} {e:?} lies outside its slice"
        );
    }
    if z.empty() {
        return;
    }
    let [rs_a, cs_a, rs_c, cs_c] = match matrices(&z, w.strides, y.strides) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let (m, n, k) = (z.out_channels, z.points(), z.k());
    assert!(
        injective_axes(&[(z.batch, y.strides[0]), (m, rs_c), (n, cs_c)]),
        "conv2d: y's view is not injective"
    );
    let isa = isa.usable();
    let bl = Blocking::for_shape(isa, m, n, k);
    let a = MatRef {
        data: w.data,
        offset: w.offset,
        rs: rs_a,
        cs: cs_a,
    };
    let out = COut {
        ptr: y.data.as_mut_ptr(),
        len: y.data.len(),
    };
    // The `&mut` borrow of `y.data` outlives the loop, so `out` is the only
    // access to y meanwhile.
    for i in 0..z.batch {
        let src = Im2col {
            x: x.data,
            offset: (x.offset as isize + i as isize * x.strides[0]) as usize,
            strides: [x.strides[1], x.strides[2], x.strides[3]],
            shape: z,
        };
        let c = CView {
            out,
            offset: (y.offset as isize + i as isize * y.strides[0]) as usize,
            rs: rs_c,
            cs: cs_c,
        };
        src.with_padded(0, n, |src, j0| {
            blocks::gemm(
                isa.tile(),
                &bl,
                m,
                n,
                k,
                &a,
                BSrc::Im2col {
                    src,
                    j0,
                    a: None,
                    bias: None,
                },
                c,
                false,
            )
        });
    }
}

fn fits4(len: usize, offset: usize, ext: [usize; 4], strides: [isize; 4]) -> bool {
    if ext.contains(&0) {
        return true;
    }
    span4(ext, strides).is_some_and(|(lo, hi)| {
        let o = offset as isize;
        o.checked_add(lo).is_some_and(|l| l >= 0)
            && o.checked_add(hi).is_some_and(|h| (h as usize) < len)
    })
}

/// Byte offsets of [`ConvArgs`] fields, for generated code.
pub mod conv_args_layout {
    /// x, w, y pointers: 3 × 8 bytes.
    pub const POINTERS: usize = 0;
    /// x, w, y element strides, 4 × i64 each, axis order `[n, c, h, w]` /
    /// `[m, c, kh, kw]` / `[n, m, oh, ow]`.
    pub const STRIDES: usize = 24;
    /// 15 × i64: batch, in_channels, out_channels, in_h, in_w, out_h,
    /// out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
    /// dilation_w, pad_h, pad_w.
    pub const SIZES: usize = STRIDES + 3 * 32;
    /// `*const PackedB`: w packed ahead, or null.
    pub const PACKED_A: usize = SIZES + 15 * 8;
    /// `*const f32`: the bias, or null; then its element stride (i64).
    pub const BIAS: usize = PACKED_A + 8;
    pub const BIAS_STRIDE: usize = BIAS + 8;
    pub const TOTAL: usize = BIAS_STRIDE + 8;
}

/// The argument block of [`varc_conv2d`] (layout: [`conv_args_layout`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConvArgs {
    pub x: *const f32,
    pub w: *const f32,
    pub y: *mut f32,
    pub x_strides: [i64; 4],
    pub w_strides: [i64; 4],
    pub y_strides: [i64; 4],
    pub sizes: [i64; 15],
    /// w packed ahead ([`PackedB::conv_weights`] of this call's shape and
    /// w), or null to pack its blocks per call.
    pub packed_a: *const PackedB,
    /// Added to every output of channel `m`: `bias[m·bias_stride]`; null
    /// for none.
    pub bias: *const f32,
    pub bias_stride: i64,
}

const _: () = assert!(std::mem::size_of::<ConvArgs>() == conv_args_layout::TOTAL);
const _: () = assert!(std::mem::offset_of!(ConvArgs, x_strides) == conv_args_layout::STRIDES);
const _: () = assert!(std::mem::offset_of!(ConvArgs, sizes) == conv_args_layout::SIZES);
const _: () = assert!(std::mem::offset_of!(ConvArgs, packed_a) == conv_args_layout::PACKED_A);
const _: () = assert!(std::mem::offset_of!(ConvArgs, bias) == conv_args_layout::BIAS);
const _: () = assert!(std::mem::offset_of!(ConvArgs, bias_stride) == conv_args_layout::BIAS_STRIDE);

impl ConvArgs {
    /// The shape, refusing negative sizes, strides or dilations below 1,
    /// and sizes whose products overflow.
    fn shape(&self) -> ConvShape {
        let s: [usize; 15] = std::array::from_fn(|i| {
            usize::try_from(self.sizes[i])
                .unwrap_or_else(|_| panic!("varc_conv2d: negative size in {:?}", self.sizes))
        });
        let z = ConvShape {
            batch: s[0],
            in_channels: s[1],
            out_channels: s[2],
            in_h: s[3],
            in_w: s[4],
            out_h: s[5],
            out_w: s[6],
            kernel_h: s[7],
            kernel_w: s[8],
            stride_h: s[9],
            stride_w: s[10],
            dilation_h: s[11],
            dilation_w: s[12],
            pad_h: s[13],
            pad_w: s[14],
        };
        if let Err(e) = z.check() {
            panic!("varc_{e}");
        }
        z
    }
}

fn isizes(s: [i64; 4]) -> [isize; 4] {
    s.map(|v| isize::try_from(v).expect("varc_conv2d: stride beyond isize"))
}

/// The C ABI entry generated code calls: `y = conv(x, w)` (plus the bias
/// of each output channel when given, added to each finished output as a
/// separate pass would) as the module describes, with the operands, strides and sizes in `*args`. When a
/// thread pool is current ([`crate::pool::current`]) and the work is
/// large, the output points (or channels, see [`run_conv`]) are cut into
/// blocks run as tasks, each over every image; each output is
/// computed with the same operations as in a serial call, so the result is
/// bit-identical for any thread count.
///
/// Panics (which aborts: a panic cannot unwind out of an `extern "C"`
/// function) on a negative size, a stride or dilation below 1, sizes
/// whose products overflow, or w / y strides that do not flatten as
/// required below. With any size 0 the call does nothing.
///
/// # Safety
///
/// * `args` points to a valid [`ConvArgs`].
/// * Every element of x (`[batch, in_channels, in_h, in_w]`) and w
///   (`[out_channels, in_channels, kernel_h, kernel_w]`) over their extents
///   lies in one live readable allocation of f32s, and every element of y
///   (`[batch, out_channels, out_h, out_w]`) in one live writable one.
/// * y does not overlap x or w, and distinct output indices are distinct
///   elements.
/// * `packed_a` is null or points to a live [`PackedB`] made by
///   [`PackedB::conv_weights`] from this call's w (checked: its sizes).
/// * `bias` is null or `bias[m·bias_stride]` is a readable f32 for every
///   output channel `m`; y does not overlap it.
/// * Checked: w's `(c, kh, kw)` flatten (`w_strides[1] == KH·w_strides[2]`,
///   `w_strides[2] == KW·w_strides[3]`, axes of extent 1 exempt) and y's
///   `(oh, ow)` flatten (`y_strides[2] == OW·y_strides[3]`), so that A and C
///   are plain strided matrices; strides and dilations ≥ 1, pads and sizes
///   ≥ 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_conv2d(args: *const ConvArgs) {
    // SAFETY: the caller's contract is `conv_with`'s.
    unsafe { conv_with(args, Split::Auto) }
}

/// How [`run_conv`] cuts a product across the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// By points in whole tiles, or by channels where [`run_conv`] says.
    Auto,
    /// By channels (tests and tuning).
    #[cfg(test)]
    Rows,
    /// By points (tests and tuning).
    #[cfg(test)]
    Cols,
}

/// [`varc_conv2d`] with the pool's cut chosen by `split`.
///
/// # Safety
///
/// As [`varc_conv2d`].
unsafe fn conv_with(args: *const ConvArgs, split: Split) {
    // SAFETY: the caller passes a valid argument block.
    let a = unsafe { *args };
    let z = a.shape();
    if z.empty() {
        return;
    }
    let (xs, ws, ys) = (
        isizes(a.x_strides),
        isizes(a.w_strides),
        isizes(a.y_strides),
    );
    let [rs_a, cs_a, rs_c, cs_c] = match matrices(&z, ws, ys) {
        Ok(m) => m,
        Err(e) => panic!("varc_{e}"),
    };
    let g = RawGemm {
        m: z.out_channels,
        n: z.points(),
        k: z.k(),
        a: a.w as usize,
        rs_a,
        cs_a,
        b: RawB::Im2col(RawIm2col {
            ptr: a.x as usize,
            strides: [xs[1], xs[2], xs[3]],
            shape: z,
            packed_a: a.packed_a as usize,
            bias: (
                a.bias as usize,
                isize::try_from(a.bias_stride).expect("varc_conv2d: bias stride beyond isize"),
            ),
        }),
        c: a.y as usize,
        rs_c,
        cs_c,
        accumulate: false,
    };
    if !a.packed_a.is_null() {
        // SAFETY: a non-null `packed_a` is a live PackedB (caller).
        let p = unsafe { &*a.packed_a };
        assert!(
            p.k() == z.k() && p.n() == z.out_channels,
            "varc_conv2d: packed w is {}x{}, the call's is {}x{}",
            p.n(),
            p.k(),
            z.out_channels,
            z.k()
        );
    }
    let batch = Batch {
        count: z.batch,
        b_step: xs[0],
        c_step: ys[0],
    };
    // SAFETY: image `i` is the product `C_i = A·B_i` with A = w's matrix
    // (inside w by the flattening checked above), B_i the im2col matrix of
    // x's image `i` (read only at coordinates inside the image) and C_i
    // y's image `i`; the caller's contract gives each the allocation,
    // overlap and distinctness `run_conv` requires.
    unsafe { run_conv(g, batch, split) }
}

/// Runs the products of `batch` ([`RawGemm::image`], B an im2col matrix),
/// each cut into the same blocks of output points or of channels on the
/// current pool when the work is large; a task runs its block of every
/// product.
///
/// Points are cut by default, in whole register tiles of the tile that
/// will run (the small tile's column group when the channels are few), so
/// no task runs a partial tile the serial call would not, and each task
/// copies only the image rows its points reach into its padded scratch
/// ([`Im2col::with_padded`]): the copy is split across the tasks instead
/// of repeated whole by each (as a cut of channels does), and the
/// weights, packed ahead, are shared. Channels are cut when that balances
/// the tasks much better (fewer point tiles than threads), or when no
/// task copies the image and a depth block of the weights outgrows
/// [`A_BLOCK_L1`] (1×1 convolutions with many channels). Each output is
/// the same FMA chain however the products are cut, so the result is
/// bit-identical for any thread count.
///
/// # Safety
///
/// As [`super::varc_sgemm`] for every product of the batch, B the im2col
/// matrix of a live image not written during the call, and C of distinct
/// products must not overlap A or B of any.
unsafe fn run_conv(g: RawGemm, batch: Batch, split: Split) {
    let Some(pool) = parallel_pool(&g, &batch) else {
        // SAFETY: the caller's contract.
        unsafe { run_cut(g, batch, None, true, 1) };
        return;
    };
    let tile = Isa::detect().tile();
    let threads = pool.threads();
    let col_align = match tile.small {
        Some((w, _)) if g.m <= SMALL_ROWS => w,
        _ => tile.nr,
    };
    // The largest task's share of the work over an even share, when
    // `0..n` is cut into tasks of whole `align` units.
    let excess = |n: usize, align: usize| {
        let tasks = crate::pool::range_count(n, threads, align);
        let (lo, hi) = crate::pool::range(n, tasks, align, 0);
        (hi - lo) as f64 * threads as f64 / n as f64
    };
    let (rows_excess, cols_excess) = (excess(g.m, tile.mr), excess(g.n, col_align));
    // Cutting channels halves the weights each task cycles through L1 per
    // column tile (a win once a depth block of them outgrows about half
    // of L1), but each task then reads, and copies when padded, the
    // whole image; cutting points splits the image and its copy.
    let in_place = match g.b {
        RawB::Im2col(x) => !padded_copy(&x.shape, x.strides[2]),
        _ => true,
    };
    let a_block = g.m.saturating_mul(blocks::kc_for(g.k)).saturating_mul(4);
    let by_rows = match split {
        Split::Auto => {
            if in_place && a_block > A_BLOCK_L1 {
                rows_excess <= cols_excess
            } else {
                rows_excess < cols_excess && cols_excess >= 1.5
            }
        }
        #[cfg(test)]
        Split::Rows => true,
        #[cfg(test)]
        Split::Cols => false,
    };
    let align = if by_rows { tile.mr } else { col_align };
    // SAFETY: the caller's contract; `pool` came from `parallel_pool`.
    unsafe { run_cut(g, batch, Some(&pool), by_rows, align) }
}

#[cfg(test)]
mod tests;
