//! f32 matrix-multiply microkernels (IREE-style "ukernels").
//!
//! Cranelift emits 128-bit vectors only, so generated code calls
//! [`varc_sgemm`] for the inner matrix product of contraction kernels on
//! the host (JIT). The entry takes general element strides for every
//! operand, so one function serves MatMul on any view (transposed
//! operands, broadcast batch dims through the caller's batch loop), Gemm,
//! attention's `Q·Kᵀ` and `P·V`, and 1×1 convolutions:
//!
//! `C[i, j] = (accumulate ? C[i, j] : 0) + Σ_p A[i, p] · B[p, j]`
//!
//! with `X[r, c]` at `x + r·rs_x + c·cs_x`.
//!
//! Structure (Goto/BLIS, [`blocks`]): the `n` axis is cut into column
//! blocks, `k` into depth blocks (B block packed into `nr`-wide slivers),
//! `m` into row blocks (A block packed into `mr`-tall slivers); the
//! microkernel multiplies the valid rows of one A sliver by one B sliver
//! in registers and adds the tile to C. The tile is chosen once per
//! process from the CPU's features ([`Isa::detect`]): AVX-512F 12×32,
//! AVX2+FMA 6×16, NEON 8×8, or portable 4×8. Row tails run a tile of
//! exactly the remaining rows, and products of at most [`SMALL_ROWS`]
//! rows (GEMV-like) read A in place with a wider tile where the ISA has
//! one.
//!
//! Constant B operands (weights) are packed once into a [`PackedB`] and
//! multiplied through [`varc_sgemm_packed`], which packs nothing but the
//! (small) A blocks.
//!
//! Every element of C is the same chain of operations whichever path,
//! tile or thread computes it: a fused multiply-add chain over each depth
//! block from zero, added to C block after block. So results do not
//! depend on the thread count or on how the work is cut.
//!
//! [`attention`] is the fused attention microkernel (flash-attention
//! style, [`varc_attention`]) for kernels tagged `Library::Attention`.
//!
//! [`conv`] is the 2-D convolution microkernel ([`varc_conv2d`]): the same
//! block loops with B the implicit im2col matrix, packed straight from the
//! input image.

pub mod activation;
pub mod attention;
mod blocks;
pub mod conv;
mod generic;
#[cfg(target_arch = "aarch64")]
mod neon;
mod pack;
mod packed;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use attention::varc_attention;
pub use blocks::Blocking;
pub use conv::varc_conv2d;
pub use packed::PackedB;
use std::sync::OnceLock;

/// A read-only strided matrix view: element `(r, c)` is
/// `data[offset + r·rs + c·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

/// A writable strided matrix view (see [`MatRef`]).
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

/// The smallest and largest offsets (relative to the origin) a `rows ×
/// cols` view with strides `rs`, `cs` touches; `None` when it is empty.
pub fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(isize, isize)> {
    if rows == 0 || cols == 0 {
        return None;
    }
    let (r, c) = ((rows - 1) as isize, (cols - 1) as isize);
    let mut lo = 0isize;
    let mut hi = 0isize;
    for t in [r.checked_mul(rs)?, c.checked_mul(cs)?] {
        if t < 0 {
            lo = lo.checked_add(t)?;
        } else {
            hi = hi.checked_add(t)?;
        }
    }
    Some((lo, hi))
}

fn fits(len: usize, offset: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    match span(rows, cols, rs, cs) {
        None => true,
        Some((lo, hi)) => {
            let o = offset as isize;
            o.checked_add(lo).is_some_and(|l| l >= 0)
                && o.checked_add(hi).is_some_and(|h| (h as usize) < len)
        }
    }
}

