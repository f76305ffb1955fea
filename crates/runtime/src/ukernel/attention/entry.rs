//! The C ABI entry generated code calls ([`varc_attention`]): the argument
//! block, its layout for code generators, and the split of a call across
//! the current thread pool (classification tasks, then units in
//! [`schedule`] order).

use super::*;

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
    let packs = std::sync::Arc::new(Packs::new(&whole));
    let isa = Isa::detect();
    let pool = crate::pool::current().filter(|_| work >= PAR_MIN_WORK && units > 1);
    let classes = Classes::new(&whole).map(std::sync::Arc::new);
    // One region before the tiles: the bias classes, then every packed
    // K/V block (serially, tiles pack blocks as they first need them).
    match &pool {
        Some(pool) => {
            let (c, k) = (classes.clone(), packs.clone());
            let nc = c.as_ref().map_or(0, |c| c.tasks());
            pool.run(
                nc + k.cells.len(),
                std::sync::Arc::new(move |task| {
                    let args = a.args();
                    // SAFETY: as above; the slices live for this task only.
                    let p = unsafe { problem(&args) };
                    match &c {
                        Some(c) if task < nc => c.fill(isa, &p, task),
                        _ => k.fill(isa, &p, task - nc),
                    }
                }),
            );
        }
        None => {
            if let Some(c) = &classes {
                c.fill_all(isa, &whole);
            }
        }
    }
    let order = std::sync::Arc::new(match pool {
        Some(_) => schedule(&whole, classes.as_deref()),
        None => vec![],
    });
    let run = move |i: usize| {
        let args = a.args();
        // SAFETY: as above; the slices live for this task only.
        let p = unsafe { problem(&args) };
        let (out, s) = (args.out, args.out_strides);
        let u = order.get(i).copied().unwrap_or(i);
        run_unit(isa, &p, &packs, classes.as_deref(), u, &mut |idx, row| {
            let at: isize = idx.iter().zip(&s).map(|(&i, &st)| i as isize * st).sum();
            if s[3] == 1 {
                // SAFETY: as below, for the row's `row.len()` consecutive
                // elements.
                unsafe {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.offset(at), row.len());
                }
                return;
            }
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
    match pool {
        Some(pool) => pool.run(units, std::sync::Arc::new(run)),
        None => (0..units).for_each(run),
    }
}
