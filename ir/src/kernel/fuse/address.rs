//! Reading a producer's elements where a consumer loads them: a consumer's
//! load address, affine in its loop variables, rewritten as the producer's
//! domain point stored there (one affine map per producer axis), and the
//! producer's value re-expressed at that point.

use crate::dtype::DType;
use crate::kernel::analysis::injective;
use crate::kernel::{Access, Affine, Expr, GatherTerm, Guard, Kernel, Var};

/// Whether `store` is a map [`decompose`] can invert: domain variables
/// only, a positive coefficient on every axis longer than 1, and distinct
/// points to distinct elements (mixed radix, so digits are unique).
pub fn invertible(store: &Affine, domain: &[usize]) -> bool {
    let vars_ok = store
        .terms
        .iter()
        .all(|&(v, _)| matches!(v, Var::Out(i) if i < domain.len()));
    let coeffs_ok = (0..domain.len())
        .filter(|&i| domain[i] > 1)
        .all(|i| store.coeff(Var::Out(i)) > 0);
    vars_ok && coeffs_ok && injective(store, domain)
}

/// The extent of `v` in `scope` (innermost binding wins).
fn extent(scope: &[(Var, usize)], v: Var) -> Option<usize> {
    scope.iter().rev().find(|(w, _)| *w == v).map(|e| e.1)
}

pub(super) fn add_term(a: &mut Affine, v: Var, c: i64) {
    if c == 0 {
        return;
    }
    match a.terms.iter_mut().find(|(w, _)| *w == v) {
        Some(t) => t.1 += c,
        None => a.terms.push((v, c)),
    }
    a.terms.retain(|(_, c)| *c != 0);
}

/// The smallest and largest value of `a` with every variable over
/// `[0, extent)` of `scope`.
fn range(a: &Affine, scope: &[(Var, usize)]) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (a.offset as i128, a.offset as i128);
    for &(v, c) in &a.terms {
        let n = extent(scope, v)? as i128;
        let span = c as i128 * (n - 1).max(0);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi))
}

/// The point of `domain` that `store` (see [`invertible`]) writes at
/// address `load`, as one affine map per domain axis over the variables of
/// `scope`, when every point of `scope` reads an element `store` writes;
/// `None` otherwise (an address that straddles axes, as a reshape merging
/// axes does, or reaches past the stored elements).
///
/// Each load term goes to the axis with the largest stride dividing its
/// coefficient, and the constant offset splits into digits largest stride
/// first; the result is then checked, so the heuristic can only refuse,
/// never give a wrong map: `Σ stride·x = load` holds term by term, and a
/// range check puts every `x` inside the domain, where the store is
/// injective.
pub fn decompose(
    load: &Affine,
    scope: &[(Var, usize)],
    store: &Affine,
    domain: &[usize],
) -> Option<Vec<Affine>> {
    let mut axes: Vec<(i64, usize)> = (0..domain.len())
        .filter(|&i| domain[i] > 1)
        .map(|i| (store.coeff(Var::Out(i)), i))
        .collect();
    axes.sort_by_key(|&(s, i)| (std::cmp::Reverse(s), i));
    let mut x = vec![Affine::constant(0); domain.len()];
    for &(v, a) in &load.terms {
        let n = extent(scope, v)?;
        if n <= 1 || a == 0 {
            continue;
        }
        let &(s, i) = axes.iter().find(|(s, _)| a % s == 0)?;
        add_term(&mut x[i], v, a / s);
    }
    let mut rem = load.offset.checked_sub(store.offset)?;
    for &(s, i) in &axes {
        let q = rem.div_euclid(s);
        x[i].offset += q;
        rem -= q * s;
    }
    if rem != 0 {
        return None;
    }
    for (xi, &n) in x.iter().zip(domain) {
        let (lo, hi) = range(xi, scope)?;
        if lo < 0 || hi >= n as i128 {
            return None;
        }
    }
    Some(x)
}

/// A consumer axis whose load term covers several producer axes, as a
/// reshape merging them does (`[64, 16, 16]` reading a `[32, 2, 256]`
/// producer): `(axis, inner)`, to split the axis into `(n / inner, inner)`
/// so that [`decompose`] can map each part to one producer axis.
pub fn split_point(
    load: &Affine,
    domain: &[usize],
    store: &Affine,
    p_domain: &[usize],
) -> Option<(usize, usize)> {
    load.terms.iter().find_map(|&(v, a)| {
        let Var::Out(j) = v else {
            return None;
        };
        let n = *domain.get(j)?;
        (0..p_domain.len()).find_map(|i| {
            let ni = p_domain[i];
            let fits = ni > 1 && ni < n && n % ni == 0 && store.coeff(Var::Out(i)) == a;
            fits.then_some((j, ni))
        })
    })
}