/// Distinct `(r, c)` of a `rows × cols` view are distinct elements: the
/// axis with the larger stride steps past the whole span of the other.
fn injective(rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let (big, big_n, small, small_n) = if rs.unsigned_abs() >= cs.unsigned_abs() {
        (rs, rows, cs, cols)
    } else {
        (cs, cols, rs, rows)
    };
    let inner = small_n <= 1 || small != 0;
    let outer = big_n <= 1
        || (small_n - 1)
            .checked_mul(small.unsigned_abs())
            .is_some_and(|span| big.unsigned_abs() > span);
    inner && outer
}

/// Distinct indices of a view with these `(extent, stride)` axes are
/// distinct elements: sorted by stride magnitude, each axis steps past the
/// whole span of the axes below it. (Sufficient, not necessary: views it
/// refuses run serially or are refused.)
fn injective_axes(axes: &[(usize, isize)]) -> bool {
    if axes.iter().any(|&(n, _)| n == 0) {
        return true;
    }
    let mut v: Vec<(usize, usize)> = axes
        .iter()
        .filter(|&&(n, _)| n > 1)
        .map(|&(n, s)| (n, s.unsigned_abs()))
        .collect();
    v.sort_by_key(|&(_, s)| s);
    let mut below = 0usize;
    for (n, s) in v {
        if s == 0 || s <= below {
            return false;
        }
        let Some(b) = (n - 1).checked_mul(s).and_then(|t| t.checked_add(below)) else {
            return false;
        };
        below = b;
    }
    true
}

/// The instruction set the microkernels use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Neon,
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports (detected once).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    return Isa::Avx2Fma;
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                if std::arch::is_aarch64_feature_detected!("neon") {
                    return Isa::Neon;
                }
            }
            Isa::Portable
        })
    }

    /// Every instruction set usable on this machine (for tests).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        let mut v = vec![best];
        #[cfg(target_arch = "x86_64")]
        if best == Isa::Avx512
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
        {
            v.push(Isa::Avx2Fma);
        }
        if best != Isa::Portable {
            v.push(Isa::Portable);
        }
        v
    }

    /// `self` when this machine supports it, else the portable tile.
    fn usable(self) -> Isa {
        if Isa::available().contains(&self) {
            self
        } else {
            Isa::Portable
        }
    }

    fn tile(self) -> Tile {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::AVX512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => x86::AVX2,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::NEON,
            _ => generic::PORTABLE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512f 12x32",
            Isa::Avx2Fma => "avx2+fma 6x16",
            Isa::Neon => "neon 8x8",
            Isa::Portable => "portable 4x8",
        }
    }
}

/// Products with at most this many rows take the tile's small path (A
/// read in place) when it has one.
pub const SMALL_ROWS: usize = 4;

/// C as the tiles see it: `len` f32s from `ptr`. Raw rather than a
/// `&mut [f32]` so that tasks of one product may hold overlapping spans
/// (column blocks of a row-major C) while writing disjoint elements.
#[derive(Clone, Copy, Debug)]
struct COut {
    ptr: *mut f32,
    len: usize,
}

/// The multiply of one tile: `run(kc, a, b, c, at)` multiplies the first
/// `at.rows` rows of the packed A sliver `a` (`a[p·mr + i]`) by the
/// packed B sliver `b` (`b[p·nr + j]`), `kc` steps, and adds (or, without
/// `at.accumulate`, stores) the `at.rows × at.cols` valid corner into C.
/// The tile checks that corner lies inside `c` before writing.
type RunFn = fn(usize, &[f32], &[f32], COut, &At);

/// The small-product multiply: `small(kc, a, b, c, at)` reads
/// `at.rows ≤ SMALL_ROWS` rows of A in place (`a` positioned at the depth
/// block), multiplies them by `width / nr` consecutive packed B slivers
/// (`b`, `width·kc` floats), and adds or stores `at.rows × at.cols` into C.
type SmallFn = fn(usize, &MatRef, &[f32], COut, &At);

