//! adaLN modulation → the normalisation's own scale and bias operands:
//! `norm(x) · m + s`, with `m` (usually `1 + scale`) and `s` (shift) chunks
//! of a conditioning projection that broadcast to x's shape (per batch in
//! VAR, per token in FlowAR's head), becomes `norm(x; scale = m, bias = s)`.
//!
//! The norm is a LayerNormalization without a learned affine (unit scale,
//! zero or no bias: VAR's `ln_wo_grad`, opsets 17–23 alike) or an
//! RMSNormalization (FlowAR; `fuse-rmsnorm` has usually absorbed the `· m`
//! already and only `+ s` is left). The lowering applies scale and bias in
//! the normalisation's final kernel, so the two full-size elementwise
//! kernels after it disappear.

use super::matchers::{add, binary, konst, out0, replace, scalar, shape, sole_user};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, Op};

pub struct FuseAdaLn;

impl Pass for FuseAdaLn {
    fn name(&self) -> &'static str {
        "fuse-adaln"
    }
    fn about(&self) -> &'static str {
        "adaLN norm(x)·m + s after LayerNormalization / RMSNormalization → the norm's scale and bias"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::LayerNorm { .. } | Op::RmsNorm { .. }))
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
            if !cx.allow(self.name(), &name, &m.what) {
                continue;
            }
            let node = g.node(id);
            let op = node.op.clone();
            let x = node.inputs[0];
            let y = add(g, &format!("{name}_ada"), op, &[x, Some(m.scale), m.bias]);
            replace(g, m.top, y);
            rep.fire(name, m.what);
        }
        if rep.changed() {
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

struct Match {
    scale: ValueRef,
    bias: Option<ValueRef>,
    top: ValueRef,
    what: String,
}

fn find(g: &Graph, cx: &PassCx, id: NodeId) -> Result<Match, String> {
    let n = g.node(id);
    let kind = n.op.kind();
    let used = |slot: usize| {
        let v = ValueRef { node: id, slot };
        !g.consumers(v).is_empty() || g.outputs.contains(&v)
    };
    if (1..n.outputs.len()).any(used) {
        return Err("Mean / InvStdDev outputs are used".into());
    }
    let x = n.inputs[0].ok_or("no operand")?;
    let gamma = n.inputs[1].ok_or("no scale")?;
    let xs = shape(g, x).ok_or("x has no static shape")?;
    let all = |v: ValueRef, want: f64| {
        konst(g, cx, v).is_some_and(|t| t.to_f64_vec().iter().all(|&e| e == want))
    };
    let unit_scale = all(gamma, 1.0);
    let no_bias = match n.inputs.get(2).copied().flatten() {
        None => true,
        Some(b) => all(b, 0.0),
    };
    if !no_bias {
        return Err(format!("{kind} already has a bias"));
    }
    let fits = |v: ValueRef, out: NodeId| {
        let vs = shape(g, v);
        vs.is_some_and(|s| broadcasts_to(&s, &xs)) && shape(g, out0(out)).as_ref() == Some(&xs)
    };
    // Each absorbed value has one user, so neither m nor s can be computed
    // from the norm: the new node cannot close a cycle.
    let mut top = out0(id);
    let mut scale = gamma;
    let mut parts = vec![];
    let mut user = sole_user(g, top);
    if let Some(u) = user
        && let Some((p, q)) = binary(g, u, BinaryOp::Mul)
    {
        let m = if p == top { q } else { p };
        if !unit_scale {
            return Err(format!(
                "{kind} has a learned scale: the following Mul would need it folded in"
            ));
        }
        if m == top || !fits(m, u) {
            return Err("the following Mul does not broadcast to x".into());
        }
        parts.push(format!("·{}", modulation(g, cx, m)));
        scale = m;
        top = out0(u);
        user = sole_user(g, top);
    }
    if let Some(u) = user
        && let Some((p, q)) = binary(g, u, BinaryOp::Add)
    {
        let s = if p == top { q } else { p };
        if s != top && fits(s, u) {
            parts.push(format!("+{}", dims(g, s)));
            top = out0(u);
            let role = if parts.len() == 2 {
                "scale and bias"
            } else {
                "bias"
            };
            let what = format!("{kind} takes {} as {role}", parts.join(" "));
            return Ok(Match {
                scale,
                bias: Some(s),
                top,
                what,
            });
        }
    }
    if parts.is_empty() {
        return Err(match user {
            None => "result has other users".into(),
            Some(_) => "not followed by ·m or +s".into(),
        });
    }
    Ok(Match {
        scale,
        bias: None,
        top,
        what: format!("{kind} takes {} as scale", parts.join(" ")),
    })
}

/// Unidirectional broadcast of `s` to `x` (trailing alignment).
fn broadcasts_to(s: &[usize], x: &[usize]) -> bool {
    s.len() <= x.len()
        && s.iter()
            .rev()
            .zip(x.iter().rev())
            .all(|(&a, &b)| a == 1 || a == b)
}

fn dims(g: &Graph, v: ValueRef) -> String {
    shape(g, v).map_or("?".into(), |s| format!("{s:?}"))
}

/// `(1+scale)[dims]` when `m` is `1 + scale`, else `[dims]`.
fn modulation(g: &Graph, cx: &PassCx, m: ValueRef) -> String {
    let one_plus = binary(g, m.node, BinaryOp::Add)
        .is_some_and(|(a, b)| scalar(g, cx, a, b) == Some(1.0) || scalar(g, cx, b, a) == Some(1.0));
    if one_plus {
        format!("(1+scale){}", dims(g, m))
    } else {
        dims(g, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    fn ln() -> Op {
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-6,
            stash_type: 1,
        }
    }

    #[test]
    fn layer_norm_absorbs_scale_and_shift() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,5,4]");
        let scale = b.input("scale", "f32[2,1,4]");
        let shift = b.input("shift", "f32[2,1,4]");
        let ones = b.floats(&[1.0; 4]);
        let zeros = b.floats(&[0.0; 4]);
        let n = b.op(ln(), &[x, ones, zeros]);
        let one = b.floats(&[1.0]);
        let m = b.op(Op::Binary(BinaryOp::Add), &[scale, one]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[m, n]);
        let y = b.op(Op::Binary(BinaryOp::Add), &[shift, y]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseAdaLn));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(
            rep.fired[0].what,
            "LayerNormalization takes ·(1+scale)[2, 1, 4] +[2, 1, 4] as scale and bias"
        );
        assert_eq!(kinds(&b.g), ["Add", "LayerNormalization"]);
    }

    #[test]
    fn learned_affine_is_left_alone() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,4]");
        let m = b.input("m", "f32[2,1]");
        let gamma = b.floats(&[1.0, 2.0, 1.0, 1.0]);
        let n = b.op(ln(), &[x, gamma]);
        let y = b.op(Op::Binary(BinaryOp::Mul), &[n, m]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseAdaLn));
        assert!(rep.fired.is_empty());
        assert!(rep.skipped[0].what.contains("learned scale"), "{rep:?}");
    }

    #[test]
    fn rms_norm_takes_the_shift() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,3,4]");
        let m = b.input("m", "f32[2,1,4]");
        let s = b.input("s", "f32[2,1,4]");
        let rms = Op::RmsNorm {
            axis: -1,
            epsilon: 1e-6,
            stash_type: 1,
        };
        let n = b.op(rms, &[x, m]);
        let y = b.op(Op::Binary(BinaryOp::Add), &[n, s]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseAdaLn));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(kinds(&b.g), ["RMSNormalization"]);
    }
}