/// `k` over a domain with axis `axis` split into `(n / inner, inner)`,
/// outer first: the same points, stored in the same order.
pub fn split_domain(k: &Kernel, axis: usize, inner: usize) -> Kernel {
    let mut domain = k.domain.clone();
    domain[axis] /= inner;
    domain.insert(axis + 1, inner);
    let one = |v: Var| Affine {
        offset: 0,
        terms: vec![(v, 1)],
    };
    let map: Vec<Affine> = (0..k.domain.len())
        .map(|j| match j.cmp(&axis) {
            std::cmp::Ordering::Less => one(Var::Out(j)),
            std::cmp::Ordering::Equal => Affine {
                offset: 0,
                terms: vec![(Var::Out(axis), inner as i64), (Var::Out(axis + 1), 1)],
            },
            std::cmp::Ordering::Greater => one(Var::Out(j + 1)),
        })
        .collect();
    let st = &k.store;
    Kernel {
        name: k.name.clone(),
        domain,
        store: Access {
            buf: st.buf,
            index: subst_affine(&st.index, &map),
            gathers: st
                .gathers
                .iter()
                .map(|g| GatherTerm {
                    index: subst_expr(&g.index, &map),
                    dim: g.dim,
                    stride: g.stride,
                })
                .collect(),
        },
        value: subst_expr(&k.value, &map),
        library: k.library.clone(),
    }
}

/// `a` with each `Out(i)` replaced by `map[i]` (reduction variables kept).
pub fn subst_affine(a: &Affine, map: &[Affine]) -> Affine {
    let mut out = Affine::constant(a.offset);
    for &(v, c) in &a.terms {
        match v {
            Var::Out(i) => {
                let m = &map[i];
                out.offset += c * m.offset;
                for &(w, d) in &m.terms {
                    add_term(&mut out, w, c * d);
                }
            }
            Var::Red(_) => add_term(&mut out, v, c),
        }
    }
    out
}

/// The value of `a` as an i64 expression (for `Expr::Index` uses).
fn affine_expr(a: &Affine) -> Expr {
    let int = |v: i64| Expr::Const {
        value: v as f64,
        dtype: DType::I64,
    };
    let mut parts = a.terms.iter().map(|&(v, c)| {
        if c == 1 {
            Expr::Index(v)
        } else {
            Expr::binary(crate::kernel::BinaryFn::Mul, Expr::Index(v), int(c))
        }
    });
    let Some(first) = parts.next() else {
        return int(a.offset);
    };
    let sum = parts.fold(first, |acc, e| {
        Expr::binary(crate::kernel::BinaryFn::Add, acc, e)
    });
    if a.offset == 0 {
        sum
    } else {
        Expr::binary(crate::kernel::BinaryFn::Add, sum, int(a.offset))
    }
}

