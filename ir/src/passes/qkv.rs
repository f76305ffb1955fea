//! Merges projections that share an input: N ≥ 2 MatMul (or Gemm) nodes
//! reading the same activation with constant weights of the same K become
//! one node whose weight is the N weights side by side, then a Split back
//! into the original outputs (free views in the lowering). A constant bias —
//! a MatMul's following `Add(·, b)` or a Gemm's C — is concatenated too.
//!
//! Separate Q/K/V projections are the motivating case; gated MLPs (fc1_g,
//! fc1_x) and per-block adaLN projections of one conditioning vector are the
//! same shape. FLOPs do not change; the activation is read and packed once
//! instead of N times and one GEMM call replaces N. It only fires when every
//! weight is a constant used by that projection alone, so the merged weight
//! replaces the old ones without growing the model.

use super::matchers::{add_const, binary, konst, out0, replace, shape, sole_user};
use super::{Pass, PassCx, PassReport};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, NodeId, Value, ValueRef};
use crate::op::{BinaryOp, Op};
use crate::tensor::{Tensor, TensorData};

pub struct MergeProjections;

impl Pass for MergeProjections {
    fn name(&self) -> &'static str {
        "merge-projections"
    }
    fn about(&self) -> &'static str {
        "MatMul/Gemm projections of one input with constant weights (Q/K/V, gated MLPs) → one wider MatMul/Gemm + Split"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let mut groups: Vec<Vec<Member>> = vec![];
        let ids: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::MatMul | Op::Gemm { .. }))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            match member(g, cx, id) {
                Err(why) => rep.skip(&g.node(id).name, why),
                Ok(m) => match groups.iter_mut().find(|gr| gr[0].key == m.key) {
                    Some(gr) => gr.push(m),
                    None => groups.push(vec![m]),
                },
            }
        }
        let (mut merged, mut saved_bytes) = (0, 0usize);
        for group in groups {
            let name = g.node(group[0].id).name.clone();
            if group.len() < 2 {
                rep.skip(
                    name,
                    "no other constant-weight projection of the same input",
                );
                continue;
            }
            let ns: Vec<String> = group.iter().map(|m| m.n.to_string()).collect();
            let what = format!(
                "{} projections of '{}' (K={}, N={}) → one {} + Split",
                group.len(),
                g.value(group[0].key.x).name,
                group[0].key.k,
                ns.join("+"),
                if group[0].key.gemm.is_some() {
                    "Gemm"
                } else {
                    "MatMul"
                },
            );
            if !cx.allow(self.name(), &name, &what) {
                continue;
            }
            let x_bytes = shape(g, group[0].key.x).map_or(0, |s| {
                s.iter().product::<usize>() * group[0].key.dtype.size()
            });
            saved_bytes += x_bytes * (group.len() - 1);
            merged += group.len();
            merge(g, &name, &group);
            rep.fire(name, what);
            // The members' weights go now, not after every group is merged:
            // a big model then never holds all its projections twice.
            let tops: Vec<NodeId> = group.iter().map(|m| m.out.node).collect();
            drop(group);
            for id in tops {
                remove_unused(g, id);
            }
        }
        if rep.changed() {
            rep.notes.push(format!(
                "{merged} projections → {} GEMM(s), same FLOPs; activation reads {saved_bytes} bytes fewer",
                rep.fired.len()
            ));
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

/// What must agree for projections to merge.
#[derive(Clone, Debug, PartialEq)]
struct Key {
    x: ValueRef,
    k: usize,
    dtype: DType,
    /// `(alpha, trans_b)` of a Gemm; `None` for MatMul.
    gemm: Option<(f32, bool)>,
}

struct Member {
    id: NodeId,
    key: Key,
    n: usize,
    /// Row-major `[K, N]` (`[N, K]` for a Gemm with transB), sharing the
    /// constant's storage: only merged groups' weights are copied, once,
    /// in their own dtype, which keeps big models' compile time and memory
    /// down.
    weight: Tensor,
    /// Per-output-column bias, already scaled by a Gemm's beta.
    bias: Option<Vec<f64>>,
    /// The value the merged node's Split output replaces.
    out: ValueRef,
}

fn member(g: &Graph, cx: &PassCx, id: NodeId) -> Result<Member, String> {
    let n = g.node(id);
    let x = n.inputs[0].ok_or("no operand")?;
    let w = n.inputs[1].ok_or("no weight")?;
    let gemm = match n.op {
        Op::Gemm {
            alpha,
            trans_a,
            trans_b,
            ..
        } => {
            if trans_a {
                return Err("Gemm with transA".into());
            }
            Some((alpha, trans_b))
        }
        _ => None,
    };
    let wt = konst(g, cx, w).ok_or("weight is not a compile-time constant")?;
    if g.consumers(w).len() != 1 || g.outputs.contains(&w) {
        return Err("weight is shared with other nodes".into());
    }
    let xs = shape(g, x).ok_or("input has no static shape")?;
    let dtype = g.value(x).ty.as_ref().ok_or("untyped input")?.dtype;
    if !dtype.is_float() || wt.dtype() != dtype {
        return Err("not a float projection of one dtype".into());
    }
    let [r, c] = wt.shape() else {
        return Err("weight is not 2-D".into());
    };
    let trans_b = gemm.is_some_and(|(_, t)| t);
    let (k, cols) = if trans_b { (*c, *r) } else { (*r, *c) };
    if xs.last() != Some(&k) || (gemm.is_some() && xs.len() != 2) {
        return Err("input does not match the weight's K".into());
    }
    let (bias, out) = match gemm {
        Some(_) => (gemm_bias(g, cx, id, cols)?, out0(id)),
        None => match matmul_bias(g, cx, id, cols) {
            Some((b, out)) => (Some(b), out),
            None => (None, out0(id)),
        },
    };
    Ok(Member {
        id,
        key: Key { x, k, dtype, gemm },
        n: cols,
        weight: wt.clone(),
        bias,
        out,
    })
}

/// Removes `id` when nothing reads it, then likewise the nodes it read: the
/// part of the graph only `id` used (what [`super::eliminate_dead`] would
/// remove later, restricted to it).
fn remove_unused(g: &mut Graph, id: NodeId) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        let Some(node) = g.get(id) else {
            continue;
        };
        let used = (0..node.outputs.len()).any(|slot| {
            let v = ValueRef { node: id, slot };
            g.outputs.contains(&v) || !g.consumers(v).is_empty()
        });
        if used || g.inputs.contains(&id) {
            continue;
        }
        stack.extend(node.inputs.iter().flatten().map(|v| v.node));
        g.remove_node(id);
    }
}

