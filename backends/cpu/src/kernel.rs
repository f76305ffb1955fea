//! One kernel → one Cranelift function: the loop nest of its plan around
//! the expression code, then the store.

use crate::abi;
use crate::activation;
use crate::attention::{self, AttentionImport};
use crate::conv;
use crate::expr::{Em, Point, R};
use crate::gemm::{self, Ukernels};
use crate::math::Imports;
use crate::plan::{LANES, Plan};
use crate::{CodegenError, check, isa, plan};
use cranelift_codegen::ir::{Function, InstBuilder, UserFuncName, types};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use std::collections::HashMap;
use varc_ir::kernel::{Kernel, Program, Var};

/// A kernel's function, not yet compiled.
pub struct Built {
    pub func: Function,
    pub plan: Plan,
    /// The domain axis whose range the function's `lo..hi` selects (see
    /// [`split_axis`]); `None`: the function ignores the range.
    pub split: Option<usize>,
    /// Rough cost of the whole kernel (points × reduction extents), for
    /// deciding whether a parallel run pays.
    pub work: u64,
    /// The runtime routine the function calls instead of the loop nest
    /// (for listings), when the kernel's library tag was honoured.
    pub library: Option<&'static str>,
    /// The weight buffer the function reads packed ahead (its sgemm B
    /// operand), if any.
    pub packed_b: Option<varc_ir::kernel::BufId>,
}

/// The axis a kernel's work is split along for parallel runs: its first
/// domain axis longer than 1, when that axis is a plain outer loop of the
/// plan (of the epilogue too, for sgemm kernels, where it must be the
/// first batch axis) and distinct points store to distinct elements that
/// no other point reads. Each share then computes its points exactly as a
/// whole run would, so results do not depend on how the range is cut.
pub fn split_axis(k: &Kernel, plan: Plan, gemm: Option<&gemm::Gemm>) -> Option<usize> {
    let a = k.domain.iter().position(|&n| n > 1)?;
    let st = &k.store;
    if !st.gathers.is_empty()
        || !gemm::injective(&st.index, &k.domain)
        || plan::reads_elsewhere(k, st)
    {
        return None;
    }
    let d = k.domain.len();
    let outer_ok = match gemm {
        Some(g) => g.batch.first() == Some(&a) && (g.epilogue.is_none() || a < plan.outer_axes(d)),
        None => a < plan.outer_axes(d),
    };
    outer_ok.then_some(a)
}

/// Points × (1 + the extents of every reduction), saturating.
fn work(k: &Kernel) -> u64 {
    let mut inner = 1u64;
    k.value.visit(&mut |e| {
        if let varc_ir::kernel::Expr::Reduce { vars, .. } = e {
            let n = vars.iter().fold(1u64, |a, v| a.saturating_mul(v.1 as u64));
            inner = inner.saturating_add(n);
        }
    });
    (k.points() as u64).saturating_mul(inner)
}

/// Builds the CLIF function for `k` (pure Cranelift: the code calls
/// nothing but the imported libm functions).
pub fn build(
    p: &Program,
    k: &Kernel,
    isa: &dyn TargetIsa,
    imports: &Imports,
) -> Result<Built, CodegenError> {
    build_with(p, k, isa, imports, None)
}

/// Builds the CLIF function for `k`; with `uk`, contraction kernels call
/// the runtime's microkernels (see [`gemm`]).
pub fn build_with(
    p: &Program,
    k: &Kernel,
    isa: &dyn TargetIsa,
    imports: &Imports,
    uk: Option<&Ukernels>,
) -> Result<Built, CodegenError> {
    build_host(p, k, isa, imports, uk, LibraryImports::default(), None)
}

/// The runtime routines a host module imports for library-tagged kernels;
/// a kernel whose routine is absent compiles its loop nest.
#[derive(Clone, Copy, Debug, Default)]
pub struct LibraryImports {
    /// `varc_attention` (see [`attention`]).
    pub attention: Option<AttentionImport>,
    /// `varc_conv2d`'s external-name index (see [`conv`]).
    pub conv: Option<u32>,
    /// `varc_activation`'s external-name index (see [`activation`]).
    pub activation: Option<u32>,
}

