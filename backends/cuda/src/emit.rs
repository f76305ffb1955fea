//! One kernel → one PTX `.entry`: the parameters, the grid-stride loop over
//! the flattened domain, the decomposition of the flat index into the
//! domain's loop variables, and the failure exits.
//!
//! Registers are virtual (ptxas allocates): `%p` predicates, `%rs` 16-bit,
//! `%r` 32-bit, `%rd` 64-bit integers (every integer dtype and bool), `%f`
//! f32. Each class is declared once with the count used.

use crate::check;
use crate::plan::{KernelMode, Launch};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use varc_ir::kernel::{Kernel, Program, Var};

pub(crate) type R<T> = Result<T, String>;

/// A value in a register: f32, or an integer/bool widened to 64 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum V {
    F(String),
    I(String),
}

impl V {
    pub fn reg(&self) -> &str {
        match self {
            V::F(r) | V::I(r) => r,
        }
    }
}

/// The PTX emitter for one kernel.
pub(crate) struct Em<'a> {
    pub p: &'a Program,
    pub k: &'a Kernel,
    /// Kernel index in the program (labels, status words).
    pub index: usize,
    body: String,
    counts: [usize; 5],
    labels: usize,
    /// Global-space base address register of each buffer the kernel touches.
    pub bases: Vec<(usize, String)>,
    /// Registers (.b64) holding the loop variables in scope.
    pub vars: Vec<(Var, String)>,
    /// Extents of the loop variables in scope (domain, then reductions).
    pub extents: Vec<(Var, usize)>,
    /// Status codes with a failure exit.
    pub fails: BTreeSet<u32>,
    /// While set, `Expr::Reduce` evaluates to this f32 register: the
    /// warp and tensor-core modes compute the (single) reduction
    /// themselves and emit the rest of the value as an epilogue.
    pub reduce_value: Option<String>,
    /// Module-scope `.shared` arrays of this entry: (name, bytes).
    pub shared: Vec<(String, usize)>,
}

const PRED: usize = 0;
const B16: usize = 1;
const B32: usize = 2;
const B64: usize = 3;
const F32: usize = 4;
const PREFIX: [&str; 5] = ["%p", "%rs", "%r", "%rd", "%f"];
const DECL: [&str; 5] = [".pred", ".b16", ".b32", ".b64", ".f32"];

/// A PTX f32 immediate (exact: the bit pattern).
pub(crate) fn f32_imm(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

/// The entry name of kernel `index`: `varc_k<index>_` and the kernel's name
/// reduced to identifier characters (at most 40 of them).
pub fn entry_name(index: usize, name: &str) -> String {
    let mut s = format!("varc_k{index}_");
    s.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40),
    );
    s
}

impl<'a> Em<'a> {
    pub fn new(p: &'a Program, k: &'a Kernel, index: usize) -> Em<'a> {
        Em {
            p,
            k,
            index,
            body: String::new(),
            counts: [0; 5],
            labels: 0,
            bases: vec![],
            vars: vec![],
            extents: vec![],
            fails: BTreeSet::new(),
            reduce_value: None,
            shared: vec![],
        }
    }

    fn reg(&mut self, class: usize) -> String {
        let n = self.counts[class];
        self.counts[class] += 1;
        format!("{}{n}", PREFIX[class])
    }
    pub fn pred(&mut self) -> String {
        self.reg(PRED)
    }
    pub fn r16(&mut self) -> String {
        self.reg(B16)
    }
    pub fn r32(&mut self) -> String {
        self.reg(B32)
    }
    pub fn r64(&mut self) -> String {
        self.reg(B64)
    }
    pub fn rf(&mut self) -> String {
        self.reg(F32)
    }

    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("$L{}_{}", self.index, self.labels)
    }

    /// Emits one instruction (without the trailing `;`).
    pub fn ins(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.body, "\t{};", s.as_ref());
    }

    pub fn put_label(&mut self, l: &str) {
        let _ = writeln!(self.body, "{l}:");
    }

    /// The label of the exit that records `status` and stops the thread.
    pub fn fail_label(&mut self, status: u32) -> String {
        self.fails.insert(status);
        format!("$Lfail{}_{status}", self.index)
    }

    /// Branches to the failure exit for `status` when `pred` holds.
    pub fn fail_if(&mut self, pred: &str, status: u32) {
        let l = self.fail_label(status);
        self.ins(format!("@{pred} bra {l}"));
    }

    pub fn var(&self, v: Var) -> R<String> {
        self.vars
            .iter()
            .rev()
            .find(|b| b.0 == v)
            .map(|b| b.1.clone())
            .ok_or_else(|| format!("loop variable {v:?} is not bound"))
    }

    pub fn base(&self, buf: usize) -> String {
        self.bases
            .iter()
            .find(|b| b.0 == buf)
            .map(|b| b.1.clone())
            .expect("every buffer a kernel touches has a parameter")
    }
}

