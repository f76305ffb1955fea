//! AveragePool, MaxPool, GlobalAveragePool, GlobalMaxPool.

use varc_ir::Tensor;
use varc_ir::op::Window;

pub fn average_pool(x: &Tensor, window: &Window, ceil_mode: bool, count_include_pad: bool) -> Result<Tensor, String> {
    let _ = (x, window, ceil_mode, count_include_pad);
    Err("AveragePool is not implemented yet".into())
}

pub fn max_pool(x: &Tensor, window: &Window, ceil_mode: bool) -> Result<Tensor, String> {
    let _ = (x, window, ceil_mode);
    Err("MaxPool is not implemented yet".into())
}

pub fn global_pool(x: &Tensor, max: bool) -> Result<Tensor, String> {
    let _ = (x, max);
    Err("global pooling is not implemented yet".into())
}
