//! Fused scaled dot-product attention (flash-attention style) for the
//! kernels tagged `Library::Attention` in kernel IR.
//!
//! For each `(batch, head, tile of MQ query rows)` the key axis is walked in
//! blocks of `NK` keys: `S = scale·Q·Kᵀ + bias` for the block (a register-
//! tiled product of the packed Q rows and the packed `Kᵀ`), an online
//! softmax per row (running max `m` and sum `l`; when the max grows, the
//! row's accumulator and sum are rescaled by `exp(m_old − m_new)`), and
//! `acc += P·V` over the packed V. The `S_q × S_kv` score matrix never
//! exists. Per thread, the scratch (kept between calls) holds one tile's
//! Q rows, scores and accumulators (tens of KB) and one K/V head packed for
//! the block products (`S_kv·(d + d_v)` floats), packed once per head: the
//! units a thread takes in a row mostly share their head.
//!
//! Key blocks that no row of the tile can see are skipped: under the causal
//! limit everything past it, and blocks whose bias is −∞ for every row of
//! the tile (block-causal masks). Skipping is exact: such keys contribute
//! `exp(−∞) = 0`. Rows whose every score is −∞ give 0 (as the loop nest
//! that specifies the call does).
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
/// Query rows per tile (a multiple of `RB`).
const MQ: usize = 64;
/// Rows are padded to a multiple of this (the tallest register tile).
const RB: usize = 8;
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

/// Per-thread working memory, grown as needed and kept between calls.
#[derive(Default)]
struct Scratch {
    /// Packed Q rows, transposed: `head_dim × MQ`.
    q: Vec<f32>,
    /// `Kᵀ` of one K/V head, `head_dim × skvp` (`s_kv` rounded up to `NK`).
    kt: Vec<f32>,
    /// V of one K/V head, `skvp × dvp`.
    v: Vec<f32>,
    /// `(call, batch, K/V head)` that `kt` and `v` hold: consecutive units
    /// of a call mostly share a head, so each thread packs a head once.
    packed: Option<(u64, usize, usize)>,
    /// Scores, then probabilities, `MQ × NK`.
    s: Vec<f32>,
    /// Output accumulators, `MQ × dvp`.
    acc: Vec<f32>,
    /// Running max and sum per row (`MQ`).
    m: Vec<f32>,
    l: Vec<f32>,
}

