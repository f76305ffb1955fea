//! SiLU decompositions → `Unary(Silu)`:
//!
//! - `x · Sigmoid(x)` (either operand order; every shipped exporter);
//! - `x / (1 + exp(−x))`, and `x · r` where `r` is `1 / (1 + exp(−x))` as a
//!   Reciprocal or a Div (hand-written activations); `−x` as Neg or `x · −1`.
//!
//! The Sigmoid (or the exp chain) must feed only this product: otherwise it
//! is computed anyway and the fused op would save nothing.

use super::matchers::{add, binary, out0, product, replace, scalar, sole_user, unary};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, Op, UnaryOp};

pub struct FuseSilu;

impl Pass for FuseSilu {
    fn name(&self) -> &'static str {
        "fuse-silu"
    }
    fn about(&self) -> &'static str {
        "SiLU (x·Sigmoid(x), x/(1+exp(−x))) → Silu"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Unary(UnaryOp::Sigmoid | UnaryOp::Exp)))
            .map(|(id, _)| id)
            .collect();
        for id in anchors {
            // An earlier rewrite may have removed this anchor's chain.
            if g.get(id).is_none() {
                continue;
            }
            let name = g.node(id).name.clone();
            let found = if unary(g, id, UnaryOp::Sigmoid).is_some() {
                from_sigmoid(g, id)
            } else {
                from_exp(g, cx, id)
            };
            match found {
                Err(why) => rep.skip(&name, why),
                Ok((x, top)) => {
                    let what = "Silu replaces the decomposition";
                    if !cx.allow(self.name(), &name, what) {
                        continue;
                    }
                    let y = add(
                        g,
                        &format!("{name}_silu"),
                        Op::Unary(UnaryOp::Silu),
                        &[Some(x)],
                    );
                    replace(g, top, y);
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

/// `(x, value the SiLU replaces)` for `Mul(x, Sigmoid(x))`.
fn from_sigmoid(g: &Graph, id: NodeId) -> Result<(ValueRef, ValueRef), String> {
    let x = g.node(id).inputs[0].ok_or("no operand")?;
    let s = out0(id);
    let user = sole_user(g, s).ok_or("Sigmoid has other users")?;
    times_x(g, user, x, s).ok_or_else(|| "Sigmoid(x) is not multiplied by x".into())
}

/// `(x, value the SiLU replaces)` for `x / (1 + exp(−x))` and `x · 1/(1 + exp(−x))`.
fn from_exp(g: &Graph, cx: &PassCx, id: NodeId) -> Result<(ValueRef, ValueRef), String> {
    let arg = g.node(id).inputs[0].ok_or("no operand")?;
    let x = negated(g, cx, arg).ok_or("Exp operand is not −x")?;
    let plus = sole_user(g, out0(id)).ok_or("exp(−x) has other users")?;
    let (a, b) = binary(g, plus, BinaryOp::Add).ok_or("exp(−x) is not followed by + 1")?;
    let e = out0(id);
    let one = if a == e {
        scalar(g, cx, b, a)
    } else {
        scalar(g, cx, a, b)
    };
    if one != Some(1.0) {
        return Err("exp(−x) is not followed by + 1".into());
    }
    let d = out0(plus);
    let next = sole_user(g, d).ok_or("1 + exp(−x) has other users")?;
    if let Some((p, q)) = binary(g, next, BinaryOp::Div) {
        if p == x && q == d {
            return Ok((x, out0(next)));
        }
        if q == d && scalar(g, cx, p, q) == Some(1.0) {
            let user = sole_user(g, out0(next)).ok_or("1/(1 + exp(−x)) has other users")?;
            return times_x(g, user, x, out0(next))
                .ok_or_else(|| "1/(1 + exp(−x)) is not multiplied by x".into());
        }
    }
    if unary(g, next, UnaryOp::Reciprocal).is_some() {
        let user = sole_user(g, out0(next)).ok_or("1/(1 + exp(−x)) has other users")?;
        return times_x(g, user, x, out0(next))
            .ok_or_else(|| "1/(1 + exp(−x)) is not multiplied by x".into());
    }
    Err("1 + exp(−x) does not divide x".into())
}

/// `(x, product)` when `id` is `Mul(x, s)` or `Mul(s, x)` of x's own shape.
fn times_x(g: &Graph, id: NodeId, x: ValueRef, s: ValueRef) -> Option<(ValueRef, ValueRef)> {
    let (a, b) = binary(g, id, BinaryOp::Mul)?;
    let ok = (a == x && b == s) || (a == s && b == x);
    let ty = |v: ValueRef| g.value(v).ty.clone();
    (ok && ty(x).is_some_and(|t| t.dtype.is_float()) && ty(x) == ty(out0(id)))
        .then_some((x, out0(id)))
}

/// `x` when `v` is `Neg(x)` or `x · −1`.
fn negated(g: &Graph, cx: &PassCx, v: ValueRef) -> Option<ValueRef> {
    if let Some(x) = unary(g, v.node, UnaryOp::Neg) {
        return Some(x);
    }
    let p = product(g, cx, v, 1);
    match p.leaves.as_slice() {
        [x] if p.coeff == -1.0 && *x != v => Some(*x),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    #[test]
    fn sigmoid_form_fuses_in_either_order() {
        for swap in [false, true] {
            let mut b = B::default();
            let x = b.input("x", "f32[2,8]");
            let s = b.op(Op::Unary(UnaryOp::Sigmoid), &[x]);
            let ins = if swap { [s, x] } else { [x, s] };
            let y = b.op(Op::Binary(BinaryOp::Mul), &ins);
            b.g.outputs = vec![y];
            let rep = run_one(&mut b.g, Box::new(FuseSilu));
            assert_eq!(rep.fired.len(), 1, "{rep:?}");
            assert_eq!(kinds(&b.g), ["Silu"]);
        }
    }

    #[test]
    fn shared_sigmoid_or_other_operand_is_left_alone() {
        let mut b = B::default();
        let x = b.input("x", "f32[4]");
        let s = b.op(Op::Unary(UnaryOp::Sigmoid), &[x]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[x, s]);
        b.g.outputs = vec![y, s];
        let rep = run_one(&mut b.g, Box::new(FuseSilu));
        assert_eq!(rep.skipped[0].what, "Sigmoid has other users");

        let mut b = B::default();
        let x = b.input("x", "f32[4]");
        let z = b.input("z", "f32[4]");
        let s = b.op(Op::Unary(UnaryOp::Sigmoid), &[x]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[z, s]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseSilu));
        assert!(rep.fired.is_empty(), "{rep:?}");
        assert_eq!(rep.skipped[0].what, "Sigmoid(x) is not multiplied by x");
    }

    #[test]
    fn exp_forms_fuse() {
        // 0: x / (1 + exp(-x)); 1: x · Reciprocal(1 + exp(x · -1)); 2: x · (1 / (exp(-x) + 1))
        for form in 0..3 {
            let mut b = B::default();
            let x = b.input("x", "f32[3,5]");
            let neg = if form == 1 {
                let m = b.floats(&[-1.0]);
                b.op(Op::Binary(BinaryOp::Mul), &[x, m])
            } else {
                b.op(Op::Unary(UnaryOp::Neg), &[x])
            };
            let e = b.op(Op::Unary(UnaryOp::Exp), &[neg]);
            let one = b.floats(&[1.0]);
            let d = if form == 2 {
                b.op(Op::Binary(BinaryOp::Add), &[e, one])
            } else {
                b.op(Op::Binary(BinaryOp::Add), &[one, e])
            };
            let y = match form {
                0 => b.op(Op::Binary(BinaryOp::Div), &[x, d]),
                1 => {
                    let r = b.op(Op::Unary(UnaryOp::Reciprocal), &[d]);
                    b.op(Op::Binary(BinaryOp::Mul), &[x, r])
                }
                _ => {
                    let one = b.floats(&[1.0]);
                    let r = b.op(Op::Binary(BinaryOp::Div), &[one, d]);
                    b.op(Op::Binary(BinaryOp::Mul), &[r, x])
                }
            };
            b.g.outputs = vec![y];
            let rep = run_one(&mut b.g, Box::new(FuseSilu));
            assert_eq!(rep.fired.len(), 1, "form {form}: {rep:?}");
            assert_eq!(kinds(&b.g), ["Silu"], "form {form}");
        }
    }

    #[test]
    fn exp_of_plain_x_is_not_silu() {
        let mut b = B::default();
        let x = b.input("x", "f32[4]");
        let e = b.op(Op::Unary(UnaryOp::Exp), &[x]);
        let one = b.floats(&[1.0]);
        let d = b.op(Op::Binary(BinaryOp::Add), &[one, e]);
        let y = b.op(Op::Binary(BinaryOp::Div), &[x, d]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseSilu));
        assert!(rep.fired.is_empty());
        assert_eq!(rep.skipped[0].what, "Exp operand is not −x");
    }
}
