//! Coalescing of reduction variables.
//!
//! A `Reduce` over adjacent variables `(a, n_a), (b, n_b)` (`b` inner) that
//! every address in its body uses only as `c·(n_b·a + b)` is a reduction
//! over the one variable `m = n_b·a + b < n_a·n_b`: the fold visits the
//! same terms in the same order, so values are unchanged, bit for bit.
//! Variables of extent 1 are always 0 and drop out. Backends then see one
//! long reduction they can vectorise (GroupNorm statistics over channels ×
//! pixels, LayerNorm over a merged row).
//!
//! A variable that appears outside addresses (`Expr::Index`) is left alone.

use super::{Affine, Expr, Kernel, Program, Var};

/// Coalesces the reduction variables of every kernel of `p` (kernels
/// tagged with a library routine too: the tag describes the value, not
/// its variables).
pub fn coalesce_reductions(mut p: Program) -> Program {
    for k in &mut p.kernels {
        coalesce_kernel(k);
    }
    p
}

fn coalesce_kernel(k: &mut Kernel) {
    coalesce_expr(&mut k.value);
}

fn coalesce_expr(e: &mut Expr) {
    match e {
        Expr::Const { .. } | Expr::Index(_) => {}
        Expr::Load { access, .. } => access
            .gathers
            .iter_mut()
            .for_each(|g| coalesce_expr(&mut g.index)),
        Expr::Unary(_, a) | Expr::Cast(_, a) => coalesce_expr(a),
        Expr::Binary(_, a, b) => {
            coalesce_expr(a);
            coalesce_expr(b);
        }
        Expr::Select(c, a, b) => {
            coalesce_expr(c);
            coalesce_expr(a);
            coalesce_expr(b);
        }
        Expr::Reduce { vars, body, .. } => {
            coalesce_expr(body);
            coalesce_vars(vars, body);
        }
    }
}

/// Drops extent-1 variables and merges adjacent pairs, innermost first,
/// while the body allows.
fn coalesce_vars(vars: &mut Vec<(usize, usize)>, body: &mut Expr) {
    let mut i = 0;
    while i < vars.len() {
        let (id, n) = vars[i];
        if n == 1 && vars.len() > 1 && !indexed(body, id) {
            for_each_affine(body, &mut |a| a.terms.retain(|t| t.0 != Var::Red(id)));
            vars.remove(i);
        } else {
            i += 1;
        }
    }
    let mut i = vars.len();
    while i >= 2 {
        let ((a, na), (b, nb)) = (vars[i - 2], vars[i - 1]);
        let fits = na.checked_mul(nb).is_some_and(|m| i64::try_from(m).is_ok());
        if fits && !indexed(body, a) && !indexed(body, b) && mergeable(body, a, b, nb) {
            for_each_affine(body, &mut |x| {
                let cb = x.coeff(Var::Red(b));
                x.terms.retain(|t| t.0 != Var::Red(a) && t.0 != Var::Red(b));
                if cb != 0 {
                    x.terms.push((Var::Red(a), cb));
                }
            });
            vars[i - 2] = (a, na * nb);
            vars.remove(i - 1);
        }
        i -= 1;
    }
}

/// Every address uses `a` and `b` only as `c·(nb·a + b)`.
fn mergeable(body: &mut Expr, a: usize, b: usize, nb: usize) -> bool {
    let mut ok = true;
    for_each_affine(body, &mut |x| {
        let (ca, cb) = (x.coeff(Var::Red(a)), x.coeff(Var::Red(b)));
        ok &= cb.checked_mul(nb as i64) == Some(ca);
    });
    ok
}

/// Whether `Var::Red(id)` appears as a value (`Expr::Index`).
fn indexed(body: &Expr, id: usize) -> bool {
    let mut found = false;
    body.visit(&mut |e| found |= matches!(e, Expr::Index(Var::Red(r)) if *r == id));
    found
}

/// Calls `f` on every address in `e`: load indices, guard indices, and
/// those inside gather index expressions.
fn for_each_affine(e: &mut Expr, f: &mut dyn FnMut(&mut Affine)) {
    match e {
        Expr::Const { .. } | Expr::Index(_) => {}
        Expr::Load { access, guards, .. } => {
            f(&mut access.index);
            for g in guards {
                f(&mut g.index);
            }
            for g in &mut access.gathers {
                for_each_affine(&mut g.index, f);
            }
        }
        Expr::Unary(_, a) | Expr::Cast(_, a) => for_each_affine(a, f),
        Expr::Binary(_, a, b) => {
            for_each_affine(a, f);
            for_each_affine(b, f);
        }
        Expr::Select(c, a, b) => {
            for_each_affine(c, f);
            for_each_affine(a, f);
            for_each_affine(b, f);
        }
        Expr::Reduce { body, .. } => for_each_affine(body, f),
    }
}

#[cfg(test)]
mod tests;