/// The buffers kernel `k` touches, in parameter order (ascending ids).
pub fn kernel_buffers(k: &Kernel) -> Vec<usize> {
    let mut used: Vec<usize> = k.reads().into_iter().map(|b| b.0).collect();
    used.push(k.store.buf.0);
    used.sort();
    used.dedup();
    used
}

/// Writes the `.entry` for kernel `index` of `p` and returns its launch
/// shape. The mode, first that applies: an empty domain launches nothing;
/// a kernel that is not parallel-safe runs on one thread; a contraction
/// big enough ([`crate::gemm`]) runs on tensor cores unless the precision
/// is f32; a long reduction over few points that cannot fail runs one
/// warp per point ([`crate::warp`]); anything else one thread per point.
pub fn kernel(p: &Program, index: usize, opts: &crate::Options, out: &mut String) -> R<Launch> {
    let k = &p.kernels[index];
    check::validate(p, k)?;
    let points: usize = k.domain.iter().product();
    let serial = !check::parallel_safe(k);
    if points == 0 {
        return entry(p, index, out, |_| Ok(Launch::EMPTY));
    }
    if !serial
        && let Some(a) = crate::attention::tagged(k)
        && let Some(t) = crate::attention::plan(a)
    {
        return entry(p, index, out, |em| em.attention(a, t));
    }
    if !serial
        && opts.precision != crate::Precision::F32
        && let Some(g) = crate::gemm::recognise_conv(p, k)
        && g.launchable(&k.domain)
    {
        return entry(p, index, out, |em| em.gemm(&g, opts.precision));
    }
    if !serial
        && opts.precision != crate::Precision::F32
        && let Some(g) = crate::gemm::recognise(p, k)
        && g.worth_tensor_cores(&k.domain)
    {
        return entry(p, index, out, |em| em.gemm(&g, opts.precision));
    }
    if !serial
        && opts.warp_reductions
        && let Some(w) = crate::warp::recognise(p, k)
        && w.worth_a_warp()
    {
        // A failure exit inside the lanes' loop would leave the warp's
        // shuffles waiting on an exited lane: only kernels that cannot
        // fail run one warp per point.
        let mut text = String::new();
        let launch = entry(p, index, &mut text, |em| {
            let l = em.warp_reduce(&w)?;
            Ok(if em.fails.is_empty() {
                l
            } else {
                Launch::EMPTY
            })
        })?;
        if launch.mode == KernelMode::Warp {
            out.push_str(&text);
            return Ok(launch);
        }
    }
    entry(p, index, out, |em| {
        em.grid_loop(points)?;
        Ok(crate::plan::thread_launch(points, serial))
    })
}

/// Writes one `.entry`: parameters and status word set up, `body` emitted,
/// then the failure exits, the register and shared declarations.
pub fn entry(
    p: &Program,
    index: usize,
    out: &mut String,
    body: impl FnOnce(&mut Em) -> R<Launch>,
) -> R<Launch> {
    let k = &p.kernels[index];
    let name = entry_name(index, &k.name);
    let bufs = kernel_buffers(k);
    let mut em = Em::new(p, k, index);

    let mut params = Vec::new();
    for &b in &bufs {
        let param = format!("{name}_b{b}");
        let raw = em.r64();
        let base = em.r64();
        em.ins(format!("ld.param.u64 {raw}, [{param}]"));
        em.ins(format!("cvta.to.global.u64 {base}, {raw}"));
        em.bases.push((b, base));
        params.push(param);
    }
    let status_param = format!("{name}_status");
    let status = {
        let raw = em.r64();
        let st = em.r64();
        em.ins(format!("ld.param.u64 {raw}, [{status_param}]"));
        em.ins(format!("cvta.to.global.u64 {st}, {raw}"));
        st
    };
    let launch = body(&mut em)?;
    em.ins("ret");
    for code in em.fails.clone() {
        let l = em.fail_label(code);
        em.put_label(&l);
        let old = em.r32();
        let word = crate::status_word(index, code);
        em.ins(format!("atom.global.cas.b32 {old}, [{status}], 0, {word}"));
        em.ins("exit");
    }

    let _ = writeln!(
        out,
        "// kernel {index}: {}  domain {:?}  ({} points, {:?})",
        k.name.replace('\n', " "),
        k.domain,
        k.points(),
        launch.mode
    );
    for (s, bytes) in &em.shared {
        let _ = writeln!(out, ".shared .align 16 .b8 {s}[{bytes}];");
    }
    let _ = writeln!(out, ".visible .entry {name}(");
    for param in &params {
        let _ = writeln!(out, "\t.param .u64 {param},");
    }
    let _ = writeln!(out, "\t.param .u64 {status_param}\n)");
    if matches!(
        launch.mode,
        KernelMode::Mma | KernelMode::Warp | KernelMode::Attention | KernelMode::Conv
    ) {
        // The block size these entries are written for (tiles, warps per
        // block): ptxas budgets registers for it, the driver refuses any
        // other. One-thread-per-point entries leave ptxas free (with the
        // bound, its sm_90 schedule of some long loops spills).
        let _ = writeln!(out, ".maxntid {}, 1, 1", launch.block);
    }
    out.push_str("{\n");
    for (class, &n) in em.counts.iter().enumerate() {
        if n > 0 {
            let _ = writeln!(out, "\t.reg {} {}<{n}>;", DECL[class], PREFIX[class]);
        }
    }
    out.push('\n');
    out.push_str(&em.body);
    out.push_str("}\n");
    Ok(launch)
}

