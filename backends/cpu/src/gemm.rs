//! Contraction kernels through the runtime's sgemm microkernel (host JIT
//! only; objects for other targets keep the pure-Cranelift loops so they
//! stand alone).
//!
//! A kernel qualifies when its value holds one `Reduce(Sum)` (possibly
//! repeated) over (at most) one reduction variable of a product of two
//! unguarded, ungathered f32 loads, and it stores f32 without gathers to
//! a buffer it does not read. Its domain axes split into `n` (read by one
//! operand only, preferring a contiguous store), `m` (read by the other
//! only), and batch axes (the
//! rest). The generated code loops over the batch axes and calls
//! `varc_sgemm` with element strides taken from the affine maps, writing
//! the raw contraction into the output; anything else in the value (bias,
//! scale, masks, division by a row sum) becomes an epilogue kernel over
//! the same domain that reads the stored contraction back in place.
//!
//! When B is a weight read the same way at every batch point, the JIT packs
//! it once at compile time ([`WeightPacks`]) into the microkernel's panel
//! layout and calls `varc_sgemm_packed` with the packed matrix's address,
//! so a run packs only the (small) A blocks. Then products of a single row
//! (GEMV-like: one token) qualify too.

use crate::expr::{Em, Point, R};
use cranelift_codegen::ir::{
    AbiParam, ExtFuncData, ExternalName, FuncRef, InstBuilder, Signature, UserExternalName, Value,
    types,
};
use cranelift_codegen::isa::CallConv;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use varc_ir::kernel::{Access, BinaryFn, BufId, BufKind, ConvCall, Expr, Kernel, Program, Var};
use varc_ir::{DType, TensorData};
use varc_runtime::ukernel::conv::{ConvShape, Tensor};
use varc_runtime::ukernel::{MatRef, PackedB};

/// The symbol generated code calls (`varc_runtime::ukernel::varc_sgemm`).
pub const SGEMM_SYMBOL: &str = "varc_sgemm";

/// The packed-B entry (`varc_runtime::ukernel::varc_sgemm_packed`).
pub const SGEMM_PACKED_SYMBOL: &str = "varc_sgemm_packed";

/// Smallest `m·n·k` worth a microkernel call (packing and call overhead).
const MIN_WORK: usize = 4096;

/// Runtime microkernels a JIT module links: the external-name index
/// (namespace 0) `varc_sgemm` is imported under.
#[derive(Clone, Copy, Debug)]
pub struct Ukernels {
    pub sgemm: u32,
}

/// `fn(m, n, k, a, rs_a, cs_a, b, rs_b, cs_b, c, rs_c, cs_c, accumulate: u32)`.
pub fn sgemm_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..12 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.params.push(AbiParam::new(types::I32));
    sig
}

/// Whether the JIT packs weight B operands at compile time (default on;
/// `VARC_PACK_WEIGHTS=0` turns it off, for comparisons).
pub fn packing_enabled() -> bool {
    std::env::var("VARC_PACK_WEIGHTS").map_or(true, |v| v != "0")
}

/// `fn(m, a, rs_a, cs_a, b: *const PackedB, c, rs_c, cs_c, accumulate: u32,
/// bias: *const f32)`.
pub fn sgemm_packed_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..8 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.params.push(AbiParam::new(types::I32));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// Weight B operands packed at compile time for the host JIT: one
/// [`PackedB`] per distinct (weight, view), shared by every kernel that
/// reads it so. The packed matrices must outlive the compiled code (the
/// code holds their addresses): the JIT program keeps them.
pub struct WeightPacks {
    /// External-name index (namespace 0) `varc_sgemm_packed` is imported
    /// under.
    symbol: u32,
    packs: RefCell<HashMap<PackKey, Arc<PackedB>>>,
    /// Time spent packing (for `VARC_PROFILE`).
    packing: std::cell::Cell<std::time::Duration>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PackKey {
    /// A convolution's weights packed as its A operand
    /// ([`PackedB::conv_weights`]; `rs`, `cs` are then w's m and kw
    /// strides, `mid` its c and kh strides, `k`, `n` its depth and
    /// channel count), not a B operand (`mid` 0).
    conv: bool,
    mid: [i64; 2],
    buf: usize,
    offset: i64,
    rs: i64,
    cs: i64,
    k: usize,
    n: usize,
}

/// A kernel's B operand, packed ahead.
pub struct PackedOperand {
    /// The weight buffer it was packed from.
    pub buf: BufId,
    pack: Arc<PackedB>,
    symbol: u32,
}

impl WeightPacks {
    pub fn new(symbol: u32) -> WeightPacks {
        WeightPacks {
            symbol,
            packs: RefCell::new(HashMap::new()),
            packing: Default::default(),
        }
    }

