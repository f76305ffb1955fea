//! The block loops around the tiles (Goto/BLIS): column blocks of `nc`,
//! depth blocks of `kc` (one B panel each, packed here or taken from a
//! [`PackedB`]), row blocks of `mc` (one packed A block each), then the
//! tiles over the block. Products of at most [`SMALL_ROWS`] rows skip the
//! row blocks: the small tile reads A in place. B may also be the implicit
//! im2col matrix of a convolution ([`Im2col`]), packed straight from the
//! image.

use super::conv::Im2col;
use super::pack::{self, AlignedBuf};
use super::{At, COut, Isa, MatRef, PackedB, SMALL_ROWS, Tile};
use std::cell::RefCell;

/// Depth of a block at most. Sizes for 48 KiB L1d / 2 MiB L2 (Sapphire
/// Rapids): a B sliver of `kc × nr` (32 KiB) stays in L1 while the A
/// slivers of a row block (`mc × kc`, 288 KiB) stream from L2. Measured on
/// a shared two-core machine, MC 144..576, KC 192..384 and NC 512..2048
/// were within the noise of one another (±15 %) on 2048³ and VAR shapes.
const KC: usize = 256;
/// Rows of a packed A block (rounded to the tile's `mr`): fewer row blocks
/// means fewer passes over each B panel.
const MC: usize = 288;
/// Columns of a B panel (rounded to the tile's column group).
const NC: usize = 2048;

/// Block sizes of one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of a packed A block.
    pub mc: usize,
    /// Depth of a block.
    pub kc: usize,
    /// Columns of a B panel.
    pub nc: usize,
}

/// The depth block for depth `k`: `k` cut into equal blocks of at most
/// [`KC`] (a multiple of 8 where that stays within `KC`), so the last
/// block is not a sliver.
pub(super) fn kc_for(k: usize) -> usize {
    let blocks = k.div_ceil(KC).max(1);
    k.div_ceil(blocks).next_multiple_of(8).clamp(1, KC)
}

impl Blocking {
    /// The default block sizes for an `m × n × k` product.
    pub fn for_shape(isa: Isa, _m: usize, _n: usize, k: usize) -> Blocking {
        let t = isa.usable().tile();
        Blocking {
            mc: MC.next_multiple_of(t.mr),
            kc: kc_for(k),
            nc: NC.next_multiple_of(t.group()),
        }
    }

    /// Rounded to whole tiles and column groups, none empty.
    fn fit(&self, t: &Tile) -> Blocking {
        Blocking {
            mc: self.mc.max(1).next_multiple_of(t.mr),
            kc: self.kc.max(1),
            nc: self.nc.max(1).next_multiple_of(t.group()),
        }
    }
}

/// Where B comes from.
#[derive(Clone, Copy)]
pub(super) enum BSrc<'a> {
    /// A strided view, packed block by block here.
    Strided(&'a MatRef<'a>),
    /// Packed ahead; the product's column 0 is the packed matrix's column
    /// `j0` (a multiple of the tile's column group). With `bias`,
    /// `bias[j]` is added to column `j` of C once the product is complete
    /// (`n` values, the product's column 0 first): a projection's bias
    /// lands while the tile is in cache instead of in a pass over C.
    Packed {
        b: &'a PackedB,
        j0: usize,
        bias: Option<&'a [f32]>,
    },
    /// The im2col matrix of one image, packed block by block from the
    /// image (or read in place by a direct tile); the product's column 0
    /// is point `j0`. With `a`, A's blocks are taken from a whole A
    /// packed ahead ([`PackedB::conv_weights`]) whose row `i0` is the
    /// product's row 0.
    Im2col {
        src: &'a Im2col<'a>,
        j0: usize,
        a: Option<(&'a PackedB, usize)>,
        /// Added to row `i` of C once the product is complete (`m`
        /// values).
        bias: Option<&'a [f32]>,
    },
}

/// A bias added to C once its product is complete: per row (a
/// convolution's output channels) or per column (a projection's outputs).
#[derive(Clone, Copy)]
enum Bias<'a> {
    Rows(&'a [f32]),
    Cols(&'a [f32]),
}

impl<'a> Bias<'a> {
    fn of<'b>(b: &BSrc<'b>) -> Option<Bias<'b>> {
        match *b {
            BSrc::Im2col { bias, .. } => bias.map(Bias::Rows),
            BSrc::Packed { bias, .. } => bias.map(Bias::Cols),
            BSrc::Strided(_) => None,
        }
    }

    /// Adds the bias to the block of C at `at`, whose origin is element
    /// `(i, j)` of the product.
    fn add(self, out: COut, at: &At, i: usize, j: usize) {
        match self {
            Bias::Rows(b) => super::generic::add_rows(out, at, &b[i..]),
            Bias::Cols(b) => super::generic::add_cols(out, at, &b[j..]),
        }
    }

    /// Panics unless the bias covers an `m × n` product.
    fn check(self, m: usize, n: usize) {
        match self {
            Bias::Rows(b) => assert!(b.len() >= m, "bias shorter than the product's rows"),
            Bias::Cols(b) => assert!(b.len() >= n, "bias shorter than the product's columns"),
        }
    }
}

