//! Fused scaled dot-product attention (flash-attention style) for the
//! kernels tagged `Library::Attention` in kernel IR.
//!
//! For each `(batch, head, tile of MQ query rows)` the key axis is walked in
//! blocks of `NK` keys: `S = (scale·Q)·Kᵀ + bias` for the block (register
//! tiles of 4 rows × 64 keys on AVX-512: 16 zmm accumulators over the depth
//! loop, Q packed in groups of 4 rows, `Kᵀ` packed per block), an online
//! softmax per row (running max `m`, running sum `l` kept lane by lane so
//! that no block needs a horizontal sum; when the max grows, the row's
//! accumulator and sum are rescaled by `exp(m_old − m_new)`; on AVX-512
//! the four rows of a group in one pass, with a shorter exponential, see
//! `x86`), and `acc += P·V` over V packed in column panels of whole zmm
//! rows (64, 32 or 16 wide; 4 rows per register tile, 8 for 32-wide
//! panels on AVX-512). The `S_q × S_kv` score matrix never exists. K and
//! V are packed once per call and key block, by whichever thread needs
//! the block first, into buffers reused across calls (`pack`); per
//! thread, the scratch (kept between calls) holds one tile's Q rows,
//! scores and accumulators (tens of KB). Every inner loop runs over
//! fixed-size arrays or slices cut to length beforehand, so the compiler
//! drops their bounds checks.
//!
//! Submodules by job: `classes` (bias block classes), `schedule` (unit
//! order), `pack` (packed K/V), `entry` (the C entry and its pool split),
//! `x86` (explicit AVX-512 / AVX2 kernels).
//!
//! Skipping is per group of 4 query rows and key block: under the causal
//! limit everything past it, and where the group's bias is −∞ throughout
//! (block-causal masks); where it is ±0 throughout nothing is added. Each
//! `(group, block)` of each bias plane is classified once per call, before
//! any tile runs, by OR/AND reductions of the raw bits (split across the
//! pool by plane and query tile; a bias broadcast over batch and heads, as
//! VAR's mask is, is one plane, scanned once whatever the head and thread
//! counts), and the tiles read the table. Skipping is exact: such keys
//! contribute `exp(−∞) = 0`. Rows whose every score is −∞ give 0 (as the
//! loop nest that specifies the call does).
//!
//! A call with at most `DIRECT_MAX_ROWS` query rows (decoding with a KV
//! cache) packs nothing: scores are dot products with the K rows in place
//! and V rows accumulate in place.
//!
//! Threads: the `(batch, head, tile)` units are tasks on the current pool
//! ([`crate::pool::current`]), handed out `(batch, head)` by `(batch,
//! head)` and within each heaviest tile first (live blocks counted from
//! the class table and the causal limit), so that the last tasks are
//! light and the threads end together; each output row is computed by one
//! task with the same operations as in a serial call, so results are
//! bit-identical for any thread count. One implementation, instantiated per instruction
//! set (AVX-512F, AVX2+FMA, NEON, portable) through `#[target_feature]`
//! wrappers, with fixed-width inner loops the compiler vectorises.

mod classes;
mod entry;
mod pack;
mod schedule;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::Isa;
use classes::*;
pub use entry::{AttentionArgs, args_layout, varc_attention};
use pack::*;
use schedule::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Keys per block.
const NK: usize = 64;
/// Query rows per tile (a multiple of `RQ`).
const MQ: usize = 64;
/// Column padding of packed blocks (one AVX-512 vector).
const PAD: usize = 16;

/// The flavours `tile` is instantiated in: plain multiply-add, fused
/// multiply-add with portable reductions (NEON), AVX2+FMA, AVX-512F.
const PLAIN: u8 = 0;
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const FMA: u8 = 1;
const AVX2: u8 = 2;
const AVX512: u8 = 3;

/// A read-only 4-D f32 operand: element `[a, b, c, d]` is
/// `data[offset + Σ strides[x]·index[x]]` (strides may be 0 or negative).
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub strides: [isize; 4],
}

impl Operand<'_> {
    fn at(&self, idx: [usize; 4]) -> usize {
        let mut a = self.offset as isize;
        for (i, s) in idx.iter().zip(&self.strides) {
            a += *i as isize * s;
        }
        a as usize
    }
}

/// The extents of an attention call (see [`Problem`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub s_q: usize,
    pub s_kv: usize,
    pub head_dim: usize,
    pub v_head_dim: usize,
}

