//! Conv (N-D, at least 1-D and 2-D): pads, strides, dilations, groups, auto_pad.

use varc_ir::Tensor;
use varc_ir::op::Window;

/// Conv(X, W, B?) per the ONNX spec.
pub fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, window: &Window, group: usize) -> Result<Tensor, String> {
    let _ = (x, w, b, window, group);
    Err("Conv is not implemented yet".into())
}
