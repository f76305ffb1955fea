//! varc-ir: the graph IR every other crate works on.
//!
//! - [`graph`]: typed op nodes on a petgraph `StableDiGraph`;
//! - [`op`]: the op set, attributes already parsed into typed fields;
//! - [`tensor`], [`dtype`], [`shape`]: values, element types and (symbolic) shapes;
//! - [`infer`]: type and shape inference (symbolic dims bound at compile time);
//! - [`verify`]: structural and type checks whose errors name node, op and reason;
//! - [`print`]: the text form and Graphviz DOT export;
//! - [`cost`]: FLOP and parameter counts for the cost model;
//! - [`passes`]: graph optimisation passes and the pipeline that runs them.

pub mod cost;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod kernel;
pub mod lower;
pub mod op;
pub mod passes;
pub mod print;
pub mod resample;
pub mod shape;
pub mod tensor;
pub mod testing;
pub mod verify;

pub use dtype::DType;
pub use error::{IrError, Result};
pub use graph::{Graph, Node, NodeId, TypeInfo, Value, ValueRef};
pub use op::Op;
pub use shape::{Dim, Shape};
pub use tensor::{Tensor, TensorData};