/// The multiply of one tile with B read straight from a convolution's
/// image: `direct(kc, a, x, taps, bases, c, at)` is `run` with B's
/// sliver row `p` being, for each vector `v` of [`pack::DIRECT_VEC`]
/// columns, the floats `x[bases[v] + taps[p]..][..DIRECT_VEC]` (a tile
/// with a direct multiply has `nr = 2·DIRECT_VEC`). The tile checks every
/// read against `x` through [`pack::Taps::fits`].
type DirectFn = fn(usize, &[f32], &[f32], &pack::Taps, [isize; 2], COut, &At);

/// The small-product multiply with B read from the image in place:
/// `SmallFn` with the `width = 4·DIRECT_VEC` columns' B rows read as
/// [`DirectFn`] reads them (`bases[v]` for vector `v`).
type SmallDirectFn = fn(usize, &MatRef, &[f32], &pack::Taps, [isize; 4], COut, &At);

/// One microkernel family: an `mr × nr` register tile over packed slivers,
/// and optionally a small-product tile `width` columns wide.
#[derive(Clone, Copy)]
struct Tile {
    mr: usize,
    nr: usize,
    run: RunFn,
    small: Option<(usize, SmallFn)>,
    /// The tile reading B from a convolution's image in place (no packed
    /// B panel), when the family has one.
    direct: Option<DirectFn>,
    /// The small tile reading B from the image in place.
    small_direct: Option<SmallDirectFn>,
}

impl Tile {
    /// Packed B is zero-padded to a multiple of this many columns, so
    /// every tile (the small one too) reads whole slivers.
    fn group(&self) -> usize {
        self.small.map_or(self.nr, |(w, _)| w)
    }
}

/// Where a tile lands in C.
struct At {
    offset: usize,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
    accumulate: bool,
}

impl At {
    /// Checks the tile's valid corner lies inside `c`.
    fn check(&self, c: COut) {
        assert!(
            fits(c.len, self.offset, self.rows, self.cols, self.rs, self.cs),
            "sgemm tile outside C"
        );
    }
}

/// `C = (accumulate ? C : 0) + A·B` with `A: m × k`, `B: k × n`,
/// `C: m × n`, using the best microkernel of this machine.
///
/// Panics when a view does not fit its slice, or when two `(i, j)` of C's
/// view are the same element.
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: MatMut, accumulate: bool) {
    sgemm_with(Isa::detect(), m, n, k, a, b, c, accumulate);
}

/// [`sgemm`] with a given instruction set (must be one of
/// [`Isa::available`]; others fall back to the portable tile).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    let bl = Blocking::for_shape(isa.usable(), m, n, k);
    sgemm_blocked(isa, &bl, m, n, k, a, b, c, accumulate);
}

/// [`sgemm_with`] with explicit block sizes (for tuning; see
/// [`Blocking::for_shape`] for the defaults).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_blocked(
    isa: Isa,
    bl: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    assert!(
        fits(b.data.len(), b.offset, k, n, b.rs, b.cs),
        "sgemm: B outside its slice"
    );
    let tile = isa.usable().tile();
    gemm_checked(
        tile,
        bl,
        m,
        n,
        k,
        &a,
        blocks::BSrc::Strided(&b),
        c,
        accumulate,
    );
}

/// `C = (accumulate ? C : 0) + A·B` with B packed ahead ([`PackedB`]):
/// `A: m × b.k()`, `C: m × b.n()`. Uses the instruction set B was packed
/// for.
///
/// Panics when a view does not fit its slice.
pub fn sgemm_packed(m: usize, a: MatRef, b: &PackedB, c: MatMut, accumulate: bool) {
    sgemm_packed_bias(m, a, b, None, c, accumulate);
}

