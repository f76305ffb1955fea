//! Compiling a loaded model for a CPU target, and running the result.

use crate::LoadedModel;
use anyhow::{Context, Result, bail};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use varc_backend_cpu::{JitProgram, Target};
use varc_ir::Tensor;
use varc_ir::kernel::plan::{MemoryPlan, plan};
use varc_ir::kernel::{BufKind, Program};
use varc_ir::lower::LowerOptions;
use varc_runtime::NamedTensors;
use varc_runtime::pool::ThreadPool;

/// A model compiled to native code for this machine.
pub struct Executable {
    pub program: Program,
    pub plan: MemoryPlan,
    jit: JitProgram,
    pub(crate) input_names: Vec<String>,
    pub(crate) output_names: Vec<String>,
    /// Scratch memory for temps, allocated once; a run holds the lock.
    arena: Mutex<Vec<u128>>,
    pub compile_ms: f64,
    /// Per-kernel time and run count when `VARC_PROFILE=1` (printed to
    /// stderr, slowest first, when the executable is dropped).
    profile: Option<Mutex<(Vec<f64>, usize)>>,
    /// The threads a run uses (one by default: no workers).
    pool: Arc<ThreadPool>,
}

impl LoadedModel {
    /// Lowers the model to kernel IR (all shapes must be static).
    pub fn lower(&self) -> Result<Program> {
        self.lower_with(&LowerOptions::default())
    }

    /// [`LoadedModel::lower`] with explicit lowering options.
    pub fn lower_with(&self, opts: &LowerOptions) -> Result<Program> {
        let optimized = self.graph_to_lower()?;
        let (graph, inferred) = match &optimized {
            Some((g, i)) => (g, i),
            None => (self.graph(), &self.inferred),
        };
        if let Some(u) = inferred.unknown.first() {
            let (node, why) = (graph.node(u.node), &u.reason);
            bail!(
                "node '{}' ({}): {why}; the compiled backends need static shapes \
                 (bind symbolic dims with --dim NAME=VALUE, or use --backend reference)",
                node.name,
                node.op.kind()
            );
        }
        let program = varc_ir::lower::lower_with(graph, &inferred.consts, opts)?;
        // Coalescing changes no value (not even bits): always on.
        Ok(varc_ir::kernel::coalesce::coalesce_reductions(
            self.fuse_kernels(program),
        ))
    }

    /// Kernel fusion ([`varc_ir::kernel::fuse`]) on a lowered program,
    /// unless [`LoadedModel::kernel_fusion`] says it is off.
    fn fuse_kernels(&self, program: Program) -> Program {
        if self.kernel_fusion() {
            varc_ir::kernel::fuse::fuse(program)
        } else {
            program
        }
    }

    /// Whether lowering fuses kernels: on with the optimisation passes,
    /// off with `--no-passes`, `--disable-pass kernel-fusion` or
    /// `VARC_KERNEL_FUSION=0`.
    pub fn kernel_fusion(&self) -> bool {
        let name = varc_ir::kernel::fuse::PASS_NAME;
        let env_off = std::env::var("VARC_KERNEL_FUSION").is_ok_and(|v| v == "0");
        let opts_on = self
            .pipeline
            .as_ref()
            .is_some_and(|o| !o.disabled.iter().any(|d| d == name));
        opts_on && !env_off
    }

    /// Compiles for the host CPU (JIT).
    pub fn compile_host(&self) -> Result<Executable> {
        let t0 = Instant::now();
        // The JIT runs tagged attention and convolution kernels through the
        // runtime's microkernels when microkernels are on (AOT and CUDA
        // keep the five-kernel attention and im2col); `VARC_FUSED_ATTENTION=0`
        // and `VARC_CONV_UKERNEL=0` keep those here too (for comparisons).
        let ukernels = varc_backend_cpu::JitOptions::default().ukernels;
        let env_on = |name| std::env::var(name).map_or(true, |v| v != "0");
        let program = self.lower_with(&LowerOptions {
            fused_attention: ukernels && env_on("VARC_FUSED_ATTENTION"),
            conv_library: ukernels && env_on("VARC_CONV_UKERNEL"),
        })?;
        let plan = plan(&program);
        plan.check(&program).map_err(anyhow::Error::msg)?;
        let jit = varc_backend_cpu::compile_jit(&program)?;
        let words = plan.arena_bytes.div_ceil(16);
        Ok(Executable {
            input_names: self.inputs().into_iter().map(|(n, _)| n).collect(),
            output_names: self.output_names(),
            arena: Mutex::new(vec![0u128; words]),
            compile_ms: t0.elapsed().as_secs_f64() * 1e3,
            profile: std::env::var("VARC_PROFILE")
                .is_ok_and(|v| v == "1" || v == "all")
                .then(|| Mutex::new((vec![0.0; program.kernels.len()], 0))),
            pool: Arc::new(ThreadPool::new(1)),
            program,
            plan,
            jit,
        })
    }

    /// Compiles every kernel for `target` without running anything (for
    /// cross targets and `--emit clif|asm`).
    pub fn compile_for(&self, target: &Target) -> Result<Vec<varc_backend_cpu::CompiledKernel>> {
        let program = self.lower()?;
        Ok(varc_backend_cpu::compile_for(&program, target)?)
    }
}

