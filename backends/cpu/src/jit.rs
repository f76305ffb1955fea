//! Host JIT: kernels compiled into executable memory, and a simple buffer
//! binding (`run`) that allocates every buffer. Code and buffer binding are
//! separate so that an arena-based memory plan can call
//! [`JitProgram::run_kernels`] directly.

use crate::math::{Imports, Libm, host};
use crate::plan::Plan;
use crate::{CodegenError, abi, gemm, isa, kernel, status_message};
use cranelift_codegen::Context;
use cranelift_codegen::ir::UserFuncName;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use varc_ir::kernel::{BufKind, Program};
use varc_ir::{Tensor, TensorData};

type KernelFn = unsafe extern "C" fn(*const *mut u8) -> i32;

/// A program's kernels, compiled for the host and ready to run.
pub struct JitProgram {
    program: Program,
    kernels: Vec<KernelFn>,
    plans: Vec<Plan>,
    /// Owns the executable memory the kernel pointers point into. Behind a
    /// mutex only so that `JitProgram` is `Sync` (JITModule is `Send`, not
    /// `Sync`); it is touched again only when dropped.
    module: std::sync::Mutex<Option<JITModule>>,
}

/// Options of a host compilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// Run contraction kernels through the runtime's sgemm microkernels
    /// (default: on, unless the environment sets `VARC_UKERNELS=0`).
    pub ukernels: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            ukernels: std::env::var("VARC_UKERNELS").map_or(true, |v| v != "0"),
        }
    }
}

pub(crate) fn compile(program: &Program, opts: JitOptions) -> Result<JitProgram, CodegenError> {
    let isa = isa::host()?;
    let jit = |e: cranelift_module::ModuleError| CodegenError::Jit(e.to_string());
    let cc = isa.default_call_conv();
    let mut builder = JITBuilder::with_isa(isa.clone(), default_libcall_names());
    builder.symbol(Libm::Powf.symbol(), host::powf as *const u8);
    builder.symbol(Libm::Sinf.symbol(), host::sinf as *const u8);
    builder.symbol(Libm::Cosf.symbol(), host::cosf as *const u8);
    builder.symbol(
        gemm::SGEMM_SYMBOL,
        varc_runtime::ukernel::varc_sgemm as *const u8,
    );
    let mut module = JITModule::new(builder);
    let mut imports = Imports { index: vec![] };
    for f in Libm::ALL {
        let id = module
            .declare_function(f.symbol(), Linkage::Import, &abi::libm_signature(f, cc))
            .map_err(jit)?;
        imports.index.push((f, id.as_u32()));
    }
    let uk = if opts.ukernels {
        let id = module
            .declare_function(
                gemm::SGEMM_SYMBOL,
                Linkage::Import,
                &gemm::sgemm_signature(cc),
            )
            .map_err(jit)?;
        Some(gemm::Ukernels { sgemm: id.as_u32() })
    } else {
        None
    };
    let sig = abi::kernel_signature(cc);
    let mut ids = Vec::new();
    let mut plans = Vec::new();
    for (i, k) in program.kernels.iter().enumerate() {
        let mut built = kernel::build_with(program, k, &*isa, &imports, uk.as_ref())?;
        let id = module
            .declare_function(&format!("varc_kernel_{i}"), Linkage::Local, &sig)
            .map_err(jit)?;
        built.func.name = UserFuncName::user(0, id.as_u32());
        let mut ctx = Context::for_function(built.func);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::kernel(&k.name, format!("Cranelift: {e:?}")))?;
        ids.push(id);
        plans.push(built.plan);
    }
    module.finalize_definitions().map_err(jit)?;
    let kernels = ids
        .into_iter()
        .map(|id| {
            let code = module.get_finalized_function(id);
            // SAFETY: `code` is the entry of a function just compiled with
            // the signature `kernel_signature` (one pointer in, i32 out, the
            // host's C calling convention), which is `KernelFn`.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
        })
        .collect();
    Ok(JitProgram {
        program: program.clone(),
        kernels,
        plans,
        module: std::sync::Mutex::new(Some(module)),
    })
}

