//! varc-onnx
