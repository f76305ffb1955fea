//! Reductions with one warp per output point.
//!
//! Norm statistics, softmax row maxima and sums, ReduceMean: few points,
//! each a long reduction. One thread per point would leave most of the
//! GPU idle and walk each row serially; here the 32 lanes of a warp take
//! the (flattened, last variable fastest) reduction index `lane, lane+32,
//! ...`, each folding its share into a register, then a
//! `shfl.sync.bfly.b32` butterfly (offsets 16, 8, 4, 2, 1) leaves the
//! whole fold in every lane, and lane 0 evaluates the rest of the kernel's
//! value (the epilogue, with the reduction's result in a register) and
//! stores it. Warps stride over the points (grid-stride loop), so the
//! loop bound is the same for every lane of a warp and every shuffle has
//! all 32 lanes present.
//!
//! Qualifies: exactly one `Reduce` (Sum, Max or Min) of an f32 body, a
//! parallel-safe kernel, reduction extent ≥ [`MIN_EXTENT`] and fewer than
//! [`MAX_POINTS`] points (more points fill the GPU one thread per point
//! anyway). An entry that could fail at run time (a gather, an unproven
//! address, an integer division) stays one thread per point: a failing
//! lane exits, and the shuffles must not wait for it.
//!
//! The sum's order differs from the interpreter's (32 interleaved partial
//! sums, then a tree): the result differs from a serial f32 sum by
//! rounding only. Max and Min are exact (`max.NaN`/`min.NaN` keep NaN).

use crate::check::is_float;
use crate::emit::{Em, R, V};
use crate::plan::{BLOCK, KernelMode, Launch, MAX_GRID};
use varc_ir::kernel::{Expr, Kernel, Program, ReduceFn, Var};

/// Reduction extents below this stay serial loops in one thread.
pub const MIN_EXTENT: usize = 64;
/// Kernels with this many points or more stay one thread per point.
pub const MAX_POINTS: usize = 65_536;
const WARP: usize = 32;

/// A kernel whose only reduction a warp can split.
#[derive(Clone, Debug)]
pub struct WarpReduce {
    pub op: ReduceFn,
    /// `(id, extent)`, innermost last.
    pub vars: Vec<(usize, usize)>,
    pub body: Expr,
    /// The product of the extents.
    pub extent: usize,
    pub points: usize,
}

/// `k` as one warp-splittable reduction plus an epilogue, or `None`.
pub fn recognise(p: &Program, k: &Kernel) -> Option<WarpReduce> {
    let mut reduces = Vec::new();
    k.value.visit(&mut |e| {
        if let Expr::Reduce { op, vars, body } = e {
            reduces.push((*op, vars.clone(), (**body).clone()));
        }
    });
    let [(op, vars, body)] = reduces.as_slice() else {
        return None;
    };
    if !matches!(op, ReduceFn::Sum | ReduceFn::Max | ReduceFn::Min)
        || !is_float(body.dtype(&p.buffers))
        || !crate::check::parallel_safe(k)
    {
        return None;
    }
    let extent = vars
        .iter()
        .try_fold(1usize, |acc, &(_, n)| acc.checked_mul(n))?;
    Some(WarpReduce {
        op: *op,
        vars: vars.clone(),
        body: body.clone(),
        extent,
        points: k.points(),
    })
}

impl WarpReduce {
    /// The selection rule: long reductions over few points.
    pub fn worth_a_warp(&self) -> bool {
        self.extent >= MIN_EXTENT && self.points > 0 && self.points < MAX_POINTS
    }
}

/// The launch of a warp-per-point entry: `BLOCK / 32` points per block.
pub fn launch(points: usize) -> Launch {
    let per_block = (BLOCK as usize / WARP) as u64;
    Launch {
        mode: KernelMode::Warp,
        grid: [
            (points as u64).div_ceil(per_block).min(MAX_GRID) as u32,
            1,
            1,
        ],
        block: BLOCK,
        shared_bytes: 0,
    }
}