/// [`build_with`] with the library routines of `libs`; with `packs`, sgemm
/// B operands that are weights are packed at compile time (see
/// [`gemm::WeightPacks`]).
pub fn build_host(
    p: &Program,
    k: &Kernel,
    isa: &dyn TargetIsa,
    imports: &Imports,
    uk: Option<&Ukernels>,
    libs: LibraryImports,
    packs: Option<&gemm::WeightPacks>,
) -> Result<Built, CodegenError> {
    let err = |e: String| CodegenError::kernel(&k.name, e);
    check::validate(p, k).map_err(err)?;
    if let (Some(import), Some(call)) = (libs.attention, attention::tagged(k)) {
        return Ok(Built {
            func: attention::build(p, call, isa, import).map_err(err)?,
            plan: Plan::SCALAR,
            split: None,
            work: attention::work(call),
            library: Some("attention ukernel"),
            packed_b: None,
        });
    }
    let mut conv = libs.conv.zip(conv::tagged(p, k));
    let mut gemm = uk
        .filter(|_| conv.is_none())
        .and_then(|_| gemm::recognise_for(p, k, packs.is_some()));
    let packed = gemm.as_ref().zip(packs).and_then(|(g, w)| w.pack(p, g));
    if let (Some(g), Some(_)) = (&mut gemm, &packed) {
        g.fold_bias(p);
    }
    let packed_w = conv
        .as_ref()
        .zip(packs)
        .and_then(|((_, c), w)| w.pack_conv(p, c.call));
    // A value (or epilogue) `act(x)`: the loop nest computes x, then one
    // call applies the activation (`arg`: the kernel for x, when it is the
    // whole kernel's value; `Some(None)`: nothing to compute first).
    let mut arg = None;
    let act = libs
        .activation
        .and_then(|import| match (&mut conv, &mut gemm) {
            (Some((_, c)), _) => activation::from_epilogue(p, &mut c.epilogue, import),
            (None, Some(g)) => activation::from_epilogue(p, &mut g.epilogue, import),
            (None, None) => activation::recognise(p, k, import).map(|(call, a)| {
                arg = Some(a);
                call
            }),
        });
    let nest_k = match &arg {
        Some(a) => a.as_ref(),
        None => Some(k),
    };
    let vregs = isa::vector_registers(isa);
    let epilogue = match (&conv, &gemm) {
        (Some((_, c)), _) => Some(c.epilogue.as_ref()),
        (None, Some(g)) => Some(g.epilogue.as_ref()),
        (None, None) => None,
    };
    let mut plan = match epilogue {
        Some(e) => e.map_or(Plan::SCALAR, |e| plan::plan(p, e, vregs)),
        None => nest_k.map_or(Plan::SCALAR, |n| plan::plan(p, n, vregs)),
    };
    plan.sgemm = gemm.is_some();
    plan.epilogue = epilogue.is_some_and(|e| e.is_some());
    let sig = abi::kernel_signature(isa.default_call_conv());
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let abi::Entry { bufs, lo, hi, fail } = abi::begin(&mut b);
    // The convolution call splits its own work across the pool.
    let split = split_axis(k, plan, gemm.as_ref()).filter(|_| conv.is_none());
    let range = split.map(|a| {
        // Clamp lo..hi to 0..extent so any range the caller passes stays
        // inside the domain (the static bounds checks assume it).
        let n = b.ins().iconst(types::I64, k.domain[a] as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let lo = b.ins().smax(lo, zero);
        let hi = b.ins().smin(hi, n);
        (a, lo, hi)
    });
    let mut used = k.reads();
    used.push(k.store.buf);
    let bases: HashMap<usize, _> = used
        .iter()
        .map(|id| (id.0, abi::load_base(&mut b, bufs, id.0)))
        .collect();
    let mut em = Em {
        b,
        p,
        k,
        bases,
        fail,
        fma: isa::has_fma(isa),
        imports,
        funcs: HashMap::new(),
        extents: vec![],
        lane: None,
        split: range,
    };
    if !k.domain.contains(&0) {
        match (&conv, &gemm, uk) {
            (Some((import, c)), _, _) => {
                em.conv_call(c.call, c.bias, *import, packed_w.as_deref())
                    .map_err(err)?;
                if let Some(e) = &c.epilogue {
                    em.k = e;
                    em.nest(plan).map_err(err)?;
                }
            }
            (None, Some(g), Some(uk)) => {
                em.gemm_with(g, uk, packed.as_ref()).map_err(err)?;
                if let Some(e) = &g.epilogue {
                    em.k = e;
                    em.nest(plan).map_err(err)?;
                }
            }
            _ => {
                if let Some(n) = nest_k {
                    em.k = n;
                    em.nest(plan).map_err(err)?;
                }
            }
        }
        if let Some(call) = act {
            em.k = k;
            em.activation_call(call).map_err(err)?;
        }
    }
    abi::finish(&mut em.b, fail);
    em.b.finalize(isa.frontend_config());
    Ok(Built {
        func,
        plan,
        split,
        work: conv.as_ref().map_or(work(k), |(_, c)| conv::work(c.call)),
        library: match (act, &conv, &gemm) {
            (Some(a), Some(_), _) => Some(activation::label(Some("conv"), a.act)),
            (Some(a), None, Some(_)) => Some(activation::label(Some("sgemm"), a.act)),
            (Some(a), None, None) => Some(activation::label(None, a.act)),
            (None, ..) => conv.as_ref().map(|_| "conv ukernel"),
        },
        packed_b: packed.map(|x| x.buf),
    })
}

impl Em<'_, '_> {
    fn nest(&mut self, plan: Plan) -> R<()> {
        let d = self.k.domain.len();
        for (i, &n) in self.k.domain.iter().enumerate() {
            self.extents.push((Var::Out(i), n));
        }
        let outer = plan.outer_axes(d);
        self.outer(0, outer, Point::default(), plan)
    }

    fn outer(&mut self, axis: usize, outer: usize, pt: Point, plan: Plan) -> R<()> {
        if axis == outer {
            return self.inner(pt, plan);
        }
        let n = self.k.domain[axis] as i64;
        let body =
            |em: &mut Self, iv| em.outer(axis + 1, outer, pt.with(Var::Out(axis), iv, 0), plan);
        match self.split {
            Some((s, lo, hi)) if s == axis => self.for_dynamic(lo, hi, body),
            _ => self.for_range(0, n, 1, body),
        }
    }

    fn inner(&mut self, pt: Point, plan: Plan) -> R<()> {
        if !plan.vector {
            return self.points(&[pt], false);
        }
        if plan.rows == 1 {
            return self.columns(&[pt], plan);
        }
        let r = Var::Out(self.k.domain.len() - 2);
        let m = self.k.domain[self.k.domain.len() - 2] as i64;
        let rows = plan.rows as i64;
        let main = m - m % rows;
        self.for_range(0, main, rows, |em, iv| {
            let pts: Vec<Point> = (0..rows).map(|j| pt.with(r, iv, j)).collect();
            em.columns(&pts, plan)
        })?;
        self.for_range(main, m, 1, |em, iv| em.columns(&[pt.with(r, iv, 0)], plan))
    }

    /// The innermost axis for a set of rows: blocks of `cols` vectors, then
    /// single vectors, then a scalar tail.
    fn columns(&mut self, rows: &[Point], plan: Plan) -> R<()> {
        let v = Var::Out(self.k.domain.len() - 1);
        let n = *self.k.domain.last().expect("vector kernels have an axis") as i64;
        let lanes = LANES as i64;
        let w = lanes * plan.cols as i64;
        let main = n - n % w;
        let at = |iv, cols: i64| -> Vec<Point> {
            rows.iter()
                .flat_map(|p| (0..cols).map(move |c| p.with(v, iv, c * lanes)))
                .collect()
        };
        self.for_range(0, main, w, |em, iv| {
            em.points(&at(iv, plan.cols as i64), true)
        })?;
        let vec_end = main + (n - main) / lanes * lanes;
        self.for_range(main, vec_end, lanes, |em, iv| em.points(&at(iv, 1), true))?;
        self.for_range(vec_end, n, 1, |em, iv| em.points(&at(iv, 1), false))
    }

    /// Computes and stores the kernel's value at `pts`.
    fn points(&mut self, pts: &[Point], vector: bool) -> R<()> {
        self.lane = vector.then(|| Var::Out(self.k.domain.len() - 1));
        let k = self.k;
        let vals = self.expr(&k.value, pts);
        let r = vals.and_then(|vals| {
            vals.into_iter()
                .zip(pts)
                .try_for_each(|(v, pt)| self.store(v, pt))
        });
        self.lane = None;
        r
    }
}