    /// `g`'s B packed (once per distinct weight view), when it is an f32
    /// weight that no batch axis moves.
    pub fn pack(&self, p: &Program, g: &Gemm) -> Option<PackedOperand> {
        let b = &g.b;
        let BufKind::Weight(t) = &p.buffer(b.buf).kind else {
            return None;
        };
        let TensorData::F32(data) = t.data() else {
            return None;
        };
        if g.batch.iter().any(|&ax| b.index.coeff(Var::Out(ax)) != 0) {
            return None;
        }
        let n = g.n.map_or(1, |i| g.domain[i]);
        let key = PackKey {
            conv: false,
            mid: [0, 0],
            buf: b.buf.0,
            offset: b.index.offset,
            rs: g.kvar.map_or(0, |v| b.index.coeff(v)),
            cs: g.n.map_or(0, |i| b.index.coeff(Var::Out(i))),
            k: g.k,
            n,
        };
        let view = MatRef {
            data,
            offset: usize::try_from(key.offset).ok()?,
            rs: isize::try_from(key.rs).ok()?,
            cs: isize::try_from(key.cs).ok()?,
        };
        // `recognise` proved the access in range; a view outside its data
        // (which would make packing panic) is left to the per-call path.
        let inside =
            varc_runtime::ukernel::span(key.k, key.n, view.rs, view.cs).is_none_or(|(lo, hi)| {
                let o = view.offset as isize;
                o + lo >= 0 && ((o + hi) as usize) < data.len()
            });
        if !inside {
            return None;
        }
        let pack = self
            .packs
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let t0 = std::time::Instant::now();
                let pack = Arc::new(PackedB::new(key.k, key.n, view));
                self.packing.set(self.packing.get() + t0.elapsed());
                pack
            })
            .clone();
        Some(PackedOperand {
            buf: b.buf,
            pack,
            symbol: self.symbol,
        })
    }

    /// The weights of convolution `c` packed as its A operand (once per
    /// distinct weight view), when they are an f32 weight whose view
    /// packs (the call then packs nothing per run).
    pub fn pack_conv(&self, p: &Program, c: &ConvCall) -> Option<Arc<PackedB>> {
        let BufKind::Weight(t) = &p.buffer(c.w.buf).kind else {
            return None;
        };
        let TensorData::F32(data) = t.data() else {
            return None;
        };
        let z = conv_shape(c)?;
        let offset = usize::try_from(c.w.offset).ok()?;
        let strides = c.w.strides.map(|s| isize::try_from(s).ok());
        let strides = [strides[0]?, strides[1]?, strides[2]?, strides[3]?];
        let key = PackKey {
            conv: true,
            mid: [c.w.strides[1], c.w.strides[2]],
            buf: c.w.buf.0,
            offset: c.w.offset,
            rs: c.w.strides[0],
            cs: c.w.strides[3],
            k: z.k(),
            n: z.out_channels,
        };
        if let Some(hit) = self.packs.borrow().get(&key) {
            return Some(hit.clone());
        }
        let t0 = std::time::Instant::now();
        let pack = PackedB::conv_weights(
            &z,
            Tensor {
                data,
                offset,
                strides,
            },
        )
        .ok()?;
        let pack = Arc::new(pack);
        self.packing.set(self.packing.get() + t0.elapsed());
        self.packs.borrow_mut().insert(key, pack.clone());
        Some(pack)
    }

    /// Bytes packed so far, and the time packing took.
    pub fn stats(&self) -> (usize, std::time::Duration) {
        let bytes = self.packs.borrow().values().map(|p| p.bytes()).sum();
        (bytes, self.packing.get())
    }

    /// Every matrix packed so far.
    pub fn into_packs(self) -> Vec<Arc<PackedB>> {
        self.packs.into_inner().into_values().collect()
    }
}

