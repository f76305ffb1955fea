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
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use varc_ir::kernel::{BufKind, Program};
use varc_ir::{Tensor, TensorData};
use varc_runtime::pool::{self, ThreadPool};

type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64) -> i32;

/// Smallest kernel [`work`](crate::kernel::Built::work) run in parallel:
/// below it waking the workers costs more than it saves.
const PAR_MIN_WORK: u64 = 1 << 15;

/// A program's kernels, compiled for the host and ready to run.
pub struct JitProgram {
    program: Program,
    kernels: Vec<KernelFn>,
    plans: Vec<Plan>,
    /// Per kernel: the extent of its split axis (1: runs as one task) and
    /// its rough cost.
    splits: Vec<(usize, u64)>,
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
    let mut splits = Vec::new();
    for (i, k) in program.kernels.iter().enumerate() {
        let mut built = kernel::build_with(program, k, &*isa, &imports, uk.as_ref())?;
        splits.push((built.split.map_or(1, |a| k.domain[a]), built.work));
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
            // the signature `kernel_signature` (a pointer and two i64 in,
            // i32 out, the host's C calling convention), which is `KernelFn`.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
        })
        .collect();
    Ok(JitProgram {
        program: program.clone(),
        kernels,
        plans,
        splits,
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
            // or checks it at run time; `lo..hi` is clamped to the domain);
            // the caller guarantees each pointer is valid for its buffer's
            // size.
            let status = unsafe { f(bufs.as_ptr(), 0, i64::MAX) };
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
        unsafe { self.kernels[i](bufs.as_ptr(), 0, i64::MAX) }
    }

    /// [`JitProgram::run_kernels`] on `pool`: large kernels are split along
    /// their split axis into tasks, and the sgemm microkernel splits its
    /// own work (`pool` is current while the kernels run). Every output
    /// element is computed by one task exactly as in a serial run, so the
    /// results are bit-identical for any thread count.
    ///
    /// # Safety
    ///
    /// As [`JitProgram::run_kernels`].
    pub unsafe fn run_kernels_on(
        &self,
        bufs: &[*mut u8],
        pool: &Arc<ThreadPool>,
    ) -> Result<(), (usize, i32)> {
        let table = self.table(bufs);
        pool.install(|| {
            for i in 0..self.kernels.len() {
                // SAFETY: the caller upholds `run_kernels`' contract, and
                // kernels run in program order.
                let status = unsafe { self.run_split(i, &table, pool) };
                if status != crate::STATUS_OK {
                    return Err((i, status));
                }
            }
            Ok(())
        })
    }

    /// [`JitProgram::run_kernel`] on `pool` (see
    /// [`JitProgram::run_kernels_on`]).
    ///
    /// # Safety
    ///
    /// As [`JitProgram::run_kernel`].
    pub unsafe fn run_kernel_on(&self, i: usize, bufs: &[*mut u8], pool: &Arc<ThreadPool>) -> i32 {
        let table = self.table(bufs);
        // SAFETY: the caller upholds `run_kernel`'s contract.
        pool.install(|| unsafe { self.run_split(i, &table, pool) })
    }

    fn table(&self, bufs: &[*mut u8]) -> Arc<[usize]> {
        assert_eq!(
            bufs.len(),
            self.program.buffers.len(),
            "one base address per program buffer"
        );
        bufs.iter().map(|&p| p as usize).collect()
    }

    /// Runs kernel `i`, in shares of its split axis across `pool` when it
    /// is large enough.
    ///
    /// # Safety
    ///
    /// `table` holds the addresses of `run_kernels`' `bufs`, under its
    /// contract.
    unsafe fn run_split(&self, i: usize, table: &Arc<[usize]>, pool: &ThreadPool) -> i32 {
        let f = self.kernels[i];
        let (n, work) = self.splits[i];
        if pool.threads() == 1 || n < 2 || work < PAR_MIN_WORK {
            // SAFETY: as in `run_kernels` (the caller upholds its contract).
            return unsafe { f(table.as_ptr() as *const *mut u8, 0, i64::MAX) };
        }
        let tasks = pool::range_count(n, 2 * pool.threads(), 1);
        let status = Arc::new(AtomicI32::new(crate::STATUS_OK));
        let (table, st) = (table.clone(), status.clone());
        pool.run(
            tasks,
            Arc::new(move |t| {
                let (lo, hi) = pool::range(n, tasks, 1, t);
                // SAFETY: as in `run_kernels`. Shares run concurrently: the
                // code generator gives a kernel a split axis only when its
                // points store to distinct elements that no other point
                // reads (`kernel::split_axis`), and the shares' ranges are
                // disjoint, so no two threads touch the same element with a
                // write. The table outlives the call (the Arc is held).
                let s = unsafe { f(table.as_ptr() as *const *mut u8, lo as i64, hi as i64) };
                if s != crate::STATUS_OK {
                    let _ = st.compare_exchange(
                        crate::STATUS_OK,
                        s,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }),
        );
        status.load(Ordering::Relaxed)
    }

    /// Runs the program on `inputs` (program input order), allocating
    /// every buffer: weights copied, temporaries and outputs zeroed.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        self.run_with(inputs, None)
    }

    /// [`JitProgram::run`] on `pool` (see [`JitProgram::run_kernels_on`]).
    pub fn run_on(&self, inputs: &[Tensor], pool: &Arc<ThreadPool>) -> Result<Vec<Tensor>, String> {
        self.run_with(inputs, Some(pool))
    }

    fn run_with(
        &self,
        inputs: &[Tensor],
        pool: Option<&Arc<ThreadPool>>,
    ) -> Result<Vec<Tensor>, String> {
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
        match pool {
            None => unsafe { self.run_kernels(&ptrs) },
            // SAFETY: as above.
            Some(pool) => unsafe { self.run_kernels_on(&ptrs, pool) },
        }
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