impl Em<'_> {
    /// The body of a warp-per-point entry for `w` (see the module docs).
    pub fn warp_reduce(&mut self, w: &WarpReduce) -> R<Launch> {
        let (ctaid, ntid, tid, nctaid) = (self.r32(), self.r32(), self.r32(), self.r32());
        self.ins(format!("mov.u32 {ctaid}, %ctaid.x"));
        self.ins(format!("mov.u32 {ntid}, %ntid.x"));
        self.ins(format!("mov.u32 {tid}, %tid.x"));
        self.ins(format!("mov.u32 {nctaid}, %nctaid.x"));
        let (gtid, t, point, nwarps) = (self.r64(), self.r64(), self.r64(), self.r64());
        self.ins(format!("mul.wide.u32 {gtid}, {ctaid}, {ntid}"));
        self.ins(format!("cvt.u64.u32 {t}, {tid}"));
        self.ins(format!("add.s64 {gtid}, {gtid}, {t}"));
        self.ins(format!("shr.u64 {point}, {gtid}, 5"));
        self.ins(format!("mul.wide.u32 {nwarps}, {nctaid}, {ntid}"));
        self.ins(format!("shr.u64 {nwarps}, {nwarps}, 5"));
        let lane = self.r32();
        self.ins(format!("and.b32 {lane}, {tid}, 31"));
        let lane0 = self.pred();
        self.ins(format!("setp.eq.u32 {lane0}, {lane}, 0"));

        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        // `point` is the same in every lane: the whole warp leaves together.
        self.ins(format!("setp.ge.u64 {p}, {point}, {}", w.points));
        self.ins(format!("@{p} bra {done}"));
        let bound = self.vars.len();
        self.decompose(&point, w.points);
        for (a, &n) in self.k.domain.iter().enumerate() {
            self.extents.push((Var::Out(a), n));
        }
        let acc = V::F(self.fconst(w.op.identity() as f32));
        self.lanes_fold(w, &lane, &acc)?;
        let a = acc.reg().to_string();
        let combine = match w.op {
            ReduceFn::Sum => "add.rn.f32",
            ReduceFn::Max => "max.NaN.f32",
            _ => "min.NaN.f32",
        };
        for offset in [16, 8, 4, 2, 1] {
            let other = self.rf();
            self.ins(format!(
                "shfl.sync.bfly.b32 {other}, {a}, {offset}, 31, 0xffffffff"
            ));
            self.ins(format!("{combine} {a}, {a}, {other}"));
        }
        let skip = self.label();
        self.ins(format!("@!{lane0} bra {skip}"));
        self.reduce_value = Some(a);
        let value = self.k.value.clone();
        let v = self.expr(&value);
        self.reduce_value = None;
        self.store(v?)?;
        self.put_label(&skip);
        self.vars.truncate(bound);
        self.ins(format!("add.s64 {point}, {point}, {nwarps}"));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);
        Ok(launch(w.points))
    }

    /// `for (f = lane; f < extent; f += 32) acc ⊕= body(f)`, `f` split
    /// into the reduction variables (innermost last = fastest).
    fn lanes_fold(&mut self, w: &WarpReduce, lane: &str, acc: &V) -> R<()> {
        let f = self.r64();
        self.ins(format!("cvt.u64.u32 {f}, {lane}"));
        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        self.ins(format!("setp.ge.u64 {p}, {f}, {}", w.extent));
        self.ins(format!("@{p} bra {done}"));
        let narrow = w.extent <= u32::MAX as usize;
        let wd = if narrow { "u32" } else { "u64" };
        let rest = if narrow { self.r32() } else { self.r64() };
        if narrow {
            self.ins(format!("cvt.u32.u64 {rest}, {f}"));
        } else {
            self.ins(format!("mov.u64 {rest}, {f}"));
        }
        let (nv, ne) = (self.vars.len(), self.extents.len());
        let mut bound = Vec::new();
        for (i, &(id, n)) in w.vars.iter().enumerate().rev() {
            let v = self.r64();
            if n <= 1 {
                self.ins(format!("mov.u64 {v}, 0"));
            } else {
                let digit = if i == 0 {
                    rest.clone()
                } else {
                    let d = if narrow { self.r32() } else { self.r64() };
                    self.ins(format!("rem.{wd} {d}, {rest}, {n}"));
                    self.ins(format!("div.{wd} {rest}, {rest}, {n}"));
                    d
                };
                if narrow {
                    self.ins(format!("cvt.u64.u32 {v}, {digit}"));
                } else {
                    self.ins(format!("mov.u64 {v}, {digit}"));
                }
            }
            bound.push((Var::Red(id), v));
        }
        self.vars.extend(bound);
        self.extents
            .extend(w.vars.iter().map(|&(id, n)| (Var::Red(id), n)));
        let res = self.accumulate(w.op, &w.body, acc);
        self.vars.truncate(nv);
        self.extents.truncate(ne);
        res?;
        self.ins(format!("add.s64 {f}, {f}, {WARP}"));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);
        Ok(())
    }
}
