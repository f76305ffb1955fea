//! `run`: a whole graph on named inputs, in dependency order, freeing each
//! value after its last use.

use crate::dispatch::eval_node;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use varc_ir::{Dim, Graph, IrError, Node, NodeId, Op, Tensor, ValueRef};

/// Evaluates `graph` on `inputs` (by graph input name) and returns the graph
/// outputs, in order, with their names.
///
/// Every declared graph input must be given, with the declared dtype and
/// known dims; a symbolic dim accepts any extent but one symbol must have
/// one extent across all inputs. Extra entries in `inputs` are ignored.
/// Only the nodes the outputs depend on are evaluated.
pub fn run(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, IrError> {
    run_with_observer(graph, inputs, &mut |_, _, _| {})
}

/// [`run`], calling `observer` after each evaluated node (graph inputs and
/// constants included) with that node's output values.
pub fn run_with_observer(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    observer: &mut dyn FnMut(NodeId, &Node, &[Tensor]),
) -> Result<Vec<(String, Tensor)>, IrError> {
    for (i, v) in graph.outputs.iter().enumerate() {
        if graph.get(v.node).is_none_or(|n| v.slot >= n.outputs.len()) {
            return Err(IrError::Graph(format!(
                "output {i} refers to a value that does not exist"
            )));
        }
    }
    let fed = bind_inputs(graph, inputs)?;
    let needed = needed_nodes(graph);

    // Remaining reads of each value; graph outputs count as one more read
    // each so that they live to the end.
    let mut uses: HashMap<ValueRef, usize> = HashMap::new();
    for &id in &needed {
        if let Some(node) = graph.get(id) {
            for v in node.inputs.iter().flatten() {
                *uses.entry(*v).or_default() += 1;
            }
        }
    }
    for v in &graph.outputs {
        *uses.entry(*v).or_default() += 1;
    }

    let mut values: HashMap<ValueRef, Cow<'_, Tensor>> = HashMap::new();
    for id in graph.topo_order()? {
        if !needed.contains(&id) {
            continue;
        }
        let node = graph.node(id);
        let borrowed: Option<&Tensor> = match &node.op {
            Op::Input => Some(fed.get(&id).copied().ok_or_else(|| {
                node.error("graph input node is not listed among the graph's inputs")
            })?),
            Op::Const(t) => Some(t),
            _ => None,
        };
        if let Some(t) = borrowed {
            observer(id, node, std::slice::from_ref(t));
            let v = ValueRef { node: id, slot: 0 };
            if uses.get(&v).copied().unwrap_or(0) > 0 {
                values.insert(v, Cow::Borrowed(t));
            }
            continue;
        }
        let outs = {
            let args = node
                .inputs
                .iter()
                .enumerate()
                .map(|(slot, v)| match v {
                    None => Ok(None),
                    Some(v) => values.get(v).map(|t| Some(t.as_ref())).ok_or_else(|| {
                        node.error(format!(
                            "input {slot} has no value (its producer is missing)"
                        ))
                    }),
                })
                .collect::<Result<Vec<Option<&Tensor>>, IrError>>()?;
            eval_node(node, &args)?
        };
        observer(id, node, &outs);
        for v in node.inputs.iter().flatten() {
            if let Some(n) = uses.get_mut(v) {
                *n -= 1;
                if *n == 0 {
                    values.remove(v);
                }
            }
        }
        for (slot, t) in outs.into_iter().enumerate() {
            let v = ValueRef { node: id, slot };
            if uses.get(&v).copied().unwrap_or(0) > 0 {
                values.insert(v, Cow::Owned(t));
            }
        }
    }

    let mut result = Vec::with_capacity(graph.outputs.len());
    for (i, v) in graph.outputs.iter().enumerate() {
        let name = graph.value(*v).name.clone();
        let t = if graph.outputs[i + 1..].contains(v) {
            values.get(v).map(|t| t.as_ref().clone())
        } else {
            values.remove(v).map(Cow::into_owned)
        };
        let t = t.ok_or_else(|| IrError::Graph(format!("output '{name}' was not computed")))?;
        result.push((name, t));
    }
    Ok(result)
}

/// Nodes the graph outputs depend on.
fn needed_nodes(graph: &Graph) -> HashSet<NodeId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeId> = graph.outputs.iter().map(|v| v.node).collect();
    while let Some(id) = stack.pop() {
        let Some(node) = graph.get(id) else { continue };
        if seen.insert(id) {
            stack.extend(node.inputs.iter().flatten().map(|v| v.node));
        }
    }
    seen
}