/// C: `out` holds element `(i, j)` at `offset + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(super) struct CView {
    pub out: COut,
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

impl CView {
    fn at(&self, i: usize, j: usize, rows: usize, cols: usize, accumulate: bool) -> At {
        At {
            offset: (self.offset as isize + i as isize * self.rs + j as isize * self.cs) as usize,
            rs: self.rs,
            cs: self.cs,
            rows,
            cols,
            accumulate,
        }
    }
}

thread_local! {
    /// Packing space for A and B blocks, kept between calls.
    static PACK: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::new(Default::default());
}

/// `C = (accumulate ? C : 0) + A·B` over an `m × n × k` product. The
/// tiles check every write against `c.out`; A and B are read through safe
/// slices.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    t: Tile,
    bl: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef,
    b: BSrc,
    c: CView,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        let at = c.at(0, 0, m, n, false);
        if !accumulate {
            super::generic::zero(c.out, &at);
        }
        if let Some(bias) = Bias::of(&b) {
            bias.check(m, n);
            bias.add(c.out, &at, 0, 0);
        }
        return;
    }
    let mut bl = bl.fit(&t);
    if let BSrc::Packed { b, .. } = b {
        bl.kc = b.kc();
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        blocks(t, &bl, m, n, k, a, b, c, accumulate, pa, pb);
    });
}

#[allow(clippy::too_many_arguments)]
fn blocks(
    t: Tile,
    bl: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef,
    b: BSrc,
    c: CView,
    accumulate: bool,
    pa: &mut AlignedBuf,
    pb: &mut AlignedBuf,
) {
    let group = t.group();
    let small = t.small.filter(|_| m <= SMALL_ROWS);
    let (mc, kc, nc) = (bl.mc, bl.kc.min(k), bl.nc);
    if small.is_none() {
        pa.resize(mc.min(m.next_multiple_of(t.mr)) * kc);
    }
    // B read from the image in place: no panel to pack (the packing
    // would copy each image float `KH·KW` times to read it once).
    let direct_src = match b {
        BSrc::Im2col { src, j0, .. } if src.direct(j0) => Some((src, j0)),
        _ => None,
    };
    let direct = direct_src
        .filter(|_| small.is_none())
        .and_then(|(src, j0)| t.direct.map(|f| (f, src, j0)));
    let small_direct = direct_src
        .filter(|_| small.is_some())
        .and_then(|(src, j0)| t.small_direct.map(|f| (f, src, j0)));
    let bias = Bias::of(&b);
    if let Some(bias) = bias {
        bias.check(m, n);
    }
    // A packed ahead in the layout `pack_a` would produce for these
    // blocks: same tile height, depth blocks and sliver-aligned rows.
    let apacked = match b {
        BSrc::Im2col {
            a: Some((p, i0)), ..
        } if small.is_none()
            && p.nr() == t.mr
            && p.k() == k
            && p.kc().min(k) == kc
            && i0 % t.mr == 0
            && mc % t.mr == 0
            && i0 + m <= p.n() =>
        {
            Some((p, i0))
        }
        _ => None,
    };
    let in_place = direct.is_some() || small_direct.is_some();
    if let (BSrc::Strided(_) | BSrc::Im2col { .. }, false) = (b, in_place) {
        pb.resize(nc.min(n.next_multiple_of(group)) * kc);
    }
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        let width = ncur.next_multiple_of(group);
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            let acc = accumulate || pc > 0;
            // The bias goes onto each tile as its last depth block lands.
            let bias = bias.filter(|_| pc + kcur == k);
            if let (Some((w, _)), Some((f, src, j0))) = (small, small_direct) {
                let taps = pack::Taps::new(src, pc, kcur);
                let ap = MatRef {
                    offset: (a.offset as isize + pc as isize * a.cs) as usize,
                    ..*a
                };
                for jr in (0..ncur).step_by(w) {
                    // Vectors past the product read the first one's run
                    // again; the tile does not store them.
                    let p = j0 + jc + jr;
                    let b0 = src.point_base(p);
                    let bases: [isize; 4] = std::array::from_fn(|v| {
                        let q = jr + v * pack::DIRECT_VEC;
                        if q < ncur {
                            src.point_base(p + v * pack::DIRECT_VEC)
                        } else {
                            b0
                        }
                    });
                    let at = c.at(0, jc + jr, m, w.min(ncur - jr), acc);
                    f(kcur, &ap, src.x, &taps, bases, c.out, &at);
                    if let Some(bias) = bias {
                        bias.add(c.out, &at, 0, jc + jr);
                    }
                }
                continue;
            }
            if let Some((f, src, j0)) = direct {
                let taps = pack::Taps::new(src, pc, kcur);
                let half = t.nr / 2;
                for ic in (0..m).step_by(mc) {
                    let mcur = mc.min(m - ic);
                    let ablock = a_block(pa, apacked, a, ic, mcur, pc, kcur, t.mr);
                    for jr in (0..ncur).step_by(t.nr) {
                        // Columns past the product read the first vector's
                        // image run again; the tile does not store them.
                        let b0 = src.point_base(j0 + jc + jr);
                        let b1 = if jr + half < ncur {
                            src.point_base(j0 + jc + jr + half)
                        } else {
                            b0
                        };
                        for ir in (0..mcur).step_by(t.mr) {
                            let asl = &ablock[ir * kcur..(ir + t.mr) * kcur];
                            let at = c.at(
                                ic + ir,
                                jc + jr,
                                t.mr.min(mcur - ir),
                                t.nr.min(ncur - jr),
                                acc,
                            );
                            f(kcur, asl, src.x, &taps, [b0, b1], c.out, &at);
                            if let Some(bias) = bias {
                                bias.add(c.out, &at, ic + ir, jc + jr);
                            }
                        }
                    }
                }
                continue;
            }
            let panel: &[f32] = match b {
                BSrc::Strided(bm) => {
                    let dst = &mut pb.as_mut_slice()[..width * kcur];
                    pack::pack_b(dst, bm, pc, kcur, jc, ncur, t.nr);
                    &pb.as_slice()[..width * kcur]
                }
                BSrc::Packed { b, j0, .. } => b.panel(pc, j0 + jc, width),
                BSrc::Im2col { src, j0, .. } => {
                    let dst = &mut pb.as_mut_slice()[..width * kcur];
                    pack::pack_b_im2col(dst, src, pc, kcur, j0 + jc, ncur, t.nr);
                    &pb.as_slice()[..width * kcur]
                }
            };
            if let Some((w, f)) = small {
                let ap = MatRef {
                    offset: (a.offset as isize + pc as isize * a.cs) as usize,
                    ..*a
                };
                for jr in (0..ncur).step_by(w) {
                    let at = c.at(0, jc + jr, m, w.min(ncur - jr), acc);
                    f(kcur, &ap, &panel[jr * kcur..(jr + w) * kcur], c.out, &at);
                    if let Some(bias) = bias {
                        bias.add(c.out, &at, 0, jc + jr);
                    }
                }
                continue;
            }
            for ic in (0..m).step_by(mc) {
                let mcur = mc.min(m - ic);
                let ablock = a_block(pa, apacked, a, ic, mcur, pc, kcur, t.mr);
                let tiles = mcur.div_ceil(t.mr);
                for jr in (0..ncur).step_by(t.nr) {
                    let bs = &panel[jr * kcur..(jr + t.nr) * kcur];
                    let next = panel.get((jr + t.nr) * kcur..(jr + 2 * t.nr) * kcur);
                    for (ti, ir) in (0..mcur).step_by(t.mr).enumerate() {
                        if let Some(next) = next {
                            prefetch_share(next, ti, tiles);
                        }
                        let asl = &ablock[ir * kcur..(ir + t.mr) * kcur];
                        let at = c.at(
                            ic + ir,
                            jc + jr,
                            t.mr.min(mcur - ir),
                            t.nr.min(ncur - jr),
                            acc,
                        );
                        (t.run)(kcur, asl, bs, c.out, &at);
                        if let Some(bias) = bias {
                            bias.add(c.out, &at, ic + ir, jc + jr);
                        }
                    }
                }
            }
        }
    }
}

