//! Facts about kernels that every code generator needs, written once: the
//! subset of kernel IR the native backends compile (checked before any code
//! is built, with errors naming the backend), the compile-time address
//! ranges that decide which accesses need a run-time bounds check, and
//! whether a kernel's points may run in any order (in parallel).

use super::{Access, Affine, BinaryFn, Expr, GatherTerm, Kernel, Program, UnaryFn, Var};
use crate::dtype::DType;

/// Dtypes with code generation (bool is one byte 0/1). f16, bf16 and f64
/// are refused with an error naming the kernel.
pub fn supported(d: DType) -> bool {
    matches!(
        d,
        DType::F32 | DType::I64 | DType::I32 | DType::I8 | DType::U8 | DType::Bool
    )
}

/// f32 values live in float registers; every integer dtype and bool in
/// 64-bit integer registers (bool as 0/1), narrowed only when stored.
pub fn is_float(d: DType) -> bool {
    d == DType::F32
}

struct Scope<'a> {
    p: &'a Program,
    vars: Vec<Var>,
    backend: &'a str,
}

impl Scope<'_> {
    fn dtype_ok(&self, d: DType) -> Result<(), String> {
        if supported(d) {
            Ok(())
        } else {
            Err(format!(
                "dtype {d} is not supported by the {} backend",
                self.backend
            ))
        }
    }

    fn affine(&self, a: &Affine) -> Result<(), String> {
        match a.terms.iter().find(|(v, _)| !self.vars.contains(v)) {
            Some((v, _)) => Err(format!("loop variable {v:?} is not bound")),
            None => Ok(()),
        }
    }

    fn access(&mut self, a: &Access) -> Result<(), String> {
        let b = self
            .p
            .buffers
            .get(a.buf.0)
            .ok_or_else(|| format!("access to unknown buffer {}", a.buf.0))?;
        self.dtype_ok(b.dtype)?;
        self.affine(&a.index)?;
        for g in &a.gathers {
            self.expr(&g.index)?;
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<(), String> {
        let bufs = &self.p.buffers;
        match e {
            Expr::Const { dtype, .. } => self.dtype_ok(*dtype),
            Expr::Index(v) => self.affine(&Affine {
                offset: 0,
                terms: vec![(*v, 1)],
            }),
            Expr::Load { access, guards, .. } => {
                for g in guards {
                    self.affine(&g.index)?;
                }
                self.access(access)
            }
            Expr::Unary(f, a) => {
                self.expr(a)?;
                let d = a.dtype(bufs);
                let int_ok = matches!(
                    f,
                    UnaryFn::Neg
                        | UnaryFn::Abs
                        | UnaryFn::Floor
                        | UnaryFn::Ceil
                        | UnaryFn::Round
                        | UnaryFn::Not
                );
                if !is_float(d) && !int_ok {
                    return Err(format!(
                        "{f:?} on {d} is not supported by the {} backend",
                        self.backend
                    ));
                }
                Ok(())
            }
            Expr::Binary(f, a, b) => {
                self.expr(a)?;
                self.expr(b)?;
                let (da, db) = (a.dtype(bufs), b.dtype(bufs));
                if is_float(da) != is_float(db) {
                    return Err(format!("{f:?} mixes {da} and {db}"));
                }
                if !is_float(da) && *f == BinaryFn::Pow {
                    return Err(format!(
                        "Pow on {da} is not supported by the {} backend",
                        self.backend
                    ));
                }
                Ok(())
            }
            Expr::Select(c, a, b) => {
                self.expr(c)?;
                self.expr(a)?;
                self.expr(b)?;
                let (da, db) = (a.dtype(bufs), b.dtype(bufs));
                if is_float(da) != is_float(db) {
                    return Err(format!("select mixes {da} and {db}"));
                }
                Ok(())
            }
            Expr::Cast(d, a) => {
                self.dtype_ok(*d)?;
                self.expr(a)
            }
            Expr::Reduce { vars, body, .. } => {
                let n = self.vars.len();
                for &(id, _) in vars {
                    if self.vars.contains(&Var::Red(id)) {
                        return Err(format!("reduction variable r{id} is bound twice"));
                    }
                    self.vars.push(Var::Red(id));
                }
                self.expr(body)?;
                self.vars.truncate(n);
                Ok(())
            }
        }
    }
}

/// Checks that a native backend (named in errors) can compile `k`: dtypes,
/// functions, variable bindings, and that its library tag (if any) is
/// safe to call in place of the loop nest ([`super::library::check`]).
pub fn validate(p: &Program, k: &Kernel, backend: &str) -> Result<(), String> {
    let mut s = Scope {
        p,
        vars: (0..k.domain.len()).map(Var::Out).collect(),
        backend,
    };
    s.access(&k.store)?;
    s.expr(&k.value)?;
    s.dtype_ok(k.value.dtype(&p.buffers))?;
    super::library::check(p, k)
}

/// The range `[lo, hi]` of element indices an access can touch, with each
/// loop variable over `[0, extent)` and each gather index over `[0, dim)`;
/// `None` when some extent is 0 (the access never runs).
pub fn index_range(
    a: &Affine,
    gathers: &[GatherTerm],
    extents: &[(Var, usize)],
) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (a.offset as i128, a.offset as i128);
    let mut widen = |c: i128, n: usize| -> Option<()> {
        if n == 0 {
            return None;
        }
        let span = c * (n as i128 - 1);
        if span < 0 {
            lo += span
        } else {
            hi += span
        }
        Some(())
    };
    for &(v, c) in &a.terms {
        let n = extents.iter().rev().find(|(w, _)| *w == v).map(|e| e.1)?;
        widen(c as i128, n)?;
    }
    for g in gathers {
        widen(g.stride as i128, g.dim)?;
    }
    Some((lo, hi))
}