/// Matches the fed tensors to the graph inputs and checks them against the
/// declared types.
fn bind_inputs<'a>(
    graph: &Graph,
    inputs: &'a HashMap<String, Tensor>,
) -> Result<HashMap<NodeId, &'a Tensor>, IrError> {
    let mut fed = HashMap::new();
    let mut syms: HashMap<String, (usize, String)> = HashMap::new();
    for &id in &graph.inputs {
        let node = graph.get(id).ok_or_else(|| {
            IrError::Graph("a graph input refers to a node that does not exist".into())
        })?;
        let value = node
            .outputs
            .first()
            .ok_or_else(|| node.error("graph input has no output value"))?;
        let name = &value.name;
        let t = inputs
            .get(name)
            .ok_or_else(|| IrError::Graph(format!("missing input '{name}'")))?;
        if let Some(ty) = &value.ty {
            if t.dtype() != ty.dtype {
                return Err(IrError::Graph(format!(
                    "input '{name}' has element type {} but the graph declares {}",
                    t.dtype(),
                    ty.dtype
                )));
            }
            if t.rank() != ty.shape.rank() {
                return Err(IrError::Graph(format!(
                    "input '{name}' has shape {:?} but the graph declares {}",
                    t.shape(),
                    ty.shape
                )));
            }
            for (axis, (dim, &got)) in ty.shape.0.iter().zip(t.shape()).enumerate() {
                match dim {
                    Dim::Known(want) if *want != got => {
                        return Err(IrError::Graph(format!(
                            "input '{name}' has shape {:?} but the graph declares {} (dim {axis})",
                            t.shape(),
                            ty.shape
                        )));
                    }
                    Dim::Known(_) => {}
                    Dim::Sym(s) => match syms.get(s) {
                        Some((bound, by)) if *bound != got => {
                            return Err(IrError::Graph(format!(
                                "input '{name}' dim {axis} ('{s}') is {got} but input '{by}' set '{s}' to {bound}"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            syms.insert(s.clone(), (got, name.clone()));
                        }
                    },
                }
            }
        }
        fed.insert(id, t);
    }
    Ok(fed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::op::{BinaryOp, UnaryOp};
    use varc_ir::{DType, Shape, TypeInfo, Value};

    /// y = relu(x + c) · x ; z = Shape(y)
    fn small_graph() -> Graph {
        let mut g = Graph::new("t");
        let ty = TypeInfo {
            dtype: DType::F32,
            shape: Shape(vec![Dim::Sym("B".into()), Dim::Known(2)]),
        };
        let x = ValueRef {
            node: g.add_input("x", ty),
            slot: 0,
        };
        let c = g.add_const("c", Tensor::from_f32(vec![2], vec![1.0, -10.0]).unwrap());
        let add = g
            .add_node(
                "add",
                Op::Binary(BinaryOp::Add),
                vec![Some(x), Some(c)],
                vec![Value::named("s")],
            )
            .unwrap();
        let relu = g
            .add_node(
                "relu",
                Op::Unary(UnaryOp::Relu),
                vec![Some(ValueRef { node: add, slot: 0 })],
                vec![Value::named("r")],
            )
            .unwrap();
        let mul = g
            .add_node(
                "mul",
                Op::Binary(BinaryOp::Mul),
                vec![
                    Some(ValueRef {
                        node: relu,
                        slot: 0,
                    }),
                    Some(x),
                ],
                vec![Value::named("y")],
            )
            .unwrap();
        let y = ValueRef { node: mul, slot: 0 };
        let shape = g
            .add_node(
                "shape",
                Op::Shape {
                    start: 0,
                    end: None,
                },
                vec![Some(y)],
                vec![Value::named("z")],
            )
            .unwrap();
        // A dead node: never evaluated.
        g.add_node(
            "dead",
            Op::Unary(UnaryOp::Not),
            vec![Some(x)],
            vec![Value::named("d")],
        )
        .unwrap();
        g.outputs = vec![
            y,
            ValueRef {
                node: shape,
                slot: 0,
            },
        ];
        g
    }

    #[test]
    fn runs_a_small_graph() {
        let g = small_graph();
        let mut inputs = HashMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::from_f32(vec![3, 2], vec![1.0, 2.0, -3.0, 20.0, 0.5, 5.0]).unwrap(),
        );
        let mut seen = Vec::new();
        let out = run_with_observer(&g, &inputs, &mut |_, n, outs| {
            seen.push((n.name.clone(), outs[0].shape().to_vec()));
        })
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "y");
        // relu(x + c) * x
        assert_eq!(
            out[0].1.as_f32().unwrap(),
            &[2.0, 0.0, 0.0, 200.0, 0.75, 0.0]
        );
        assert_eq!(out[1].0, "z");
        assert_eq!(out[1].1.to_i64_vec(), vec![3, 2]);
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"add") && names.contains(&"c") && !names.contains(&"dead"));
        assert_eq!(seen.len(), 6);
        // the same output listed twice
        let mut g2 = g.clone();
        g2.outputs.push(g2.outputs[0]);
        let out = run(&g2, &inputs).unwrap();
        assert_eq!(out[0].1, out[2].1);
    }

    #[test]
    fn checks_inputs() {
        let g = small_graph();
        let err = run(&g, &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("missing input 'x'"), "{err}");
        let mut inputs = HashMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::from_i64(vec![1, 2], vec![1, 2]).unwrap(),
        );
        let err = run(&g, &inputs).unwrap_err().to_string();
        assert!(err.contains("element type i64"), "{err}");
        inputs.insert(
            "x".to_string(),
            Tensor::from_f32(vec![1, 3], vec![1.0; 3]).unwrap(),
        );
        let err = run(&g, &inputs).unwrap_err().to_string();
        assert!(err.contains("dim 1"), "{err}");
        inputs.insert(
            "x".to_string(),
            Tensor::from_f32(vec![2], vec![1.0; 2]).unwrap(),
        );
        assert!(run(&g, &inputs).is_err());
    }

    #[test]
    fn symbols_bind_across_inputs() {
        let mut g = Graph::new("t");
        let ty = |d: &str| TypeInfo {
            dtype: DType::F32,
            shape: Shape(vec![Dim::Sym(d.into())]),
        };
        let a = ValueRef {
            node: g.add_input("a", ty("N")),
            slot: 0,
        };
        let b = ValueRef {
            node: g.add_input("b", ty("N")),
            slot: 0,
        };
        let add = g
            .add_node(
                "add",
                Op::Binary(BinaryOp::Add),
                vec![Some(a), Some(b)],
                vec![Value::named("y")],
            )
            .unwrap();
        g.outputs = vec![ValueRef { node: add, slot: 0 }];
        let mut inputs = HashMap::new();
        inputs.insert(
            "a".to_string(),
            Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap(),
        );
        inputs.insert(
            "b".to_string(),
            Tensor::from_f32(vec![1], vec![1.0]).unwrap(),
        );
        let err = run(&g, &inputs).unwrap_err().to_string();
        assert!(err.contains("'N'"), "{err}");
        inputs.insert(
            "b".to_string(),
            Tensor::from_f32(vec![2], vec![3.0, 4.0]).unwrap(),
        );
        assert_eq!(
            run(&g, &inputs).unwrap()[0].1.as_f32().unwrap(),
            &[4.0, 6.0]
        );
    }

    #[test]
    fn node_errors_surface() {
        let mut g = Graph::new("t");
        let data = g.add_const(
            "data",
            Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        );
        let idx = g.add_const("idx", Tensor::from_i64(vec![1], vec![5]).unwrap());
        let gather = g
            .add_node(
                "gather",
                Op::Gather { axis: 0 },
                vec![Some(data), Some(idx)],
                vec![Value::named("y")],
            )
            .unwrap();
        g.outputs = vec![ValueRef {
            node: gather,
            slot: 0,
        }];
        let err = run(&g, &HashMap::new()).unwrap_err().to_string();
        assert!(err.starts_with("node 'gather' (Gather): index 5"), "{err}");
    }
}