impl Scratch {
    fn fit(&mut self, d: usize, skvp: usize, dvp: usize) {
        let grow = |v: &mut Vec<f32>, n: usize| {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        };
        grow(&mut self.q, MQ * d);
        grow(&mut self.kt, d * skvp);
        grow(&mut self.v, skvp * dvp);
        grow(&mut self.s, MQ * NK);
        grow(&mut self.acc, MQ * dvp);
        grow(&mut self.m, MQ);
        grow(&mut self.l, MQ);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

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
    let dv = p.sizes.v_head_dim;
    let dvp = dv.div_ceil(PAD) * PAD;
    let skvp = p.sizes.s_kv.div_ceil(NK) * NK;
    SCRATCH.with(|cell| {
        let mut sc = cell.borrow_mut();
        sc.fit(p.sizes.head_dim, skvp, dvp);
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
            Isa::Avx512 => unsafe { tile_avx512(p, &at, &mut sc) },
            // SAFETY: as above, for AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { tile_avx2(p, &at, &mut sc) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => tile::<FMA>(p, &at, &mut sc),
            _ => tile::<PLAIN>(p, &at, &mut sc),
        }
        let Scratch { acc, m, l, .. } = &mut *sc;
        for r in 0..rows {
            let row = &mut acc[r * dvp..][..dv];
            for y in row.iter_mut() {
                *y = if m[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    *y / l[r]
                };
            }
            store([b, h, i0 + r, 0], row);
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tile_avx512(p: &Problem, at: &Tile, sc: &mut Scratch) {
    tile::<AVX512>(p, at, sc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2(p: &Problem, at: &Tile, sc: &mut Scratch) {
    tile::<AVX2>(p, at, sc)
}

#[inline(always)]
fn madd<const K: u8>(a: f32, b: f32, c: f32) -> f32 {
    if K == PLAIN {
        a * b + c
    } else {
        a.mul_add(b, c)
    }
}

/// `exp(x)` in f32: Cody–Waite reduction by ln 2, Cephes' degree-6
/// polynomial, `2ⁿ` built in the exponent bits; branch-free so loops over
/// it vectorise. Below ln 2⁻¹²⁶ it returns 0 (so `exp(−∞) = 0` exactly, as
/// masked keys need), NaN stays NaN, and arguments are capped at 88.
#[inline(always)]
fn exp<const K: u8>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = if x > 88.0 { 88.0 } else { x };
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

/// `c[r][col0 .. col0+W] (+)= Σ_p a(r, p)·b[p][col0 .. col0+W]` for the
/// rows `0..rows` (a multiple of `R`); `R × W` accumulators stay in
/// registers across the depth loop. `a` reads the left operand wherever
/// it lies (callers index fixed-width rows, so each step needs one base
/// register, not one per row).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn mm_cols<const K: u8, const R: usize, const W: usize>(
    c: &mut [f32],
    ldc: usize,
    a: impl Fn(usize, usize) -> f32,
    b: &[f32],
    ldb: usize,
    rows: usize,
    col0: usize,
    depth: usize,
    accumulate: bool,
) {
    for r0 in (0..rows).step_by(R) {
        let mut acc = [[0f32; W]; R];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(&c[(r0 + r) * ldc + col0..][..W]);
            }
        }
        for p in 0..depth {
            let bp: &[f32; W] = b[p * ldb + col0..][..W].try_into().expect("a W-wide row");
            for (r, row) in acc.iter_mut().enumerate() {
                let x = a(r0 + r, p);
                for (acc, &y) in row.iter_mut().zip(bp) {
                    *acc = madd::<K>(x, y, *acc);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            c[(r0 + r) * ldc + col0..][..W].copy_from_slice(row);
        }
    }
}

/// [`mm_cols`] over `cols` columns (a multiple of `PAD`) and `rows` rows
/// (a multiple of `RB`), with about 16 vector accumulators per pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn mm<const K: u8>(
    c: &mut [f32],
    ldc: usize,
    a: impl Fn(usize, usize) -> f32 + Copy,
    b: &[f32],
    ldb: usize,
    rows: usize,
    cols: usize,
    depth: usize,
    accumulate: bool,
) {
    let mut col = 0;
    while col + 64 <= cols {
        mm_cols::<K, 4, 64>(c, ldc, a, b, ldb, rows, col, depth, accumulate);
        col += 64;
    }
    if col + 32 <= cols {
        mm_cols::<K, 8, 32>(c, ldc, a, b, ldb, rows, col, depth, accumulate);
        col += 32;
    }
    if col < cols {
        mm_cols::<K, 8, PAD>(c, ldc, a, b, ldb, rows, col, depth, accumulate);
    }
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

/// The sum of a block row.
#[inline(always)]
fn sum<const K: u8>(x: &[f32; NK]) -> f32 {
    match K {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        AVX512 => unsafe { x86::sum_avx512(x) },
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        AVX2 => unsafe { x86::sum_avx2(x) },
        _ => lanes(x, 0.0, |a, b| a + b),
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

/// Block-row reductions with explicit vectors (the compiler does not
/// vectorise compare-select or float-sum folds on its own).
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

    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_avx512(x: &[f32; NK]) -> f32 {
        let p = x.as_ptr();
        // SAFETY: the loads read elements 0..64 of `x`.
        unsafe {
            let a = _mm512_add_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let b = _mm512_add_ps(_mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48)));
            _mm512_reduce_add_ps(_mm512_add_ps(a, b))
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

    #[target_feature(enable = "avx2")]
    pub(super) fn sum_avx2(x: &[f32; NK]) -> f32 {
        fold8(x, |a, b| _mm256_add_ps(a, b), |a, b| a + b)
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

/// One tile: leaves the row maxima in `sc.m`, the sums in `sc.l` and the
/// unnormalised outputs in `sc.acc` (`rows × dvp`).
#[inline(always)]
fn tile<const K: u8>(p: &Problem, at: &Tile, sc: &mut Scratch) {
    let z = p.sizes;
    let (d, dv, dvp, skvp) = (z.head_dim, z.v_head_dim, at.dvp, at.skvp);
    let (b, h, i0, rows) = (at.b, at.h, at.i0, at.rows);
    let hk = h / p.group();
    let rows_p = rows.div_ceil(RB) * RB;
    let Scratch {
        q: qt,
        kt,
        v: vb,
        packed,
        s,
        acc,
        m,
        l,
    } = sc;
    if *packed != Some((at.call, b, hk)) {
        for j in 0..z.s_kv {
            let at = p.k.at([b, hk, j, 0]) as isize;
            for e in 0..d {
                kt[e * skvp + j] = p.k.data[(at + e as isize * p.k.strides[3]) as usize];
            }
            let row = &mut vb[j * dvp..][..dvp];
            gather(
                &mut row[..dv],
                p.v.data,
                p.v.at([b, hk, j, 0]),
                p.v.strides[3],
            );
            row[dv..].fill(0.0);
        }
        *packed = Some((at.call, b, hk));
    }
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);
    acc[..rows_p * dvp].fill(0.0);
    // Q transposed (`d × MQ`): a step of the score product reads a few
    // consecutive rows at one depth.
    for r in 0..rows_p {
        let at = p.q.at([b, h, i0 + r.min(rows - 1), 0]) as isize;
        for e in 0..d {
            qt[e * MQ + r] = if r < rows {
                p.q.data[(at + e as isize * p.q.strides[3]) as usize]
            } else {
                0.0
            };
        }
    }
    let (qt, _) = qt.as_chunks::<MQ>();
    let last_row = (i0 + rows - 1) as isize;
    for j0 in (0..z.s_kv).step_by(NK) {
        let nk = NK.min(z.s_kv - j0);
        // Keys the causal limit hides from every row, and all later ones.
        if p.causal_offset.is_some_and(|o| j0 as isize > last_row + o) {
            break;
        }
        if let Some(bias) = &p.bias
            && (0..rows).all(|r| {
                let mut row = [f32::NEG_INFINITY; NK];
                let at = bias.at([b, h, i0 + r, j0]);
                gather(&mut row[..nk], bias.data, at, bias.strides[3]);
                max::<K>(&row) == f32::NEG_INFINITY
            })
        {
            continue;
        }
        // Scores for `nkp` columns (columns past `nk` read the padding of
        // `kt`); every column past `nk` is set to −∞ below.
        let nkp = nk.div_ceil(PAD) * PAD;
        mm::<K>(
            s,
            NK,
            |r, e| qt[e][r],
            &kt[j0..],
            skvp,
            rows_p,
            nkp,
            d,
            false,
        );
        for r in 0..rows_p {
            let srow: &mut [f32; NK] = (&mut s[r * NK..][..NK]).try_into().expect("NK");
            if r >= rows {
                srow.fill(0.0);
                continue;
            }
            let i = i0 + r;
            let visible = match p.causal_offset {
                Some(o) => (i as isize + o + 1 - j0 as isize).clamp(0, nk as isize) as usize,
                None => nk,
            };
            for x in srow.iter_mut() {
                *x *= p.scale;
            }
            if let Some(bias) = &p.bias {
                let at = bias.at([b, h, i, j0]);
                let mut add = [0f32; NK];
                let add: &[f32] = if bias.strides[3] == 1 {
                    &bias.data[at..at + nk]
                } else {
                    gather(&mut add[..nk], bias.data, at, bias.strides[3]);
                    &add[..nk]
                };
                for (x, a) in srow.iter_mut().zip(add) {
                    *x += a;
                }
            }
            srow[visible..].fill(f32::NEG_INFINITY);
            let block_max = max::<K>(srow);
            let m_new = if block_max > m[r] { block_max } else { m[r] };
            if m_new == f32::NEG_INFINITY {
                srow.fill(0.0);
                continue;
            }
            for x in &mut srow[..nkp] {
                *x = exp::<K>(*x - m_new);
            }
            srow[nkp..].fill(0.0);
            let sum = sum::<K>(srow);
            let alpha = exp::<K>(m[r] - m_new);
            if alpha != 1.0 {
                for a in &mut acc[r * dvp..][..dvp] {
                    *a *= alpha;
                }
            }
            l[r] = madd::<K>(l[r], alpha, sum);
            m[r] = m_new;
        }
        let (pr, _) = s.as_chunks::<NK>();
        mm::<K>(
            acc,
            dvp,
            |r, j| pr[r][j],
            &vb[j0 * dvp..],
            dvp,
            rows_p,
            dvp,
            nk,
            true,
        );
    }
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
