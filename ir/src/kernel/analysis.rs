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

#[cfg(test)]
mod tests {
    use super::*;

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