/// Attention over f32 operands: Q `[batch, q_heads, s_q, head_dim]`, K
/// `[batch, kv_heads, s_kv, head_dim]`, V `[batch, kv_heads, s_kv,
/// v_head_dim]`, bias `[batch, q_heads, s_q, s_kv]`, query head `h` reading
/// K/V head `h / (q_heads / kv_heads)`:
/// `s_ij = scale·(q_i·k_j) + bias_ij`, −∞ where `causal_offset = Some(o)`
/// and `j > i + o`; `out_i = Σ_j exp(s_ij − m_i)·v_j / Σ_j exp(s_ij − m_i)`,
/// 0 where every `s_ij` is −∞.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    pub q: Operand<'a>,
    pub k: Operand<'a>,
    pub v: Operand<'a>,
    pub bias: Option<Operand<'a>>,
    pub sizes: Sizes,
    pub scale: f32,
    pub causal_offset: Option<isize>,
}

/// The lowest and highest offsets (relative to the origin) a view of
/// `extents` with `strides` touches; `None` when it is empty.
pub fn span4(extents: [usize; 4], strides: [isize; 4]) -> Option<(isize, isize)> {
    let (mut lo, mut hi) = (0isize, 0isize);
    for (&n, &s) in extents.iter().zip(&strides) {
        let reach = (n.checked_sub(1)? as isize).checked_mul(s)?;
        if reach < 0 {
            lo = lo.checked_add(reach)?;
        } else {
            hi = hi.checked_add(reach)?;
        }
    }
    Some((lo, hi))
}

fn fits(len: usize, offset: usize, extents: [usize; 4], strides: [isize; 4]) -> bool {
    if extents.contains(&0) {
        return true;
    }
    span4(extents, strides).is_some_and(|(lo, hi)| {
        let o = offset as isize;
        o.checked_add(lo).is_some_and(|l| l >= 0)
            && o.checked_add(hi).is_some_and(|h| (h as usize) < len)
    })
}

impl Problem<'_> {
    /// The operands with their extents.
    fn operands(&self) -> [(&'static str, Option<&Operand<'_>>, [usize; 4]); 4] {
        let z = self.sizes;
        [
            ("Q", Some(&self.q), [z.batch, z.q_heads, z.s_q, z.head_dim]),
            (
                "K",
                Some(&self.k),
                [z.batch, z.kv_heads, z.s_kv, z.head_dim],
            ),
            (
                "V",
                Some(&self.v),
                [z.batch, z.kv_heads, z.s_kv, z.v_head_dim],
            ),
            (
                "bias",
                self.bias.as_ref(),
                [z.batch, z.q_heads, z.s_q, z.s_kv],
            ),
        ]
    }

    /// Checks the head counts and that every operand lies in its slice.
    pub fn check(&self) -> Result<(), String> {
        let z = self.sizes;
        if z.q_heads > 0 && (z.kv_heads == 0 || !z.q_heads.is_multiple_of(z.kv_heads)) {
            return Err(format!(
                "attention: {} query heads are not a multiple of {} K/V heads",
                z.q_heads, z.kv_heads
            ));
        }
        for (what, op, ext) in self.operands() {
            if let Some(op) = op
                && !fits(op.data.len(), op.offset, ext, op.strides)
            {
                return Err(format!("attention: {what} {ext:?} lies outside its slice"));
            }
        }
        Ok(())
    }

    fn group(&self) -> usize {
        self.sizes.q_heads / self.sizes.kv_heads.max(1)
    }

    fn tiles(&self) -> usize {
        self.sizes.s_q.div_ceil(MQ)
    }

    /// `(batch, head, tile)` units, in output order.
    fn units(&self) -> usize {
        self.sizes.batch * self.sizes.q_heads * self.tiles()
    }

    fn unit(&self, u: usize) -> (usize, usize, usize) {
        let t = self.tiles();
        (
            u / (t * self.sizes.q_heads),
            u / t % self.sizes.q_heads,
            u % t,
        )
    }
}

/// A writable 4-D f32 view `[batch, q_heads, s_q, v_head_dim]` (see
/// [`Operand`]).
#[derive(Debug)]
pub struct OutMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub strides: [isize; 4],
}

/// Query rows per register tile of the score product.
const RQ: usize = 4;