impl Executable {
    /// Runs on `threads` threads (the caller's included; at least 1).
    /// Large kernels are split into tasks so that every output element is
    /// computed by one thread exactly as in a one-thread run: outputs are
    /// bit-identical for any thread count.
    pub fn with_threads(mut self, threads: usize) -> Executable {
        if threads.max(1) != self.pool.threads() {
            self.pool = Arc::new(ThreadPool::new(threads));
        }
        self
    }

    /// The threads a run uses.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs once; `inputs` are matched by name.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<NamedTensors> {
        let mut ordered: Vec<&Tensor> = Vec::with_capacity(self.input_names.len());
        for name in &self.input_names {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| n == name)
                .with_context(|| format!("input '{name}' is missing"))?;
            ordered.push(t);
        }
        for (name, _) in inputs {
            if !self.input_names.contains(name) {
                bail!(
                    "input '{name}' is not an input of the model (its inputs: {})",
                    self.input_names.join(", ")
                );
            }
        }
        let mut outputs: Vec<Tensor> = self
            .program
            .outputs
            .iter()
            .map(|&b| {
                let buf = self.program.buffer(b);
                Tensor::zeros(buf.dtype, buf.shape.clone()).map_err(anyhow::Error::msg)
            })
            .collect::<Result<_>>()?;
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let base = arena.as_mut_ptr() as *mut u8;
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(self.program.buffers.len());
        for (i, b) in self.program.buffers.iter().enumerate() {
            ptrs.push(match &b.kind {
                BufKind::Input(k) => {
                    let t = ordered[*k];
                    if t.dtype() != b.dtype || t.shape() != b.shape.as_slice() {
                        bail!(
                            "input '{}': expected {}{:?}, got {}{:?}",
                            self.input_names[*k],
                            b.dtype,
                            b.shape,
                            t.dtype(),
                            t.shape()
                        );
                    }
                    // Kernels never store to inputs: the cast only satisfies the ABI.
                    t.data().as_ptr() as *mut u8
                }
                BufKind::Output(k) => outputs[*k].as_mut_ptr(),
                BufKind::Weight(t) => t.data().as_ptr() as *mut u8,
                BufKind::Temp => {
                    let off = self.plan.offsets[i].expect("every temp is planned");
                    base.wrapping_add(off)
                }
            });
        }
        // SAFETY: `ptrs` has one pointer per program buffer, each to storage
        // of exactly that buffer's size and dtype: inputs were checked above,
        // outputs were allocated from the buffers' shapes, weights are the
        // program's own tensors, and temps lie inside the arena, which
        // `plan.check` proved large enough and free of overlaps between
        // buffers live at the same time (so no kernel writes memory it also
        // reads through another buffer). Kernels never store to inputs or
        // weights, so handing out their const storage as `*mut` is sound. The
        // arena lock keeps concurrent runs apart.
        let pool = &self.pool;
        let status = match &self.profile {
            None => unsafe { self.jit.run_kernels_on(&ptrs, pool) },
            Some(prof) => {
                let mut prof = prof.lock().unwrap_or_else(|e| e.into_inner());
                prof.1 += 1;
                let mut status = Ok(());
                for (i, t) in prof.0.iter_mut().enumerate() {
                    let start = Instant::now();
                    // SAFETY: as above, kernels run in program order.
                    let s = unsafe { self.jit.run_kernel_on(i, &ptrs, pool) };
                    *t += start.elapsed().as_secs_f64() * 1e3;
                    if s != varc_backend_cpu::STATUS_OK {
                        status = Err((i, s));
                        break;
                    }
                }
                status
            }
        };
        status.map_err(|(k, code)| {
            anyhow::anyhow!(
                "kernel '{}' stopped: {}",
                self.program.kernels[k].name,
                varc_backend_cpu::status_message(code)
            )
        })?;
        drop(arena);
        Ok(self.output_names.iter().cloned().zip(outputs).collect())
    }
}

impl Drop for Executable {
    fn drop(&mut self) {
        let Some(prof) = self.profile.take() else {
            return;
        };
        let (times, runs) = prof.into_inner().unwrap_or_else(|e| e.into_inner());
        if runs == 0 {
            return;
        }
        let total: f64 = times.iter().sum();
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| times[b].total_cmp(&times[a]));
        eprintln!(
            "VARC_PROFILE: {} kernels, {:.3} ms per run ({runs} runs); slowest:",
            times.len(),
            total / runs as f64
        );
        // `VARC_PROFILE=all` lists every kernel and sums by routine.
        let all = std::env::var("VARC_PROFILE").is_ok_and(|v| v == "all");
        for &i in order.iter().take(if all { usize::MAX } else { 25 }) {
            let k = &self.program.kernels[i];
            eprintln!(
                "{:>9.3} ms {:>5.1}%  #{i:<4} {:<30} domain {:?} [{}]",
                times[i] / runs as f64,
                100.0 * times[i] / total.max(1e-12),
                k.name,
                k.domain,
                self.jit.describe(i)
            );
        }
        if all {
            let mut by_kind: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
            for (i, t) in times.iter().enumerate() {
                let e = by_kind.entry(self.jit.describe(i)).or_default();
                e.0 += t / runs as f64;
                e.1 += 1;
            }
            eprintln!("VARC_PROFILE: by routine");
            for (kind, (ms, n)) in by_kind {
                eprintln!(
                    "{ms:>9.3} ms {:>5.1}%  {n:>4} kernels  [{kind}]",
                    100.0 * ms * runs as f64 / total.max(1e-12)
                );
            }
        }
    }
}
