//! Structural and type checks. Passes run the verifier after every rewrite;
//! each error names the node, its op and what is wrong.
//!
//! Checks: the graph is acyclic; every operand names an existing node and
//! output slot; edges mirror `Node::inputs` exactly; operand and result counts
//! fit the op's ONNX arity; graph inputs are `Op::Input` nodes with a type and
//! graph outputs exist; and, where types are present, every node's types agree
//! with the inference rules (value-dependent shapes excepted).

use crate::error::IrError;
use crate::graph::{Graph, Node, NodeId, ValueRef};
use crate::infer::check_node_types;
use crate::op::Op;

/// Verifies `graph`; the first problem found is the error.
pub fn verify(graph: &Graph) -> Result<(), IrError> {
    graph.topo_order()?;
    for (i, &id) in graph.inputs.iter().enumerate() {
        match graph.get(id) {
            None => {
                return Err(IrError::Graph(format!(
                    "graph input {i} refers to a missing node"
                )));
            }
            Some(n) if !matches!(n.op, Op::Input) => {
                return Err(n.error(format!("is graph input {i} but not an Input node")));
            }
            Some(_) => {}
        }
    }
    for (i, v) in graph.outputs.iter().enumerate() {
        if !exists(graph, *v) {
            return Err(IrError::Graph(format!(
                "graph output {i} refers to a value that does not exist"
            )));
        }
    }
    for (id, node) in graph.nodes() {
        check_structure(graph, id, node)?;
    }
    for id in graph.node_ids() {
        check_node_types(graph, id)?;
    }
    Ok(())
}

fn check_structure(graph: &Graph, id: NodeId, node: &Node) -> Result<(), IrError> {
    if matches!(node.op, Op::Input) && !graph.inputs.contains(&id) {
        return Err(node.error("is an Input node but not a graph input"));
    }
    check_arity(node)?;
    for (slot, v) in node.inputs.iter().enumerate() {
        if let Some(v) = v
            && !exists(graph, *v)
        {
            return Err(node.error(format!(
                "operand {slot} refers to a value that does not exist"
            )));
        }
    }
    // Edges and operands must match one to one.
    let edges = graph.incoming(id);
    for (slot, v) in node.inputs.iter().enumerate() {
        let n = edges
            .iter()
            .filter(|&&(e, s)| s == slot && Some(e) == *v)
            .count();
        match (v, n) {
            (Some(_), 1) | (None, 0) => {}
            (Some(_), n) => {
                return Err(
                    node.error(format!("operand {slot} has {n} matching edges, expected 1"))
                );
            }
            (None, _) => unreachable!("a None operand matches no edge"),
        }
    }
    if let Some((v, slot)) = edges
        .iter()
        .find(|&&(v, slot)| node.inputs.get(slot).copied().flatten() != Some(v))
    {
        return Err(node.error(format!(
            "has an edge from output {} of node {} into operand {slot} that its operands do not list",
            v.slot,
            v.node.index()
        )));
    }
    Ok(())
}

/// Operand and result counts against the op's [`arity`]; required operands
/// must be present.
pub(crate) fn check_arity(node: &Node) -> Result<(), IrError> {
    let (min_in, max_in, min_out, max_out) = arity(&node.op);
    let n_in = node.inputs.len();
    if n_in < min_in || n_in > max_in {
        return Err(node.error(format!(
            "has {n_in} operands; {} takes {}",
            node.op.kind(),
            range(min_in, max_in)
        )));
    }
    if let Some(i) = node.inputs[..min_in].iter().position(Option::is_none) {
        return Err(node.error(format!("required operand {i} is missing")));
    }
    let n_out = node.outputs.len();
    if n_out < min_out || n_out > max_out {
        return Err(node.error(format!(
            "has {n_out} results; {} gives {}",
            node.op.kind(),
            range(min_out, max_out)
        )));
    }
    Ok(())
}

fn exists(graph: &Graph, v: ValueRef) -> bool {
    graph.get(v.node).is_some_and(|n| v.slot < n.outputs.len())
}

