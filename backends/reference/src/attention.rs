//! Attention (opset 23).

use varc_ir::Tensor;
use varc_ir::op::AttentionAttrs;

/// Attention(Q, K, V, attn_mask?, past_key?, past_value?) → (Y, present_key?,
/// present_value?, qk_matmul_output?); returns `num_outputs` tensors.
pub fn attention(inputs: &[Option<&Tensor>], attrs: &AttentionAttrs, num_outputs: usize) -> Result<Vec<Tensor>, String> {
    let _ = (inputs, attrs, num_outputs);
    Err("Attention is not implemented yet".into())
}
