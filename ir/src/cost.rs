//! Work estimates for the cost model and reports.
//!
//! Counting rules (a multiply-add is 2 FLOPs):
//! - MatMul / Gemm: `2·M·N·K·batch` (+ `M·N` for Gemm's C);
//! - Conv: `2·N·Cout·spatial_out·(Cin/group)·Πkernel` (+ one per output for a bias);
//! - Attention: `2·B·H·S·L·hd` for Q·Kᵀ, `2·B·H·S·L·hd_v` for P·V, `5·B·H·S·L`
//!   for scaling and softmax;
//! - element-wise ops (including transcendental ones, Cast and Where): one
//!   per output element — a unit of work, not a cycle count;
//! - Softmax: 5 per element (max, subtract, exp, sum, divide); norms: 5 per
//!   input element;
//! - reductions and global pools: one per input element; windowed pools: one
//!   per output element per kernel tap;
//! - Resize: output elements × taps (1 nearest, 2 linear, 4 cubic per resized axis);
//! - Resample: applied one axis at a time, as lowered: for each mapped axis
//!   in order, the elements of the partial result × that map's most taps;
//! - pure data movement (Reshape, Transpose, Gather, Slice, ...): 0.
//!
//! Anything whose needed dims are symbolic counts 0.

use crate::graph::{Graph, Node, TypeInfo, ValueRef};
use crate::infer::attention_dims;
use crate::op::{Op, ResizeMode};
use crate::shape::Dim;

/// FLOPs of one node given its operand and result types (see the module doc).
pub fn node_flops(node: &Node, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
    flops(node, inputs, outputs).unwrap_or(0)
}

/// Sum of [`node_flops`] over the graph, with the types recorded on its values.
pub fn graph_flops(graph: &Graph) -> u64 {
    graph
        .nodes()
        .map(|(_, n)| {
            let ty = |v: &ValueRef| graph.get(v.node)?.outputs.get(v.slot)?.ty.as_ref();
            let ins: Vec<Option<&TypeInfo>> =
                n.inputs.iter().map(|v| v.as_ref().and_then(ty)).collect();
            let outs: Option<Vec<TypeInfo>> = n.outputs.iter().map(|o| o.ty.clone()).collect();
            outs.map_or(0, |outs| node_flops(n, &ins, &outs))
        })
        .fold(0u64, u64::saturating_add)
}

/// (elements, bytes) held by the graph's `Op::Const` nodes.
pub fn param_count(graph: &Graph) -> (usize, usize) {
    graph.nodes().fold((0, 0), |(e, b), (_, n)| match &n.op {
        Op::Const(t) => (e + t.numel(), b + t.byte_size()),
        _ => (e, b),
    })
}

fn numel(t: &TypeInfo) -> Option<u64> {
    t.shape.numel().map(|n| n as u64)
}

fn dim(t: &TypeInfo, i: usize) -> Option<u64> {
    t.shape.0.get(i).and_then(Dim::known).map(|d| d as u64)
}

fn prod(it: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    it.into_iter().try_fold(1u64, |a, d| a.checked_mul(d?))
}