/// `e` (an expression over a kernel's domain `Out(0..map.len())`) at the
/// point `map`: every address, guard and index use rewritten.
pub fn subst_expr(e: &Expr, map: &[Affine]) -> Expr {
    let r = |x: &Expr| Box::new(subst_expr(x, map));
    match e {
        Expr::Const { .. } => e.clone(),
        Expr::Index(Var::Out(i)) => affine_expr(&map[*i]),
        Expr::Index(Var::Red(_)) => e.clone(),
        Expr::Load {
            access,
            guards,
            fill,
        } => Expr::Load {
            access: Box::new(Access {
                buf: access.buf,
                index: subst_affine(&access.index, map),
                gathers: access
                    .gathers
                    .iter()
                    .map(|g| GatherTerm {
                        index: subst_expr(&g.index, map),
                        dim: g.dim,
                        stride: g.stride,
                    })
                    .collect(),
            }),
            guards: guards
                .iter()
                .map(|g| Guard {
                    index: subst_affine(&g.index, map),
                    lo: g.lo,
                    hi: g.hi,
                })
                .collect(),
            fill: *fill,
        },
        Expr::Unary(f, a) => Expr::Unary(*f, r(a)),
        Expr::Binary(f, a, b) => Expr::Binary(*f, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Cast(d, a) => Expr::Cast(*d, r(a)),
        Expr::Reduce { op, vars, body } => Expr::Reduce {
            op: *op,
            vars: vars.clone(),
            body: r(body),
        },
    }
}

/// Whether every `Out` variable `e` mentions is below `rank`.
pub fn uses_domain_only(e: &Expr, rank: usize) -> bool {
    let ok_affine = |a: &Affine| {
        a.terms
            .iter()
            .all(|(v, _)| !matches!(v, Var::Out(i) if *i >= rank))
    };
    let mut ok = true;
    e.visit(&mut |x| match x {
        Expr::Index(Var::Out(i)) => ok &= *i < rank,
        Expr::Load { access, guards, .. } => {
            ok &= ok_affine(&access.index) && guards.iter().all(|g| ok_affine(&g.index));
        }
        _ => {}
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(offset: i64, terms: &[(Var, i64)]) -> Affine {
        Affine {
            offset,
            terms: terms.to_vec(),
        }
    }

    const O0: Var = Var::Out(0);
    const O1: Var = Var::Out(1);
    const O2: Var = Var::Out(2);

    #[test]
    fn same_shape_is_the_identity() {
        let store = Affine::row_major(&[3, 4]);
        let scope = [(O0, 3), (O1, 4)];
        let x = decompose(&store, &scope, &store, &[3, 4]).unwrap();
        assert_eq!(x, vec![aff(0, &[(O0, 1)]), aff(0, &[(O1, 1)])]);
    }

    #[test]
    fn transposes_broadcasts_slices_and_reversals() {
        let store = Affine::row_major(&[3, 4]); // 4·i0 + i1
        // Transpose: consumer [4, 3] reads 4·j1 + j0.
        let x = decompose(
            &aff(0, &[(O1, 4), (O0, 1)]),
            &[(O0, 4), (O1, 3)],
            &store,
            &[3, 4],
        )
        .unwrap();
        assert_eq!(x, vec![aff(0, &[(O1, 1)]), aff(0, &[(O0, 1)])]);
        // Broadcast over a new leading axis: [5, 3, 4] reads 4·j1 + j2.
        let x = decompose(
            &aff(0, &[(O1, 4), (O2, 1)]),
            &[(O0, 5), (O1, 3), (O2, 4)],
            &store,
            &[3, 4],
        )
        .unwrap();
        assert_eq!(x, vec![aff(0, &[(O1, 1)]), aff(0, &[(O2, 1)])]);
        // Slice [1..3, 2..4] and a reversed last axis.
        let x = decompose(
            &aff(6, &[(O0, 4), (O1, 1)]),
            &[(O0, 2), (O1, 2)],
            &store,
            &[3, 4],
        )
        .unwrap();
        assert_eq!(x, vec![aff(1, &[(O0, 1)]), aff(2, &[(O1, 1)])]);
        let x = decompose(
            &aff(3, &[(O0, 4), (O1, -1)]),
            &[(O0, 3), (O1, 4)],
            &store,
            &[3, 4],
        )
        .unwrap();
        assert_eq!(x, vec![aff(0, &[(O0, 1)]), aff(3, &[(O1, -1)])]);
        // Splitting an axis (a reshape [12] → [3, 4] of a [12] producer).
        let x = decompose(
            &Affine::row_major(&[3, 4]),
            &[(O0, 3), (O1, 4)],
            &Affine::row_major(&[12]),
            &[12],
        )
        .unwrap();
        assert_eq!(x, vec![aff(0, &[(O0, 4), (O1, 1)])]);
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        let store = Affine::row_major(&[3, 4]);
        // Merging axes: [12] reads i0, which straddles both producer axes.
        assert!(decompose(&aff(0, &[(O0, 1)]), &[(O0, 12)], &store, &[3, 4]).is_none());
        // Past the end.
        assert!(
            decompose(
                &aff(1, &[(O0, 4), (O1, 1)]),
                &[(O0, 3), (O1, 4)],
                &store,
                &[3, 4]
            )
            .is_none()
        );
        // A strided store leaves holes: the odd elements are never written.
        let strided = aff(0, &[(O0, 2)]);
        assert!(decompose(&aff(1, &[]), &[], &strided, &[4]).is_none());
        assert_eq!(
            decompose(&aff(4, &[]), &[], &strided, &[4]),
            Some(vec![aff(2, &[])])
        );
        // A variable the scope does not bind.
        assert!(decompose(&aff(0, &[(Var::Red(7), 1)]), &[], &store, &[3, 4]).is_none());
    }

    #[test]
    fn invertible_stores() {
        assert!(invertible(&Affine::row_major(&[2, 3]), &[2, 3]));
        assert!(!invertible(&aff(0, &[(O0, 3), (O1, -1)]), &[2, 3]));
        assert!(!invertible(&aff(0, &[(O0, 1)]), &[2, 3]));
        assert!(!invertible(&aff(0, &[(Var::Red(0), 1)]), &[2]));
    }

    #[test]
    fn substitution_rewrites_addresses_and_indices() {
        let map = vec![aff(1, &[(O1, 1)]), aff(0, &[(O0, 2)])];
        let a = subst_affine(&aff(5, &[(O0, 4), (O1, 1), (Var::Red(3), 7)]), &map);
        assert_eq!(a, aff(9, &[(O1, 4), (O0, 2), (Var::Red(3), 7)]));
        let e = subst_expr(&Expr::Index(O0), &map);
        let want = Expr::binary(
            crate::kernel::BinaryFn::Add,
            Expr::Index(O1),
            Expr::Const {
                value: 1.0,
                dtype: DType::I64,
            },
        );
        assert_eq!(e, want);
    }
}