/// Whether the points of `k` may run in any order, in parallel, with the
/// same result as the interpreter's odometer order: the store address is a
/// provably injective affine map of the domain (no gathers), and the kernel
/// reads the buffer it writes at most at each point's own store address.
/// Kernels that fail this run on one thread, in order.
pub fn parallel_safe(k: &Kernel) -> bool {
    let st = &k.store;
    if !st.gathers.is_empty() {
        return false;
    }
    let mut own_reads_ok = true;
    k.value.visit(&mut |e| {
        if let Expr::Load { access, guards, .. } = e
            && access.buf == st.buf
        {
            own_reads_ok &=
                access.index == st.index && guards.is_empty() && access.gathers.is_empty();
        }
    });
    own_reads_ok && injective(&st.index, &k.domain)
}

/// A sufficient condition for `Σ c·Out(i)` to be injective over the domain:
/// every axis with extent > 1 has a nonzero coefficient, and sorted by
/// |coefficient| each one exceeds the span of all smaller ones.
pub fn injective(a: &Affine, domain: &[usize]) -> bool {
    let mut coeffs: Vec<(i128, usize)> = Vec::new();
    for (i, &n) in domain.iter().enumerate() {
        if n <= 1 {
            continue;
        }
        let c = a.coeff(Var::Out(i)).unsigned_abs() as i128;
        if c == 0 {
            return false;
        }
        coeffs.push((c, n));
    }
    coeffs.sort();
    let mut span: i128 = 0;
    for (c, n) in coeffs {
        if c <= span {
            return false;
        }
        span += c * (n as i128 - 1);
    }
    true
}

/// A kernel whose value holds a matrix product: `Σ_k A·B` of two plain f32
/// loads, over (at most) one reduction variable longer than 1, stored as
/// f32 without gathers to a buffer the kernel does not read, injectively.
/// The code generators run it as a tiled GEMM (the CPU's sgemm microkernel,
/// CUDA's tensor-core tiles); this is the one place that decides what a
/// contraction is and how its axes map to `m`, `n` and batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Contraction {
    /// The operand whose axes are the rows (`m`) and `B` the columns
    /// (`n`): chosen so that the store is contiguous along `n` where it can
    /// be, then for the larger of the smaller extents.
    pub a: Access,
    pub b: Access,
    /// The domain axis of `m` (`None`: one row), of `n` (`None`: one
    /// column), the reduction variable (`None`: depth 1).
    pub m_axis: Option<usize>,
    pub n_axis: Option<usize>,
    pub kvar: Option<Var>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The other domain axes longer than 1, in order.
    pub batch: Vec<usize>,
    /// How many times the sum occurs in the value (an activation repeats
    /// its argument); every occurrence is the same expression.
    pub occurrences: usize,
}

/// `e` as an unguarded, ungathered f32 load.
fn f32_load(p: &Program, e: &Expr) -> Option<Access> {
    match e {
        Expr::Load { access, guards, .. }
            if guards.is_empty()
                && access.gathers.is_empty()
                && p.buffer(access.buf).dtype == DType::F32 =>
        {
            Some((**access).clone())
        }
        _ => None,
    }
}