/// [`sgemm_packed`] plus `bias[j]` on every element of column `j`: `C =
/// (accumulate ? C : 0) + A·B + bias`, the bias added to each tile once
/// its product is complete (so `A·B + bias` rounds as a separate pass
/// adding the bias to the finished product would).
///
/// Panics when a view does not fit its slice or `bias` has fewer than
/// `b.n()` values.
pub fn sgemm_packed_bias(
    m: usize,
    a: MatRef,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: MatMut,
    accumulate: bool,
) {
    let tile = b.isa().tile();
    let bl = b.blocking(m);
    if let Some(bias) = bias {
        assert!(bias.len() >= b.n(), "sgemm: bias shorter than B's columns");
    }
    gemm_checked(
        tile,
        &bl,
        m,
        b.n(),
        b.k(),
        &a,
        blocks::BSrc::Packed { b, j0: 0, bias },
        c,
        accumulate,
    );
}

/// [`sgemm_packed`] with explicit block sizes (for tuning; the depth
/// block is always the one B was packed with).
pub fn sgemm_packed_blocked(
    bl: &Blocking,
    m: usize,
    a: MatRef,
    b: &PackedB,
    c: MatMut,
    accumulate: bool,
) {
    let tile = b.isa().tile();
    let bl = Blocking { kc: b.kc(), ..*bl };
    gemm_checked(
        tile,
        &bl,
        m,
        b.n(),
        b.k(),
        &a,
        blocks::BSrc::Packed {
            b,
            j0: 0,
            bias: None,
        },
        c,
        accumulate,
    );
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    tile: Tile,
    bl: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef,
    b: blocks::BSrc,
    c: MatMut,
    accumulate: bool,
) {
    assert!(
        fits(a.data.len(), a.offset, m, k, a.rs, a.cs),
        "sgemm: A outside its slice"
    );
    assert!(
        fits(c.data.len(), c.offset, m, n, c.rs, c.cs),
        "sgemm: C outside its slice"
    );
    assert!(
        injective(m, n, c.rs, c.cs),
        "sgemm: C's view is not injective"
    );
    let out = COut {
        ptr: c.data.as_mut_ptr(),
        len: c.data.len(),
    };
    // The `&mut` borrow of `c.data` outlives the call, so `out` is the
    // only access to C meanwhile.
    blocks::gemm(
        tile,
        bl,
        m,
        n,
        k,
        a,
        b,
        blocks::CView {
            out,
            offset: c.offset,
            rs: c.rs,
            cs: c.cs,
        },
        accumulate,
    );
}

/// Smallest `m·n·k` the C ABI entries split across the current thread pool.
const PAR_MIN_WORK: usize = 1 << 17;

/// B as the C ABI entries receive it.
#[derive(Clone, Copy)]
enum RawB {
    Strided {
        ptr: usize,
        rs: isize,
        cs: isize,
    },
    /// Address of a live [`PackedB`], and of `n` column biases (product
    /// column 0 first) or 0.
    Packed {
        b: usize,
        bias: usize,
    },
    /// The im2col matrix of a convolution's image.
    Im2col(conv::RawIm2col),
}

/// One C ABI product, before any split.
#[derive(Clone, Copy)]
struct RawGemm {
    m: usize,
    n: usize,
    k: usize,
    a: usize,
    rs_a: isize,
    cs_a: isize,
    b: RawB,
    c: usize,
    rs_c: isize,
    cs_c: isize,
    accumulate: bool,
}

impl RawGemm {
    /// Product `i` of `batch`: B and C moved by `i` steps (a packed B is
    /// shared).
    fn image(mut self, batch: &Batch, i: usize) -> RawGemm {
        let i = i as isize;
        let step = |p: usize, s: isize| (p as *const f32).wrapping_offset(i * s) as usize;
        self.b = match self.b {
            RawB::Strided { ptr, rs, cs } => RawB::Strided {
                ptr: step(ptr, batch.b_step),
                rs,
                cs,
            },
            RawB::Packed { b, bias } => RawB::Packed { b, bias },
            RawB::Im2col(x) => RawB::Im2col(conv::RawIm2col {
                ptr: step(x.ptr, batch.b_step),
                ..x
            }),
        };
        self.c = step(self.c, batch.c_step);
        self
    }
}