impl JitProgram {
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// How each kernel was looped (scalar, f32x4, register-blocked).
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// Runs every kernel in order over the given buffer base addresses
    /// (`bufs[i]` for `BufId(i)`). Stops at the first kernel returning a
    /// nonzero status: `Err((kernel index, status))`.
    ///
    /// # Safety
    ///
    /// `bufs` must hold one pointer per program buffer, each valid for
    /// reads and writes of that buffer's `byte_size()` bytes, holding
    /// initialised data of its dtype (bool as bytes 0/1), and the buffers
    /// the program writes must not overlap buffers it reads elsewhere.
    pub unsafe fn run_kernels(&self, bufs: &[*mut u8]) -> Result<(), (usize, i32)> {
        assert_eq!(
            bufs.len(),
            self.program.buffers.len(),
            "one base address per program buffer"
        );
        for (i, f) in self.kernels.iter().enumerate() {
            // SAFETY: the kernel reads `bufs[id]` for the buffers it uses
            // and accesses only elements inside each buffer's length (the
            // code generator proves every address in range at compile time
            // or checks it at run time); the caller guarantees each pointer
            // is valid for its buffer's size.
            let status = unsafe { f(bufs.as_ptr()) };
            if status != crate::STATUS_OK {
                return Err((i, status));
            }
        }
        Ok(())
    }

    /// Runs kernel `i` alone over `bufs`, returning its status.
    ///
    /// # Safety
    ///
    /// As [`JitProgram::run_kernels`]; additionally every kernel before `i`
    /// must have run (kernels read what earlier ones wrote).
    pub unsafe fn run_kernel(&self, i: usize, bufs: &[*mut u8]) -> i32 {
        assert_eq!(
            bufs.len(),
            self.program.buffers.len(),
            "one base address per program buffer"
        );
        // SAFETY: as in `run_kernels`; the caller upholds its contract.
        unsafe { self.kernels[i](bufs.as_ptr()) }
    }

    /// Runs the program on `inputs` (program input order), allocating
    /// every buffer: weights copied, temporaries and outputs zeroed.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let p = &self.program;
        if inputs.len() != p.inputs.len() {
            return Err(format!(
                "expected {} inputs, got {}",
                p.inputs.len(),
                inputs.len()
            ));
        }
        let mut mem: Vec<Vec<u8>> = p
            .buffers
            .iter()
            .map(|b| match &b.kind {
                BufKind::Weight(t) => t.data().to_le_bytes(),
                _ => vec![0; b.byte_size()],
            })
            .collect();
        for (&id, t) in p.inputs.iter().zip(inputs) {
            let b = p.buffer(id);
            if t.dtype() != b.dtype || t.numel() != b.len() {
                return Err(format!(
                    "input '{}': expected {}{:?}, got {}{:?}",
                    b.name,
                    b.dtype,
                    b.shape,
                    t.dtype(),
                    t.shape()
                ));
            }
            mem[id.0] = t.data().to_le_bytes();
        }
        for (b, m) in p.buffers.iter().zip(&mem) {
            if m.len() != b.byte_size() {
                return Err(format!("weight '{}' does not match its buffer", b.name));
            }
        }
        // Empty buffers still get a valid (never dereferenced) address.
        mem.iter_mut()
            .filter(|m| m.is_empty())
            .for_each(|m| m.push(0));
        let ptrs: Vec<*mut u8> = mem.iter_mut().map(|m| m.as_mut_ptr()).collect();
        // SAFETY: each pointer addresses a live Vec of exactly the buffer's
        // byte size (or one byte for an empty buffer), initialised from the
        // weights/inputs or zeroed, and the Vecs are distinct allocations.
        unsafe { self.run_kernels(&ptrs) }
            .map_err(|(i, s)| format!("kernel '{}': {}", p.kernels[i].name, status_message(s)))?;
        p.outputs
            .iter()
            .map(|&id| {
                let b = p.buffer(id);
                let data = TensorData::from_le_bytes(b.dtype, &mem[id.0][..b.byte_size()])?;
                Tensor::new(b.shape.clone(), data)
            })
            .collect()
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = module.take() {
            // SAFETY: the only references to the code are `self.kernels`,
            // which are dropped with `self` and never called again.
            unsafe { m.free_memory() };
        }
    }
}