/// A constant that broadcasts to `[…, n]` along the last axis only, as `n` values.
fn row_vector(t: &Tensor, n: usize) -> Option<Vec<f64>> {
    let s = t.shape();
    let lead_ones = s.iter().rev().skip(1).all(|&d| d == 1);
    let v = t.to_f64_vec();
    match s.last() {
        _ if !lead_ones || !t.dtype().is_float() => None,
        None | Some(1) if v.len() == 1 => Some(vec![v[0]; n]),
        Some(&d) if d == n => Some(v),
        _ => None,
    }
}

/// A MatMul's following `Add(·, b)` with a constant row-vector `b`.
fn matmul_bias(g: &Graph, cx: &PassCx, id: NodeId, n: usize) -> Option<(Vec<f64>, ValueRef)> {
    let y = out0(id);
    let user = sole_user(g, y)?;
    let (p, q) = binary(g, user, BinaryOp::Add)?;
    let b = if p == y { q } else { p };
    let t = konst(g, cx, b)?;
    if t.dtype() != g.value(y).ty.as_ref()?.dtype || shape(g, out0(user)) != shape(g, y) {
        return None;
    }
    Some((row_vector(t, n)?, out0(user)))
}

/// A Gemm's `beta · C` as a row vector.
fn gemm_bias(g: &Graph, cx: &PassCx, id: NodeId, n: usize) -> Result<Option<Vec<f64>>, String> {
    let node = g.node(id);
    let Some(c) = node.inputs.get(2).copied().flatten() else {
        return Ok(None);
    };
    let Op::Gemm { beta, .. } = node.op else {
        unreachable!("a Gemm member")
    };
    let t = konst(g, cx, c).ok_or("C is not a compile-time constant")?;
    let v = row_vector(t, n).ok_or("C is not a row vector")?;
    Ok(Some(v.into_iter().map(|b| b * beta as f64).collect()))
}

