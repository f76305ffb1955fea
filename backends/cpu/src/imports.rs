//! The functions generated code calls, declared once for both module kinds
//! (the JIT resolves them to in-process symbols, AOT objects leave them to
//! the linker).

use crate::math::{Imports, Libm};
use crate::{abi, gemm};
use cranelift_codegen::isa::CallConv;
use cranelift_module::{Linkage, Module, ModuleError};

/// Boxed: `ModuleError` is large and these are called once per module.
type R<T> = Result<T, Box<ModuleError>>;

/// Declares every [`Libm`] function under the name `name` gives it.
pub fn declare_libm<M: Module>(
    module: &mut M,
    cc: CallConv,
    name: fn(Libm) -> &'static str,
) -> R<Imports> {
    let mut imports = Imports { index: vec![] };
    for f in Libm::ALL {
        let id = module.declare_function(name(f), Linkage::Import, &abi::libm_signature(f, cc))?;
        imports.index.push((f, id.as_u32()));
    }
    Ok(imports)
}

/// Declares the runtime's `varc_sgemm` microkernel entry.
pub fn declare_sgemm<M: Module>(module: &mut M, cc: CallConv) -> R<gemm::Ukernels> {
    let id = module.declare_function(
        gemm::SGEMM_SYMBOL,
        Linkage::Import,
        &gemm::sgemm_signature(cc),
    )?;
    Ok(gemm::Ukernels { sgemm: id.as_u32() })
}
