//! GELU decompositions → `Op::Gelu`.
//!
//! - erf form: `x · 0.5 · (1 + erf(x / √2))` (Div by √2 or Mul by 1/√2; the
//!   outer product in any association);
//! - tanh form: `x · 0.5 · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))` (x³ as
//!   `Pow(x, 3)` or `x·x·x`).

use super::matchers::{add, binary, close, product, scalar, sole_user, unary};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, GeluApprox, Op, UnaryOp};

pub struct FuseGelu;

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }
    fn about(&self) -> &'static str {
        "GELU (erf and tanh decompositions) → Gelu"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Unary(UnaryOp::Erf | UnaryOp::Tanh)))
            .map(|(id, _)| id)
            .collect();
        for id in anchors {
            let name = g.node(id).name.clone();
            match find(g, cx, id) {
                Err(why) => rep.skip(&name, why),
                Ok((x, top, approx)) => {
                    let what = format!("Gelu(approximate={approx:?}) replaces the decomposition");
                    if !cx.allow(self.name(), &name, &what) {
                        continue;
                    }
                    let y = add(
                        g,
                        &format!("{name}_gelu"),
                        Op::Gelu {
                            approximate: approx,
                        },
                        &[Some(x)],
                    );
                    super::matchers::replace(g, top, y);
                    rep.fire(name, what);
                }
            }
        }
        if rep.changed() {
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

/// `(x, value the GELU replaces, form)`.
fn find(g: &Graph, cx: &PassCx, id: NodeId) -> Result<(ValueRef, ValueRef, GeluApprox), String> {
    let out = super::matchers::out0(id);
    let inner = g.node(id).inputs[0].ok_or("no operand")?;
    let p = product(g, cx, inner, 3);
    let (x, approx) = if unary(g, id, UnaryOp::Erf).is_some() {
        match p.leaves.as_slice() {
            [x] if close(p.coeff, std::f64::consts::FRAC_1_SQRT_2) => (*x, GeluApprox::None),
            _ => return Err("Erf operand is not x/√2".into()),
        }
    } else {
        let [s] = p.leaves.as_slice() else {
            return Err("Tanh operand is not c·(x + 0.044715·x³)".into());
        };
        if !close(p.coeff, (2.0 / std::f64::consts::PI).sqrt()) {
            return Err(format!("Tanh operand scale {} is not √(2/π)", p.coeff));
        }
        (
            cubic_sum(g, cx, *s).ok_or("Tanh operand is not √(2/π)·(x + 0.044715·x³)")?,
            GeluApprox::Tanh,
        )
    };
    let ty = |v: ValueRef| g.value(v).ty.clone();
    if ty(x).is_none() || ty(x) != ty(out) {
        return Err("shapes do not match".into());
    }
    // 1 + erf(…)
    let plus = sole_user(g, out).ok_or("Erf/Tanh result has other users")?;
    let (a, b) =
        binary(g, plus, BinaryOp::Add).ok_or("Erf/Tanh result is not followed by Add 1")?;
    let one = if a == out {
        scalar(g, cx, b, a)
    } else {
        scalar(g, cx, a, b)
    };
    if one != Some(1.0) {
        return Err("Erf/Tanh result is not followed by + 1".into());
    }
    // Walk up the Mul chain until the product is 0.5 · x · (1 + …).
    let mut cur = super::matchers::out0(plus);
    for _ in 0..3 {
        let Some(user) = sole_user(g, cur) else { break };
        if binary(g, user, BinaryOp::Mul).is_none() {
            break;
        }
        cur = super::matchers::out0(user);
        let p = product(g, cx, cur, 3);
        let mut leaves = p.leaves.clone();
        leaves.sort();
        let mut want = vec![x, super::matchers::out0(plus)];
        want.sort();
        if leaves == want && close(p.coeff, 0.5) {
            return Ok((x, cur, approx));
        }
    }
    Err("no 0.5 · x · (1 + …) product around it".into())
}

/// `x` when `s = x + 0.044715·x³`.
fn cubic_sum(g: &Graph, cx: &PassCx, s: ValueRef) -> Option<ValueRef> {
    let (a, b) = binary(g, s.node, BinaryOp::Add)?;
    for (x, t) in [(a, b), (b, a)] {
        let p = product(g, cx, t, 3);
        if !close(p.coeff, 0.044715) {
            continue;
        }
        let ok = match p.leaves.as_slice() {
            [c] => binary(g, c.node, BinaryOp::Pow)
                .is_some_and(|(base, e)| base == x && scalar(g, cx, e, base) == Some(3.0)),
            [p, q, r] => [p, q, r].iter().all(|v| **v == x),
            [sq, y] | [y, sq] if *y == x => {
                binary(g, sq.node, BinaryOp::Mul).is_some_and(|(u, w)| u == x && w == x)
            }
            _ => false,
        };
        if ok {
            return Some(x);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::run_one;

    #[test]
    fn erf_form_fuses() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,8]");
        let s2 = b.floats(&[std::f32::consts::SQRT_2]);
        let d = b.op(Op::Binary(BinaryOp::Div), &[x, s2]);
        let e = b.op(Op::Unary(UnaryOp::Erf), &[d]);
        let one = b.floats(&[1.0]);
        let a = b.op(Op::Binary(BinaryOp::Add), &[e, one]);
        let h = b.floats(&[0.5]);
        let m = b.op(Op::Binary(BinaryOp::Mul), &[h, a]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[x, m]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseGelu));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(crate::passes::testing::kinds(&b.g), ["Gelu"]);
    }

    #[test]
    fn tanh_form_fuses_and_wrong_constant_does_not() {
        for (c, fires) in [(0.044715f32, true), (0.05, false)] {
            let mut b = B::default();
            let x = b.input("x", "f32[4]");
            let three = b.floats(&[3.0]);
            let p = b.op(Op::Binary(BinaryOp::Pow), &[x, three]);
            let k = b.floats(&[c]);
            let m = b.op(Op::Binary(BinaryOp::Mul), &[k, p]);
            let s = b.op(Op::Binary(BinaryOp::Add), &[x, m]);
            let k2 = b.floats(&[0.797_884_6]);
            let m2 = b.op(Op::Binary(BinaryOp::Mul), &[k2, s]);
            let t = b.op(Op::Unary(UnaryOp::Tanh), &[m2]);
            let one = b.floats(&[1.0]);
            let a = b.op(Op::Binary(BinaryOp::Add), &[t, one]);
            let h = b.floats(&[0.5]);
            let xm = b.op(Op::Binary(BinaryOp::Mul), &[h, x]);
            let y = b.op(Op::Binary(BinaryOp::Mul), &[xm, a]);
            b.g.outputs = vec![y];
            let rep = run_one(&mut b.g, Box::new(FuseGelu));
            assert_eq!(rep.fired.len() == 1, fires, "{rep:?}");
            assert_eq!(rep.skipped.len() == 1, !fires, "{rep:?}");
        }
    }
}
