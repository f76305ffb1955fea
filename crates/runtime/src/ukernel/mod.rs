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
//! Structure (Goto/BLIS): the `n` axis is cut into `NC` column blocks, `k`
//! into `KC` depth blocks (B block packed into `NR`-wide slivers), `m` into
//! `MC` row blocks (A block packed into `MR`-tall slivers, zero-padded);
//! the microkernel multiplies one A sliver by one B sliver into an
//! `MR × NR` register tile and adds it to C. The tile is chosen once per
//! process from the CPU's features ([`Isa::detect`]): AVX-512F 12×32,
//! AVX2+FMA 6×16, NEON 8×8, or portable 4×8.
//!
//! Operands are packed on every call, weights included; packing constant
//! B operands once at compile time is a later refinement.

mod generic;
#[cfg(target_arch = "aarch64")]
mod neon;
mod pack;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;
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

/// The instruction set the microkernels use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One microkernel tile: `MR × NR` of C from packed slivers.
///
/// `run(kc, a, b, c, at)` multiplies the packed A sliver `a` (`kc × mr`,
/// `a[p·mr + i]`) by the packed B sliver `b` (`kc × nr`, `b[p·nr + j]`)
/// and adds (or, without `at.accumulate`, stores) the `at.rows × at.cols`
/// valid corner into `c`. The caller guarantees (and `run` checks) that
/// every element of that corner lies inside `c`.
#[derive(Clone, Copy)]
struct Tile {
    mr: usize,
    nr: usize,
    run: fn(usize, &[f32], &[f32], &mut [f32], &At),
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
    /// Checks the tile's valid corner lies inside `c` (len `len`).
    fn check(&self, len: usize) {
        assert!(
            fits(len, self.offset, self.rows, self.cols, self.rs, self.cs),
            "sgemm tile outside C"
        );
    }
}

/// Depth of a packed block (the k extent one tile pass runs over).
const KC: usize = 256;
/// Columns of a packed B block.
const NC: usize = 2048;
/// Rows of a packed A block (rounded to the tile's MR).
const MC: usize = 144;

