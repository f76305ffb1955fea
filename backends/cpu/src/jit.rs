//! Host JIT: kernels compiled into executable memory, and a simple buffer
//! binding (`run`) that allocates every buffer. Code and buffer binding are
//! separate so that an arena-based memory plan can call
//! [`JitProgram::run_kernels`] directly.

use crate::math::{Libm, host};
use crate::plan::Plan;
use crate::{CodegenError, abi, activation, attention, conv, gemm, isa, kernel, status_message};
use cranelift_codegen::Context;
use cranelift_codegen::ir::UserFuncName;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use varc_ir::kernel::{BufId, BufKind, Buffer, Kernel, Program};
use varc_ir::{Tensor, TensorData};
use varc_runtime::pool::{self, ThreadPool};
use varc_runtime::ukernel::PackedB;

type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64) -> i32;

/// Smallest kernel [`work`](crate::kernel::Built::work) run in parallel:
/// below it waking the workers costs more than it saves.
const PAR_MIN_WORK: u64 = 1 << 15;

/// The extent of the axis a kernel is split along on a pool of two or more
/// threads, `None` when it always runs as one call. The JIT and AOT
/// objects' `run_parallel` share this rule, so both split the same kernels.
pub(crate) fn parallel_extent(k: &Kernel, built: &kernel::Built) -> Option<usize> {
    let n = built.split.map_or(1, |a| k.domain[a]);
    (n >= 2 && built.work >= PAR_MIN_WORK).then_some(n)
}

/// A program's kernels, compiled for the host and ready to run.
pub struct JitProgram {
    program: Program,
    kernels: Vec<KernelFn>,
    plans: Vec<Plan>,
    /// Per kernel: the runtime routine it calls instead of its loop nest.
    libraries: Vec<Option<&'static str>>,
    /// Per kernel: [`parallel_extent`].
    splits: Vec<Option<usize>>,
    /// Weights packed at compile time; the code holds their addresses.
    packs: Vec<Arc<PackedB>>,
    /// Weights every kernel reads only through a packed copy, whose data
    /// `program` no longer holds.
    released: Vec<BufId>,
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

/// Compiles `program`, keeping a copy of it without the data of weights
/// the code reads only through packed copies (the copy shares the other
/// weights' data with `program`: tensors are reference-counted).
pub(crate) fn compile(program: &Program, opts: JitOptions) -> Result<JitProgram, CodegenError> {
    compile_owned(program.clone(), opts)
}

/// A weight of `b`'s dtype without data, when `b` is a weight.
fn empty_weight(b: &Buffer) -> Option<BufKind> {
    let BufKind::Weight(_) = b.kind else {
        return None;
    };
    let t = Tensor::new(vec![0], TensorData::from_f64(b.dtype, &[])).ok()?;
    Some(BufKind::Weight(t))
}

/// [`compile`] keeping `program` without a copy, and dropping the data of
/// weights that the code reads only through packed copies as soon as the
/// last kernel reading them is compiled: a weight and its packed copy are
/// then held together only briefly, not every weight twice at the end.
pub(crate) fn compile_owned(
    mut program: Program,
    opts: JitOptions,
) -> Result<JitProgram, CodegenError> {
    let mut jit = compile_code(&mut program, opts)?;
    jit.program = program;
    Ok(jit)
}

/// The code for `program`, with an empty program (the callers fill it in).
/// Weights read only through packed copies are emptied in `program` (and
/// listed as released) once their last reader is compiled.
fn compile_code(program: &mut Program, opts: JitOptions) -> Result<JitProgram, CodegenError> {
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
    builder.symbol(
        gemm::SGEMM_PACKED_SYMBOL,
        varc_runtime::ukernel::varc_sgemm_packed as *const u8,
    );
    builder.symbol(
        attention::ATTENTION_SYMBOL,
        varc_runtime::ukernel::varc_attention as *const u8,
    );
    builder.symbol(
        conv::CONV_SYMBOL,
        varc_runtime::ukernel::varc_conv2d as *const u8,
    );
    builder.symbol(
        activation::ACTIVATION_SYMBOL,
        varc_runtime::ukernel::activation::varc_activation as *const u8,
    );
    let mut module = JITModule::new(builder);
    let imports =
        crate::imports::declare_libm(&mut module, cc, Libm::symbol).map_err(|e| jit(*e))?;
    let uk = if opts.ukernels {
        Some(crate::imports::declare_sgemm(&mut module, cc).map_err(|e| jit(*e))?)
    } else {
        None
    };
    let mut libs = kernel::LibraryImports::default();
    if opts.ukernels {
        let mut import = |name: &str, sig: &cranelift_codegen::ir::Signature| {
            module
                .declare_function(name, Linkage::Import, sig)
                .map(|id| id.as_u32())
                .map_err(jit)
        };
        libs.attention = Some(attention::AttentionImport(import(
            attention::ATTENTION_SYMBOL,
            &attention::attention_signature(cc),
        )?));
        libs.conv = Some(import(conv::CONV_SYMBOL, &conv::conv_signature(cc))?);
        if activation::enabled() {
            libs.activation = Some(import(
                activation::ACTIVATION_SYMBOL,
                &activation::activation_signature(cc),
            )?);
        }
    }
    let packs = if opts.ukernels && gemm::packing_enabled() {
        let id = module
            .declare_function(
                gemm::SGEMM_PACKED_SYMBOL,
                Linkage::Import,
                &gemm::sgemm_packed_signature(cc),
            )
            .map_err(jit)?;
        Some(gemm::WeightPacks::new(id.as_u32()))
    } else {
        None
    };
    // Weights some kernel reads other than as its packed B.
    let mut plain = vec![false; program.buffers.len()];
    let mut packed = vec![false; program.buffers.len()];
    let mut libraries = Vec::new();
    let sig = abi::kernel_signature(cc);
    let mut ids = Vec::new();
    let mut plans = Vec::new();
    let mut splits = Vec::new();
    // The kernels that read each weight last (a weight no kernel reads
    // is never packed, so never released).
    let mut last_reads: Vec<Vec<BufId>> = vec![vec![]; program.kernels.len()];
    let mut last_reader = vec![None; program.buffers.len()];
    for (i, k) in program.kernels.iter().enumerate() {
        for b in k.reads() {
            last_reader[b.0] = Some(i);
        }
    }
    for (b, last) in last_reader.iter().enumerate() {
        if let Some(i) = *last {
            last_reads[i].push(BufId(b));
        }
    }
    let mut released = vec![];
    let started = std::time::Instant::now();
    let mut cranelift = std::time::Duration::ZERO;
    for (i, last_read_here) in last_reads.iter().enumerate() {
        let k = &program.kernels[i];
        let mut built = kernel::build_host(
            program,
            k,
            &*isa,
            &imports,
            uk.as_ref(),
            libs,
            packs.as_ref(),
        )?;
        if let Some(b) = built.packed_b {
            packed[b.0] = true;
        }
        for b in gemm::plain_reads(k, built.packed_b) {
            plain[b.0] = true;
        }
        libraries.push(built.library);
        splits.push(parallel_extent(k, &built));
        let id = module
            .declare_function(&format!("varc_kernel_{i}"), Linkage::Local, &sig)
            .map_err(jit)?;
        built.func.name = UserFuncName::user(0, id.as_u32());
        let t0 = std::time::Instant::now();
        let mut ctx = Context::for_function(built.func);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::kernel(&k.name, format!("Cranelift: {e:?}")))?;
        cranelift += t0.elapsed();
        ids.push(id);
        plans.push(built.plan);
        for &b in last_read_here {
            let buf = &mut program.buffers[b.0];
            if packed[b.0]
                && !plain[b.0]
                && let Some(kind) = empty_weight(buf)
            {
                buf.kind = kind;
                released.push(b);
            }
        }
    }
    released.sort();
    module.finalize_definitions().map_err(jit)?;
    if std::env::var("VARC_PROFILE").is_ok_and(|v| v == "1") {
        let (bytes, packing) = packs.as_ref().map_or(Default::default(), |p| p.stats());
        eprintln!(
            "VARC_PROFILE: JIT {:.1} ms: Cranelift {:.1} ms, weights packed {:.1} MB in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3,
            cranelift.as_secs_f64() * 1e3,
            bytes as f64 / 1e6,
            packing.as_secs_f64() * 1e3
        );
    }
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
        program: Program::default(),
        kernels,
        plans,
        libraries,
        splits,
        packs: packs.map_or(vec![], gemm::WeightPacks::into_packs),
        released,
        module: std::sync::Mutex::new(Some(module)),
    })
}