/// Per-thread working memory, grown as needed and kept between calls.
#[derive(Default)]
struct Scratch {
    /// The tile's Q rows times `scale` in groups of `RQ` rows: group `g` is
    /// `q[g·d .. (g+1)·d]`, one `[f32; RQ]` per depth step, so that a step
    /// of the score product broadcasts consecutive elements.
    q: Vec<[f32; RQ]>,
    /// Scores, then probabilities: `MQ` rows of `NK`.
    s: Vec<[f32; NK]>,
    /// Output accumulators in the panels of `v`: the panel at column `c0`,
    /// `w` wide, is `MQ` rows of `w` at `acc[MQ·c0..]`.
    acc: Vec<f32>,
    /// Running max per row.
    m: Vec<f32>,
    /// Running sum per row, lane by lane (added across lanes at the end:
    /// no horizontal sum per block).
    l: Vec<[f32; PAD]>,
    /// One query row times `scale` (direct path), one gathered K or V row
    /// (strided layouts), one output row.
    qv: Vec<f32>,
    row_in: Vec<f32>,
    row_out: Vec<f32>,
}

impl Scratch {
    fn fit(&mut self, d: usize, dv: usize, dvp: usize) {
        fn grow<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
            if v.len() < n {
                v.resize(n, zero);
            }
        }
        grow(&mut self.q, MQ / RQ * d, [0.0; RQ]);
        grow(&mut self.s, MQ, [0.0; NK]);
        grow(&mut self.acc, MQ * dvp, 0.0);
        grow(&mut self.m, MQ, 0.0);
        grow(&mut self.l, MQ, [0.0; PAD]);
        grow(&mut self.qv, d, 0.0);
        grow(&mut self.row_in, d.max(dv).max(NK), 0.0);
        grow(&mut self.row_out, dv, 0.0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out` = attention of `p` (see [`Problem`]) on this thread, with the best
/// instruction set of this machine. Panics when an operand does not fit
/// its slice.
pub fn attention(p: &Problem, out: OutMut) {
    attention_with(Isa::detect(), p, out);
}

/// [`attention`] with a given instruction set (one of [`Isa::available`];
/// others fall back to the portable code).
pub fn attention_with(isa: Isa, p: &Problem, out: OutMut) {
    if let Err(e) = p.check() {
        panic!("{e}");
    }
    let isa = if Isa::available().contains(&isa) {
        isa
    } else {
        Isa::Portable
    };
    let z = p.sizes;
    let ext = [z.batch, z.q_heads, z.s_q, z.v_head_dim];
    assert!(
        fits(out.data.len(), out.offset, ext, out.strides),
        "attention: out {ext:?} lies outside its slice"
    );
    let o = Operand {
        data: &[],
        offset: out.offset,
        strides: out.strides,
    };
    let packs = Packs::new(p);
    let classes = Classes::new(p);
    if let Some(c) = &classes {
        c.fill_all(isa, p);
    }
    for u in 0..p.units() {
        run_unit(isa, p, &packs, classes.as_ref(), u, &mut |idx, row| {
            let at = o.at(idx);
            if o.strides[3] == 1 {
                out.data[at..][..row.len()].copy_from_slice(row);
                return;
            }
            for (c, &y) in row.iter().enumerate() {
                out.data[(at as isize + c as isize * o.strides[3]) as usize] = y;
            }
        });
    }
}

/// Computes unit `u` of a call (whose packed K/V is `packs`) and hands
/// each output row
/// `[b, h, i, 0..v_head_dim]` to `store`. `isa` must be one of
/// [`Isa::available`].
fn run_unit(
    isa: Isa,
    p: &Problem,
    packs: &Packs,
    classes: Option<&Classes>,
    u: usize,
    store: &mut dyn FnMut([usize; 4], &[f32]),
) {
    let (b, h, t) = p.unit(u);
    let i0 = t * MQ;
    let rows = MQ.min(p.sizes.s_q - i0);
    let dvp = p.sizes.v_head_dim.div_ceil(PAD) * PAD;
    let skvp = p.sizes.s_kv.div_ceil(NK) * NK;
    SCRATCH.with(|cell| {
        let mut sc = cell.borrow_mut();
        sc.fit(p.sizes.head_dim, p.sizes.v_head_dim, dvp);
        let at = Tile {
            packs: packs.head(p, b, h / p.group()),
            classes: classes.map_or(&[], |c| c.plane(b, h)),
            b,
            h,
            i0,
            rows,
            skvp,
            dvp,
        };
        match isa {
            // SAFETY: `isa` is one of `Isa::available`, which lists AVX-512F
            // only when this CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { tile_avx512(p, &at, &mut sc, store) },
            // SAFETY: as above, for AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { tile_avx2(p, &at, &mut sc, store) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => tile::<FMA>(p, &at, &mut sc, store),
            _ => tile::<PLAIN>(p, &at, &mut sc, store),
        }
    });
}

/// Where one tile lies.
struct Tile<'c> {
    /// The K/V head's packed blocks.
    packs: &'c [OnceLock<Box<[f32]>>],
    /// The bias plane's block classes (empty without a bias).
    classes: &'c [AtomicU8],
    b: usize,
    h: usize,
    i0: usize,
    rows: usize,
    /// `s_kv` rounded up to `NK`.
    skvp: usize,
    /// `v_head_dim` rounded up to `PAD`.
    dvp: usize,
}

/// The output sink of a tile: `[b, h, i, 0]` and the row.
type Store<'s> = &'s mut dyn FnMut([usize; 4], &[f32]);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tile_avx512(p: &Problem, at: &Tile, sc: &mut Scratch, store: Store) {
    tile::<AVX512>(p, at, sc, store)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2(p: &Problem, at: &Tile, sc: &mut Scratch, store: Store) {
    tile::<AVX2>(p, at, sc, store)
}

#[inline(always)]
fn madd<const K: u8>(a: f32, b: f32, c: f32) -> f32 {
    if K == PLAIN {
        a * b + c
    } else {
        a.mul_add(b, c)
    }
}

/// `exp(x)` in f32 for `x ≤ 0`, as online-softmax arguments `s − max`
/// are (no clamp above): Cody–Waite reduction by ln 2, Cephes' degree-6
/// polynomial, `2ⁿ` built in the exponent bits; branch-free so loops over
/// it vectorise. Below ln 2⁻¹²⁶ it returns 0 (so `exp(−∞) = 0` exactly, as
/// masked keys need), and NaN stays NaN.
#[inline(always)]
fn exp_nonpositive<const K: u8>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let t = madd::<K>(x, std::f32::consts::LOG2_E, SHIFT);
    let n = t - SHIFT;
    let r = madd::<K>(n, -0.693_359_4, x);
    let r = madd::<K>(n, 2.121_944_4e-4, r);
    let mut y = 1.987_569_1e-4f32;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        y = madd::<K>(y, r, c);
    }
    let y = madd::<K>(y, r * r, r) + 1.0;
    let e = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let pow2 = f32::from_bits((e.wrapping_add(127) << 23) as u32);
    if x < -87.3 { 0.0 } else { y * pow2 }
}
/// The largest element of a block row (−∞ for none). NaN is not looked
/// for: a NaN score makes its row NaN through the exponentials anyway.
#[inline(always)]
fn max<const K: u8>(x: &[f32; NK]) -> f32 {
    match K {
        // SAFETY: `tile::<AVX512>` runs only inside `tile_avx512`, on a CPU
        // with AVX-512F.
        #[cfg(target_arch = "x86_64")]
        AVX512 => unsafe { x86::max_avx512(x) },
        // SAFETY: as above, for `tile_avx2` and AVX2.
        #[cfg(target_arch = "x86_64")]
        AVX2 => unsafe { x86::max_avx2(x) },
        _ => lanes(x, f32::NEG_INFINITY, |a, b| if b > a { b } else { a }),
    }
}

/// `f` folded over `PAD` lanes, then across them.
#[inline(always)]
fn lanes(x: &[f32; NK], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; PAD];
    for chunk in x.chunks_exact(PAD) {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = f(*a, v);
        }
    }
    acc.into_iter().fold(init, f)
}

/// Copies `dst.len()` elements starting at `at` with stride `step`.
#[inline(always)]
fn gather(dst: &mut [f32], src: &[f32], at: usize, step: isize) {
    if step == 1 {
        dst.copy_from_slice(&src[at..][..dst.len()]);
    } else {
        for (e, d) in dst.iter_mut().enumerate() {
            *d = src[(at as isize + e as isize * step) as usize];
        }
    }
}

/// Width of the V / accumulator panel starting `rest` columns before
/// `dvp`: whole zmm rows on AVX-512 (64, 32, then 16 columns, with 4, 8,
/// 8 rows per register tile: 16 accumulators); 16 elsewhere (4 rows: 8
/// accumulators of 8 or 4 lanes).
#[inline(always)]
fn panel_width<const K: u8>(rest: usize) -> usize {
    if K != AVX512 || rest < 32 {
        PAD
    } else if rest < 64 {
        32
    } else {
        64
    }
}

/// Columns `c0 .. c0+W` of the scores of the `R` rows of a group:
/// `Σ_e q[e][r]·kt[e][c]`, with the `R × W` accumulators in registers
/// across the depth loop.
#[inline(always)]
fn qk_cols<const K: u8, const R: usize, const W: usize>(
    q: &[[f32; R]],
    kt: &[[f32; NK]],
    s: &mut [[f32; NK]; R],
    c0: usize,
) {
    let mut acc = [[0f32; W]; R];
    for (qe, ke) in q.iter().zip(kt) {
        let kc: &[f32; W] = ke[c0..c0 + W].try_into().expect("W columns");
        for (row, &x) in acc.iter_mut().zip(qe) {
            for (a, &y) in row.iter_mut().zip(kc) {
                *a = madd::<K>(x, y, *a);
            }
        }
    }
    for (srow, row) in s.iter_mut().zip(&acc) {
        srow[c0..c0 + W].copy_from_slice(row);
    }
}

/// At least the first `cols` scores (a multiple of `PAD`) of a group's
/// rows: the whole block in zmm rows on AVX-512 (16 accumulators), 16
/// columns at a time elsewhere (8 accumulators of 8 or 4 lanes).
#[inline(always)]
fn qk<const K: u8, const R: usize>(
    q: &[[f32; R]],
    kt: &[[f32; NK]],
    s: &mut [[f32; NK]; R],
    cols: usize,
) {
    if K == AVX512 {
        // (Narrower tiles for a partial last block do not pay: the compiler
        // leaves some of them scalar.)
        qk_cols::<K, R, NK>(q, kt, s, 0);
        return;
    }
    let mut c0 = 0;
    while c0 + PAD <= cols {
        qk_cols::<K, R, PAD>(q, kt, s, c0);
        c0 += PAD;
    }
}

/// `acc[r] += Σ_{j < nk} p[r][j]·v[j]` for the `R` rows of a group and
/// one `W`-wide panel; the `R × W` accumulators stay in registers across
/// the block.
#[inline(always)]
fn pv<const K: u8, const R: usize, const W: usize>(
    p: &[[f32; NK]; R],
    v: &[[f32; W]],
    acc: &mut [[f32; W]; R],
) {
    let mut a = *acc;
    for (j, vj) in v.iter().enumerate().take(NK) {
        for (row, pr) in a.iter_mut().zip(p) {
            let x = pr[j];
            for (a, &y) in row.iter_mut().zip(vj) {
                *a = madd::<K>(x, y, *a);
            }
        }
    }
    *acc = a;
}

/// [`pv`] for the groups of `R` rows of `p` that `live` marks, for the
/// block's panel `v` (`NK` rows, the first `nk` of them keys) and its
/// accumulators `acc` (`MQ` rows). On AVX-512, 32-column panels take two
/// live groups at once (`R2 = 2R` rows: 16 accumulators, each V load
/// feeding 8 rows instead of 4).
#[inline(always)]
fn pv_panel<const K: u8, const R: usize, const R2: usize, const W: usize>(
    p: &[[f32; NK]],
    live: &[bool],
    v: &[f32],
    nk: usize,
    acc: &mut [f32],
) {
    let (vr, _) = v.as_chunks::<W>();
    let vb = &vr[..nk];
    let (ar, _) = acc.as_chunks_mut::<W>();
    let groups = (p.len() / R).min(ar.len() / R).min(live.len());
    let pair = K == AVX512 && W == 32 && R2 == 8;
    let mut g = 0;
    while g < groups {
        let rows = g * R..;
        if pair && g + 1 < groups && live[g] && live[g + 1] {
            let pg: &[[f32; NK]; 8] = p[rows.clone()][..8].try_into().expect("8 rows");
            let a = ar[rows][..8].as_flattened_mut();
            let (a, _) = a.as_chunks_mut::<32>();
            let ag: &mut [[f32; 32]; 8] = a.try_into().expect("8 rows");
            let (v32, _) = vb.as_flattened().as_chunks::<32>();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pair` holds only for `K == AVX512`, which runs only
            // inside `tile_avx512`, on a CPU with AVX-512F.
            unsafe {
                x86::pv8x32_avx512(pg, v32, ag)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (pg, v32, ag);
            g += 2;
            continue;
        }
        if live[g] {
            let pg: &[[f32; NK]; R] = p[rows.clone()][..R].try_into().expect("R rows");
            let ag: &mut [[f32; W]; R] = (&mut ar[rows][..R]).try_into().expect("R rows");
            pv::<K, R, W>(pg, vb, ag);
        }
        g += 1;
    }
}