/// The buffers `k` loads from, apart from one load of `packed` (its packed
/// B operand, read through the packed copy instead).
pub fn plain_reads(k: &Kernel, packed: Option<BufId>) -> Vec<BufId> {
    let mut skip = packed;
    let mut out = Vec::new();
    k.value.visit(&mut |e| {
        if let Expr::Load { access, .. } = e {
            if skip == Some(access.buf) {
                skip = None;
            } else {
                out.push(access.buf);
            }
        }
    });
    out
}

/// A kernel recognised as batched matrix products plus an epilogue.
pub struct Gemm {
    a: Access,
    b: Access,
    /// Domain axes of C's rows and columns (`None`: extent 1).
    m: Option<usize>,
    n: Option<usize>,
    /// The reduction variable and its extent.
    kvar: Option<Var>,
    k: usize,
    /// The kernel's domain.
    domain: Vec<usize>,
    /// Domain axes looped around the calls, outermost first.
    pub batch: Vec<usize>,
    /// The rest of the value, over the domain, reading C in place.
    pub epilogue: Option<Kernel>,
    /// A bias along the columns that the microkernel adds to each tile
    /// (`varc_sgemm_packed`'s bias), taken out of the epilogue by
    /// [`Gemm::fold_bias`].
    bias: Option<Access>,
}

impl Gemm {
    /// Moves a column bias from the epilogue into the packed-B call: when
    /// every read of C in the epilogue is `C + bias[j]` (either order) with
    /// one bias, a plain f32 load along the columns with unit stride, those
    /// sums become `C` and the microkernel adds the bias to each tile while
    /// it is in cache (an epilogue of only `C + bias` disappears). The
    /// rounding is the same: the bias is added once the product is
    /// complete, as the epilogue did.
    pub fn fold_bias(&mut self, p: &Program) {
        let (Some(e), Some(n)) = (&self.epilogue, self.n) else {
            return;
        };
        let c = Expr::load(e.store.buf, e.store.index.clone());
        let mut bias: Option<Access> = None;
        let mut uses = 0;
        let mut ok = true;
        e.value.visit(&mut |x| {
            if *x == c {
                uses += 1;
            }
            if let Expr::Binary(BinaryFn::Add, l, r) = x {
                let other = match (**l == c, **r == c) {
                    (true, false) => r,
                    (false, true) => l,
                    _ => return,
                };
                match column_bias(p, other, n, &self.domain) {
                    Some(a) if bias.as_ref().is_none_or(|b| *b == a) && a.buf != e.store.buf => {
                        bias = Some(a);
                    }
                    _ => ok = false,
                }
            }
        });
        let Some(b) = bias.filter(|_| ok) else {
            return;
        };
        let sum = |l: &Expr, r: &Expr| Expr::binary(BinaryFn::Add, l.clone(), r.clone());
        let bias_load = Expr::load(b.buf, b.index.clone());
        let (cb, bc) = (sum(&c, &bias_load), sum(&bias_load, &c));
        let folded = replace_exprs(&e.value, &[&cb, &bc], &c);
        // Every read of C must have been one of the sums (each holds one).
        let mut sums = 0;
        e.value
            .visit(&mut |x| sums += usize::from(*x == cb || *x == bc));
        if sums != uses {
            return;
        }
        self.epilogue = (folded != c).then(|| Kernel {
            value: folded,
            ..e.clone()
        });
        self.bias = Some(b);
    }
}

/// `e` as a plain f32 load of `n`'s values along domain axis `n` with unit
/// stride and nothing else, inside its buffer.
fn column_bias(p: &Program, e: &Expr, n: usize, domain: &[usize]) -> Option<Access> {
    let Expr::Load { access, guards, .. } = e else {
        return None;
    };
    let a = &**access;
    let buf = p.buffer(a.buf);
    let only_n = a
        .index
        .terms
        .iter()
        .all(|&(v, c)| v == Var::Out(n) && c == 1)
        && a.index.coeff(Var::Out(n)) == 1;
    let inside = a.index.offset >= 0
        && (a.index.offset as usize)
            .checked_add(domain[n])
            .is_some_and(|end| end <= buf.len());
    (guards.is_empty() && a.gathers.is_empty() && buf.dtype == DType::F32 && only_n && inside)
        .then(|| a.clone())
}

