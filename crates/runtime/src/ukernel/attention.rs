//! Fused scaled dot-product attention (flash-attention style) for the
//! kernels tagged `Library::Attention` in kernel IR.
//!
//! For each `(batch, head, tile of MQ query rows)` the key axis is walked in
//! blocks of `NK` keys: `S = (scale·Q)·Kᵀ + bias` for the block (register
//! tiles of 4 rows × 64 keys on AVX-512: 16 zmm accumulators over the depth
//! loop, Q packed in groups of 4 rows, `Kᵀ` packed per block), an online
//! softmax per row (running max `m`, running sum `l` kept lane by lane so
//! that no block needs a horizontal sum; when the max grows, the row's
//! accumulator and sum are rescaled by `exp(m_old − m_new)`), and
//! `acc += P·V` over V packed in column panels of whole zmm rows (64, 32 or
//! 16 wide, 4 rows per register tile). The `S_q × S_kv` score matrix never
//! exists. Per thread, the scratch (kept between calls) holds one tile's
//! Q rows, scores and accumulators (tens of KB) and one K/V head packed for
//! the block products (`S_kv·(d + d_v)` floats), packed once per head: the
//! units a thread takes in a row mostly share their head. Every inner loop
//! runs over fixed-size arrays or slices cut to length beforehand, so the
//! compiler drops their bounds checks.
//!
//! Skipping is per group of 4 query rows and key block: under the causal
//! limit everything past it, and where the group's bias is −∞ throughout
//! (block-causal masks); where it is 0 throughout nothing is added. Each
//! `(group, block)` of a bias plane is classified once per call and thread
//! (a bias broadcast over batch and heads, as VAR's mask is, is scanned
//! once, not once per head). Skipping is exact: such keys contribute
//! `exp(−∞) = 0`. Rows whose every score is −∞ give 0 (as the loop nest
//! that specifies the call does).
//!
//! A call with at most `DIRECT_MAX_ROWS` query rows (decoding with a KV
//! cache) packs nothing: scores are dot products with the K rows in place
//! and V rows accumulate in place.
//!
//! Threads: the `(batch, head, tile)` units are tasks on the current pool
//! ([`crate::pool::current`]); each output row is computed by one task with
//! the same operations as in a serial call, so results are bit-identical
//! for any thread count. One implementation, instantiated per instruction
//! set (AVX-512F, AVX2+FMA, NEON, portable) through `#[target_feature]`
//! wrappers, with fixed-width inner loops the compiler vectorises.

use super::Isa;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// `Kᵀ` of one K/V head by key block: block `jb` is
    /// `kt[jb·d .. (jb+1)·d]`, one row of `NK` keys per depth step (0 past
    /// `s_kv`).
    kt: Vec<[f32; NK]>,
    /// V of one K/V head in column panels (see [`panel_width`]): the panel
    /// at column `c0`, `w` wide, is `skvp` rows of `w` at `v[skvp·c0..]`
    /// (0 past `s_kv` and `v_head_dim`, so that zero probabilities of
    /// padding keys add exact zeros).
    v: Vec<f32>,
    /// `(call, batch, K/V head)` that `kt` and `v` hold: consecutive units
    /// of a call mostly share a head, so each thread packs a head once.
    packed: Option<(u64, usize, usize)>,
    /// Class ([`SKIP`], [`ZERO`], [`MIXED`] or [`UNKNOWN`]) of each
    /// `(query tile, key block)` of the bias plane `classes_of` = `(call,
    /// batch or 0, head or 0)`: a bias broadcast over batch and heads
    /// (VAR's block-causal mask) is scanned once per call and thread, not
    /// once per head.
    classes: Vec<u8>,
    classes_of: Option<(u64, usize, usize)>,
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
    fn fit(&mut self, d: usize, dv: usize, skvp: usize, dvp: usize) {
        fn grow<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
            if v.len() < n {
                v.resize(n, zero);
            }
        }
        grow(&mut self.q, MQ / RQ * d, [0.0; RQ]);
        grow(&mut self.kt, skvp / NK * d, [0.0; NK]);
        grow(&mut self.v, skvp * dvp, 0.0);
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