/// One online-softmax step of a row over a block of scores (−∞ where
/// masked): raises the running max `m`, replaces the scores by
/// `exp(s − m)`, adds them to the lane sums `l` after scaling those by
/// `alpha = exp(m_old − m)`, and returns `alpha` (by which the row's
/// accumulators must be scaled). A row that has seen nothing but −∞ gets
/// zero probabilities and `alpha = 1`.
#[inline(always)]
fn online<const K: u8>(srow: &mut [f32; NK], m: &mut f32, l: &mut [f32; PAD]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if K == AVX512 {
        // SAFETY: `tile::<AVX512>` runs only inside `tile_avx512`, on a CPU
        // with AVX-512F.
        return unsafe { x86::online_avx512(srow, m, l) };
    }
    let block_max = max::<K>(srow);
    let m_new = if block_max > *m { block_max } else { *m };
    if m_new == f32::NEG_INFINITY {
        srow.fill(0.0);
        return 1.0;
    }
    let mut sum = [0f32; PAD];
    for chunk in srow.as_chunks_mut::<PAD>().0 {
        for (x, s) in chunk.iter_mut().zip(&mut sum) {
            *x = exp_nonpositive::<K>(*x - m_new);
            *s += *x;
        }
    }
    // (`exp(0) = 1` exactly: skipping the scalar exponential when the
    // max stays changes nothing.)
    let alpha = if m_new == *m {
        1.0
    } else {
        exp_nonpositive::<K>(*m - m_new)
    };
    for (l, s) in l.iter_mut().zip(sum) {
        *l = madd::<K>(*l, alpha, s);
    }
    *m = m_new;
    alpha
}