fn flops(node: &Node, ins: &[Option<&TypeInfo>], outs: &[TypeInfo]) -> Option<u64> {
    let input = |i: usize| ins.get(i).copied().flatten();
    let out = || numel(outs.first()?);
    let inp = || numel(input(0)?);
    Some(match &node.op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Clip
        | Op::Where
        | Op::Cast { .. }
        | Op::CastLike
        | Op::Gelu { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Trilu { .. }
        | Op::CumSum { .. } => out()?,
        Op::Variadic(_) => out()?.checked_mul(ins.len().saturating_sub(1).max(1) as u64)?,
        Op::Softmax { .. } => out()?.checked_mul(5)?,
        Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::GroupNorm { .. } => inp()?.checked_mul(5)?,
        Op::Reduce { .. } | Op::ArgReduce { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            inp()?
        }
        Op::MatMul => {
            let a = input(0)?;
            let k = dim(a, a.shape.rank().checked_sub(1)?)?;
            prod([out(), Some(2), Some(k)])?
        }
        Op::Gemm { trans_a, .. } => {
            let k = dim(input(0)?, if *trans_a { 0 } else { 1 })?;
            let bias = if input(2).is_some() { out()? } else { 0 };
            prod([out(), Some(2), Some(k)])?.checked_add(bias)?
        }
        Op::Conv { .. } => {
            let w = input(1)?;
            let taps = prod((1..w.shape.rank()).map(|i| dim(w, i)))?;
            let bias = if input(2).is_some() { out()? } else { 0 };
            prod([out(), Some(2), Some(taps)])?.checked_add(bias)?
        }
        Op::AveragePool { window, .. } | Op::MaxPool { window, .. } => {
            let taps = prod(
                window
                    .kernel_shape
                    .as_ref()?
                    .iter()
                    .map(|&k| Some(k as u64)),
            )?;
            out()?.checked_mul(taps)?
        }
        Op::Attention(a) => {
            let d = attention_dims(a, input(0)?, input(1)?, input(2)?, input(4)).ok()?;
            let k = |d: &Dim| d.known().map(|v| v as u64);
            let scores = prod([k(&d.batch), k(&d.q_heads), k(&d.q_len), k(&d.total_len)])?;
            let per_score = 2 * k(&d.head)? + 2 * k(&d.v_head)? + 5;
            scores.checked_mul(per_score)?
        }
        Op::Resize(r) => {
            let (x, y) = (input(0)?, outs.first()?);
            let per_axis: u64 = match r.mode {
                ResizeMode::Nearest => 1,
                ResizeMode::Linear => 2,
                ResizeMode::Cubic => 4,
            };
            let resized = x
                .shape
                .0
                .iter()
                .zip(&y.shape.0)
                .filter(|(a, b)| a != b)
                .count();
            out()?.checked_mul(per_axis.checked_pow(resized as u32)?)?
        }
        Op::Resample { maps } => {
            let mut dims: Vec<u64> = (0..input(0)?.shape.rank())
                .map(|i| dim(input(0)?, i))
                .collect::<Option<_>>()?;
            let mut total = 0u64;
            for (d, m) in maps.iter().enumerate() {
                let Some(m) = m.as_ref().filter(|m| !m.is_identity()) else {
                    continue;
                };
                *dims.get_mut(d)? = m.out_len as u64;
                let n = prod(dims.iter().map(|&v| Some(v)))?;
                total = total.checked_add(n.checked_mul(m.max_taps().max(1) as u64)?)?;
            }
            total
        }
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Value;
    use crate::infer::{NoFold, infer_types};
    use crate::op::{AttentionAttrs, Window};
    use crate::tensor::Tensor;
    use std::collections::BTreeMap;

    fn t(s: &str) -> TypeInfo {
        crate::infer::tests::ty(s)
    }

    fn flops_of(op: Op, ins: &[&str], out: &str) -> u64 {
        let node = Node {
            name: "n".into(),
            op,
            inputs: vec![],
            outputs: vec![Value::named("y")],
        };
        let ins: Vec<TypeInfo> = ins.iter().map(|s| t(s)).collect();
        let refs: Vec<Option<&TypeInfo>> = ins.iter().map(Some).collect();
        node_flops(&node, &refs, &[t(out)])
    }

    #[test]
    fn contractions() {
        assert_eq!(
            flops_of(Op::MatMul, &["f32[2,3,4]", "f32[4,5]"], "f32[2,3,5]"),
            2 * 2 * 3 * 5 * 4
        );
        assert_eq!(
            flops_of(Op::MatMul, &["f32[B,3,4]", "f32[4,5]"], "f32[B,3,5]"),
            0
        );
        let conv = Op::Conv {
            window: Window::default(),
            group: 2,
        };
        let f = flops_of(conv, &["f32[1,4,8,8]", "f32[6,2,3,3]"], "f32[1,6,6,6]");
        assert_eq!(f, 2 * 6 * 6 * 6 * 2 * 3 * 3);
        let attn = Op::Attention(AttentionAttrs {
            is_causal: false,
            q_num_heads: None,
            kv_num_heads: None,
            scale: None,
            softcap: 0.0,
            qk_matmul_output_mode: 0,
            softmax_precision: 0,
        });
        let f = flops_of(
            attn,
            &["f32[1,2,3,8]", "f32[1,2,5,8]", "f32[1,2,5,8]"],
            "f32[1,2,3,8]",
        );
        assert_eq!(f, 2 * 3 * 5 * (2 * 8 + 2 * 8 + 5));
    }

    #[test]
    fn elementwise_norms_and_params() {
        assert_eq!(
            flops_of(
                Op::Unary(crate::op::UnaryOp::Exp),
                &["f32[4,4]"],
                "f32[4,4]"
            ),
            16
        );
        let ln = Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
            stash_type: 1,
        };
        assert_eq!(flops_of(ln, &["f32[4,4]", "f32[4]"], "f32[4,4]"), 80);
        assert_eq!(
            flops_of(Op::Transpose { perm: None }, &["f32[4,4]"], "f32[4,4]"),
            0
        );

        let mut g = Graph::new("p");
        let x = ValueRef {
            node: g.add_input("x", t("f32[2,8]")),
            slot: 0,
        };
        let w = g.add_const(
            "w",
            Tensor::zeros(crate::dtype::DType::F32, vec![8, 4]).unwrap(),
        );
        g.add_node(
            "mm",
            Op::MatMul,
            vec![Some(x), Some(w)],
            vec![Value::named("y")],
        )
        .unwrap();
        assert_eq!(param_count(&g), (32, 128));
        infer_types(&mut g, &BTreeMap::new(), &NoFold).unwrap();
        assert_eq!(graph_flops(&g), 2 * 2 * 4 * 8);
    }
}