/// Block classes of a bias: every element −∞ (the block is skipped), every
/// element 0 (nothing to add), anything else; `UNKNOWN` = not scanned yet.
const UNKNOWN: u8 = 0;
const SKIP: u8 = 1;
const ZERO: u8 = 2;
const MIXED: u8 = 3;

/// Numbers calls, so that a thread's packed K/V head is never taken for
/// another call's.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn next_call() -> u64 {
    CALLS.fetch_add(1, Ordering::Relaxed)
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
    let call = next_call();
    for u in 0..p.units() {
        run_unit(isa, p, call, u, &mut |idx, row| {
            let at = o.at(idx) as isize;
            for (c, &y) in row.iter().enumerate() {
                out.data[(at + c as isize * o.strides[3]) as usize] = y;
            }
        });
    }
}

/// Computes unit `u` of call number `call` and hands each output row
/// `[b, h, i, 0..v_head_dim]` to `store`. `isa` must be one of
/// [`Isa::available`].
fn run_unit(isa: Isa, p: &Problem, call: u64, u: usize, store: &mut dyn FnMut([usize; 4], &[f32])) {
    let (b, h, t) = p.unit(u);
    let i0 = t * MQ;
    let rows = MQ.min(p.sizes.s_q - i0);
    let dvp = p.sizes.v_head_dim.div_ceil(PAD) * PAD;
    let skvp = p.sizes.s_kv.div_ceil(NK) * NK;
    SCRATCH.with(|cell| {
        let mut sc = cell.borrow_mut();
        sc.fit(p.sizes.head_dim, p.sizes.v_head_dim, skvp, dvp);
        let at = Tile {
            call,
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
struct Tile {
    call: u64,
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

/// Block-row maxima with explicit vectors (the compiler does not
/// vectorise compare-select folds on its own).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NK;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn max_avx512(x: &[f32; NK]) -> f32 {
        let p = x.as_ptr();
        // SAFETY: the loads read elements 0..64 of `x`.
        unsafe {
            let a = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let b = _mm512_max_ps(_mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48)));
            _mm512_reduce_max_ps(_mm512_max_ps(a, b))
        }
    }

    /// Eight 8-lane vectors folded by `f` into one, then its lanes.
    #[target_feature(enable = "avx2")]
    fn fold8(x: &[f32; NK], f: impl Fn(__m256, __m256) -> __m256, g: fn(f32, f32) -> f32) -> f32 {
        let p = x.as_ptr();
        // SAFETY: the loads read elements 0..64 of `x`.
        let v = unsafe {
            let l = |i: usize| _mm256_loadu_ps(p.add(8 * i));
            let a = f(f(l(0), l(1)), f(l(2), l(3)));
            let b = f(f(l(4), l(5)), f(l(6), l(7)));
            f(a, b)
        };
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes[1..].iter().fold(lanes[0], |a, &b| g(a, b))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn max_avx2(x: &[f32; NK]) -> f32 {
        fold8(
            x,
            |a, b| _mm256_max_ps(a, b),
            |a, b| if b > a { b } else { a },
        )
    }
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

/// [`pv`] for the groups of `p` that `live` marks, for the panel `v` (all
/// `skvp` rows of it) and its accumulators `acc` (`MQ` rows), keys
/// `j0 .. j0+nk`.
#[inline(always)]
fn pv_panel<const K: u8, const R: usize, const W: usize>(
    p: &[[f32; NK]],
    live: &[bool],
    v: &[f32],
    (j0, nk): (usize, usize),
    acc: &mut [f32],
) {
    let (vr, _) = v.as_chunks::<W>();
    let vb = &vr[j0..j0 + nk];
    let (ar, _) = acc.as_chunks_mut::<W>();
    let groups = p.as_chunks::<R>().0.iter().zip(ar.as_chunks_mut::<R>().0);
    for ((pg, ag), _) in groups.zip(live).filter(|(_, l)| **l) {
        pv::<K, R, W>(pg, vb, ag);
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

/// Packs K/V head `hk` of batch `b` into `kt` and `v` (layouts in
/// [`Scratch`]).
#[inline(always)]
fn pack_kv<const K: u8>(
    p: &Problem,
    b: usize,
    hk: usize,
    skvp: usize,
    dvp: usize,
    kt: &mut [[f32; NK]],
    v: &mut [f32],
) {
    let z = p.sizes;
    let (d, dv) = (z.head_dim, z.v_head_dim);
    for (jb, blk) in kt[..skvp / NK * d].chunks_exact_mut(d.max(1)).enumerate() {
        for jj in 0..NK {
            let j = jb * NK + jj;
            if j >= z.s_kv {
                blk.iter_mut().for_each(|x| x[jj] = 0.0);
                continue;
            }
            let at = p.k.at([b, hk, j, 0]);
            if p.k.strides[3] == 1 {
                for (x, &y) in blk.iter_mut().zip(&p.k.data[at..][..d]) {
                    x[jj] = y;
                }
            } else {
                for (e, x) in blk.iter_mut().enumerate() {
                    x[jj] = p.k.data[(at as isize + e as isize * p.k.strides[3]) as usize];
                }
            }
        }
    }
    let mut c0 = 0;
    while c0 < dvp {
        let w = panel_width::<K>(dvp - c0);
        let cols = dv.saturating_sub(c0).min(w);
        for (j, row) in v[skvp * c0..][..skvp * w].chunks_exact_mut(w).enumerate() {
            if j < z.s_kv {
                let at = p.v.at([b, hk, j, 0]) as isize + c0 as isize * p.v.strides[3];
                gather(&mut row[..cols], p.v.data, at as usize, p.v.strides[3]);
                row[cols..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
        c0 += w;
    }
}

/// The class of the bias over rows `i0 .. i0+rows` and keys `j0 .. j0+nk`
/// of `[b, h]` (see [`SKIP`]).
fn classify(
    bias: &Operand,
    b: usize,
    h: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    nk: usize,
) -> u8 {
    let (mut all_inf, mut all_zero) = (true, true);
    let mut buf = [0f32; NK];
    for i in i0..i0 + rows {
        let row = row_of(bias, [b, h, i, j0], nk, &mut buf);
        // Counts rather than early exits, so that the scan vectorises.
        let (mut inf, mut zero) = (0u32, 0u32);
        for &x in row {
            inf += u32::from(x == f32::NEG_INFINITY);
            zero += u32::from(x == 0.0);
        }
        all_inf &= inf as usize == nk;
        all_zero &= zero as usize == nk;
        if !all_inf && !all_zero {
            return MIXED;
        }
    }
    if all_inf { SKIP } else { ZERO }
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
        kt,
        v,
        packed,
        classes,
        classes_of,
        s,
        acc,
        m,
        l,
        row_in,
        row_out,
        ..
    } = sc;
    if *packed != Some((at.call, b, hk)) {
        pack_kv::<K>(p, b, hk, skvp, dvp, kt, v);
        *packed = Some((at.call, b, hk));
    }
    for (g, qg) in q[..rows_p / RQ * d].chunks_exact_mut(d.max(1)).enumerate() {
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
    if let Some(bias) = &p.bias {
        let plane = (
            at.call,
            if bias.strides[0] == 0 { 0 } else { b },
            if bias.strides[1] == 0 { 0 } else { h },
        );
        if *classes_of != Some(plane) {
            classes.clear();
            classes.resize(z.s_q.div_ceil(RQ) * nblocks, UNKNOWN);
            *classes_of = Some(plane);
        }
    }
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
                Some(bias) => {
                    let slot = &mut classes[((i0 + r0) / RQ) * nblocks + jb];
                    if *slot == UNKNOWN {
                        *slot = classify(bias, b, h, i0 + r0, n, j0, nk);
                    }
                    *slot
                }
            };
        }
        let live = class.map(|c| c != SKIP);
        if !live.contains(&true) {
            continue;
        }
        let ktb = &kt[jb * d..][..d];
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
                    srow.fill(0.0);
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
                let alpha = online::<K>(srow, &mut m[r], &mut l[r]);
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
            let (vp, ap) = (&v[skvp * c0..][..skvp * w], &mut acc[MQ * c0..][..MQ * w]);
            let pr = &s[..rows_p];
            match w {
                64 => pv_panel::<K, RQ, 64>(pr, &live, vp, (j0, nk), ap),
                32 => pv_panel::<K, RQ, 32>(pr, &live, vp, (j0, nk), ap),
                _ => pv_panel::<K, RQ, PAD>(pr, &live, vp, (j0, nk), ap),
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

/// The argument block generated code passes to [`varc_attention`]: base
/// pointers of element `[0, 0, 0, 0]` of each operand (bias null when
/// absent), element strides `[batch, head, seq, dim]`, the sizes, and the
/// scale (an f32 value stored as f64). Every field is 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttentionArgs {
    pub q: *const f32,
    pub k: *const f32,
    pub v: *const f32,
    pub bias: *const f32,
    pub out: *mut f32,
    pub q_strides: [isize; 4],
    pub k_strides: [isize; 4],
    pub v_strides: [isize; 4],
    pub bias_strides: [isize; 4],
    pub out_strides: [isize; 4],
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub s_q: usize,
    pub s_kv: usize,
    pub head_dim: usize,
    pub v_head_dim: usize,
    /// Nonzero: causal masking with `causal_offset`.
    pub causal: usize,
    pub causal_offset: isize,
    pub scale: f64,
}

/// Byte offsets of [`AttentionArgs`]' fields, for code generators.
pub mod args_layout {
    /// q, k, v, bias, out pointers.
    pub const POINTERS: usize = 0;
    /// q, k, v, bias, out strides: 4 × 8 bytes each.
    pub const STRIDES: usize = 40;
    /// batch, q_heads, kv_heads, s_q, s_kv, head_dim, v_head_dim, causal,
    /// causal_offset.
    pub const SIZES: usize = STRIDES + 5 * 32;
    pub const SCALE: usize = SIZES + 9 * 8;
    pub const TOTAL: usize = SCALE + 8;
}

const _: () = assert!(std::mem::size_of::<AttentionArgs>() == args_layout::TOTAL);

/// Smallest `B·H·S_q·S_kv·(d + d_v)` split across the current pool.
const PAR_MIN_WORK: usize = 1 << 17;

/// `AttentionArgs` crossing into pool tasks.
#[derive(Clone, Copy)]
struct Shared(AttentionArgs);

impl Shared {
    /// (A method, so that closures capture the `Send` wrapper, not the
    /// pointer fields.)
    fn args(&self) -> AttentionArgs {
        self.0
    }
}

// SAFETY: the pointers are only dereferenced under `varc_attention`'s
// contract, which holds for the whole call; tasks read the inputs and
// write disjoint output rows (see `varc_attention`).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// A read-only slice covering every element of a view, and the origin's
/// offset in it.
///
/// # Safety
///
/// Every element of the view must lie in one live allocation of f32s.
unsafe fn covering<'a>(p: *const f32, ext: [usize; 4], strides: [isize; 4]) -> Operand<'a> {
    match span4(ext, strides) {
        // SAFETY: the caller guarantees the view's elements are in one
        // allocation; `lo..=hi` are the lowest and highest it touches.
        Some((lo, hi)) if !ext.contains(&0) => unsafe {
            Operand {
                data: std::slice::from_raw_parts(p.offset(lo), (hi - lo + 1) as usize),
                offset: (-lo) as usize,
                strides,
            }
        },
        _ => Operand {
            data: &[],
            offset: 0,
            strides,
        },
    }
}

/// The problem `args` describes, over slices covering its operands.
///
/// # Safety
///
/// As [`varc_attention`].
unsafe fn problem<'a>(a: &AttentionArgs) -> Problem<'a> {
    let (b, hq, hk) = (a.batch, a.q_heads, a.kv_heads);
    let (sq, skv, d, dv) = (a.s_q, a.s_kv, a.head_dim, a.v_head_dim);
    // SAFETY: the caller guarantees each operand's elements lie in one live
    // allocation.
    unsafe {
        Problem {
            q: covering(a.q, [b, hq, sq, d], a.q_strides),
            k: covering(a.k, [b, hk, skv, d], a.k_strides),
            v: covering(a.v, [b, hk, skv, dv], a.v_strides),
            bias: (!a.bias.is_null()).then(|| covering(a.bias, [b, hq, sq, skv], a.bias_strides)),
            sizes: Sizes {
                batch: b,
                q_heads: hq,
                kv_heads: hk,
                s_q: sq,
                s_kv: skv,
                head_dim: d,
                v_head_dim: dv,
            },
            scale: a.scale as f32,
            causal_offset: (a.causal != 0).then_some(a.causal_offset),
        }
    }
}

/// The C ABI entry generated code calls: attention as [`Problem`] describes,
/// written through `out`. With a current thread pool and enough work, the
/// `(batch, head, query tile)` units run as tasks; each output element is
/// computed by one task exactly as in a serial call (bit-identical results
/// for any thread count).
///
/// # Safety
///
/// `args` points to a valid [`AttentionArgs`]; every element of each
/// operand view lies in one live allocation of f32s (out writable, the
/// others readable); `out` does not overlap the inputs, and distinct output
/// indices address distinct elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_attention(args: *const AttentionArgs) {
    // SAFETY: the caller passes a valid argument block.
    let a = Shared(unsafe { *args });
    let args = a.args();
    // SAFETY: the caller's contract is `problem`'s.
    let whole = unsafe { problem(&args) };
    // (The slices cover the operands by construction: this refuses head
    // counts that do not divide.)
    if let Err(e) = whole.check() {
        panic!("{e}");
    }
    let units = whole.units();
    let work = [
        args.batch,
        args.q_heads,
        args.s_q,
        args.s_kv.max(1),
        (args.head_dim + args.v_head_dim).max(1),
    ]
    .iter()
    .fold(1usize, |w, &n| w.saturating_mul(n));
    let call = next_call();
    let run = move |u: usize| {
        let args = a.args();
        // SAFETY: as above; the slices live for this task only.
        let p = unsafe { problem(&args) };
        let (out, s) = (args.out, args.out_strides);
        run_unit(Isa::detect(), &p, call, u, &mut |idx, row| {
            let at: isize = idx.iter().zip(&s).map(|(&i, &st)| i as isize * st).sum();
            for (c, &y) in row.iter().enumerate() {
                // SAFETY: `[idx.., c]` is inside the output's extents, whose
                // elements lie in the caller's writable allocation; distinct
                // indices are distinct elements and each unit writes only
                // its own rows, so concurrent tasks never write the same
                // element, and `out` overlaps no input.
                unsafe { *out.offset(at + c as isize * s[3]) = y };
            }
        });
    };
    match crate::pool::current().filter(|_| work >= PAR_MIN_WORK && units > 1) {
        Some(pool) => pool.run(units, std::sync::Arc::new(run)),
        None => (0..units).for_each(run),
    }
}

#[cfg(test)]
mod tests;
