//! Kernel fusion: fewer kernels and fewer temps, the same values.
//!
//! The lowering emits one kernel per op, so a chain like bias add → GELU →
//! residual add writes and re-reads a full temp at every step. This pass
//! rewrites the kernel program, in three ways:
//!
//! 1. **Inlining.** A kernel without reductions that writes a temp is
//!    substituted into every load of that temp, when each load's address
//!    is the producer's store address of some point (same shape, broadcast,
//!    transpose, slice, split axes: [`address::decompose`]); the producer
//!    and its temp disappear. Recomputation is allowed only for cheap
//!    producers (no transcendental or division, a few operations); loads
//!    with guards or gathers, loads inside a contraction's reduction, and
//!    kernels tagged with a library routine are left alone.
//! 2. **Epilogues.** A contraction (one `Reduce(Sum)` of a product of two
//!    loads) whose temp is read by exactly one kernel without reductions, once,
//!    at the same point, is substituted there: the reader's value becomes
//!    the contraction's epilogue, which the CPU backend's sgemm path runs as
//!    a loop over the output after the microkernel. With
//!    [`FuseOptions::repeated_epilogue_reads`] the reader may read it at
//!    several sites of the same element (an activation's argument).
//! 3. **Output stores.** A copy of a whole temp into a program output makes
//!    the temp's writers store into the output directly.
//!
//! A fused kernel runs where its reader ran, so a producer's inputs must not
//! be written between the two (checked against every writer). Values are
//! the same operations on the same f32 values in the same order, so the
//! compiled result is the same up to FMA contraction where a product now
//! meets a sum in one expression; [`eval`](super::eval), which keeps f64
//! inside an expression, no longer rounds at the vanished temps.

mod address;
#[cfg(test)]
mod tests;

use super::{Access, BinaryFn, BufId, BufKind, Expr, Kernel, Program, ReduceFn, UnaryFn, Var};
use crate::dtype::DType;
use std::collections::BTreeSet;

/// The pass's name for switches and reports (`--disable-pass kernel-fusion`).
pub const PASS_NAME: &str = "kernel-fusion";
/// One line on what the pass does.
pub const ABOUT: &str = "kernel IR: inline elementwise producers into their readers, \
                         contractions into their epilogues, stores into outputs";

/// Recomputation budget: a producer evaluated more often than it has
/// points may add at most this many operations per evaluation, on average
/// (an add of two loads weighs 3: a residual add read by four kernels, or
/// a per-channel scale broadcast over an image, fits; a normalisation read
/// twice by an activation fits, four times does not).
const CHEAP: u128 = 5;
/// Largest expression (in nodes) inlining may build.
const MAX_NODES: usize = 400;
/// Splitting a reader's axes (see [`address::split_point`]) stops here.
const MAX_RANK: usize = 8;

/// What the pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuseReport {
    pub kernels_before: usize,
    pub kernels_after: usize,
    /// Producers substituted into their readers (and removed).
    pub inlined: usize,
    /// Contractions substituted into their one elementwise reader.
    pub epilogues: usize,
    /// Output copies removed by storing into the output directly.
    pub outputs: usize,
    /// Kernels whose temp nobody read.
    pub dead: usize,
}

impl std::fmt::Display for FuseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernels {} → {}: {} inlined, {} epilogues, {} output stores, {} dead",
            self.kernels_before,
            self.kernels_after,
            self.inlined,
            self.epilogues,
            self.outputs,
            self.dead
        )
    }
}

/// Fuses `p` (see the module documentation).
pub fn fuse(p: Program) -> Program {
    fuse_with_report(p).0
}

/// What a backend can take beyond the default fusions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuseOptions {
    /// Epilogues may read the contraction at several sites, all of the
    /// same element (an activation repeats its argument: GELU reads it six
    /// times), which puts the same sum in the value several times. Only
    /// for backends that compute such a sum once (the host JIT's sgemm
    /// path); a plain loop nest would compute it at every site.
    pub repeated_epilogue_reads: bool,
}

/// [`fuse`] with `opts`.
pub fn fuse_with(p: Program, opts: FuseOptions) -> Program {
    fuse_with_report_opts(p, opts).0
}