/// `count` products that differ only in where B and C start: product `i`
/// reads B at `b + i·b_step` and writes C at `c + i·c_step` (elements).
#[derive(Clone, Copy)]
struct Batch {
    count: usize,
    b_step: isize,
    c_step: isize,
}

impl Batch {
    const ONE: Batch = Batch {
        count: 1,
        b_step: 0,
        c_step: 0,
    };
}

/// The C ABI entry generated code calls:
/// `C = (accumulate != 0 ? C : 0) + A·B`, `A: m × k`, `B: k × n`, `C: m × n`,
/// element `(r, c)` of X at `x + r·rs_x + c·cs_x` (element strides, any sign).
///
/// When a thread pool is current ([`crate::pool::current`]) and the product
/// is large, C is cut into blocks of rows or of columns run as separate
/// tasks. Each element of C is still computed with the same sequence of
/// operations as in a serial call, so the result is bit-identical for any
/// thread count.
///
/// # Safety
///
/// Every element of each view must lie in one live allocation of f32s
/// (A and B readable, C writable), C must not overlap A or B, and distinct
/// `(r, c)` of C must be distinct elements.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn varc_sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rs_a: isize,
    cs_a: isize,
    b: *const f32,
    rs_b: isize,
    cs_b: isize,
    c: *mut f32,
    rs_c: isize,
    cs_c: isize,
    accumulate: u32,
) {
    let g = RawGemm {
        m,
        n,
        k,
        a: a as usize,
        rs_a,
        cs_a,
        b: RawB::Strided {
            ptr: b as usize,
            rs: rs_b,
            cs: cs_b,
        },
        c: c as usize,
        rs_c,
        cs_c,
        accumulate: accumulate != 0,
    };
    // SAFETY: the caller's contract is `run_raw`'s.
    unsafe { run_raw(g) }
}

/// [`varc_sgemm`] with B packed ahead: `C = (accumulate != 0 ? C : 0) +
/// A·B (+ bias)`, `A: m × k`, `C: m × n` where `k`, `n` are B's (the
/// instruction set is the one B was packed for); a non-null `bias` holds
/// `n` values, `bias[j]` added to column `j` as in [`sgemm_packed_bias`].
///
/// # Safety
///
/// `b` must point to a live [`PackedB`]; `bias` is null or `n` readable
/// f32s not overlapping C; A and C as in [`varc_sgemm`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn varc_sgemm_packed(
    m: usize,
    a: *const f32,
    rs_a: isize,
    cs_a: isize,
    b: *const PackedB,
    c: *mut f32,
    rs_c: isize,
    cs_c: isize,
    accumulate: u32,
    bias: *const f32,
) {
    // SAFETY: the caller passes a live PackedB.
    let pb = unsafe { &*b };
    let g = RawGemm {
        m,
        n: pb.n(),
        k: pb.k(),
        a: a as usize,
        rs_a,
        cs_a,
        b: RawB::Packed {
            b: b as usize,
            bias: bias as usize,
        },
        c: c as usize,
        rs_c,
        cs_c,
        accumulate: accumulate != 0,
    };
    // SAFETY: the caller's contract is `run_raw`'s.
    unsafe { run_raw(g) }
}

/// Runs `g`, split into row or column blocks on the current pool when it
/// is large.
///
/// # Safety
///
/// As [`varc_sgemm`] (a packed B must be live).
unsafe fn run_raw(g: RawGemm) {
    // SAFETY: the caller's contract.
    unsafe { run_batch(g, Batch::ONE) }
}

