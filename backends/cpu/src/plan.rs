//! How a kernel is looped: scalar, vectorised along its innermost domain
//! axis (f32x4), and register-blocked (several rows × several vectors per
//! step, the matmul/conv pattern).
//!
//! A kernel vectorises when, with `v` its innermost domain axis:
//! * the store is to an f32 buffer with coefficient 1 on `v`, no gathers,
//!   and the kernel does not read the buffer it writes;
//! * every sub-expression that depends on `v` is f32 (or a bool mask built
//!   from f32 comparisons), loads with coefficient 1 on `v` are contiguous
//!   f32 vectors, and gather indices and guards do not depend on `v`;
//! * sub-expressions that do not depend on `v` are computed once, as
//!   scalars, and splatted (any dtype).
//!
//! Reductions inside a vectorised kernel accumulate per lane. When the
//! value contains such a reduction whose body is cheap (no transcendental
//! functions), the kernel is register-blocked: `rows` consecutive points of
//! the second-innermost axis × `cols` vectors of the innermost axis share
//! one reduction loop, with one accumulator each.

use std::fmt;
use varc_ir::DType;
use varc_ir::kernel::{Access, BinaryFn, Expr, Kernel, Program, UnaryFn, Var};

/// f32 lanes per vector.
pub const LANES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Vectorise the innermost domain axis.
    pub vector: bool,
    /// Points of the second-innermost axis per step (1 = no row blocking).
    pub rows: usize,
    /// Vectors of the innermost axis per step.
    pub cols: usize,
    /// The contraction runs in the runtime's sgemm microkernel; the other
    /// fields then describe the epilogue loop.
    pub sgemm: bool,
    /// With `sgemm`: an epilogue loop follows the microkernel calls.
    pub epilogue: bool,
}

impl Plan {
    /// How many leading domain axes (of `d`) are plain scalar loops around
    /// the vectorised / register-blocked inner ones.
    pub fn outer_axes(&self, d: usize) -> usize {
        match (self.vector, self.rows > 1) {
            (false, _) => d,
            (true, false) => d - 1,
            (true, true) => d - 2,
        }
    }

    pub const SCALAR: Plan = Plan {
        vector: false,
        rows: 1,
        cols: 1,
        sgemm: false,
        epilogue: false,
    };
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sgemm {
            f.write_str("sgemm ukernel")?;
            if !self.epilogue {
                return Ok(());
            }
            f.write_str(", epilogue ")?;
        }
        if !self.vector {
            return f.write_str("scalar");
        }
        write!(f, "f32x{LANES}")?;
        if self.rows > 1 || self.cols > 1 {
            write!(f, ", register-blocked {}x{}", self.rows, self.cols * LANES)?;
        }
        Ok(())
    }
}

/// The class of a sub-expression in a kernel vectorised along `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VClass {
    /// Does not depend on `v`: computed as a scalar.
    Uniform(DType),
    /// f32x4.
    Vec,
    /// Bool per lane (all-ones / zero i32x4).
    Mask,
}

/// Whether `e` reads loop variable `v` (directly, through an address, a
/// guard or a gather index).
pub fn depends_on(e: &Expr, v: Var) -> bool {
    let mut hit = false;
    e.visit(&mut |x| match x {
        Expr::Index(w) => hit |= *w == v,
        Expr::Load { access, guards, .. } => {
            hit |= access.index.coeff(v) != 0 || guards.iter().any(|g| g.index.coeff(v) != 0);
        }
        _ => {}
    });
    hit
}