/// Builds the merged node, its bias and the Split, and reroutes every
/// member's output through the Split.
fn merge(g: &mut Graph, name: &str, group: &[Member]) {
    let key = &group[0].key;
    let (k, dt) = (key.k, key.dtype);
    let total: usize = group.iter().map(|m| m.n).sum();
    let trans_b = key.gemm.is_some_and(|(_, t)| t);
    // [N_i, K] blocks stack along rows (one "row" of N_i·K elements each);
    // [K, N_i] blocks sit side by side in each of the K rows.
    let (parts, rows, w_shape): (Vec<_>, _, _) = if trans_b {
        let parts = group.iter().map(|m| (m.weight.data(), m.n * k)).collect();
        (parts, 1, vec![total, k])
    } else {
        let parts = group.iter().map(|m| (m.weight.data(), m.n)).collect();
        (parts, k, vec![k, total])
    };
    let w = TensorData::concat_rows(&parts, rows)
        .and_then(|d| Tensor::new(w_shape, d).ok())
        .expect("concatenated weight: members are [K, N_i] (or [N_i, K]) of one dtype");
    let w = add_const(g, &format!("{name}_merged_w"), w);
    let bias = group.iter().any(|m| m.bias.is_some()).then(|| {
        let b: Vec<f64> = group
            .iter()
            .flat_map(|m| m.bias.clone().unwrap_or_else(|| vec![0.0; m.n]))
            .collect();
        let t = Tensor::from_f64_as(dt, vec![total], &b).expect("concatenated bias");
        add_const(g, &format!("{name}_merged_b"), t)
    });
    let x = Some(key.x);
    let y = match key.gemm {
        Some((alpha, trans_b)) => {
            let op = Op::Gemm {
                alpha,
                beta: 1.0,
                trans_a: false,
                trans_b,
            };
            one(g, &format!("{name}_merged"), op, &[x, Some(w), bias])
        }
        None => {
            let mm = one(g, &format!("{name}_merged"), Op::MatMul, &[x, Some(w)]);
            match bias {
                Some(b) => one(
                    g,
                    &format!("{name}_merged_bias"),
                    Op::Binary(BinaryOp::Add),
                    &[Some(mm), Some(b)],
                ),
                None => mm,
            }
        }
    };
    let sizes: Vec<i64> = group.iter().map(|m| m.n as i64).collect();
    let outs = group
        .iter()
        .enumerate()
        .map(|(i, _)| Value::named(format!("{name}_part{i}")))
        .collect();
    let split = Op::Split {
        axis: -1,
        split: Some(sizes),
        num_outputs: group.len(),
    };
    let id = g
        .add_node(format!("{name}_split"), split, vec![Some(y)], outs)
        .expect("operands exist");
    for (slot, m) in group.iter().enumerate() {
        replace(g, m.out, ValueRef { node: id, slot });
    }
}

fn one(g: &mut Graph, name: &str, op: Op, ins: &[Option<ValueRef>]) -> ValueRef {
    super::matchers::add(g, name, op, ins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    fn weight(b: &mut B, k: usize, n: usize, seed: f32) -> ValueRef {
        let v: Vec<f32> = (0..k * n).map(|i| seed + i as f32 * 0.01).collect();
        b.g.add_const(format!("w{seed}"), Tensor::from_f32(vec![k, n], v).unwrap())
    }

    #[test]
    fn three_matmuls_with_bias_merge() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,5,4]");
        let mut outs = vec![];
        for (i, n) in [3usize, 3, 2].into_iter().enumerate() {
            let w = weight(&mut b, 4, n, i as f32);
            let mm = b.op(Op::MatMul, &[x, w]);
            let bias = b.floats(&vec![0.5; n]);
            outs.push(b.op(Op::Binary(BinaryOp::Add), &[bias, mm]));
        }
        b.g.outputs = outs;
        let rep = run_one(&mut b.g, Box::new(MergeProjections));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert_eq!(kinds(&b.g), ["Add", "MatMul", "Split"]);
    }

    #[test]
    fn shared_or_computed_weights_stay() {
        let mut b = B::default();
        let x = b.input("x", "f32[5,4]");
        let w = weight(&mut b, 4, 3, 1.0);
        let v = b.input("v", "f32[4,3]");
        let y1 = b.op(Op::MatMul, &[x, w]);
        let y2 = b.op(Op::MatMul, &[x, w]);
        let y3 = b.op(Op::MatMul, &[x, v]);
        b.g.outputs = vec![y1, y2, y3];
        let rep = run_one(&mut b.g, Box::new(MergeProjections));
        assert!(rep.fired.is_empty(), "{rep:?}");
        let why: Vec<&str> = rep.skipped.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            why,
            [
                "weight is shared with other nodes",
                "weight is shared with other nodes",
                "weight is not a compile-time constant"
            ]
        );
    }
}
