//! GroupNorm as exporters emit it below opset 21 → `Op::GroupNorm`:
//! `Reshape(x: [N,C,…] → [N,G,…]) → InstanceNormalization(ones, zeros) →
//! Reshape(back) → [Mul γ] → [Add β]` with per-channel constant γ, β.

use super::matchers::{add, add_const, binary, konst, out0, shape, sole_user};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, Op};
use crate::tensor::Tensor;

pub struct FuseGroupNorm;

impl Pass for FuseGroupNorm {
    fn name(&self) -> &'static str {
        "fuse-groupnorm"
    }
    fn about(&self) -> &'static str {
        "Reshape→InstanceNormalization→Reshape→Mul→Add → GroupNormalization"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::InstanceNorm { .. }))
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
            let what = format!("GroupNormalization(num_groups={})", m.groups);
            if !cx.allow(self.name(), &name, &what) {
                continue;
            }
            let gamma = add_const(g, &format!("{name}_gamma"), m.gamma);
            let beta = add_const(g, &format!("{name}_beta"), m.beta);
            let op = Op::GroupNorm {
                num_groups: m.groups,
                epsilon: m.eps,
                stash_type: 1,
                per_group_affine: false,
            };
            let y = add(
                g,
                &format!("{name}_gn"),
                op,
                &[Some(m.x), Some(gamma), Some(beta)],
            );
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
    groups: usize,
    eps: f32,
    gamma: Tensor,
    beta: Tensor,
    top: ValueRef,
}

/// A per-channel constant of `c` values broadcasting over `[N, C, …]`.
fn per_channel(t: &Tensor, rank: usize, c: usize) -> Option<Vec<f64>> {
    let s = t.shape();
    let lead = rank.checked_sub(s.len())?;
    let ok = s
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (lead + i == 1 && d == c));
    (ok && t.numel() == c).then(|| t.to_f64_vec())
}

fn find(g: &Graph, cx: &PassCx, id: NodeId) -> Result<Match, String> {
    let n = g.node(id);
    let Op::InstanceNorm { epsilon } = n.op else {
        unreachable!()
    };
    let grouped = n.inputs[0].ok_or("no operand")?;
    if !matches!(g.node(grouped.node).op, Op::Reshape { .. }) {
        return Err("operand is not a Reshape into groups".into());
    }
    let x = g.node(grouped.node).inputs[0].ok_or("no operand")?;
    let (xs, gs) = (
        shape(g, x).ok_or("no static shape")?,
        shape(g, grouped).ok_or("no static shape")?,
    );
    if xs.len() < 3 || gs.len() < 3 || gs[0] != xs[0] || xs[1] % gs[1] != 0 {
        return Err("Reshape does not split channels into groups".into());
    }
    // The grouped layout must keep [N, G, C/G · spatial] row-major order.
    let (c, groups) = (xs[1], gs[1]);
    let s_ones = n.inputs[1]
        .and_then(|v| konst(g, cx, v))
        .ok_or("scale is not constant")?;
    let b_zero = n.inputs[2]
        .and_then(|v| konst(g, cx, v))
        .ok_or("bias is not constant")?;
    if s_ones.to_f64_vec().iter().any(|&v| v != 1.0)
        || b_zero.to_f64_vec().iter().any(|&v| v != 0.0)
    {
        return Err("InstanceNormalization has a non-trivial scale or bias".into());
    }
    let back = sole_user(g, out0(id)).ok_or("result has other users")?;
    if !matches!(g.node(back).op, Op::Reshape { .. }) || shape(g, out0(back)) != Some(xs.clone()) {
        return Err("result is not reshaped back to the input's shape".into());
    }
    let dt = g.value(x).ty.as_ref().map(|t| t.dtype).ok_or("untyped")?;
    let mut top = out0(back);
    let mut gamma = vec![1.0; c];
    let mut beta = vec![0.0; c];
    for (op, vals) in [(BinaryOp::Mul, &mut gamma), (BinaryOp::Add, &mut beta)] {
        let Some(user) = sole_user(g, top) else { break };
        let Some((p, q)) = binary(g, user, op) else {
            continue;
        };
        let other = if p == top { q } else { p };
        let Some(v) = konst(g, cx, other).and_then(|t| per_channel(t, xs.len(), c)) else {
            continue;
        };
        *vals = v;
        top = out0(user);
    }
    let t = |v: &[f64]| Tensor::from_f64_as(dt, vec![c], v).expect("per-channel");
    Ok(Match {
        x,
        groups,
        eps: epsilon,
        gamma: t(&gamma),
        beta: t(&beta),
        top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    #[test]
    fn instance_norm_groups_fuse() {
        let mut b = B::default();
        let x = b.input("x", "f32[1,4,3,3]");
        let s = b.ints(&[1, 2, -1]);
        let r = b.op(Op::Reshape { allowzero: false }, &[x, s]);
        let ones = b.floats(&[1.0, 1.0]);
        let zeros = b.floats(&[0.0, 0.0]);
        let n = b.op(Op::InstanceNorm { epsilon: 1e-6 }, &[r, ones, zeros]);
        let s2 = b.ints(&[1, 4, 3, 3]);
        let back = b.op(Op::Reshape { allowzero: false }, &[n, s2]);
        let gm = b.g.add_const(
            "gm",
            Tensor::from_f32(vec![4, 1, 1], vec![1., 2., 3., 4.]).unwrap(),
        );
        let m = b.op(Op::Binary(BinaryOp::Mul), &[back, gm]);
        let bt =
            b.g.add_const("bt", Tensor::from_f32(vec![4, 1, 1], vec![0.5; 4]).unwrap());
        let y = b.op(Op::Binary(BinaryOp::Add), &[m, bt]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseGroupNorm));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(kinds(&b.g), ["GroupNormalization"]);
    }
}