/// The vector class of `e`, or `None` when it cannot be vectorised along `v`.
pub fn vclass(p: &Program, e: &Expr, v: Var) -> Option<VClass> {
    if !depends_on(e, v) {
        return Some(VClass::Uniform(e.dtype(&p.buffers)));
    }
    let lift = |c: VClass| match c {
        VClass::Uniform(DType::F32) => Some(VClass::Vec),
        VClass::Uniform(DType::Bool) => Some(VClass::Mask),
        VClass::Uniform(_) => None,
        c => Some(c),
    };
    let class = |e: &Expr| vclass(p, e, v).and_then(lift);
    match e {
        Expr::Load { access, guards, .. } => {
            let ok = access.index.coeff(v) == 1
                && p.buffer(access.buf).dtype == DType::F32
                && access.gathers.iter().all(|g| !depends_on(&g.index, v))
                && guards.iter().all(|g| g.index.coeff(v) == 0);
            ok.then_some(VClass::Vec)
        }
        Expr::Index(_) | Expr::Const { .. } => None,
        Expr::Unary(UnaryFn::Not, a) => match class(a)? {
            VClass::Mask | VClass::Vec => Some(VClass::Mask),
            _ => None,
        },
        Expr::Unary(_, a) => (class(a)? == VClass::Vec).then_some(VClass::Vec),
        Expr::Binary(f, a, b) => {
            let (ca, cb) = (class(a)?, class(b)?);
            match f {
                BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le => {
                    (ca == VClass::Vec && cb == VClass::Vec).then_some(VClass::Mask)
                }
                BinaryFn::And | BinaryFn::Or | BinaryFn::Xor => {
                    (ca == VClass::Mask && cb == VClass::Mask).then_some(VClass::Mask)
                }
                _ => (ca == VClass::Vec && cb == VClass::Vec).then_some(VClass::Vec),
            }
        }
        Expr::Select(c, a, b) => {
            vclass(p, c, v)?;
            let (ca, cb) = (class(a)?, class(b)?);
            (ca == cb).then_some(ca)
        }
        Expr::Cast(d, a) => {
            class(a)?;
            match d {
                DType::F32 => Some(VClass::Vec),
                DType::Bool => Some(VClass::Mask),
                _ => None,
            }
        }
        Expr::Reduce { body, .. } => (class(body)? == VClass::Vec).then_some(VClass::Vec),
    }
}

fn reads(k: &Kernel, buf: varc_ir::kernel::BufId) -> bool {
    k.reads().contains(&buf)
}

/// Whether `k` reads the buffer it writes anywhere but at each point's own
/// store address (reading one's own element before storing it is safe to
/// vectorise).
pub(crate) fn reads_elsewhere(k: &Kernel, st: &Access) -> bool {
    if !reads(k, st.buf) {
        return false;
    }
    let mut other = false;
    k.value.visit(&mut |e| {
        if let Expr::Load { access, guards, .. } = e
            && access.buf == st.buf
        {
            other |= access.index != st.index || !guards.is_empty() || !access.gathers.is_empty();
        }
    });
    other
}

fn store_vectorises(p: &Program, k: &Kernel, st: &Access, v: Var) -> bool {
    st.index.coeff(v) == 1
        && st.gathers.is_empty()
        && p.buffer(st.buf).dtype == DType::F32
        && !reads_elsewhere(k, st)
}

/// Whether `e` contains a reduction depending on `v` with a cheap body.
fn blockable_reduce(e: &Expr, v: Var) -> bool {
    let mut reduce = false;
    let mut costly = false;
    e.visit(&mut |x| match x {
        Expr::Reduce { .. } if depends_on(x, v) => reduce = true,
        Expr::Unary(f, _) => {
            costly |= !matches!(
                f,
                UnaryFn::Neg | UnaryFn::Abs | UnaryFn::Floor | UnaryFn::Ceil | UnaryFn::Round
            )
        }
        Expr::Binary(BinaryFn::Pow | BinaryFn::Div, _, _) => costly = true,
        _ => {}
    });
    reduce && !costly
}