/// Recognises `k` as a [`Contraction`] whose every access the loop nest
/// could form lies inside its buffer (tiled code reads without checks).
pub fn contraction(p: &Program, k: &Kernel) -> Option<Contraction> {
    let st = &k.store;
    if p.buffer(st.buf).dtype != DType::F32
        || !st.gathers.is_empty()
        || k.reads().contains(&st.buf)
        || !injective(&st.index, &k.domain)
    {
        return None;
    }
    let mut reduces = Vec::new();
    k.value.visit(&mut |e| {
        if let Expr::Reduce { op, vars, body } = e {
            reduces.push((*op, vars.clone(), (**body).clone()));
        }
    });
    let (first, others) = reduces.split_first()?;
    if others.iter().any(|r| r != first) {
        return None;
    }
    let (super::ReduceFn::Sum, vars, body) = first else {
        return None;
    };
    let Expr::Binary(BinaryFn::Mul, x, y) = body else {
        return None;
    };
    let (x, y) = (f32_load(p, x)?, f32_load(p, y)?);
    let long: Vec<_> = vars.iter().filter(|v| v.1 != 1).collect();
    let (kvar, kext) = match long.as_slice() {
        [] => (None, 1),
        [(id, n)] => (Some(Var::Red(*id)), *n),
        _ => return None,
    };
    let mut extents: Vec<(Var, usize)> = k
        .domain
        .iter()
        .enumerate()
        .map(|(i, &n)| (Var::Out(i), n))
        .collect();
    extents.extend(vars.iter().map(|&(id, n)| (Var::Red(id), n)));
    let inside = |a: &Access| {
        let len = p.buffer(a.buf).len() as i128;
        index_range(&a.index, &[], &extents).is_none_or(|(lo, hi)| lo >= 0 && hi < len)
    };
    if !inside(&x) || !inside(&y) || !inside(st) {
        return None;
    }
    let axes: Vec<usize> = (0..k.domain.len()).filter(|&i| k.domain[i] > 1).collect();
    // The last axis read by `only` and not by `other`, preferring one the
    // store walks with unit stride.
    let pick = |only: &Access, other: &Access, prefer_unit: bool| -> Option<usize> {
        let ok: Vec<usize> = axes
            .iter()
            .copied()
            .filter(|&i| {
                let v = Var::Out(i);
                only.index.coeff(v) != 0 && other.index.coeff(v) == 0
            })
            .collect();
        let unit = ok.iter().rev().find(|&&i| st.index.coeff(Var::Out(i)) == 1);
        match (prefer_unit, unit) {
            (true, Some(&i)) => Some(i),
            _ => ok.last().copied(),
        }
    };
    let ext = |ax: Option<usize>| ax.map_or(1, |i| k.domain[i]);
    let score = |a: &Access, b: &Access| {
        let n = pick(b, a, true);
        let m = pick(a, b, false);
        let unit = n.is_some_and(|i| st.index.coeff(Var::Out(i)) == 1);
        (unit, ext(m).min(ext(n)), m, n)
    };
    let (s1, s2) = (score(&x, &y), score(&y, &x));
    let ((_, _, m_axis, n_axis), a, b) = if (s2.0, s2.1) > (s1.0, s1.1) {
        (s2, y, x)
    } else {
        (s1, x, y)
    };
    let batch = axes
        .iter()
        .copied()
        .filter(|&i| Some(i) != m_axis && Some(i) != n_axis)
        .collect();
    Some(Contraction {
        a,
        b,
        m_axis,
        n_axis,
        kvar,
        m: ext(m_axis),
        n: ext(n_axis),
        k: kext,
        batch,
        occurrences: reduces.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c[b, i, j] = f(Σ_r x[b, i, r] · w[r, j])`, `[2, 5, 7]`, depth 3.
    fn matmul(f: impl Fn(Expr) -> Expr) -> (Program, Kernel) {
        use super::super::{BufKind, Buffer, ReduceFn};
        let mut p = Program::default();
        let mut buf = |name: &str, shape: &[usize], kind| {
            p.add_buffer(Buffer {
                name: name.into(),
                dtype: DType::F32,
                shape: shape.to_vec(),
                kind,
            })
        };
        let x = buf("x", &[2, 5, 3], BufKind::Input(0));
        let w = buf("w", &[3, 7], BufKind::Input(1));
        let c = buf("c", &[2, 5, 7], BufKind::Output(0));
        let aff = |offset, terms: Vec<(Var, i64)>| Affine { offset, terms };
        let (b, i, j, r) = (Var::Out(0), Var::Out(1), Var::Out(2), Var::Red(0));
        let sum = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(0, 3)],
            body: Box::new(Expr::binary(
                BinaryFn::Mul,
                Expr::load(x, aff(0, vec![(b, 15), (i, 3), (r, 1)])),
                Expr::load(w, aff(0, vec![(r, 7), (j, 1)])),
            )),
        };
        let k = Kernel {
            name: "mm".into(),
            domain: vec![2, 5, 7],
            store: Access {
                buf: c,
                index: aff(0, vec![(b, 35), (i, 7), (j, 1)]),
                gathers: vec![],
            },
            value: f(sum),
            library: None,
        };
        (p, k)
    }

    #[test]
    fn contractions_are_recognised() {
        let (p, k) = matmul(|s| s);
        let c = contraction(&p, &k).expect("a matmul");
        assert_eq!(
            (c.m_axis, c.n_axis, c.m, c.n, c.k),
            (Some(1), Some(2), 5, 7, 3)
        );
        assert_eq!(
            (c.batch.clone(), c.kvar, c.occurrences),
            (vec![0], Some(Var::Red(0)), 1)
        );
        // An epilogue that repeats the sum (as activations do) is the same
        // product, counted.
        let (p, k) = matmul(|s| Expr::binary(BinaryFn::Mul, s.clone(), s));
        assert_eq!(contraction(&p, &k).map(|c| c.occurrences), Some(2));
        // Two different sums, a sum of one load, and a store out of bounds
        // are not contractions.
        let (p, k) = matmul(|s| {
            let other = Expr::Reduce {
                op: super::super::ReduceFn::Sum,
                vars: vec![(0, 2)],
                body: Box::new(Expr::f32(1.0)),
            };
            Expr::binary(BinaryFn::Add, s, other)
        });
        assert!(contraction(&p, &k).is_none());
        let (p, mut k) = matmul(|s| s);
        k.value = Expr::Reduce {
            op: super::super::ReduceFn::Sum,
            vars: vec![(0, 3)],
            body: Box::new(Expr::load(k.store.buf, k.store.index.clone())),
        };
        assert!(contraction(&p, &k).is_none());
        let (p, mut k) = matmul(|s| s);
        k.store.index.offset = 1;
        assert!(contraction(&p, &k).is_none());
    }

    #[test]
    fn ranges_cover_every_loop_value() {
        let a = Affine {
            offset: -1,
            terms: vec![(Var::Out(0), 4), (Var::Red(0), -1)],
        };
        let ext = [(Var::Out(0), 3), (Var::Red(0), 2)];
        assert_eq!(index_range(&a, &[], &ext), Some((-2, 7)));
        let g = GatherTerm {
            index: Expr::f32(0.0),
            dim: 5,
            stride: 10,
        };
        assert_eq!(index_range(&a, &[g], &ext), Some((-2, 47)));
        assert_eq!(
            index_range(&a, &[], &[(Var::Out(0), 0), (Var::Red(0), 2)]),
            None
        );
    }

    #[test]
    fn injectivity() {
        let a = |terms: Vec<(usize, i64)>| Affine {
            offset: 0,
            terms: terms.into_iter().map(|(i, c)| (Var::Out(i), c)).collect(),
        };
        assert!(injective(&a(vec![(0, 4), (1, 1)]), &[3, 4]));
        assert!(injective(&a(vec![(0, 1), (1, 3)]), &[3, 4]));
        assert!(!injective(&a(vec![(0, 2), (1, 1)]), &[3, 4]));
        assert!(!injective(&a(vec![(1, 1)]), &[3, 4]));
        assert!(injective(&a(vec![(1, 1)]), &[1, 4]));
        assert!(injective(&a(vec![(0, -4), (1, 1)]), &[3, 4]));
    }

    #[test]
    fn unsupported_dtypes() {
        assert!(supported(DType::Bool) && !supported(DType::F16));
        let s = Scope {
            p: &Program::default(),
            vars: vec![],
            backend: "CUDA",
        };
        assert_eq!(
            s.dtype_ok(DType::BF16).unwrap_err(),
            "dtype bf16 is not supported by the CUDA backend"
        );
    }
}