/// Starts loading share `i` of `n` of `next` (the B sliver the tiles take
/// up after the current one) into L2, so that a panel streamed from
/// memory (weights packed ahead are read once per product, cold) arrives
/// while the current sliver's tiles run rather than stalling the first
/// tile of each sliver. One share per tile spreads the requests so that
/// they do not queue behind one another.
fn prefetch_share(next: &[f32], i: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        const LINE: usize = 16;
        let lines = next.len().div_ceil(LINE);
        let (lo, hi) = (lines * i / n, lines * (i + 1) / n);
        for l in lo..hi {
            let p = next[l * LINE..].as_ptr() as *const i8;
            // SAFETY: sse is part of every x86-64 CPU; a prefetch reads
            // nothing architecturally and never faults (the address is
            // inside `next` anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (next, i, n);
}

/// The packed block of A's rows `ic..ic + rows`, depths `pc..pc + kc`:
/// a panel of A packed ahead, or packed into `pa` now.
#[allow(clippy::too_many_arguments)]
fn a_block<'p>(
    pa: &'p mut AlignedBuf,
    packed: Option<(&'p PackedB, usize)>,
    a: &MatRef,
    ic: usize,
    rows: usize,
    pc: usize,
    kc: usize,
    mr: usize,
) -> &'p [f32] {
    let height = rows.next_multiple_of(mr);
    if let Some((p, i0)) = packed {
        return p.panel(pc, i0 + ic, height);
    }
    let ablock = &mut pa.as_mut_slice()[..height * kc];
    pack::pack_a(ablock, a, ic, rows, pc, kc, mr);
    ablock
}
