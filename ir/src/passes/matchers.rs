//! Small pattern-matching helpers shared by the passes.

use super::PassCx;
use crate::graph::{Graph, NodeId, Value, ValueRef};
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::tensor::Tensor;

pub(super) fn out0(node: NodeId) -> ValueRef {
    ValueRef { node, slot: 0 }
}

/// The static shape of `v`, when known.
pub(super) fn shape(g: &Graph, v: ValueRef) -> Option<Vec<usize>> {
    g.value(v).ty.as_ref()?.shape.as_known()
}

/// The one node reading `v` (and `v` is not a graph output).
pub(super) fn sole_user(g: &Graph, v: ValueRef) -> Option<NodeId> {
    let users = g.consumers(v);
    (users.len() == 1 && !g.outputs.contains(&v)).then(|| users[0].0)
}

/// A compile-time constant: an `Op::Const` or a value inference folded.
pub(super) fn konst<'a>(g: &'a Graph, cx: &'a PassCx, v: ValueRef) -> Option<&'a Tensor> {
    g.const_value(v).or_else(|| cx.inferred.consts.get(&v))
}

/// A float constant whose elements are all equal, and whose shape does not
/// broadcast `other` to something larger.
pub(super) fn scalar(g: &Graph, cx: &PassCx, v: ValueRef, other: ValueRef) -> Option<f64> {
    let t = konst(g, cx, v)?;
    if !t.dtype().is_float() || t.numel() == 0 {
        return None;
    }
    let vals = t.to_f64_vec();
    let x = vals[0];
    let os = &g.value(other).ty.as_ref()?.shape.0;
    let fits = t.rank() <= os.len()
        && t.shape()
            .iter()
            .rev()
            .zip(os.iter().rev())
            .all(|(a, b)| *a == 1 || b.known() == Some(*a));
    (fits && vals.iter().all(|&y| y == x)).then_some(x)
}

/// `(a, b)` when `id` is `Binary(op)(a, b)`.
pub(super) fn binary(g: &Graph, id: NodeId, op: BinaryOp) -> Option<(ValueRef, ValueRef)> {
    let n = g.node(id);
    match n.op {
        Op::Binary(b) if b == op => Some((n.inputs[0]?, n.inputs[1]?)),
        _ => None,
    }
}

pub(super) fn unary(g: &Graph, id: NodeId, op: UnaryOp) -> Option<ValueRef> {
    let n = g.node(id);
    match n.op {
        Op::Unary(u) if u == op => n.inputs[0],
        _ => None,
    }
}

/// Relative closeness for matching exporter constants.
pub(super) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1e-30)
}

/// A product tree: non-constant leaves and the product of scalar factors.
/// Interior Mul/Div nodes other than the root must have no other users.
pub(super) struct Product {
    pub leaves: Vec<ValueRef>,
    pub coeff: f64,
}

pub(super) fn product(g: &Graph, cx: &PassCx, v: ValueRef, depth: usize) -> Product {
    let mut p = Product {
        leaves: vec![],
        coeff: 1.0,
    };
    collect(g, cx, v, depth, true, &mut p);
    p
}

fn collect(g: &Graph, cx: &PassCx, v: ValueRef, depth: usize, root: bool, p: &mut Product) {
    let interior = root || sole_user(g, v).is_some();
    if depth > 0 && interior {
        if let Some((a, b)) = binary(g, v.node, BinaryOp::Mul) {
            for (x, y) in [(a, b), (b, a)] {
                if let Some(c) = scalar(g, cx, x, y) {
                    p.coeff *= c;
                    return collect(g, cx, y, depth - 1, false, p);
                }
            }
            collect(g, cx, a, depth - 1, false, p);
            return collect(g, cx, b, depth - 1, false, p);
        }
        if let Some((a, b)) = binary(g, v.node, BinaryOp::Div)
            && let Some(c) = scalar(g, cx, b, a)
            && c != 0.0
        {
            p.coeff /= c;
            return collect(g, cx, a, depth - 1, false, p);
        }
    }
    p.leaves.push(v);
}

/// Adds a one-output node named `name` (its value too).
pub(super) fn add(g: &mut Graph, name: &str, op: Op, ins: &[Option<ValueRef>]) -> ValueRef {
    let id = g
        .add_node(name, op, ins.to_vec(), vec![Value::named(name)])
        .expect("operands exist");
    out0(id)
}

/// Adds a constant named uniquely after `base`.
pub(super) fn add_const(g: &mut Graph, base: &str, t: Tensor) -> ValueRef {
    g.add_const(format!("{base}_{}", g.node_count()), t)
}

/// Whether `op` only moves data without changing element order's meaning:
/// the output is a reshape (row-major regrouping) or permutation of its input.
pub(super) fn is_layout(op: &Op) -> bool {
    matches!(
        op,
        Op::Identity
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
    )
}

/// Flat source indices of `to`, computed from an iota over `from`'s shape
/// through the chain of layout ops between them (`None` when the chain is
/// not made of layout ops with static shapes).
pub(super) fn trace_layout(g: &Graph, from: ValueRef, to: ValueRef) -> Option<Vec<usize>> {
    let mut chain = vec![];
    let mut cur = to;
    while cur != from {
        let n = g.node(cur.node);
        if !is_layout(&n.op) || chain.len() > 8 {
            return None;
        }
        chain.push(cur);
        cur = n.inputs[0]?;
    }
    let s = shape(g, from)?;
    let mut idx: Vec<usize> = (0..s.iter().product()).collect();
    let mut cur_shape = s;
    for v in chain.into_iter().rev() {
        let out_shape = shape(g, v)?;
        if let Op::Transpose { perm } = &g.node(v.node).op {
            let r = cur_shape.len();
            let perm = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            idx = permute(&idx, &cur_shape, &perm)?;
        }
        cur_shape = out_shape;
    }
    Some(idx)
}

/// `x` (row-major, `shape`) transposed by `perm`.
pub(super) fn permute(x: &[usize], shape: &[usize], perm: &[usize]) -> Option<Vec<usize>> {
    let r = shape.len();
    if perm.len() != r {
        return None;
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides = crate::shape::strides(shape);
    let mut out = Vec::with_capacity(x.len());
    let mut ix = vec![0usize; r];
    for _ in 0..x.len() {
        let src: usize = (0..r).map(|d| ix[d] * strides[perm[d]]).sum();
        out.push(x[src]);
        for d in (0..r).rev() {
            ix[d] += 1;
            if ix[d] < out_shape[d] {
                break;
            }
            ix[d] = 0;
        }
    }
    Some(out)
}

/// Points every use of `old` at `new`, which computes the same value (so it
/// takes `old`'s type until inference runs again).
pub(super) fn replace(g: &mut Graph, old: ValueRef, new: ValueRef) {
    let ty = g.value(old).ty.clone();
    g.value_mut(new).ty = ty;
    // A graph output keeps its name: callers look outputs up by name.
    if g.outputs.contains(&old) {
        g.value_mut(new).name = g.value(old).name.clone();
    }
    g.replace_uses(old, new);
}
