//! What the CUDA backend accepts: the shared native-backend checks of
//! `varc_ir::kernel::analysis`, with errors naming this backend.

pub use varc_ir::kernel::analysis::{index_range, is_float, parallel_safe};
use varc_ir::kernel::{Kernel, Program};

/// Checks that the CUDA backend can compile `k` (dtypes, functions, bindings).
pub fn validate(p: &Program, k: &Kernel) -> Result<(), String> {
    varc_ir::kernel::analysis::validate(p, k, "CUDA")
}
