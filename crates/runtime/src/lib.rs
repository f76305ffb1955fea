//! varc-runtime: what running a compiled model needs around the kernels.
//!
//! For now: named tensor files ([`io`]: safetensors and NumPy .npz) for model
//! inputs, outputs and golden data, and seeded random inputs ([`random`]).

pub mod compare;
pub mod io;
pub mod random;

pub use compare::{Agreement, compare};
pub use io::{NamedTensors, read_tensors, write_tensors};
