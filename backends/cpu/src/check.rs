//! What the CPU backend accepts: the shared native-backend checks of
//! `varc_ir::kernel::analysis`, with errors naming this backend.

pub use varc_ir::kernel::analysis::{index_range, is_float};
use varc_ir::kernel::{Kernel, Program};

/// Checks that the CPU backend can compile `k` (dtypes, functions, bindings).
pub fn validate(p: &Program, k: &Kernel) -> Result<(), String> {
    varc_ir::kernel::analysis::validate(p, k, "CPU")
}