impl Em<'_> {
    /// `for (i = global thread id; i < points; i += total threads)`, each
    /// `i` decomposed into the domain's loop variables (last axis fastest).
    pub fn grid_loop(&mut self, points: usize) -> R<()> {
        let (ctaid, ntid, tid, nctaid) = (self.r32(), self.r32(), self.r32(), self.r32());
        self.ins(format!("mov.u32 {ctaid}, %ctaid.x"));
        self.ins(format!("mov.u32 {ntid}, %ntid.x"));
        self.ins(format!("mov.u32 {tid}, %tid.x"));
        self.ins(format!("mov.u32 {nctaid}, %nctaid.x"));
        let (i, t, stride) = (self.r64(), self.r64(), self.r64());
        self.ins(format!("mul.wide.u32 {i}, {ctaid}, {ntid}"));
        self.ins(format!("cvt.u64.u32 {t}, {tid}"));
        self.ins(format!("add.s64 {i}, {i}, {t}"));
        self.ins(format!("mul.wide.u32 {stride}, {nctaid}, {ntid}"));
        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        self.ins(format!("setp.ge.u64 {p}, {i}, {points}"));
        self.ins(format!("@{p} bra {done}"));
        self.decompose(&i, points);
        for (a, &n) in self.k.domain.iter().enumerate() {
            self.extents.push((Var::Out(a), n));
        }
        self.point()?;
        self.ins(format!("add.s64 {i}, {i}, {stride}"));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);
        Ok(())
    }

    /// Binds `Out(a)` for every axis from the flat index `i`: rem/div by
    /// the static extents, in 32 bits when the domain fits.
    pub fn decompose(&mut self, i: &str, points: usize) {
        let domain = self.k.domain.clone();
        let outermost = domain.iter().position(|&n| n > 1);
        let narrow = points <= u32::MAX as usize;
        let rest = if narrow {
            let r = self.r32();
            self.ins(format!("cvt.u32.u64 {r}, {i}"));
            r
        } else {
            let r = self.r64();
            self.ins(format!("mov.u64 {r}, {i}"));
            r
        };
        let w = if narrow { "u32" } else { "u64" };
        let mut bound = Vec::new();
        for a in (0..domain.len()).rev() {
            let n = domain[a];
            let v = self.r64();
            if n <= 1 {
                self.ins(format!("mov.u64 {v}, 0"));
            } else if Some(a) == outermost {
                self.widen(&v, &rest, narrow);
            } else {
                let digit = if narrow { self.r32() } else { self.r64() };
                self.ins(format!("rem.{w} {digit}, {rest}, {n}"));
                self.ins(format!("div.{w} {rest}, {rest}, {n}"));
                self.widen(&v, &digit, narrow);
            }
            bound.push((Var::Out(a), v));
        }
        bound.reverse();
        self.vars.extend(bound);
    }

    fn widen(&mut self, dst: &str, src: &str, narrow: bool) {
        if narrow {
            self.ins(format!("cvt.u64.u32 {dst}, {src}"));
        } else {
            self.ins(format!("mov.u64 {dst}, {src}"));
        }
    }

    /// The kernel's value at the bound point, stored.
    fn point(&mut self) -> R<()> {
        let k = self.k;
        let v = self.expr(&k.value)?;
        self.store(v)
    }
}