/// Runs the products of `batch` ([`RawGemm::image`]), each split into the
/// same row or column blocks on the current pool when the work is large;
/// a task runs its block of every product.
///
/// # Safety
///
/// As [`varc_sgemm`] for every product of the batch (a packed B must be
/// live), and C of distinct products must not overlap A or B of any.
unsafe fn run_batch(g: RawGemm, batch: Batch) {
    let tile = match g.b {
        // SAFETY: the caller passes a live PackedB.
        RawB::Packed { b, .. } => unsafe { &*(b as *const PackedB) }.isa().tile(),
        RawB::Strided { .. } | RawB::Im2col(_) => Isa::detect().tile(),
    };
    // Cut the axis with more tiles: column blocks share A (small when m
    // is small) and halve the B each task streams.
    let (row_units, col_units) = (g.m.div_ceil(tile.mr), g.n.div_ceil(tile.group()));
    let by_rows = row_units > col_units;
    let align = if by_rows { tile.mr } else { tile.group() };
    let pool = parallel_pool(&g, &batch);
    // SAFETY: the caller's contract.
    unsafe { run_cut(g, batch, pool.as_deref(), by_rows, align) }
}

/// The current pool, when the products of `batch` are worth splitting
/// and their C views injective (so tasks write disjoint elements).
fn parallel_pool(g: &RawGemm, batch: &Batch) -> Option<std::sync::Arc<crate::pool::ThreadPool>> {
    let work = [g.m, g.n, g.k, batch.count]
        .iter()
        .fold(1usize, |w, &x| w.saturating_mul(x));
    crate::pool::current()
        .filter(|_| work >= PAR_MIN_WORK)
        .filter(|_| injective_axes(&[(g.m, g.rs_c), (g.n, g.cs_c), (batch.count, batch.c_step)]))
}

/// Runs the products of `batch` ([`RawGemm::image`]), each cut into the
/// same blocks of rows (`by_rows`) or columns, `align` wide, one task per
/// block on `pool`; a task runs its block of every product. Serial
/// without a pool or with one block.
///
/// # Safety
///
/// As [`run_batch`]; `pool` is one [`parallel_pool`] returned.
unsafe fn run_cut(
    g: RawGemm,
    batch: Batch,
    pool: Option<&crate::pool::ThreadPool>,
    by_rows: bool,
    align: usize,
) {
    let outer = if by_rows { g.m } else { g.n };
    let tasks = pool.map_or(1, |p| crate::pool::range_count(outer, p.threads(), align));
    let (Some(pool), true) = (pool, tasks > 1) else {
        for i in 0..batch.count {
            // SAFETY: the caller's contract, product `i`.
            unsafe { run_part(g.image(&batch, i), 0, g.m, 0, g.n) };
        }
        return;
    };
    pool.run(
        tasks,
        std::sync::Arc::new(move |t| {
            let (lo, hi) = crate::pool::range(outer, tasks, align, t);
            for i in 0..batch.count {
                let g = g.image(&batch, i);
                // SAFETY: the part is a block of rows (columns) of the
                // caller's product `i`, inside its views. Tasks write
                // disjoint elements of C (distinct `(i, r, c)` are distinct
                // elements by the caller's contract, checked by
                // `injective_axes` in `parallel_pool`) through raw pointers
                // only; A, B and a bias are only read. The caller's
                // pointers outlive `pool.run`, which returns only when
                // every task has finished.
                unsafe {
                    if by_rows {
                        run_part(g, lo, hi, 0, g.n)
                    } else {
                        run_part(g, 0, g.m, lo, hi)
                    }
                }
            }
        }),
    );
}