fn range(lo: usize, hi: usize) -> String {
    match (lo, hi) {
        (lo, hi) if lo == hi => lo.to_string(),
        (lo, usize::MAX) => format!("at least {lo}"),
        (lo, hi) => format!("{lo} to {hi}"),
    }
}

const ANY: usize = usize::MAX;

/// (min inputs, max inputs, min outputs, max outputs) per the ONNX operator
/// of the same name (with the importer's normalisations: attribute forms of
/// Slice/Pad/Clip/Split/Squeeze arguments become inputs or fields).
pub fn arity(op: &Op) -> (usize, usize, usize, usize) {
    match op {
        Op::Input | Op::Const(_) => (0, 0, 1, 1),
        Op::Identity
        | Op::Unary(_)
        | Op::Cast { .. }
        | Op::Softmax { .. }
        | Op::ArgReduce { .. }
        | Op::Gelu { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::AveragePool { .. }
        | Op::Resample { .. }
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::Transpose { .. }
        | Op::Flatten { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::ConstantOfShape { .. } => (1, 1, 1, 1),
        Op::Binary(_)
        | Op::CastLike
        | Op::MatMul
        | Op::Reshape { .. }
        | Op::Expand
        | Op::Tile
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::GatherND { .. }
        | Op::CumSum { .. } => (2, 2, 1, 1),
        Op::Variadic(_) | Op::Concat { .. } => (1, ANY, 1, 1),
        Op::Clip => (1, 3, 1, 1),
        Op::Where | Op::Range | Op::InstanceNorm { .. } | Op::GroupNorm { .. } => (3, 3, 1, 1),
        Op::Reduce { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Trilu { .. } => {
            (1, 2, 1, 1)
        }
        Op::LayerNorm { .. } => (2, 3, 1, 3),
        Op::RmsNorm { .. } => (2, 3, 1, 1),
        Op::Gemm { .. } | Op::Conv { .. } => (2, 3, 1, 1),
        Op::Attention(_) => (3, 7, 1, 4),
        Op::MaxPool { .. } => (1, 1, 1, 2),
        Op::Resize(_) => (1, 4, 1, 1),
        Op::Split { .. } => (1, 2, 1, ANY),
        Op::Slice => (3, 5, 1, 1),
        Op::Pad { .. } => (2, 4, 1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::graph::{Edge, TypeInfo, Value};
    use crate::op::BinaryOp;
    use crate::shape::Shape;

    fn f32s(d: &[usize]) -> TypeInfo {
        TypeInfo {
            dtype: DType::F32,
            shape: Shape::known(d),
        }
    }

    /// x → Exp → Add(·, x) → output.
    fn small() -> (Graph, ValueRef, NodeId, NodeId) {
        let mut g = Graph::new("t");
        let x = ValueRef {
            node: g.add_input("x", f32s(&[2])),
            slot: 0,
        };
        let e = g
            .add_node(
                "e",
                Op::Unary(crate::op::UnaryOp::Exp),
                vec![Some(x)],
                vec![Value::named("ey")],
            )
            .unwrap();
        let ey = ValueRef { node: e, slot: 0 };
        let a = g
            .add_node(
                "a",
                Op::Binary(BinaryOp::Add),
                vec![Some(ey), Some(x)],
                vec![Value::named("y")],
            )
            .unwrap();
        g.outputs.push(ValueRef { node: a, slot: 0 });
        (g, x, e, a)
    }

    fn err(g: &Graph) -> String {
        verify(g).unwrap_err().to_string()
    }

    #[test]
    fn well_formed_graph_passes() {
        let (g, ..) = small();
        verify(&g).unwrap();
    }

    #[test]
    fn cycles_are_rejected() {
        let (mut g, _, e, a) = small();
        g.set_input(e, 0, Some(ValueRef { node: a, slot: 0 }));
        let msg = err(&g);
        assert!(msg.contains("cycle"), "{msg}");
        // A raw edge alone also makes a cycle.
        let (mut g, _, e, a) = small();
        g.add_raw_edge(
            a,
            e,
            Edge {
                out_slot: 0,
                in_slot: 0,
            },
        );
        assert!(err(&g).contains("cycle"));
    }

    #[test]
    fn edges_must_mirror_operands() {
        // A duplicate edge.
        let (mut g, _, e, a) = small();
        g.add_raw_edge(
            e,
            a,
            Edge {
                out_slot: 0,
                in_slot: 0,
            },
        );
        let msg = err(&g);
        assert!(
            msg.contains("node 'a' (Add): operand 0 has 2 matching edges"),
            "{msg}"
        );
        // An operand changed without its edge.
        let (mut g, x, _, a) = small();
        g.set_raw_input(a, 0, Some(x));
        let msg = err(&g);
        assert!(
            msg.contains("node 'a' (Add): operand 0 has 0 matching edges"),
            "{msg}"
        );
        // An edge into a slot past the operands.
        let (mut g, x, _, a) = small();
        g.add_raw_edge(
            x.node,
            a,
            Edge {
                out_slot: 0,
                in_slot: 5,
            },
        );
        assert!(err(&g).contains("that its operands do not list"));
    }

    #[test]
    fn dangling_references_are_rejected() {
        let (mut g, _, e, a) = small();
        g.set_raw_input(a, 0, Some(ValueRef { node: e, slot: 3 }));
        assert!(err(&g).contains("operand 0 refers to a value that does not exist"));
        let (mut g, ..) = small();
        g.outputs.push(ValueRef {
            node: NodeId::new(99),
            slot: 0,
        });
        assert!(err(&g).contains("graph output 1"));
        let (mut g, _, e, _) = small();
        g.inputs.push(e);
        assert!(err(&g).contains("node 'e' (Exp): is graph input 1 but not an Input node"));
    }

    #[test]
    fn arity_is_checked() {
        let (mut g, x, ..) = small();
        g.add_node("m", Op::MatMul, vec![Some(x)], vec![Value::named("m")])
            .unwrap();
        assert!(err(&g).contains("node 'm' (MatMul): has 1 operands; MatMul takes 2"));
        let (mut g, x, ..) = small();
        let w = g.add_const(
            "w",
            crate::tensor::Tensor::zeros(DType::F32, vec![1, 1, 1]).unwrap(),
        );
        g.add_node(
            "c",
            Op::Conv {
                window: Default::default(),
                group: 1,
            },
            vec![None, Some(w), Some(x)],
            vec![Value::named("c")],
        )
        .unwrap();
        assert!(err(&g).contains("node 'c' (Conv): required operand 0 is missing"));
        let (mut g, x, ..) = small();
        g.add_node(
            "s",
            Op::Split {
                axis: 0,
                split: None,
                num_outputs: 0,
            },
            vec![Some(x)],
            vec![],
        )
        .unwrap();
        assert!(err(&g).contains("(Split): has 0 results; Split gives at least 1"));
    }

    #[test]
    fn types_are_checked() {
        let mut g = Graph::new("t");
        let x = ValueRef {
            node: g.add_input("x", f32s(&[2])),
            slot: 0,
        };
        let i = ValueRef {
            node: g.add_input(
                "i",
                TypeInfo {
                    dtype: DType::I64,
                    shape: Shape::known(&[2]),
                },
            ),
            slot: 0,
        };
        g.add_node(
            "a",
            Op::Binary(BinaryOp::Add),
            vec![Some(x), Some(i)],
            vec![Value::named("y")],
        )
        .unwrap();
        assert!(err(&g).contains("node 'a' (Add): operand dtypes differ: f32 vs i64"));

        // A recorded output type that contradicts the rule.
        let (mut g, _, e, _) = small();
        g.value_mut(ValueRef { node: e, slot: 0 }).ty = Some(f32s(&[3]));
        assert!(err(&g).contains(
            "node 'e' (Exp): output 0 ('ey'): declared as f32[3] but inferred as f32[2]"
        ));
        g.value_mut(ValueRef { node: e, slot: 0 }).ty = Some(f32s(&[2]));
        verify(&g).unwrap();
    }
}
