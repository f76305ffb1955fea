//! Cranelift code generator for varc kernel IR.
//!
//! Every [`Kernel`](varc_ir::kernel::Kernel) becomes one native function with
//! the C ABI `extern "C" fn(bufs: *const *mut u8) -> i32`: `bufs[i]` is the
//! base address of program buffer `BufId(i)`; the function returns
//! [`STATUS_OK`] or a nonzero status (a gather index out of range, an integer
//! division by zero, an address the static bounds check could not prove in
//! range). A kernel never touches memory outside its buffers.
//!
//! * [`compile_jit`] compiles for the host CPU into executable memory
//!   ([`JitProgram`]).
//! * [`compile_for`] compiles for any supported triple (x86-64, aarch64)
//!   without running anything: CLIF text, code size and disassembly.
//!
//! Code generation is split by job: [`plan`] decides how a kernel is looped
//! and vectorised, `abi` builds the function frame, `loops` the counted
//! loops, `expr` the scalar/vector expression code, `math` the polynomial
//! approximations, `isa` the target machines.

mod abi;
mod activation;
pub mod aot;
mod attention;
mod check;
mod conv;
mod expr;
mod gemm;
mod imports;
mod isa;
mod jit;
mod kernel;
mod loops;
pub mod math;
mod mem;
pub mod plan;
mod vector;

pub use jit::{JitOptions, JitProgram};

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use std::str::FromStr;
use target_lexicon::Triple;
use varc_ir::kernel::Program;

/// Kernel return status: success.
pub const STATUS_OK: i32 = 0;
/// Kernel return status: a gather index was outside `[-dim, dim)`.
pub const STATUS_GATHER_OUT_OF_RANGE: i32 = 1;
/// Kernel return status: integer division by zero.
pub const STATUS_DIV_BY_ZERO: i32 = 2;
/// Kernel return status: an address outside its buffer (only possible for
/// accesses the compile-time bounds check could not prove in range, e.g.
/// a guarded load whose guards do not cover the buffer's edges).
pub const STATUS_OUT_OF_BOUNDS: i32 = 3;

/// Describes a kernel status code.
pub fn status_message(status: i32) -> &'static str {
    match status {
        STATUS_OK => "ok",
        STATUS_GATHER_OUT_OF_RANGE => "gather index out of range",
        STATUS_DIV_BY_ZERO => "integer division by zero",
        STATUS_OUT_OF_BOUNDS => "address out of the buffer's bounds",
        _ => "unknown status",
    }
}

/// A code generation failure, naming the kernel.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("kernel '{kernel}': {reason}")]
    Kernel { kernel: String, reason: String },
    #[error("target '{0}': {1}")]
    Target(String, String),
    #[error("JIT: {0}")]
    Jit(String),
}

impl CodegenError {
    pub(crate) fn kernel(name: &str, reason: impl Into<String>) -> CodegenError {
        CodegenError::Kernel {
            kernel: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// A compilation target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub triple: Triple,
}

impl Target {
    /// The machine this process runs on.
    pub fn host() -> Target {
        Target {
            triple: Triple::host(),
        }
    }

    /// Whether this is the machine this process runs on.
    pub fn is_host(&self) -> bool {
        self.triple == Triple::host()
    }

    /// A target triple such as `aarch64-unknown-linux-gnu`, or `host`.
    pub fn parse(s: &str) -> Result<Target, CodegenError> {
        if s == "host" {
            return Ok(Target::host());
        }
        let triple =
            Triple::from_str(s).map_err(|e| CodegenError::Target(s.into(), e.to_string()))?;
        Ok(Target { triple })
    }
}

/// One kernel compiled for some target (not executable here).
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    pub name: String,
    /// The Cranelift IR, before optimisation.
    pub clif: String,
    pub code_size: usize,
    /// Cranelift's VCode listing (`--emit asm`).
    pub disasm: Option<String>,
    /// How the kernel was looped (scalar, vectorised, register-blocked).
    pub plan: String,
}

/// Compiles every kernel for `target` (any supported triple), running the
/// Cranelift verifier on each, without loading the code.
pub fn compile_for(
    program: &Program,
    target: &Target,
) -> Result<Vec<CompiledKernel>, CodegenError> {
    let isa = isa::for_target(target)?;
    let imports = math::Imports::numbered();
    let mut out = Vec::with_capacity(program.kernels.len());
    for k in &program.kernels {
        let built = kernel::build(program, k, &*isa, &imports)?;
        let clif = built.func.display().to_string();
        let mut ctx = Context::for_function(built.func);
        ctx.set_disasm(true);
        ctx.verify(&*isa)
            .map_err(|e| CodegenError::kernel(&k.name, format!("CLIF verifier: {e}")))?;
        let code = ctx
            .compile(&*isa, &mut ControlPlane::default())
            .map_err(|e| CodegenError::kernel(&k.name, format!("Cranelift: {:?}", e.inner)))?;
        out.push(CompiledKernel {
            name: k.name.clone(),
            clif,
            code_size: code.code_buffer().len(),
            disasm: code.vcode.clone(),
            plan: built.plan.to_string(),
        });
    }
    Ok(out)
}

/// Compiles every kernel for the host CPU into executable memory. The
/// result keeps a copy of `program` without the data of weights packed at
/// compile time and read no other way ([`JitProgram::released_weights`]).
pub fn compile_jit(program: &Program) -> Result<JitProgram, CodegenError> {
    jit::compile(program, JitOptions::default())
}

/// [`compile_jit`] taking the program by value, so that no copy of it is
/// kept: with the data of weights that the code reads only through copies
/// packed at compile time dropped (see [`JitProgram::released_weights`]),
/// weights are held once.
pub fn compile_jit_owned(program: Program, opts: JitOptions) -> Result<JitProgram, CodegenError> {
    jit::compile_owned(program, opts)
}

/// [`compile_jit`] with explicit options.
pub fn compile_jit_with(program: &Program, opts: JitOptions) -> Result<JitProgram, CodegenError> {
    jit::compile(program, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("host").unwrap(), Target::host());
        let t = Target::parse("aarch64-unknown-linux-gnu").unwrap();
        assert_eq!(t.triple.to_string(), "aarch64-unknown-linux-gnu");
        assert!(Target::parse("not a triple").is_err());
    }
}
