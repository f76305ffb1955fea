//! Resize: applies the per-axis interpolation matrices of `varc_ir::resample`.

use varc_ir::Tensor;
use varc_ir::op::ResizeAttrs;

/// Resize(X, roi?, scales?, sizes?) per the ONNX spec (opsets 10–19).
pub fn resize(
    x: &Tensor,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
    attrs: &ResizeAttrs,
) -> Result<Tensor, String> {
    let _ = (x, roi, scales, sizes, attrs);
    Err("Resize is not implemented yet".into())
}
