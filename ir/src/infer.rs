//! Type and shape inference.
//!
//! Walks the graph in dependency order and gives every value a [`TypeInfo`].
//! Symbolic input dims are bound from `bindings` first. Ops whose output
//! shape depends on operand *values* (Reshape's shape, Resize's sizes, Slice's
//! starts, ...) read them from constants: initializers, Constant nodes, and
//! values folded on the way by a [`ConstFold`] — the reference interpreter's
//! node evaluator, so an op's semantics stay written once.

use crate::graph::Node;
use crate::tensor::Tensor;

/// Evaluates one node on constant operands. Implemented by the reference
/// interpreter; inference uses it to fold shape arithmetic.
pub trait ConstFold {
    /// `inputs[i]` is `None` for an omitted optional operand.
    fn fold(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String>;
}
