//! The graph IR: typed op nodes on a petgraph `StableDiGraph`.
//!
//! A node's operands are `Node::inputs` (ordered, `None` for an omitted
//! optional input); each present operand is mirrored by one edge from its
//! producer, so petgraph's algorithms (topological order, cycle detection)
//! see the data flow. `Graph` keeps the two in step; the verifier checks it.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::Shape;
use crate::tensor::Tensor;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

pub type NodeId = NodeIndex;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeId,
    pub slot: usize,
}

/// Element type and shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TypeInfo {
    pub dtype: DType,
    pub shape: Shape,
}

impl std::fmt::Display for TypeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// A value produced by a node: its name (the ONNX value name) and, once known
/// (declared by the model or inferred), its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<TypeInfo>,
}

impl Value {
    pub fn named(name: impl Into<String>) -> Value {
        Value {
            name: name.into(),
            ty: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Option<ValueRef>>,
    pub outputs: Vec<Value>,
}

impl Node {
    /// An error about this node (names the node and its op).
    pub fn error(&self, reason: impl Into<String>) -> IrError {
        IrError::node(&self.name, self.op.kind(), reason)
    }
}

/// Edge weight: producer output slot → consumer input slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub out_slot: usize,
    pub in_slot: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableDiGraph<Node, Edge>,
    /// `Op::Input` nodes in the model's input order.
    pub inputs: Vec<NodeId>,
    /// The model's outputs, in order; each value's name is the output name.
    pub outputs: Vec<ValueRef>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node whose operands must already exist.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueRef>>,
        outputs: Vec<Value>,
    ) -> Result<NodeId> {
        let node = Node {
            name: name.into(),
            op,
            inputs,
            outputs,
        };
        for (slot, input) in node.inputs.iter().enumerate() {
            if let Some(v) = input {
                let ok = self
                    .g
                    .node_weight(v.node)
                    .is_some_and(|p| v.slot < p.outputs.len());
                if !ok {
                    return Err(node.error(format!(
                        "input {slot} refers to a value that does not exist"
                    )));
                }
            }
        }
        let edges: Vec<(ValueRef, usize)> = node
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (v, i)))
            .collect();
        let id = self.g.add_node(node);
        for (v, in_slot) in edges {
            self.g.add_edge(
                v.node,
                id,
                Edge {
                    out_slot: v.slot,
                    in_slot,
                },
            );
        }
        Ok(id)
    }

    /// Adds a graph input of the given type.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TypeInfo) -> NodeId {
        let name = name.into();
        let id = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Input,
            inputs: vec![],
            outputs: vec![Value { name, ty: Some(ty) }],
        });
        self.inputs.push(id);
        id
    }

    /// Adds a constant (initializer or Constant node output).
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueRef {
        let name = name.into();
        let ty = TypeInfo {
            dtype: t.dtype(),
            shape: Shape::known(t.shape()),
        };
        let id = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Const(t),
            inputs: vec![],
            outputs: vec![Value { name, ty: Some(ty) }],
        });
        ValueRef { node: id, slot: 0 }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.g.node_weight(id)
    }

    pub fn value(&self, v: ValueRef) -> &Value {
        &self.g[v.node].outputs[v.slot]
    }

    pub fn value_mut(&mut self, v: ValueRef) -> &mut Value {
        &mut self.g[v.node].outputs[v.slot]
    }

    /// The constant behind `v`, when its producer is an `Op::Const`.
    pub fn const_value(&self, v: ValueRef) -> Option<&Tensor> {
        match &self.g[v.node].op {
            Op::Const(t) => Some(t),
            _ => None,
        }
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Node ids in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.g.node_indices().map(move |i| (i, &self.g[i]))
    }

    /// Nodes in a dependency order; a cycle is an error naming one node on it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        petgraph::algo::toposort(&self.g, None)
            .map_err(|c| self.g[c.node_id()].error("is part of a cycle: the graph must be acyclic"))
    }

    /// (consumer, input slot) pairs reading `v`.
    pub fn consumers(&self, v: ValueRef) -> Vec<(NodeId, usize)> {
        self.g
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().out_slot == v.slot)
            .map(|e| (e.target(), e.weight().in_slot))
            .collect()
    }

    /// Edges into `id` as (producer value, input slot).
    pub fn incoming(&self, id: NodeId) -> Vec<(ValueRef, usize)> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .map(|e| {
                (
                    ValueRef {
                        node: e.source(),
                        slot: e.weight().out_slot,
                    },
                    e.weight().in_slot,
                )
            })
            .collect()
    }

    /// Points every use of `old` (operands and graph outputs) at `new`.
    pub fn replace_uses(&mut self, old: ValueRef, new: ValueRef) {
        for (consumer, in_slot) in self.consumers(old) {
            self.set_input(consumer, in_slot, Some(new));
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Sets operand `in_slot` of `id`, keeping edges in step.
    pub fn set_input(&mut self, id: NodeId, in_slot: usize, v: Option<ValueRef>) {
        let stale: Vec<_> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .filter(|e| e.weight().in_slot == in_slot)
            .map(|e| e.id())
            .collect();
        for e in stale {
            self.g.remove_edge(e);
        }
        let node = &mut self.g[id];
        if node.inputs.len() <= in_slot {
            node.inputs.resize(in_slot + 1, None);
        }
        node.inputs[in_slot] = v;
        if let Some(v) = v {
            self.g.add_edge(
                v.node,
                id,
                Edge {
                    out_slot: v.slot,
                    in_slot,
                },
            );
        }
    }

    /// Removes a node and its edges.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.inputs.retain(|&i| i != id);
        self.g.remove_node(id)
    }

    /// The underlying petgraph graph, for algorithms and the verifier.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }

    /// Test hook for the verifier: adds an edge without touching operands, the
    /// way a buggy pass might.
    #[doc(hidden)]
    pub fn add_raw_edge(&mut self, from: NodeId, to: NodeId, e: Edge) {
        self.g.add_edge(from, to, e);
    }

    /// Test hook for the verifier: sets an operand without touching edges.
    #[doc(hidden)]
    pub fn set_raw_input(&mut self, id: NodeId, in_slot: usize, v: Option<ValueRef>) {
        self.g[id].inputs[in_slot] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::BinaryOp;

    #[test]
    fn edges_follow_operands() {
        let mut g = Graph::new("t");
        let ty = TypeInfo {
            dtype: DType::F32,
            shape: Shape::known(&[2]),
        };
        let x = ValueRef {
            node: g.add_input("x", ty),
            slot: 0,
        };
        let c = g.add_const("c", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let add = g
            .add_node(
                "add",
                Op::Binary(BinaryOp::Add),
                vec![Some(x), Some(c)],
                vec![Value::named("y")],
            )
            .unwrap();
        assert_eq!(g.consumers(x), vec![(add, 0)]);
        g.set_input(add, 1, Some(x));
        assert_eq!(g.consumers(c), vec![]);
        assert_eq!(g.incoming(add).len(), 2);
        assert_eq!(g.topo_order().unwrap().last(), Some(&add));
    }

    #[test]
    fn dangling_operand_is_rejected() {
        let mut g = Graph::new("t");
        let bogus = ValueRef {
            node: NodeId::new(7),
            slot: 0,
        };
        let err = g
            .add_node(
                "n",
                Op::Identity,
                vec![Some(bogus)],
                vec![Value::named("y")],
            )
            .unwrap_err();
        assert!(err.to_string().contains("node 'n' (Identity)"), "{err}");
    }
}