/// `e` with every subexpression equal to one of `from` replaced by `to`.
fn replace_exprs(e: &Expr, from: &[&Expr], to: &Expr) -> Expr {
    if from.contains(&e) {
        return to.clone();
    }
    let r = |x: &Expr| Box::new(replace_exprs(x, from, to));
    match e {
        Expr::Reduce { op, vars, body } => Expr::Reduce {
            op: *op,
            vars: vars.clone(),
            body: r(body),
        },
        Expr::Unary(f, a) => Expr::Unary(*f, r(a)),
        Expr::Binary(f, a, b) => Expr::Binary(*f, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Cast(d, a) => Expr::Cast(*d, r(a)),
        Expr::Load { .. } | Expr::Const { .. } | Expr::Index(_) => e.clone(),
    }
}

/// Replaces every `Reduce` in `e` by `with`.
pub(crate) fn replace_reduce(e: &Expr, with: &Expr) -> Expr {
    let r = |x: &Expr| Box::new(replace_reduce(x, with));
    match e {
        Expr::Reduce { .. } => with.clone(),
        Expr::Unary(f, a) => Expr::Unary(*f, r(a)),
        Expr::Binary(f, a, b) => Expr::Binary(*f, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Cast(d, a) => Expr::Cast(*d, r(a)),
        Expr::Load { .. } | Expr::Const { .. } | Expr::Index(_) => e.clone(),
    }
}

/// Distinct domain points store to distinct elements.
pub(crate) use varc_ir::kernel::analysis::injective;

/// Recognises `k` as a contraction the microkernel can run. With `packs`,
/// B operands that are weights will be packed ahead ([`WeightPacks`]),
/// which makes single-row products worth a call.
pub fn recognise_for(p: &Program, k: &Kernel, packs: bool) -> Option<Gemm> {
    let c = varc_ir::kernel::analysis::contraction(p, k)?;
    let st = &k.store;
    let (a, b, m, n, kvar, kext, batch) = (c.a, c.b, c.m_axis, c.n_axis, c.kvar, c.k, c.batch);
    let (me, ne) = (c.m, c.n);
    // A single row is worth a call only on B packed ahead (see
    // `WeightPacks::pack`).
    let packable = packs
        && matches!(&p.buffer(b.buf).kind, BufKind::Weight(t) if t.dtype() == DType::F32)
        && batch.iter().all(|&ax| b.index.coeff(Var::Out(ax)) == 0);
    if (me < 2 && !packable) || ne < 2 || me * ne * kext < MIN_WORK {
        return None;
    }
    let c_load = Expr::load(st.buf, st.index.clone());
    let rest = replace_reduce(&k.value, &c_load);
    let epilogue = (rest != c_load).then(|| Kernel {
        name: k.name.clone(),
        domain: k.domain.clone(),
        store: st.clone(),
        value: rest,
        library: None,
    });
    Some(Gemm {
        a,
        b,
        m,
        n,
        kvar,
        k: kext,
        domain: k.domain.clone(),
        batch,
        epilogue,
        bias: None,
    })
}

impl std::fmt::Display for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sgemm ukernel")?;
        if !self.batch.is_empty() {
            write!(f, " ×{} batch axes", self.batch.len())?;
        }
        Ok(())
    }
}

