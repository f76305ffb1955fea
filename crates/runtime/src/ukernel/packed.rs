//! B operands packed once (weights at compile time) into the slivers the
//! tiles stream, so a product packs nothing but its A blocks; and
//! convolution weights (A operands) packed the same way, so a convolution
//! packs nothing at all.
//!
//! Layout: depth blocks of `kc` rows one after another; in each, the
//! columns (zero-padded to a multiple of the tile's column group) as
//! `nr`-wide slivers of `kcur × nr` (`kcur` the block's depth). Column
//! block `j..j+w` of depth block `pc` is then one contiguous run, so any
//! column range aligned to the group is a panel without copying.

use super::blocks::{Blocking, kc_for};
use super::conv::{ConvShape, Tensor};
use super::pack::{self, AlignedBuf};
use super::{Isa, MatRef, fits};

/// A `k × n` f32 matrix packed for one instruction set's tiles.
#[derive(Clone)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    kc: usize,
    nr: usize,
    /// Padded column count.
    width: usize,
    data: AlignedBuf,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .field("kc", &self.kc)
            .finish()
    }
}

impl PackedB {
    /// Packs the `k × n` view `b` for this machine's tiles.
    ///
    /// Panics when the view does not fit its slice.
    pub fn new(k: usize, n: usize, b: MatRef) -> PackedB {
        PackedB::with_isa(Isa::detect(), k, n, b)
    }

    /// [`PackedB::new`] for a given instruction set (one of
    /// [`Isa::available`]; others fall back to the portable tile).
    pub fn with_isa(isa: Isa, k: usize, n: usize, b: MatRef) -> PackedB {
        assert!(
            fits(b.data.len(), b.offset, k, n, b.rs, b.cs),
            "PackedB: B outside its slice"
        );
        let isa = isa.usable();
        let t = isa.tile();
        PackedB::build(isa, k, n, b, t.nr, t.group())
    }

    /// A convolution's weights `w` (`[out_channels, in_channels, kernel_h,
    /// kernel_w]`) as the A operand of [`super::conv`]'s product (`M × K`,
    /// `M = out_channels`), packed for this machine's tiles in the layout
    /// the block loops pack A blocks in: per depth block, `mr`-row slivers
    /// (`[p][i]`, rows past M zero). That is Aᵀ packed as a B operand with
    /// slivers `mr` wide, so it is stored as one ([`PackedB::panel`] of
    /// rows `i..i + mr·s` is those rows' packed block).
    ///
    /// Errors when w's `(c, kh, kw)` axes do not flatten to one strided
    /// axis, w does not fit its slice, or `shape` fails
    /// [`super::conv::ConvShape::check`].
    pub fn conv_weights(shape: &ConvShape, w: Tensor) -> Result<PackedB, String> {
        shape.check()?;
        let [rs, cs] = super::conv::weight_matrix(shape, w.strides)?;
        let (m, k) = (shape.out_channels, shape.k());
        let a = MatRef {
            data: w.data,
            offset: w.offset,
            rs: cs,
            cs: rs,
        };
        if !fits(w.data.len(), w.offset, k, m, a.rs, a.cs) {
            return Err("conv2d: w lies outside its slice".into());
        }
        let isa = Isa::detect();
        let t = isa.tile();
        Ok(PackedB::build(isa, k, m, a, t.mr, t.mr))
    }

    /// `b` (`k × n`) in slivers `nr` wide, columns padded to a multiple
    /// of `group` (itself a multiple of `nr`).
    fn build(isa: Isa, k: usize, n: usize, b: MatRef, nr: usize, group: usize) -> PackedB {
        let kc = kc_for(k);
        let width = n.next_multiple_of(group);
        // Sliver by sliver through an L1-sized stage, appended in layout
        // order.
        let mut out = pack::LineWriter::with_capacity(width * k);
        let mut stage = vec![0f32; kc * nr];
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            let stage = &mut stage[..kcur * nr];
            for j in (0..width).step_by(nr) {
                if j < n {
                    pack::pack_b(stage, &b, pc, kcur, j, nr.min(n - j), nr);
                } else {
                    stage.fill(0.0);
                }
                out.extend(stage);
            }
        }
        let data = out.finish();
        PackedB {
            isa,
            k,
            n,
            kc,
            nr,
            width,
            data,
        }
    }

    /// Sliver width.
    pub(super) fn nr(&self) -> usize {
        self.nr
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The instruction set whose tiles this layout feeds.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of packed storage.
    pub fn bytes(&self) -> usize {
        self.data.as_slice().len() * 4
    }

    pub(super) fn kc(&self) -> usize {
        self.kc
    }

    /// Block sizes for a product of `m` rows (depth blocks as packed).
    pub(super) fn blocking(&self, m: usize) -> Blocking {
        Blocking {
            kc: self.kc,
            ..Blocking::for_shape(self.isa, m, self.n, self.k)
        }
    }

    /// The slivers of columns `j..j + width` of the depth block starting
    /// at row `pc` (`j` a multiple of `nr`, `width` of the group).
    pub(super) fn panel(&self, pc: usize, j: usize, width: usize) -> &[f32] {
        assert!(
            j.is_multiple_of(self.nr) && j + width <= self.width && pc < self.k,
            "PackedB: panel outside the packed matrix"
        );
        let kcur = self.kc.min(self.k - pc);
        let start = pc * self.width + j * kcur;
        &self.data.as_slice()[start..start + width * kcur]
    }
}