/// Fuses `p` and says what it did.
pub fn fuse_with_report(p: Program) -> (Program, FuseReport) {
    fuse_with_report_opts(p, FuseOptions::default())
}

fn fuse_with_report_opts(p: Program, opts: FuseOptions) -> (Program, FuseReport) {
    let mut rep = FuseReport {
        kernels_before: p.kernels.len(),
        ..FuseReport::default()
    };
    let mut f = Fuser::new(p);
    f.opts = opts;
    loop {
        let mut changed = false;
        for i in 0..f.kernels.len() {
            match f.inline(i) {
                Some(Done::Inlined) => rep.inlined += 1,
                Some(Done::Dead) => rep.dead += 1,
                None => continue,
            }
            changed = true;
        }
        for i in 0..f.kernels.len() {
            if f.epilogue(i).is_some() {
                rep.epilogues += 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for i in 0..f.kernels.len() {
        if f.forward_output(i).is_some() {
            rep.outputs += 1;
        }
    }
    let p = f.finish();
    rep.kernels_after = p.kernels.len();
    (p, rep)
}

enum Done {
    Inlined,
    Dead,
}

/// The program being fused: removed kernels leave `None` so indices stay
/// put; who reads and writes each buffer is kept up to date.
struct Fuser {
    p: Program,
    kernels: Vec<Option<Kernel>>,
    readers: Vec<BTreeSet<usize>>,
    writers: Vec<BTreeSet<usize>>,
    opts: FuseOptions,
}

/// A load of the buffer being fused away, where it sits in its kernel.
struct Site<'a> {
    access: &'a Access,
    guarded: bool,
    /// Loop variables bound here, with extents.
    scope: &'a [(Var, usize)],
    /// How many times it runs per domain point (enclosing reductions).
    repeats: u128,
    in_reduce: bool,
}

impl Fuser {
    fn new(mut p: Program) -> Fuser {
        let kernels: Vec<Option<Kernel>> = std::mem::take(&mut p.kernels)
            .into_iter()
            .map(Some)
            .collect();
        let n = p.buffers.len();
        let mut f = Fuser {
            p,
            kernels,
            readers: vec![BTreeSet::new(); n],
            writers: vec![BTreeSet::new(); n],
            opts: FuseOptions::default(),
        };
        for (i, k) in f.kernels.iter().enumerate() {
            let k = k.as_ref().expect("all kernels are present at the start");
            f.writers[k.store.buf.0].insert(i);
            for b in k.reads() {
                f.readers[b.0].insert(i);
            }
        }
        f
    }

    fn kernel(&self, i: usize) -> Option<&Kernel> {
        self.kernels.get(i)?.as_ref()
    }

    fn is_temp(&self, b: BufId) -> bool {
        self.p.buffers[b.0].kind == BufKind::Temp
    }

    /// Whether a kernel in `(from, to]` writes one of `bufs`.
    fn written_between(&self, bufs: &[BufId], from: usize, to: usize) -> bool {
        bufs.iter()
            .any(|b| self.writers[b.0].range(from + 1..=to).next().is_some())
    }

    /// Kernel `i` is removed; its readers now read `reads` instead.
    fn remove(&mut self, i: usize, readers: &[usize]) {
        let k = self.kernels[i].take().expect("removing a present kernel");
        self.writers[k.store.buf.0].remove(&i);
        for b in k.reads() {
            self.readers[b.0].remove(&i);
            self.readers[b.0].extend(readers.iter().copied());
        }
        self.readers[k.store.buf.0].clear();
    }

    /// The temp a producer writes, when it is its only writer and the store
    /// can be inverted.
    fn sole_temp(&self, i: usize) -> Option<(&Kernel, BufId)> {
        let k = self.kernel(i)?;
        let t = k.store.buf;
        let ok = self.is_temp(t)
            && k.library.is_none()
            && self.writers[t.0].len() == 1
            && k.store.gathers.is_empty()
            && !k.domain.contains(&0)
            && address::invertible(&k.store.index, &k.domain)
            && address::uses_domain_only(&k.value, k.domain.len())
            && !k.reads().contains(&t);
        ok.then_some((k, t))
    }

    /// Inlines kernel `pi` into every reader of its temp, or removes it when
    /// nobody reads the temp.
    fn inline(&mut self, pi: usize) -> Option<Done> {
        let (pk, t) = self.sole_temp(pi)?;
        if has_reduce(&pk.value) {
            return None;
        }
        let readers: Vec<usize> = self.readers[t.0].iter().copied().collect();
        if readers.is_empty() {
            self.remove(pi, &[]);
            return Some(Done::Dead);
        }
        let inputs = pk.reads();
        let mut evaluations: u128 = 0;
        let mut rewritten = Vec::with_capacity(readers.len());
        let p_dtype = pk.value.dtype(&self.p.buffers);
        let t_dtype = self.p.buffers[t.0].dtype;
        let p_size = size(&pk.value);
        for &ci in &readers {
            let ck = self.kernel(ci)?;
            if ci <= pi || ck.library.is_some() || self.written_between(&inputs, pi, ci) {
                return None;
            }
            let contraction = is_contraction(&ck.value);
            // A reader that sees the temp with axes merged is re-domained
            // with those axes split (not contractions: that would change
            // the sgemm's matrices).
            let mut split: Option<Kernel> = None;
            let (value, sites, evals) = loop {
                let k = split.as_ref().unwrap_or(ck);
                let points = k.points() as u128;
                let (mut sites, mut evals, mut want_split) = (0usize, 0u128, None);
                let value = rewrite_loads(k, t, &mut |s| {
                    if s.guarded || !s.access.gathers.is_empty() || (s.in_reduce && contraction) {
                        return None;
                    }
                    let idx = &s.access.index;
                    let Some(x) = address::decompose(idx, s.scope, &pk.store.index, &pk.domain)
                    else {
                        want_split =
                            address::split_point(idx, &k.domain, &pk.store.index, &pk.domain);
                        return None;
                    };
                    evals = evals.saturating_add(points.saturating_mul(s.repeats));
                    sites += 1;
                    let v = address::subst_expr(&pk.value, &x);
                    Some(if p_dtype == t_dtype {
                        v
                    } else {
                        Expr::Cast(t_dtype, Box::new(v))
                    })
                });
                match (value, want_split) {
                    (Some(v), _) => break (v, sites, evals),
                    (None, Some((axis, inner))) if !contraction && k.domain.len() < MAX_RANK => {
                        split = Some(address::split_domain(k, axis, inner));
                    }
                    _ => return None,
                }
            };
            evaluations = evaluations.saturating_add(evals);
            if size(&ck.value) + sites * p_size > MAX_NODES {
                return None;
            }
            rewritten.push((ci, value, split.map(|k| (k.domain, k.store))));
        }
        let points = pk.points() as u128;
        if evaluations > points {
            let (cost, expensive) = weigh(&pk.value);
            let extra = (evaluations - points).saturating_mul(cost as u128);
            if expensive || extra > CHEAP.saturating_mul(evaluations) {
                return None;
            }
        }
        let p_name = pk.name.clone();
        for (ci, value, redomained) in rewritten {
            let ck = self.kernels[ci].as_mut().expect("readers are present");
            ck.name = fused_name(&p_name, &ck.name);
            ck.value = value;
            if let Some((domain, store)) = redomained {
                ck.domain = domain;
                ck.store = store;
            }
        }
        self.remove(pi, &readers);
        Some(Done::Inlined)
    }

    /// Substitutes contraction `gi` into the one elementwise kernel reading
    /// its temp, at the same point.
    fn epilogue(&mut self, gi: usize) -> Option<()> {
        let (gk, t) = self.sole_temp(gi)?;
        if !is_contraction(&gk.value) || count_reduces(&gk.value) != 1 {
            return None;
        }
        let &[ci] = self.readers[t.0]
            .iter()
            .copied()
            .collect::<Vec<_>>()
            .as_slice()
        else {
            return None;
        };
        let ck = self.kernel(ci)?;
        let st = &ck.store;
        let inputs = gk.reads();
        // What the sgemm path needs of the fused kernel's store: f32, no
        // gathers, injective, and not read by the kernel itself.
        let store_ok = self.p.buffers[st.buf.0].dtype == DType::F32
            && st.gathers.is_empty()
            && super::analysis::injective(&st.index, &ck.domain)
            && !ck.reads().contains(&st.buf)
            && !inputs.contains(&st.buf);
        if ci <= gi
            || ck.library.is_some()
            || has_reduce(&ck.value)
            || ck.points() != gk.points()
            || !store_ok
            || self.written_between(&inputs, gi, ci)
            || self.p.buffers[t.0].dtype != gk.value.dtype(&self.p.buffers)
        {
            return None;
        }
        let mut sites = 0;
        let mut first: Option<Access> = None;
        let repeated_ok = self.opts.repeated_epilogue_reads;
        let value = rewrite_loads(ck, t, &mut |s| {
            if s.guarded || !s.access.gathers.is_empty() || s.in_reduce {
                return None;
            }
            // Further sites must read the same element (see
            // `FuseOptions::repeated_epilogue_reads`).
            match &first {
                None => first = Some(s.access.clone()),
                Some(a) if repeated_ok && a == s.access => {}
                Some(_) => return None,
            }
            let x = address::decompose(&s.access.index, s.scope, &gk.store.index, &gk.domain)?;
            // Only a renaming of axes keeps the contraction's operands
            // plain strided accesses over the same extents.
            let renaming = x.iter().zip(&gk.domain).all(|(xi, &n)| {
                n == 1 || (xi.offset == 0 && matches!(xi.terms.as_slice(), [(Var::Out(_), 1)]))
            });
            sites += 1;
            renaming.then(|| address::subst_expr(&gk.value, &x))
        })?;
        if sites == 0 {
            return None;
        }
        let name = fused_name(&gk.name, &ck.name);
        let ck = self.kernels[ci].as_mut().expect("the reader is present");
        ck.name = name;
        ck.value = value;
        self.remove(gi, &[ci]);
        Some(())
    }

    /// Removes output copy `ci` (`out[i] = t[i]` over all of `t`) by making
    /// `t`'s writers store into the output and its readers read it there.
    fn forward_output(&mut self, ci: usize) -> Option<()> {
        let ck = self.kernel(ci)?;
        let o = ck.store.buf;
        let Expr::Load { access, guards, .. } = &ck.value else {
            return None;
        };
        let t = access.buf;
        let (ob, tb) = (&self.p.buffers[o.0], &self.p.buffers[t.0]);
        let touchers = || self.writers[t.0].iter().chain(&self.readers[t.0]);
        let ok = matches!(ob.kind, BufKind::Output(_))
            && self.is_temp(t)
            && ck.library.is_none()
            && self.writers[o.0].len() == 1
            && self.readers[o.0].is_empty()
            && guards.is_empty()
            && access.gathers.is_empty()
            && same_affine(&access.index, &ck.store.index)
            && ck.store.gathers.is_empty()
            && ob.dtype == tb.dtype
            && ob.len() == tb.len()
            && ck.points() == tb.len()
            && super::analysis::injective(&ck.store.index, &ck.domain)
            && self.writers[t.0].iter().all(|&w| w < ci)
            && touchers().all(|&k| {
                self.kernels[k]
                    .as_ref()
                    .is_some_and(|k| k.library.is_none())
            });
        if !ok {
            return None;
        }
        let name = ck.name.clone();
        let users: BTreeSet<usize> = touchers().copied().filter(|&k| k != ci).collect();
        for &k in &users {
            let kk = self.kernels[k].as_mut().expect("users are present");
            rename_buffer(kk, t, o);
            if self.writers[t.0].contains(&k) && self.writers[t.0].len() == 1 {
                kk.name = fused_name(&kk.name, &name);
            }
        }
        let (w, r) = (
            std::mem::take(&mut self.writers[t.0]),
            std::mem::take(&mut self.readers[t.0]),
        );
        self.kernels[ci] = None;
        self.writers[o.0] = w;
        self.readers[o.0] = r.into_iter().filter(|&k| k != ci).collect();
        Some(())
    }

    /// The program: kernels in order, temps no kernel touches dropped.
    fn finish(self) -> Program {
        let mut p = self.p;
        p.kernels = self.kernels.into_iter().flatten().collect();
        let mut used = vec![false; p.buffers.len()];
        for k in &p.kernels {
            used[k.store.buf.0] = true;
            for b in k.reads() {
                used[b.0] = true;
            }
        }
        let keep: Vec<bool> = p
            .buffers
            .iter()
            .zip(&used)
            .map(|(b, &u)| u || b.kind != BufKind::Temp)
            .collect();
        if keep.iter().all(|&k| k) {
            return p;
        }
        let mut map = vec![None; p.buffers.len()];
        let mut next = 0;
        for (i, &k) in keep.iter().enumerate() {
            if k {
                map[i] = Some(BufId(next));
                next += 1;
            }
        }
        let m = |b: BufId| map[b.0].expect("buffers in use are kept");
        let mut i = 0;
        p.buffers.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for k in &mut p.kernels {
            remap_kernel(k, &m);
        }
        for b in p.inputs.iter_mut().chain(p.outputs.iter_mut()) {
            *b = m(*b);
        }
        p
    }
}

/// `kernel` with `value` rewritten: every load of `t` replaced by what
/// `f` makes of it (`None` from `f` refuses the whole rewrite).
fn rewrite_loads(k: &Kernel, t: BufId, f: &mut dyn FnMut(&Site) -> Option<Expr>) -> Option<Expr> {
    let mut scope: Vec<(Var, usize)> = k
        .domain
        .iter()
        .enumerate()
        .map(|(i, &n)| (Var::Out(i), n))
        .collect();
    rewrite(&k.value, t, &mut scope, 1, f)
}

fn rewrite(
    e: &Expr,
    t: BufId,
    scope: &mut Vec<(Var, usize)>,
    repeats: u128,
    f: &mut dyn FnMut(&Site) -> Option<Expr>,
) -> Option<Expr> {
    let r = |x: &Expr, scope: &mut Vec<(Var, usize)>, f: &mut dyn FnMut(&Site) -> Option<Expr>| {
        rewrite(x, t, scope, repeats, f).map(Box::new)
    };
    Some(match e {
        Expr::Const { .. } | Expr::Index(_) => e.clone(),
        Expr::Load {
            access,
            guards,
            fill,
        } => {
            let mut gathers = Vec::with_capacity(access.gathers.len());
            for g in &access.gathers {
                gathers.push(super::GatherTerm {
                    index: *r(&g.index, scope, f)?,
                    dim: g.dim,
                    stride: g.stride,
                });
            }
            if access.buf == t {
                let in_reduce = scope.iter().any(|(v, _)| matches!(v, Var::Red(_)));
                return f(&Site {
                    access,
                    guarded: !guards.is_empty(),
                    scope,
                    repeats,
                    in_reduce,
                });
            }
            Expr::Load {
                access: Box::new(Access {
                    buf: access.buf,
                    index: access.index.clone(),
                    gathers,
                }),
                guards: guards.clone(),
                fill: *fill,
            }
        }
        Expr::Unary(op, a) => Expr::Unary(*op, r(a, scope, f)?),
        Expr::Binary(op, a, b) => Expr::Binary(*op, r(a, scope, f)?, r(b, scope, f)?),
        Expr::Select(c, a, b) => Expr::Select(r(c, scope, f)?, r(a, scope, f)?, r(b, scope, f)?),
        Expr::Cast(d, a) => Expr::Cast(*d, r(a, scope, f)?),
        Expr::Reduce { op, vars, body } => {
            let base = scope.len();
            scope.extend(vars.iter().map(|&(id, n)| (Var::Red(id), n)));
            let reps = vars
                .iter()
                .fold(repeats, |acc, v| acc.saturating_mul(v.1 as u128));
            let b = rewrite(body, t, scope, reps, f);
            scope.truncate(base);
            Expr::Reduce {
                op: *op,
                vars: vars.clone(),
                body: Box::new(b?),
            }
        }
    })
}

fn has_reduce(e: &Expr) -> bool {
    count_reduces(e) > 0
}

fn count_reduces(e: &Expr) -> usize {
    let mut n = 0;
    e.visit(&mut |x| n += matches!(x, Expr::Reduce { .. }) as usize);
    n
}

/// Whether `e` holds a contraction: a `Reduce(Sum)` of a product of two
/// loads (MatMul, Gemm, Conv as lowered). Its operands must stay plain
/// loads for the sgemm path, so nothing is inlined into them.
fn is_contraction(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| {
        if let Expr::Reduce {
            op: ReduceFn::Sum,
            body,
            ..
        } = x
            && let Expr::Binary(BinaryFn::Mul, a, b) = &**body
        {
            found |= matches!(**a, Expr::Load { .. }) && matches!(**b, Expr::Load { .. });
        }
    });
    found
}

/// Nodes in `e`.
fn size(e: &Expr) -> usize {
    let mut n = 0;
    e.visit(&mut |_| n += 1);
    n
}

/// A rough per-point cost of `e` (operations and loads; a load of one
/// fixed element is hoisted and free), and whether it holds an operation
/// worth computing only once (transcendentals, division, square roots).
fn weigh(e: &Expr) -> (u32, bool) {
    let (mut cost, mut expensive) = (0u32, false);
    e.visit(&mut |x| match x {
        Expr::Const { .. } => {}
        Expr::Load { access, .. } if access.index.terms.is_empty() && access.gathers.is_empty() => {
        }
        Expr::Unary(f, _) => {
            cost += 1;
            expensive |= !matches!(
                f,
                UnaryFn::Neg
                    | UnaryFn::Abs
                    | UnaryFn::Floor
                    | UnaryFn::Ceil
                    | UnaryFn::Round
                    | UnaryFn::Not
            );
        }
        Expr::Binary(f, _, _) => {
            cost += 1;
            expensive |= matches!(f, BinaryFn::Div | BinaryFn::Pow);
        }
        _ => cost += 1,
    });
    (cost, expensive)
}

fn same_affine(a: &super::Affine, b: &super::Affine) -> bool {
    let norm = |a: &super::Affine| {
        let mut t: Vec<(Var, i64)> = a.terms.iter().copied().filter(|t| t.1 != 0).collect();
        t.sort();
        (a.offset, t)
    };
    norm(a) == norm(b)
}

/// `node:Op` names joined as `node:ProducerOps+ReaderOps`, named after the
/// reader's node (where the fused kernel runs).
fn fused_name(producer: &str, reader: &str) -> String {
    let (_, p_ops) = split_name(producer);
    let (node, r_ops) = split_name(reader);
    format!("{node}:{p_ops}+{r_ops}")
}

/// `(node, ops)` of a kernel name: lowering names kernels `node:Op`, and
/// copies into outputs `output:NAME`.
fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some(("output", _)) => (name, "Output"),
        Some((node, ops)) if !node.is_empty() && !ops.is_empty() => (node, ops),
        _ => (name, "?"),
    }
}

fn rename_buffer(k: &mut Kernel, from: BufId, to: BufId) {
    remap_kernel(k, &|b| if b == from { to } else { b });
}

/// Every buffer id in `k` (store, loads, library operands) through `m`.
fn remap_kernel(k: &mut Kernel, m: &dyn Fn(BufId) -> BufId) {
    k.store.buf = m(k.store.buf);
    remap_expr(&mut k.value, m);
    if let Some(lib) = &mut k.library {
        for b in lib.buffers_mut() {
            *b = m(*b);
        }
    }
}

fn remap_expr(e: &mut Expr, m: &dyn Fn(BufId) -> BufId) {
    match e {
        Expr::Const { .. } | Expr::Index(_) => {}
        Expr::Load { access, .. } => {
            access.buf = m(access.buf);
            for g in &mut access.gathers {
                remap_expr(&mut g.index, m);
            }
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => remap_expr(a, m),
        Expr::Binary(_, a, b) => {
            remap_expr(a, m);
            remap_expr(b, m);
        }
        Expr::Select(c, a, b) => {
            remap_expr(c, m);
            remap_expr(a, m);
            remap_expr(b, m);
        }
        Expr::Reduce { body, .. } => remap_expr(body, m),
    }
}