impl Em<'_, '_> {
    fn import_fn(&mut self, index: u32, sig: Signature) -> FuncRef {
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(0, index));
        let signature = self.b.import_signature(sig);
        self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        })
    }

    /// The batch loops around one `varc_sgemm` call per batch point; with
    /// `packed`, the calls go to `varc_sgemm_packed` on B packed ahead.
    pub fn gemm_with(&mut self, g: &Gemm, uk: &Ukernels, packed: Option<&PackedOperand>) -> R<()> {
        let cc = self.b.func.signature.call_conv;
        let f = match packed {
            Some(pk) => self.import_fn(pk.symbol, sgemm_packed_signature(cc)),
            None => self.import_fn(uk.sgemm, sgemm_signature(cc)),
        };
        self.gemm_batch(g, f, packed, 0, Point::default())
    }

    fn gemm_batch(
        &mut self,
        g: &Gemm,
        f: FuncRef,
        packed: Option<&PackedOperand>,
        i: usize,
        pt: Point,
    ) -> R<()> {
        let Some(&axis) = g.batch.get(i) else {
            return self.gemm_call(g, f, packed, &pt);
        };
        let n = self.k.domain[axis] as i64;
        let body =
            |em: &mut Self, iv| em.gemm_batch(g, f, packed, i + 1, pt.with(Var::Out(axis), iv, 0));
        match self.split {
            Some((s, lo, hi)) if s == axis => self.for_dynamic(lo, hi, body),
            _ => self.for_range(0, n, 1, body),
        }
    }

    /// Base address of `a`'s matrix at the batch point `pt`.
    fn gemm_base(&mut self, a: &Access, batch: &[usize], pt: &Point) -> R<Value> {
        let mut addr = self.bases[&a.buf.0];
        for &axis in batch {
            let c = a.index.coeff(Var::Out(axis));
            if c != 0 {
                let (iv, _) = pt.get(Var::Out(axis))?;
                let t = self.b.ins().imul_imm_s(iv, c * 4);
                addr = self.b.ins().iadd(addr, t);
            }
        }
        Ok(self.b.ins().iadd_imm_s(addr, a.index.offset * 4))
    }

    fn gemm_call(
        &mut self,
        g: &Gemm,
        f: FuncRef,
        packed: Option<&PackedOperand>,
        pt: &Point,
    ) -> R<()> {
        let coeff = |a: &Access, ax: Option<usize>| ax.map_or(0, |i| a.index.coeff(Var::Out(i)));
        let kc = |a: &Access| g.kvar.map_or(0, |v| a.index.coeff(v));
        let st = &self.k.store;
        let ext = |ax: Option<usize>| ax.map_or(1, |i| self.k.domain[i]) as i64;
        let (m, n) = (ext(g.m), ext(g.n));
        let strides = [
            coeff(&g.a, g.m),
            kc(&g.a),
            kc(&g.b),
            coeff(&g.b, g.n),
            coeff(st, g.m),
            coeff(st, g.n),
        ];
        let st = st.clone();
        let pa = self.gemm_base(&g.a, &g.batch, pt)?;
        let pc = self.gemm_base(&st, &g.batch, pt)?;
        let c = |em: &mut Self, v: i64| em.b.ins().iconst(types::I64, v);
        if let Some(pk) = packed {
            // The JIT program keeps the packed matrix alive as long as
            // this code.
            let addr = Arc::as_ptr(&pk.pack) as i64;
            // No batch axis moves the bias (`column_bias`).
            let bias = match &g.bias {
                Some(b) => {
                    let base = self.bases[&b.buf.0];
                    self.b.ins().iadd_imm_s(base, b.index.offset * 4)
                }
                None => c(self, 0),
            };
            let args = [
                c(self, m),
                pa,
                c(self, strides[0]),
                c(self, strides[1]),
                c(self, addr),
                pc,
                c(self, strides[4]),
                c(self, strides[5]),
                self.b.ins().iconst(types::I32, 0),
                bias,
            ];
            self.b.ins().call(f, &args);
            return Ok(());
        }
        let pb = self.gemm_base(&g.b, &g.batch, pt)?;
        let args = [
            c(self, m),
            c(self, n),
            c(self, g.k as i64),
            pa,
            c(self, strides[0]),
            c(self, strides[1]),
            pb,
            c(self, strides[2]),
            c(self, strides[3]),
            pc,
            c(self, strides[4]),
            c(self, strides[5]),
            self.b.ins().iconst(types::I32, 0),
        ];
        self.b.ins().call(f, &args);
        Ok(())
    }
}

/// The runtime's shape of convolution `c`, when it passes
/// [`ConvShape::check`].
pub fn conv_shape(c: &ConvCall) -> Option<ConvShape> {
    let z = ConvShape {
        batch: c.batch,
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        in_h: c.in_size[0],
        in_w: c.in_size[1],
        out_h: c.out_size[0],
        out_w: c.out_size[1],
        kernel_h: c.kernel[0],
        kernel_w: c.kernel[1],
        stride_h: c.strides[0],
        stride_w: c.strides[1],
        dilation_h: c.dilations[0],
        dilation_w: c.dilations[1],
        pad_h: c.pads[0],
        pad_w: c.pads[1],
    };
    z.check().ok().map(|_| z)
}