thread_local! {
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C = (accumulate ? C : 0) + A·B` with `A: m × k`, `B: k × n`,
/// `C: m × n`, using the best microkernel of this machine.
///
/// Panics when a view does not fit its slice.
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
    assert!(
        fits(a.data.len(), a.offset, m, k, a.rs, a.cs),
        "sgemm: A outside its slice"
    );
    assert!(
        fits(b.data.len(), b.offset, k, n, b.rs, b.cs),
        "sgemm: B outside its slice"
    );
    assert!(
        fits(c.data.len(), c.offset, m, n, c.rs, c.cs),
        "sgemm: C outside its slice"
    );
    if m == 0 || n == 0 {
        return;
    }
    let isa = if Isa::available().contains(&isa) {
        isa
    } else {
        Isa::Portable
    };
    let tile = isa.tile();
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    let idx = c.offset as isize + i as isize * c.rs + j as isize * c.cs;
                    c.data[idx as usize] = 0.0;
                }
            }
        }
        return;
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        run_blocks(tile, m, n, k, &a, &b, c, accumulate, pa, pb);
    });
}

#[allow(clippy::too_many_arguments)]
fn run_blocks(
    t: Tile,
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef,
    b: &MatRef,
    c: MatMut,
    accumulate: bool,
    pa: &mut Vec<f32>,
    pb: &mut Vec<f32>,
) {
    let mc = MC.div_ceil(t.mr) * t.mr;
    let nc = NC.min(n.div_ceil(t.nr) * t.nr);
    let kc_max = KC.min(k);
    pa.resize(mc * kc_max, 0.0);
    pb.resize(nc * kc_max, 0.0);
    for jc in (0..n).step_by(NC) {
        let ncur = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack::pack_b(pb, b, pc, kc, jc, ncur, t.nr);
            let acc = accumulate || pc > 0;
            for ic in (0..m).step_by(mc) {
                let mcur = mc.min(m - ic);
                pack::pack_a(pa, a, ic, mcur, pc, kc, t.mr);
                for jr in (0..ncur).step_by(t.nr) {
                    let bs = &pb[jr * kc..(jr + t.nr) * kc];
                    for ir in (0..mcur).step_by(t.mr) {
                        let asl = &pa[ir * kc..(ir + t.mr) * kc];
                        let (i, j) = ((ic + ir) as isize, (jc + jr) as isize);
                        let at = At {
                            offset: (c.offset as isize + i * c.rs + j * c.cs) as usize,
                            rs: c.rs,
                            cs: c.cs,
                            rows: t.mr.min(mcur - ir),
                            cols: t.nr.min(ncur - jr),
                            accumulate: acc,
                        };
                        (t.run)(kc, asl, bs, c.data, &at);
                    }
                }
            }
        }
    }
}

/// Smallest `m·n·k` the C ABI entry splits across the current thread pool.
const PAR_MIN_WORK: usize = 1 << 17;

/// The C ABI entry generated code calls:
/// `C = (accumulate != 0 ? C : 0) + A·B`, `A: m × k`, `B: k × n`, `C: m × n`,
/// element `(r, c)` of X at `x + r·rs_x + c·cs_x` (element strides, any sign).
///
/// When a thread pool is current ([`crate::pool::current`]) and the product
/// is large, C is cut into blocks of rows (or of columns, whichever of C's
/// axes has the larger stride, so the blocks occupy disjoint memory) run as
/// separate tasks. Each element of C is still computed by one tile with
/// the same sequence of operations as in a serial call, so the result is
/// bit-identical for any thread count.
///
/// # Safety
///
/// Every element of each view must lie in one live allocation of f32s
/// (A and B readable, C writable), and C must not overlap A or B.
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
    let pool =
        crate::pool::current().filter(|_| m.saturating_mul(n).saturating_mul(k) >= PAR_MIN_WORK);
    // Split along C's outer axis (the larger stride), when blocks along it
    // are disjoint in memory: its stride exceeds the span of the other axis.
    let by_rows = rs_c.unsigned_abs() >= cs_c.unsigned_abs();
    let (outer, inner, so, si) = if by_rows {
        (m, n, rs_c, cs_c)
    } else {
        (n, m, cs_c, rs_c)
    };
    let disjoint = inner
        .checked_sub(1)
        .and_then(|i| i.checked_mul(si.unsigned_abs()))
        .is_some_and(|span| so.unsigned_abs() > span);
    let tile = Isa::detect().tile();
    let align = if by_rows { tile.mr } else { tile.nr };
    let tasks = pool
        .as_ref()
        .map_or(1, |p| crate::pool::range_count(outer, p.threads(), align));
    let (Some(pool), true, true) = (pool, disjoint, tasks > 1) else {
        // SAFETY: the caller's contract is `sgemm_raw`'s.
        unsafe {
            sgemm_raw(
                m, n, k, a, rs_a, cs_a, b, rs_b, cs_b, c, rs_c, cs_c, accumulate,
            )
        };
        return;
    };
    let (a, b, c) = (a as usize, b as usize, c as usize);
    pool.run(
        tasks,
        std::sync::Arc::new(move |t| {
            let (lo, hi) = crate::pool::range(outer, tasks, align, t);
            let lo_i = lo as isize;
            // SAFETY: the block is the sub-view of rows (columns) `lo..hi`
            // of the caller's C and the matching rows of A (columns of B),
            // so it lies inside the caller's allocations. Blocks of
            // different tasks cover disjoint rows (columns) of C, which the
            // `disjoint` test shows occupy disjoint memory, so no two tasks
            // write the same element or alias each other's C slice; A and
            // B are only read. The caller's pointers outlive `pool.run`,
            // which returns only when every task has finished.
            unsafe {
                if by_rows {
                    sgemm_raw(
                        hi - lo,
                        n,
                        k,
                        (a as *const f32).offset(lo_i * rs_a),
                        rs_a,
                        cs_a,
                        b as *const f32,
                        rs_b,
                        cs_b,
                        (c as *mut f32).offset(lo_i * rs_c),
                        rs_c,
                        cs_c,
                        accumulate,
                    )
                } else {
                    sgemm_raw(
                        m,
                        hi - lo,
                        k,
                        a as *const f32,
                        rs_a,
                        cs_a,
                        (b as *const f32).offset(lo_i * cs_b),
                        rs_b,
                        cs_b,
                        (c as *mut f32).offset(lo_i * cs_c),
                        rs_c,
                        cs_c,
                        accumulate,
                    )
                }
            }
        }),
    );
}

/// [`varc_sgemm`] on the calling thread.
///
/// # Safety
///
/// As [`varc_sgemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
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
    let (Some((clo, chi)), true) = (span(m, n, rs_c, cs_c), k > 0 || accumulate == 0) else {
        return;
    };
    const EMPTY: &[f32] = &[];
    // SAFETY: the caller guarantees every element of each m×k / k×n / m×n
    // view lies in one live allocation; `span` gives the lowest and highest
    // element offsets the view touches, so each slice covers exactly that
    // range of the allocation. C does not overlap A or B (caller), so the
    // mutable slice is not aliased by the shared ones.
    let (av, bv, cv) = unsafe {
        let view = |p: *const f32, r, cc, rs, cs| match span(r, cc, rs, cs) {
            Some((lo, hi)) => (
                std::slice::from_raw_parts(p.offset(lo), (hi - lo + 1) as usize),
                (-lo) as usize,
            ),
            None => (EMPTY, 0),
        };
        let cs = std::slice::from_raw_parts_mut(c.offset(clo), (chi - clo + 1) as usize);
        (
            view(a, m, k, rs_a, cs_a),
            view(b, k, n, rs_b, cs_b),
            (cs, (-clo) as usize),
        )
    };
    sgemm(
        m,
        n,
        k,
        MatRef {
            data: av.0,
            offset: av.1,
            rs: rs_a,
            cs: cs_a,
        },
        MatRef {
            data: bv.0,
            offset: bv.1,
            rs: rs_b,
            cs: cs_b,
        },
        MatMut {
            data: cv.0,
            offset: cv.1,
            rs: rs_c,
            cs: cs_c,
        },
        accumulate != 0,
    );
}

#[cfg(test)]
mod tests;
