//! varc-runtime: what running a compiled model needs around the kernels.
//!
//! For now: named tensor files ([`io`]: safetensors and NumPy .npz) for model
//! inputs, outputs and golden data, seeded random inputs ([`random`]), the thread pool kernels run on ([`pool`]), and the f32 matrix-multiply
//! microkernels compiled code calls on the host ([`ukernel`]).

pub mod compare;
pub mod io;
pub mod pool;
pub mod random;
pub mod ukernel;

pub use compare::{Agreement, compare};
pub use io::{NamedTensors, read_tensors, write_tensors};
