//! varc-onnx: decodes ONNX `ModelProto`s (prost messages declared by hand in
//! [`proto`]) and imports them into the varc graph IR.
//!
//! - [`decode_model`]: bytes → [`proto::ModelProto`];
//! - [`load_model`] / [`import_model`]: → [`Model`] holding a [`varc_ir::Graph`];
//! - [`unsupported_ops`]: every node the importer cannot take, and why;
//! - [`tensor_from_proto`], [`decode_tensor`], [`tensor_to_proto`]: tensors.

#![deny(unsafe_code)]

mod attrs;
mod decode;
mod error;
mod external;
mod import;
mod mmap;
mod ops;
pub mod proto;
mod tensor;

pub use attrs::{AttrValue, attr_value};
pub use decode::{SUPPORTED_OPSETS, decode_model, decode_model_shared, is_default_domain};
pub use error::{OnnxError, Unsupported};
pub use import::{
    Model, import_model, import_proto, load_model, load_model_with, model_dir, unsupported_ops,
};
pub use ops::supported_op_types;
pub use tensor::{
    MAX_TENSOR_BYTES, decode_tensor, dtype_from_onnx, dtype_to_onnx, onnx_type_label,
    tensor_from_proto, tensor_to_proto, to_le_bytes,
};
