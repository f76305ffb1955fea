//! Compiling a loaded model for a CPU target, and running the result.

use crate::LoadedModel;
use anyhow::{Context, Result, bail};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use varc_backend_cpu::{JitOptions, JitProgram, Target};
use varc_ir::Tensor;
use varc_ir::kernel::plan::{MemoryPlan, plan};
use varc_ir::kernel::{BufKind, Program};
use varc_ir::lower::LowerOptions;
use varc_runtime::NamedTensors;
use varc_runtime::pool::ThreadPool;

/// A model compiled to native code for this machine.
pub struct Executable {
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

    /// Lowers the model as the host JIT does (attention and convolutions
    /// tagged for the runtime's microkernels when those are on): what
    /// `varc run` executes, for `--emit kernels` and `inspect --memory`.
    pub fn lower_for_host(&self) -> Result<Program> {
        self.lower_with(&host_lower_options())
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
        crate::timing::mark("lowering");
        let program = self.fuse_kernels(
            program,
            varc_ir::kernel::fuse::FuseOptions {
                repeated_epilogue_reads: opts.repeated_epilogue_reads,
            },
        );
        crate::timing::mark("kernel fusion");
        // Coalescing changes no value (not even bits): always on.
        let program = varc_ir::kernel::coalesce::coalesce_reductions(program);
        crate::timing::mark("coalesce");
        drop(optimized);
        crate::timing::mark("drop optimised graph");
        Ok(program)
    }

    /// Kernel fusion ([`varc_ir::kernel::fuse`]) on a lowered program,
    /// unless [`LoadedModel::kernel_fusion`] says it is off.
    fn fuse_kernels(&self, program: Program, opts: varc_ir::kernel::fuse::FuseOptions) -> Program {
        if self.kernel_fusion() {
            varc_ir::kernel::fuse::fuse_with(program, opts)
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
        let program = self.lower_with(&host_lower_options())?;
        self.finish_host(program, t0)
    }

    /// [`LoadedModel::compile_host`] consuming the model, for big models:
    /// the passes run on the model's own graph (no copy), which is dropped
    /// once lowered, so the program holds the only reference to each
    /// weight and the JIT frees a weight read only through its packed copy
    /// as soon as it is packed. A model's weights are then never resident
    /// twice (original and packed) while it compiles.
    pub fn into_executable(mut self) -> Result<Executable> {
        let t0 = Instant::now();
        if let Some(opts) = self.pipeline.clone().filter(|_| !self.optimized) {
            let report = self.optimize(&opts)?;
            crate::timing::passes(&report);
        }
        let program = self.lower_with(&host_lower_options())?;
        let names = (
            self.inputs().into_iter().map(|(n, _)| n).collect(),
            self.output_names(),
        );
        drop(self);
        crate::timing::mark("drop graph");
        finish_host(program, t0, names)
    }

    fn finish_host(&self, program: Program, t0: Instant) -> Result<Executable> {
        let names = (
            self.inputs().into_iter().map(|(n, _)| n).collect(),
            self.output_names(),
        );
        finish_host(program, t0, names)
    }

    /// Compiles every kernel for `target` without running anything (for
    /// cross targets and `--emit clif|asm`).
    pub fn compile_for(&self, target: &Target) -> Result<Vec<varc_backend_cpu::CompiledKernel>> {
        let program = self.lower()?;
        Ok(varc_backend_cpu::compile_for(&program, target)?)
    }
}

/// Lowering options for the host JIT: it runs tagged attention and
/// convolution kernels through the runtime's microkernels when microkernels
/// are on (AOT and CUDA keep the five-kernel attention and im2col);
/// `VARC_FUSED_ATTENTION=0` and `VARC_CONV_UKERNEL=0` keep those here too
/// (for comparisons).
fn host_lower_options() -> LowerOptions {
    let ukernels = JitOptions::default().ukernels;
    let env_on = |name| std::env::var(name).map_or(true, |v| v != "0");
    LowerOptions {
        fused_attention: ukernels && env_on("VARC_FUSED_ATTENTION"),
        conv_library: ukernels && env_on("VARC_CONV_UKERNEL"),
        // The sgemm path computes a repeated sum once.
        repeated_epilogue_reads: ukernels,
    }
}

/// Plans memory for `program` and JIT-compiles it; `names` are the model's
/// input and output names; `t0` is when compilation started.
fn finish_host(
    program: Program,
    t0: Instant,
    (input_names, output_names): (Vec<String>, Vec<String>),
) -> Result<Executable> {
    let plan = plan(&program);
    plan.check(&program).map_err(anyhow::Error::msg)?;
    crate::timing::mark("memory plan");
    let kernels = program.kernels.len();
    // By value: the JIT keeps the one copy of the program, without the
    // data of weights its code reads only through packed copies.
    let jit = varc_backend_cpu::compile_jit_owned(program, JitOptions::default())?;
    crate::timing::mark("JIT + weight packing");
    let words = plan.arena_bytes.div_ceil(16);
    Ok(Executable {
        input_names,
        output_names,
        arena: Mutex::new(vec![0u128; words]),
        compile_ms: t0.elapsed().as_secs_f64() * 1e3,
        profile: std::env::var("VARC_PROFILE")
            .is_ok_and(|v| v == "1" || v == "all")
            .then(|| Mutex::new((vec![0.0; kernels], 0))),
        pool: Arc::new(ThreadPool::new(1)),
        plan,
        jit,
    })
}

impl Executable {
    /// The kernel program compiled. Weights the code reads only through
    /// copies packed at compile time hold no data here
    /// ([`JitProgram::released_weights`]).
    pub fn program(&self) -> &Program {
        self.jit.program()
    }

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
        let program = self.jit.program();
        let mut outputs: Vec<Tensor> = program
            .outputs
            .iter()
            .map(|&b| {
                let buf = program.buffer(b);
                Tensor::zeros(buf.dtype, buf.shape.clone()).map_err(anyhow::Error::msg)
            })
            .collect::<Result<_>>()?;
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let base = arena.as_mut_ptr() as *mut u8;
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(program.buffers.len());
        for (i, b) in program.buffers.iter().enumerate() {
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
                // A released weight's (empty) storage is never dereferenced.
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
        // program's own tensors (those released by the JIT are read only
        // through their packed copies, never at this address), and temps lie inside the arena, which
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
                program.kernels[k].name,
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
            let k = &self.jit.program().kernels[i];
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn consuming_compile_matches_and_holds_packed_weights_once() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/minvar_dyn18.onnx");
        let model = crate::load(&path, &BTreeMap::new()).unwrap();
        let inputs = model.random_inputs(7).unwrap();
        let shared = model.compile_host().unwrap();
        let want = shared.run(&inputs).unwrap();
        let owned = model.into_executable().unwrap();
        let got = owned.run(&inputs).unwrap();
        assert_eq!(got.len(), want.len());
        for ((gn, g), (wn, w)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            assert_eq!(g.shape(), w.shape());
            assert_eq!(g.data().to_le_bytes(), w.data().to_le_bytes(), "{gn}");
        }
        // Both executables keep one copy of the program, with the weights
        // read only through packed copies emptied.
        for exe in [&shared, &owned] {
            let released = exe.jit.released_weights();
            assert!(!released.is_empty(), "minvar has packed projections");
            for &b in released {
                let BufKind::Weight(t) = &exe.program().buffer(b).kind else {
                    panic!("released buffers are weights");
                };
                assert_eq!(t.numel(), 0);
            }
        }
        assert_eq!(shared.jit.released_weights(), owned.jit.released_weights());
    }
}
