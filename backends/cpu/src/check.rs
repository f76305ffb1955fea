//! What the CPU backend accepts, checked before any code is built, and the
//! compile-time address ranges that decide which accesses need a run-time
//! bounds check.

use varc_ir::DType;
use varc_ir::kernel::{Affine, BinaryFn, Expr, GatherTerm, Kernel, Program, UnaryFn, Var};

/// Dtypes with code generation (bool is one byte 0/1).
pub fn supported(d: DType) -> bool {
    matches!(
        d,
        DType::F32 | DType::I64 | DType::I32 | DType::I8 | DType::U8 | DType::Bool
    )
}

/// Integer-like dtypes live in i64 registers; f32 in f32 registers.
pub fn is_float(d: DType) -> bool {
    d == DType::F32
}

fn dtype_ok(d: DType) -> Result<(), String> {
    if supported(d) {
        Ok(())
    } else {
        Err(format!("dtype {d} is not supported by the CPU backend"))
    }
}

struct Scope<'a> {
    p: &'a Program,
    vars: Vec<Var>,
}

impl Scope<'_> {
    fn affine(&self, a: &Affine) -> Result<(), String> {
        match a.terms.iter().find(|(v, _)| !self.vars.contains(v)) {
            Some((v, _)) => Err(format!("loop variable {v:?} is not bound")),
            None => Ok(()),
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<(), String> {
        let bufs = &self.p.buffers;
        match e {
            Expr::Const { dtype, .. } => dtype_ok(*dtype),
            Expr::Index(v) => self.affine(&Affine {
                offset: 0,
                terms: vec![(*v, 1)],
            }),
            Expr::Load { access, guards, .. } => {
                let b = bufs
                    .get(access.buf.0)
                    .ok_or_else(|| format!("load from unknown buffer {}", access.buf.0))?;
                dtype_ok(b.dtype)?;
                self.affine(&access.index)?;
                for g in guards {
                    self.affine(&g.index)?;
                }
                for g in &access.gathers {
                    self.expr(&g.index)?;
                }
                Ok(())
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
                    return Err(format!("{f:?} on {d} is not supported by the CPU backend"));
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
                    return Err(format!("Pow on {da} is not supported by the CPU backend"));
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
                dtype_ok(*d)?;
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

/// Checks that the backend can compile `k` (dtypes, functions, bindings).
pub fn validate(p: &Program, k: &Kernel) -> Result<(), String> {
    let b = p
        .buffers
        .get(k.store.buf.0)
        .ok_or_else(|| format!("store to unknown buffer {}", k.store.buf.0))?;
    dtype_ok(b.dtype)?;
    let mut s = Scope {
        p,
        vars: (0..k.domain.len()).map(Var::Out).collect(),
    };
    s.affine(&k.store.index)?;
    for g in &k.store.gathers {
        s.expr(&g.index)?;
    }
    s.expr(&k.value)?;
    dtype_ok(k.value.dtype(&p.buffers))
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
    fn unsupported_dtypes() {
        assert!(supported(DType::Bool) && !supported(DType::F16));
        assert_eq!(
            dtype_ok(DType::BF16).unwrap_err(),
            "dtype bf16 is not supported by the CPU backend"
        );
    }
}