/// Chooses how to loop `k`; `vregs` is the target's vector register count.
pub fn plan(p: &Program, k: &Kernel, vregs: usize) -> Plan {
    let d = k.domain.len();
    if d == 0 || k.domain[d - 1] < LANES {
        return Plan::SCALAR;
    }
    let v = Var::Out(d - 1);
    if !store_vectorises(p, k, &k.store, v) {
        return Plan::SCALAR;
    }
    match vclass(p, &k.value, v) {
        Some(VClass::Vec) | Some(VClass::Uniform(DType::F32)) => {}
        _ => return Plan::SCALAR,
    }
    let mut plan = Plan {
        vector: true,
        rows: 1,
        cols: 1,
        sgemm: false,
        epilogue: false,
    };
    if blockable_reduce(&k.value, v) {
        let n = k.domain[d - 1];
        plan.cols = if n >= 4 * LANES {
            4
        } else if n >= 2 * LANES {
            2
        } else {
            1
        };
        // Rows must not overlap in the output, so that computing a block
        // of points together keeps the interpreter's store order per address.
        if d >= 2 && k.domain[d - 2] >= 2 {
            let row_stride = k.store.index.coeff(Var::Out(d - 2)).unsigned_abs() as usize;
            if row_stride >= n {
                let max_rows = if vregs >= 32 { 4 } else { 2 };
                plan.rows = max_rows.min(k.domain[d - 2]);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::kernel::{Affine, BufKind, Buffer, GatherTerm, ReduceFn};

    fn program(out: DType) -> Program {
        let mut p = Program::default();
        for (name, dtype) in [("x", DType::F32), ("i", DType::I64), ("o", out)] {
            p.add_buffer(Buffer {
                name: name.into(),
                dtype,
                shape: vec![8, 8],
                kind: BufKind::Temp,
            });
        }
        p
    }

    fn kernel(p: &Program, store_coeff: i64, value: Expr) -> Kernel {
        let _ = p;
        Kernel {
            name: "k".into(),
            domain: vec![8, 8],
            store: Access {
                buf: varc_ir::kernel::BufId(2),
                index: Affine {
                    offset: 0,
                    terms: vec![(Var::Out(0), 8), (Var::Out(1), store_coeff)],
                },
                gathers: vec![],
            },
            value,
            library: None,
        }
    }

    fn x(c0: i64, c1: i64) -> Expr {
        Expr::load(
            varc_ir::kernel::BufId(0),
            Affine {
                offset: 0,
                terms: vec![(Var::Out(0), c0), (Var::Out(1), c1)],
            },
        )
    }

    #[test]
    fn elementwise_vectorises_with_splats() {
        let p = program(DType::F32);
        let v = Expr::binary(BinaryFn::Add, x(8, 1), x(8, 0));
        assert_eq!(plan(&p, &kernel(&p, 1, v), 16).to_string(), "f32x4");
    }

    #[test]
    fn scalar_fallbacks() {
        let p = program(DType::F32);
        // Strided store, strided load, lane index, int value, bool store.
        assert!(!plan(&p, &kernel(&p, 2, x(8, 1)), 16).vector);
        assert!(!plan(&p, &kernel(&p, 1, x(8, 2)), 16).vector);
        let idx = Expr::Cast(DType::F32, Box::new(Expr::Index(Var::Out(1))));
        assert!(!plan(&p, &kernel(&p, 1, idx), 16).vector);
        let pi = program(DType::I64);
        let int = Expr::load(varc_ir::kernel::BufId(1), Affine::row_major(&[8, 8]));
        assert!(!plan(&pi, &kernel(&pi, 1, int), 16).vector);
        // A gather whose index depends on the vectorised axis.
        let g = Expr::Load {
            access: Box::new(Access {
                buf: varc_ir::kernel::BufId(0),
                index: Affine::constant(0),
                gathers: vec![GatherTerm {
                    index: Expr::Index(Var::Out(1)),
                    dim: 8,
                    stride: 1,
                }],
            }),
            guards: vec![],
            fill: 0.0,
        };
        assert!(!plan(&p, &kernel(&p, 1, g), 16).vector);
    }

    #[test]
    fn matmul_is_register_blocked() {
        let p = program(DType::F32);
        let a = Expr::load(
            varc_ir::kernel::BufId(0),
            Affine {
                offset: 0,
                terms: vec![(Var::Out(0), 8), (Var::Red(0), 1)],
            },
        );
        let b = Expr::load(
            varc_ir::kernel::BufId(0),
            Affine {
                offset: 0,
                terms: vec![(Var::Red(0), 8), (Var::Out(1), 1)],
            },
        );
        let v = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(0, 8)],
            body: Box::new(Expr::binary(BinaryFn::Mul, a, b)),
        };
        let k = kernel(&p, 1, v);
        assert_eq!(plan(&p, &k, 16).to_string(), "f32x4, register-blocked 2x8");
        assert_eq!(plan(&p, &k, 32).to_string(), "f32x4, register-blocked 4x8");
    }
}