/// [`online`] for the `RQ` rows of a group; on AVX-512 all of them at
/// once (one reduction network for the four maxima, one exponential for
/// the four `alpha`s, more independent work in flight).
#[inline(always)]
fn online_group<const K: u8>(
    s: &mut [[f32; NK]; RQ],
    m: &mut [f32; RQ],
    l: &mut [[f32; PAD]; RQ],
) -> [f32; RQ] {
    #[cfg(target_arch = "x86_64")]
    if K == AVX512 {
        // SAFETY: `tile::<AVX512>` runs only inside `tile_avx512`, on a CPU
        // with AVX-512F.
        return unsafe { x86::online4_avx512(s, m, l) };
    }
    let mut alphas = [1.0; RQ];
    for (((srow, m), l), a) in s.iter_mut().zip(m).zip(l).zip(&mut alphas) {
        *a = online::<K>(srow, m, l);
    }
    alphas
}

/// The sum of the lanes, in a fixed order.
#[inline(always)]
fn lane_sum(x: &[f32; PAD]) -> f32 {
    let mut w = *x;
    let mut n = PAD;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            w[k] += w[k + n];
        }
    }
    w[0]
}

/// `a·b` over their common length, lane by lane, then across lanes.
#[inline(always)]
fn dot<const K: u8>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; PAD];
    let (ac, ar) = a.as_chunks::<PAD>();
    let (bc, br) = b.as_chunks::<PAD>();
    for (x, y) in ac.iter().zip(bc) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s = madd::<K>(x, y, *s);
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ar).zip(br) {
        *s = madd::<K>(x, y, *s);
    }
    lane_sum(&acc)
}

