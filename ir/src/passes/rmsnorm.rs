//! RMSNorm decompositions → `Op::RmsNorm`:
//! `x · 1/√(mean(x², last axis) + ε)` (Pow or Mul for x²; Reciprocal·Mul or
//! Div), optionally followed by `· scale`, which becomes the op's scale
//! (otherwise the scale is a constant of ones).

use super::matchers::{add, add_const, binary, konst, out0, scalar, shape, sole_user, unary};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, Op, ReduceKind, UnaryOp};
use crate::tensor::Tensor;

pub struct FuseRmsNorm;

impl Pass for FuseRmsNorm {
    fn name(&self) -> &'static str {
        "fuse-rmsnorm"
    }
    fn about(&self) -> &'static str {
        "RMSNorm (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul or Div) → RMSNormalization"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| {
                matches!(
                    n.op,
                    Op::Reduce {
                        kind: ReduceKind::Mean,
                        ..
                    }
                )
            })
            .map(|(id, _)| id)
            .collect();
        for id in anchors {
            let name = g.node(id).name.clone();
            let m = match find(g, cx, id) {
                Ok(m) => m,
                Err(why) => {
                    rep.skip(&name, why);
                    continue;
                }
            };
            let what = format!(
                "RMSNormalization(eps={}) {} scale",
                m.eps,
                if m.scale.is_some() {
                    "absorbing the following"
                } else {
                    "with a unit"
                }
            );
            if !cx.allow(self.name(), &name, &what) {
                continue;
            }
            let scale = match m.scale {
                Some(s) => s,
                None => {
                    let d = *shape(g, m.x)
                        .and_then(|s| s.last().copied())
                        .as_ref()
                        .unwrap_or(&1);
                    let dt = g.value(m.x).ty.as_ref().map(|t| t.dtype).expect("typed");
                    let ones = Tensor::from_f64_as(dt, vec![d], &vec![1.0; d]).expect("ones");
                    add_const(g, &format!("{name}_ones"), ones)
                }
            };
            let op = Op::RmsNorm {
                axis: -1,
                epsilon: m.eps as f32,
                stash_type: 1,
            };
            let y = add(g, &format!("{name}_rms"), op, &[Some(m.x), Some(scale)]);
            super::matchers::replace(g, m.top, y);
            rep.fire(name, what);
        }
        if rep.changed() {
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

struct Match {
    x: ValueRef,
    eps: f64,
    scale: Option<ValueRef>,
    top: ValueRef,
}

fn find(g: &Graph, cx: &PassCx, id: NodeId) -> Result<Match, String> {
    let n = g.node(id);
    let Op::Reduce { axes, keepdims, .. } = &n.op else {
        unreachable!()
    };
    let sq = n.inputs[0].ok_or("no operand")?;
    let x = match (
        binary(g, sq.node, BinaryOp::Pow),
        binary(g, sq.node, BinaryOp::Mul),
    ) {
        (Some((x, e)), _) if scalar(g, cx, e, x) == Some(2.0) => x,
        (_, Some((x, y))) if x == y => x,
        _ => return Err("ReduceMean operand is not x²".into()),
    };
    let xs = shape(g, x).ok_or("x has no static shape")?;
    let axes: Vec<i64> = match (axes, n.inputs.get(1).copied().flatten()) {
        (Some(a), _) => a.clone(),
        (None, Some(v)) => konst(g, cx, v).ok_or("axes are not constant")?.to_i64_vec(),
        (None, None) => return Err("reduces over every axis".into()),
    };
    let last = xs.len() as i64 - 1;
    if !*keepdims || axes.len() != 1 || (axes[0] != -1 && axes[0] != last) {
        return Err("not a keepdims mean over the last axis".into());
    }
    let plus = sole_user(g, out0(id)).ok_or("mean has other users")?;
    let (a, b) = binary(g, plus, BinaryOp::Add).ok_or("mean is not followed by + ε")?;
    let eps = scalar(g, cx, b, a).ok_or("mean is not followed by + ε")?;
    let sqrt = sole_user(g, out0(plus)).ok_or("mean + ε has other users")?;
    unary(g, sqrt, UnaryOp::Sqrt).ok_or("mean + ε is not followed by Sqrt")?;
    let next = sole_user(g, out0(sqrt)).ok_or("Sqrt has other users")?;
    let recip = unary(g, next, UnaryOp::Reciprocal).is_some()
        || binary(g, next, BinaryOp::Div)
            .is_some_and(|(one, d)| d == out0(sqrt) && scalar(g, cx, one, d) == Some(1.0));
    let top = if recip {
        let mul = sole_user(g, out0(next)).ok_or("Reciprocal has other users")?;
        let (p, q) = binary(g, mul, BinaryOp::Mul).ok_or("1/√ is not multiplied by x")?;
        if !(p == x || q == x) {
            return Err("1/√ is not multiplied by x".into());
        }
        out0(mul)
    } else {
        match binary(g, next, BinaryOp::Div) {
            Some((p, q)) if p == x && q == out0(sqrt) => out0(next),
            _ => return Err("Sqrt is not followed by Reciprocal or x / √".into()),
        }
    };
    // Absorb a following scale that broadcasts to x's shape.
    let mut scale = None;
    let mut end = top;
    if let Some(user) = sole_user(g, top)
        && let Some((p, q)) = binary(g, user, BinaryOp::Mul)
    {
        let s = if p == top { q } else { p };
        if shape(g, out0(user)).as_ref() == Some(&xs) && s != top {
            scale = Some(s);
            end = out0(user);
        }
    }
    Ok(Match {
        x,
        eps,
        scale,
        top: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    #[test]
    fn reciprocal_form_absorbs_scale() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,3,8]");
        let s = b.input("s", "f32[2,3,8]");
        let two = b.floats(&[2.0]);
        let p = b.op(Op::Binary(BinaryOp::Pow), &[x, two]);
        let axes = b.ints(&[-1]);
        let red = Op::Reduce {
            kind: ReduceKind::Mean,
            axes: None,
            keepdims: true,
            noop_with_empty_axes: false,
        };
        let m = b.op(red, &[p, axes]);
        let e = b.floats(&[1e-6]);
        let a = b.op(Op::Binary(BinaryOp::Add), &[m, e]);
        let r = b.op(Op::Unary(UnaryOp::Sqrt), &[a]);
        let r = b.op(Op::Unary(UnaryOp::Reciprocal), &[r]);
        let n = b.op(Op::Binary(BinaryOp::Mul), &[x, r]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[n, s]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseRmsNorm));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(kinds(&b.g), ["RMSNormalization"]);
    }
}