impl JitProgram {
    /// The program compiled, except that the weights listed by
    /// [`JitProgram::released_weights`] hold no data (empty tensors): the
    /// code reads them only through copies packed at compile time.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Weights whose data was dropped because every kernel reads them
    /// through a copy packed at compile time.
    pub fn released_weights(&self) -> &[BufId] {
        &self.released
    }

    /// Bytes of weights packed at compile time.
    pub fn packed_bytes(&self) -> usize {
        self.packs.iter().map(|p| p.bytes()).sum()
    }

    /// How each kernel was looped (scalar, f32x4, register-blocked).
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// The runtime routine kernel `i` calls instead of compiling its loop
    /// nest (a library tag honoured), if any.
    pub fn library(&self, i: usize) -> Option<&'static str> {
        self.libraries[i]
    }

    /// How kernel `i` runs, for listings: its library routine, or its plan.
    pub fn describe(&self, i: usize) -> String {
        match self.libraries[i] {
            Some(lib) => lib.to_string(),
            None => self.plans[i].to_string(),
        }
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
        let (Some(n), false) = (self.splits[i], pool.threads() == 1) else {
            // SAFETY: as in `run_kernels` (the caller upholds its contract).
            return unsafe { f(table.as_ptr() as *const *mut u8, 0, i64::MAX) };
        };
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
            .enumerate()
            .map(|(i, b)| match &b.kind {
                // Never read: the code uses the packed copy.
                _ if self.released.contains(&BufId(i)) => vec![],
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
        for (i, (b, m)) in p.buffers.iter().zip(&mem).enumerate() {
            if m.len() != b.byte_size() && !self.released.contains(&BufId(i)) {
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