/// Row `[b, h, j, 0..len]` of `o`: a subslice when contiguous, else
/// gathered into `buf`.
#[inline(always)]
fn row_of<'a>(o: &Operand<'a>, idx: [usize; 4], len: usize, buf: &'a mut [f32]) -> &'a [f32] {
    let at = o.at(idx);
    if o.strides[3] == 1 {
        &o.data[at..][..len]
    } else {
        gather(&mut buf[..len], o.data, at, o.strides[3]);
        &buf[..len]
    }
}

/// How many keys of the block at `j0` (of `nk`) row `i` may see under the
/// causal limit.
#[inline(always)]
fn visible(p: &Problem, i: usize, j0: usize, nk: usize) -> usize {
    match p.causal_offset {
        Some(o) => (i as isize + o + 1 - j0 as isize).clamp(0, nk as isize) as usize,
        None => nk,
    }
}

/// Query counts up to this take the direct path: packing a K/V head costs
/// about as much as this many rows of products.
const DIRECT_MAX_ROWS: usize = 4;

/// One tile: the rows `i0 .. i0+rows` of `[b, h]`, handed to `store`.
#[inline(always)]
fn tile<const K: u8>(p: &Problem, at: &Tile, sc: &mut Scratch, store: Store) {
    if p.sizes.s_q <= DIRECT_MAX_ROWS {
        for i in at.i0..at.i0 + at.rows {
            direct_row::<K>(p, at.b, at.h, i, sc, store);
        }
        return;
    }
    let z = p.sizes;
    let (d, dv, dvp, skvp) = (z.head_dim, z.v_head_dim, at.dvp, at.skvp);
    let (b, h, i0, rows) = (at.b, at.h, at.i0, at.rows);
    let hk = h / p.group();
    let rows_p = rows.div_ceil(RQ) * RQ;
    let nblocks = skvp / NK;
    let Scratch {
        q,
        s,
        acc,
        m,
        l,
        row_in,
        row_out,
        ..
    } = sc;
    for (g, qg) in q[..rows_p / RQ * d].chunks_exact_mut(d.max(1)).enumerate() {
        // Whole groups of contiguous rows interleave through registers on
        // AVX-512 (element by element, the stores are scatters).
        #[cfg(target_arch = "x86_64")]
        if K == AVX512 && p.q.strides[3] == 1 && g * RQ + RQ <= rows {
            let src: [&[f32]; RQ] =
                std::array::from_fn(|rr| &p.q.data[p.q.at([b, h, i0 + g * RQ + rr, 0])..][..d]);
            let full = d / PAD * PAD;
            for e0 in (0..full).step_by(PAD) {
                let rows4: [&[f32; PAD]; RQ] =
                    src.map(|x| x[e0..e0 + PAD].try_into().expect("PAD elements"));
                let dst: &mut [[f32; RQ]; PAD] =
                    (&mut qg[e0..e0 + PAD]).try_into().expect("PAD steps");
                // SAFETY: `tile::<AVX512>` runs only inside `tile_avx512`,
                // on a CPU with AVX-512F.
                unsafe { x86::interleave4_avx512(rows4, p.scale, dst) };
            }
            for (e, x) in qg.iter_mut().enumerate().skip(full) {
                *x = src.map(|row| p.scale * row[e]);
            }
            continue;
        }
        for rr in 0..RQ {
            let r = g * RQ + rr;
            if r < rows {
                let row = row_of(&p.q, [b, h, i0 + r, 0], d, row_in);
                for (x, &y) in qg.iter_mut().zip(row) {
                    x[rr] = p.scale * y;
                }
            } else {
                qg.iter_mut().for_each(|x| x[rr] = 0.0);
            }
        }
    }
    m[..rows_p].fill(f32::NEG_INFINITY);
    l[..rows_p].fill([0.0; PAD]);
    acc[..MQ * dvp].fill(0.0);
    let groups = rows_p / RQ;
    for jb in 0..nblocks {
        let j0 = jb * NK;
        let nk = NK.min(z.s_kv - j0);
        // Groups of rows that see nothing of the block (under the causal
        // limit or a bias of −∞) skip it: their keys would add exact zeros.
        let mut class = [SKIP; MQ / RQ];
        for (g, c) in class[..groups].iter_mut().enumerate() {
            let r0 = g * RQ;
            if r0 >= rows {
                continue;
            }
            let n = RQ.min(rows - r0);
            let last = (i0 + r0 + n - 1) as isize;
            if p.causal_offset.is_some_and(|o| j0 as isize > last + o) {
                continue;
            }
            *c = match &p.bias {
                None => ZERO,
                // (A table that does not cover the block cannot happen; the
                // class that adds the bias is right anyway.)
                Some(_) => at
                    .classes
                    .get(((i0 + r0) / RQ) * nblocks + jb)
                    .map_or(MIXED, |c| c.load(Ordering::Relaxed)),
            };
        }
        let live = class.map(|c| c != SKIP);
        if !live.contains(&true) {
            continue;
        }
        let Some(cell) = at.packs.get(jb) else {
            // (The table covers every block of the head: cannot happen.)
            continue;
        };
        let packed = cell.get_or_init(|| pack_block::<K>(p, b, hk, jb, dvp));
        let (kt, _) = packed[..d * NK].as_chunks::<NK>();
        let ktb = &kt[..d];
        let nkp = nk.div_ceil(PAD) * PAD;
        let (sg, _) = s[..rows_p].as_chunks_mut::<RQ>();
        for (g, sg) in sg.iter_mut().enumerate() {
            if !live[g] {
                continue;
            }
            qk::<K, RQ>(&q[g * d..][..d], ktb, sg, nkp);
            for (rr, srow) in sg.iter_mut().enumerate() {
                let r = g * RQ + rr;
                if r >= rows {
                    // (Zero probabilities and `alpha = 1`, as a masked row.)
                    srow.fill(f32::NEG_INFINITY);
                    continue;
                }
                let i = i0 + r;
                if class[g] == MIXED
                    && let Some(bias) = &p.bias
                {
                    let add = row_of(bias, [b, h, i, j0], nk, row_in);
                    for (x, &a) in srow.iter_mut().zip(add) {
                        *x += a;
                    }
                }
                let limit = visible(p, i, j0, nk);
                srow[limit..].fill(f32::NEG_INFINITY);
            }
            let mg: &mut [f32; RQ] = (&mut m[g * RQ..][..RQ]).try_into().expect("RQ rows");
            let lg: &mut [[f32; PAD]; RQ] = (&mut l[g * RQ..][..RQ]).try_into().expect("RQ rows");
            let alphas = online_group::<K>(sg, mg, lg);
            for (rr, &alpha) in alphas.iter().enumerate() {
                let r = g * RQ + rr;
                if alpha != 1.0 {
                    let mut c0 = 0;
                    while c0 < dvp {
                        let w = panel_width::<K>(dvp - c0);
                        for a in &mut acc[MQ * c0 + r * w..][..w] {
                            *a *= alpha;
                        }
                        c0 += w;
                    }
                }
            }
        }
        let mut c0 = 0;
        while c0 < dvp {
            let w = panel_width::<K>(dvp - c0);
            let vp = &packed[d * NK + NK * c0..][..NK * w];
            let ap = &mut acc[MQ * c0..][..MQ * w];
            let pr = &s[..rows_p];
            match w {
                64 => pv_panel::<K, RQ, { 2 * RQ }, 64>(pr, &live, vp, nk, ap),
                32 => pv_panel::<K, RQ, { 2 * RQ }, 32>(pr, &live, vp, nk, ap),
                _ => pv_panel::<K, RQ, { 2 * RQ }, PAD>(pr, &live, vp, nk, ap),
            }
            c0 += w;
        }
    }
    for r in 0..rows {
        let out = &mut row_out[..dv];
        let mut c0 = 0;
        while c0 < dvp {
            let w = panel_width::<K>(dvp - c0);
            let cols = dv.saturating_sub(c0).min(w);
            out[c0..c0 + cols].copy_from_slice(&acc[MQ * c0 + r * w..][..cols]);
            c0 += w;
        }
        normalise(out, m[r], &l[r]);
        store([b, h, i0 + r, 0], out);
    }
}