/// Rows `i0..i1`, columns `j0..j1` of `g` on the calling thread.
///
/// # Safety
///
/// As [`varc_sgemm`]; other threads may concurrently write other elements
/// of C.
unsafe fn run_part(g: RawGemm, i0: usize, i1: usize, j0: usize, j1: usize) {
    let (m, n, k) = (i1 - i0, j1 - j0, g.k);
    let Some((clo, chi)) = span(m, n, g.rs_c, g.cs_c) else {
        return;
    };
    const EMPTY: &[f32] = &[];
    // SAFETY: the caller guarantees every element of each view lies in one
    // live allocation; `span` gives the lowest and highest offsets the
    // part touches, so each slice covers exactly that range. A and B are
    // never written during the call (C does not overlap them).
    let view = |p: *const f32, r, cc, rs, cs| unsafe {
        match span(r, cc, rs, cs) {
            Some((lo, hi)) => (
                std::slice::from_raw_parts(p.offset(lo), (hi - lo + 1) as usize),
                (-lo) as usize,
            ),
            None => (EMPTY, 0),
        }
    };
    // SAFETY: offsets of the part's origin inside the caller's views.
    let a0 = unsafe { (g.a as *const f32).offset(i0 as isize * g.rs_a) };
    let c0 = unsafe {
        (g.c as *mut f32)
            .offset(i0 as isize * g.rs_c)
            .offset(j0 as isize * g.cs_c)
    };
    let (ad, ao) = view(a0, m, k, g.rs_a, g.cs_a);
    let a = MatRef {
        data: ad,
        offset: ao,
        rs: g.rs_a,
        cs: g.cs_a,
    };
    let c = blocks::CView {
        // SAFETY: `clo..=chi` is the part's span of C (see above).
        out: COut {
            ptr: unsafe { c0.offset(clo) },
            len: (chi - clo + 1) as usize,
        },
        offset: (-clo) as usize,
        rs: g.rs_c,
        cs: g.cs_c,
    };
    match g.b {
        RawB::Strided { ptr, rs, cs } => {
            // SAFETY: the part's columns of the caller's B view.
            let b0 = unsafe { (ptr as *const f32).offset(j0 as isize * cs) };
            let (bd, bo) = view(b0, k, n, rs, cs);
            let b = MatRef {
                data: bd,
                offset: bo,
                rs,
                cs,
            };
            let isa = Isa::detect();
            let bl = Blocking::for_shape(isa, g.m, g.n, k);
            blocks::gemm(
                isa.tile(),
                &bl,
                m,
                n,
                k,
                &a,
                blocks::BSrc::Strided(&b),
                c,
                g.accumulate,
            );
        }
        RawB::Im2col(x) => {
            // SAFETY: the caller guarantees the image's elements lie in one
            // live allocation, not written during the call.
            let image = unsafe { x.view() };
            // SAFETY: the caller passes a live PackedB or none.
            let packed_a = unsafe { x.packed_a() }.map(|p| (p, i0));
            // SAFETY: the caller passes a readable bias for every channel
            // or none.
            let bias = unsafe { x.bias(i0, i1) };
            let isa = Isa::detect();
            let bl = Blocking::for_shape(isa, g.m, g.n, k);
            image.with_padded(j0, n, |src, j0| {
                blocks::gemm(
                    isa.tile(),
                    &bl,
                    m,
                    n,
                    k,
                    &a,
                    blocks::BSrc::Im2col {
                        src,
                        j0,
                        a: packed_a,
                        bias: bias.as_deref(),
                    },
                    c,
                    g.accumulate,
                )
            });
        }
        RawB::Packed { b: p, bias } => {
            // SAFETY: the caller passes a live PackedB.
            let pb = unsafe { &*(p as *const PackedB) };
            let bl = pb.blocking(g.m);
            // SAFETY: a non-null bias holds the product's `g.n` columns
            // (the caller's contract), of which the part reads `j0..j1`;
            // nothing writes it during the call.
            let bias = (bias != 0)
                .then(|| unsafe { std::slice::from_raw_parts((bias as *const f32).add(j0), n) });
            blocks::gemm(
                pb.isa().tile(),
                &bl,
                m,
                n,
                k,
                &a,
                blocks::BSrc::Packed { b: pb, j0, bias },
                c,
                g.accumulate,
            );
        }
    }
}

#[cfg(test)]
mod tests;
