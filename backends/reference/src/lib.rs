//! varc-backend-ref: the reference interpreter over the varc graph IR — the
//! slow, obviously-correct oracle every compiled backend is compared
//! against, and the constant folder shape inference uses.
//!
//! # API
//!
//! - [`eval_node`]: one node on its operand values;
//! - [`run`] / [`run_with_observer`]: a whole graph on named inputs;
//! - [`RefFolder`]: [`varc_ir::infer::ConstFold`] through `eval_node`.
//!
//! # Numerics
//!
//! - Float tensors (f16, bf16, f32, f64) are computed in f64 internally and
//!   each op's output is rounded (to nearest) to the output dtype once.
//!   Reductions, norms and matmuls accumulate in f64 in index order.
//! - Integer ops compute in i64 and cast to the output dtype with wrapping
//!   (ONNX integer semantics); integer division or modulo by zero is an
//!   error.
//! - Bool is bool.
//! - Semantics follow the ONNX operator spec; where the spec leaves a corner
//!   open we follow the ONNX reference evaluator (`onnx.reference`):
//!   Softmax of an all -inf row is NaN; Mod with `fmod = 0` on floats is C
//!   fmod; reducing over no axes (`noop_with_empty_axes`) reduces each
//!   element alone (so ReduceSumSquare squares); Range on floats counts and
//!   steps in f64.
//!
//! Deliberate departures from `onnx.reference`, where it is an artifact
//! rather than the formula: ReduceLogSumExp of an all -inf group is -inf
//! (the reference's shift gives NaN).
//!
//! # Not supported
//!
//! - IsInf's `detect_negative` / `detect_positive` (the IR has no fields
//!   for them): both signs are detected.
//! - MaxPool's optional Indices output.
//! - `stash_type` does not change how statistics are computed (always f64);
//!   for LayerNormalization it sets the element type of Mean / InvStdDev.
//!
//! # Robustness
//!
//! No input makes it panic: shape mismatches, out-of-range indices (the
//! error names the index), wrong element types and missing operands are
//! errors naming the node and op. Tensors over [`common::MAX_ELEMENTS`]
//! elements are refused rather than allocated.

pub mod attention;
pub mod broadcast;
pub mod common;
pub mod conv;
mod dispatch;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod resample_op;
pub mod resize;
mod run;
pub mod special;
pub mod values;

pub use dispatch::eval_node;
pub use run::{run, run_with_observer};

use varc_ir::infer::ConstFold;
use varc_ir::{IrError, Node, Tensor};

/// Constant folding for shape inference, by the reference interpreter.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefFolder;

impl ConstFold for RefFolder {
    fn fold(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
        eval_node(node, inputs).map_err(|e| match e {
            // The caller names the node itself; pass the bare reason.
            IrError::Node { reason, .. } => reason,
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod robustness_tests;

#[cfg(test)]
mod spec_cases;