/// `out / Σ l`, or 0 for a row that saw only −∞.
#[inline(always)]
fn normalise(out: &mut [f32], m: f32, l: &[f32; PAD]) {
    let sum = lane_sum(l);
    for y in out {
        *y = if m == f32::NEG_INFINITY {
            0.0
        } else {
            *y / sum
        };
    }
}

/// Row `i` of `[b, h]` without packing: for a handful of query rows
/// (decoding with a KV cache) packing K/V would cost more than the
/// products, so scores are dot products with the K rows in place and the
/// output accumulates V rows in place.
#[inline(always)]
fn direct_row<const K: u8>(
    p: &Problem,
    b: usize,
    h: usize,
    i: usize,
    sc: &mut Scratch,
    store: Store,
) {
    let z = p.sizes;
    let (d, dv) = (z.head_dim, z.v_head_dim);
    let hk = h / p.group();
    let Scratch {
        qv,
        row_in,
        row_out,
        ..
    } = sc;
    let qv = &mut qv[..d];
    let q = row_of(&p.q, [b, h, i, 0], d, row_in);
    for (x, &y) in qv.iter_mut().zip(q) {
        *x = p.scale * y;
    }
    let out = &mut row_out[..dv];
    out.fill(0.0);
    let (mut m, mut l) = (f32::NEG_INFINITY, [0f32; PAD]);
    for j0 in (0..z.s_kv).step_by(NK) {
        let nk = NK.min(z.s_kv - j0);
        let limit = visible(p, i, j0, nk);
        if limit == 0 {
            break;
        }
        let mut srow = [f32::NEG_INFINITY; NK];
        for (jj, x) in srow[..limit].iter_mut().enumerate() {
            *x = dot::<K>(qv, row_of(&p.k, [b, hk, j0 + jj, 0], d, row_in));
        }
        if let Some(bias) = &p.bias {
            let add = row_of(bias, [b, h, i, j0], limit, row_in);
            for (x, &a) in srow.iter_mut().zip(add) {
                *x += a;
            }
        }
        let alpha = online::<K>(&mut srow, &mut m, &mut l);
        if alpha != 1.0 {
            for y in out.iter_mut() {
                *y *= alpha;
            }
        }
        for (jj, &x) in srow[..limit].iter().enumerate() {
            let vrow = row_of(&p.v, [b, hk, j0 + jj, 0], dv, row_in);
            for (y, &w) in out.iter_mut().zip(vrow) {
                *y = madd::<K>(x, w, *y);
            }
        }
    }
    normalise(out, m, &l);
    store([b, h, i, 0], out);
}

#[cfg(test)]
mod tests;
