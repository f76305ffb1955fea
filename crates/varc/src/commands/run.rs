//! `varc run`: one run of a model, outputs summarised or saved.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use varc::{LoadedModel, load, load_for_inputs, manifest_tolerance, parse_dims, sibling_file};
use varc_backend_cpu::Target;
use varc_ir::Tensor;
use varc_runtime::{compare, read_tensors, write_tensors};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Native code for --target (Cranelift).
    Compiled,
    /// The reference interpreter: slow, obviously correct.
    Reference,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The kernel IR (target-independent loop nests).
    Kernels,
    /// Cranelift IR of every kernel.
    Clif,
    /// Machine code listing of every kernel.
    Asm,
    /// A relocatable object with a C entry point (needs -o FILE.o;
    /// writes FILE.h beside it).
    Obj,
    /// A shared library linked with `cc -shared` (needs -o FILE.so;
    /// writes FILE.h beside it).
    So,
    /// PTX of every kernel (with --target cuda[:sm_80|sm_90]).
    Ptx,
}

#[derive(Args)]
pub struct RunArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Inputs keyed by graph input name (.safetensors or .npz). Default: the
    /// model's shipped inputs (MODEL.inputs.safetensors) if present, else
    /// seeded random inputs.
    #[arg(long, short)]
    pub inputs: Option<PathBuf>,
    /// Where to write the outputs (.safetensors or .npz, by extension).
    /// With --emit nothing runs: -o is then the artifact's path (as
    /// --emit-to), e.g. `varc m.onnx --emit so -o libm.so`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Reference outputs to check against (default: MODEL.outputs.safetensors
    /// when present and the inputs are the shipped ones).
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Relative and absolute tolerance for --expect as RTOL,ATOL (default: the
    /// model's entry in models/manifest.json, else 1e-4,1e-5).
    #[arg(long, value_parser = parse_tolerance)]
    pub tolerance: Option<(f64, f64)>,
    #[arg(long, value_enum, default_value = "compiled")]
    pub backend: Backend,
    /// Target for the compiled backend: `host`, a triple such as
    /// aarch64-unknown-linux-gnu (cross targets compile only: use --emit),
    /// or `cuda`, `cuda:sm_80`, `cuda:sm_90` (writes PTX, plan.json and
    /// weights.bin to --emit-to DIR, default `<model stem>.cuda/`; runs them
    /// when a CUDA driver and device are present).
    #[arg(long, default_value = "host")]
    pub target: String,
    /// Write an intermediate form instead of running (to --emit-to or stdout).
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// File for --emit (default: stdout); with --target cuda, the output folder.
    #[arg(long, value_name = "FILE")]
    pub emit_to: Option<PathBuf>,
    /// Bind a symbolic dimension, e.g. --dim batch=2 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads one compiled run uses.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// With --emit obj|so: `embedded` puts the weights in the object's
    /// .rodata; `external` writes them to FILE with extension .weights
    /// (beside -o FILE) and the entry points take the loaded file
    /// (see the generated header).
    #[arg(long, value_enum, default_value = "embedded")]
    pub weights: WeightsArg,
    /// With --emit obj|so for this machine: `link` makes contraction kernels
    /// call the runtime's sgemm microkernels as the JIT does (varc_sgemm,
    /// left undefined in the object: link libvarc_capi.a); `none` keeps
    /// pure Cranelift kernels (the only choice for other targets).
    #[arg(long, value_enum, default_value = "none")]
    pub ukernels: UkernelsArg,
    /// With --target cuda: how contractions use tensor cores. `tf32x3`
    /// (default) splits each f32 operand into two TF32 parts and keeps
    /// f32-level accuracy; `tf32` is fastest (relative error ~1e-3);
    /// `f32` uses no tensor cores. Overrides VARC_CUDA_PRECISION.
    #[arg(long, value_name = "f32|tf32|tf32x3")]
    pub cuda_precision: Option<String>,
    /// With --emit so --ukernels link: the static library that defines
    /// varc_sgemm (default: libvarc_capi.a next to the varc executable).
    #[arg(long, value_name = "PATH")]
    pub runtime_lib: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    /// In the object (.rodata).
    Embedded,
    /// In a side file FILE.weights passed to the entry points.
    External,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UkernelsArg {
    /// Pure Cranelift kernels: the object stands alone.
    None,
    /// Contraction kernels call varc_sgemm, resolved at link time.
    Link,
}

impl RunArgs {
    /// Where an emitted artifact goes: --emit-to, else -o (nothing runs
    /// under --emit, so -o names no output tensors then); None = stdout.
    pub fn emit_path(&self) -> Option<&std::path::Path> {
        self.emit_to.as_deref().or(self.output.as_deref())
    }
}

fn parse_tolerance(s: &str) -> Result<(f64, f64), String> {
    let (r, a) = s
        .split_once(',')
        .ok_or("expected RTOL,ATOL, e.g. 1e-4,1e-5")?;
    let p = |x: &str| x.trim().parse::<f64>().map_err(|e| format!("'{x}': {e}"));
    Ok((p(r)?, p(a)?))
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let dims = parse_dims(&args.dims)?;
    let shipped = sibling_file(&args.model, "inputs");
    let input_file = args.inputs.clone().or(shipped.clone());
    let t0 = Instant::now();
    let (model, inputs, source) = match &input_file {
        Some(p) => {
            let inputs = read_tensors(p)?;
            let model = load_for_inputs(&args.model, &dims, &inputs)
                .with_context(|| format!("loading {}", args.model.display()))?;
            let source = match &args.inputs {
                Some(_) => p.display().to_string(),
                None => format!("shipped inputs {}", p.display()),
            };
            (model, inputs, source)
        }
        None => {
            let model = load(&args.model, &dims)
                .with_context(|| format!("loading {}", args.model.display()))?;
            let inputs = model.random_inputs(args.seed)?;
            (model, inputs, format!("random inputs (seed {})", args.seed))
        }
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let expect = match (&args.expect, &args.inputs) {
        (Some(p), _) => Some(p.clone()),
        (None, None) if shipped.is_some() => sibling_file(&args.model, "outputs"),
        _ => None,
    };

    if args.backend == Backend::Compiled && varc::cuda::CudaTarget::is_cuda(&args.target) {
        let tol = args
            .tolerance
            .or_else(|| manifest_tolerance(&args.model))
            .unwrap_or((1e-4, 1e-5));
        return crate::commands::cuda::run(&args, &model, &inputs, &source, expect, tol);
    }
    if args.cuda_precision.is_some() {
        bail!("--cuda-precision applies to --target cuda only");
    }
    let target = Target::parse(&args.target).map_err(anyhow::Error::msg)?;
    let aot_options = args.weights != WeightsArg::Embedded
        || args.ukernels != UkernelsArg::None
        || args.runtime_lib.is_some();
    if aot_options && !matches!(args.emit, Some(Emit::Obj | Emit::So)) {
        bail!("--weights, --ukernels and --runtime-lib apply to --emit obj|so only");
    }
    if let Some(kind) = args.emit {
        return emit(&model, &target, kind, &args);
    }
    if args.backend == Backend::Compiled && target != Target::host() {
        bail!(
            "--target {} is not this machine: cross targets compile only (add --emit clif|asm)",
            args.target
        );
    }

    println!("model   {}", args.model.display());
    println!("inputs  {source}");
    let outputs = match args.backend {
        Backend::Reference => {
            let t1 = Instant::now();
            let outputs = model.run_reference(&inputs)?;
            let run_ms = t1.elapsed().as_secs_f64() * 1e3;
            println!("backend reference interpreter   load {load_ms:.1} ms   run {run_ms:.1} ms");
            outputs
        }
        Backend::Compiled => {
            let exe = model.compile_host()?.with_threads(args.threads as usize);
            let t1 = Instant::now();
            let outputs = exe.run(&inputs)?;
            let run_ms = t1.elapsed().as_secs_f64() * 1e3;
            println!(
                "backend cpu ({})   load {load_ms:.1} ms   compile {:.1} ms ({} kernels)   run {run_ms:.2} ms ({} thread{})",
                target.triple,
                exe.compile_ms,
                exe.program().kernels.len(),
                exe.threads(),
                if exe.threads() == 1 { "" } else { "s" }
            );
            outputs
        }
    };
    for (name, t) in &outputs {
        println!("  {}", summarize(name, t));
    }
    if let Some(out) = &args.output {
        write_tensors(out, &outputs)?;
        println!("wrote {}", out.display());
    }
    let Some(expect) = expect else {
        return Ok(ExitCode::SUCCESS);
    };
    let tol = args
        .tolerance
        .or_else(|| manifest_tolerance(&args.model))
        .unwrap_or((1e-4, 1e-5));
    check(&model, &outputs, &expect, tol)
}

fn emit(model: &LoadedModel, target: &Target, kind: Emit, args: &RunArgs) -> Result<ExitCode> {
    let to = args.emit_path();
    if let Some(aot) = match kind {
        Emit::Obj => Some(varc::aot::AotKind::Object),
        Emit::So => Some(varc::aot::AotKind::Shared),
        _ => None,
    } {
        let config = varc::aot::AotConfig {
            weights: match args.weights {
                WeightsArg::Embedded => varc::aot::Weights::Embedded,
                WeightsArg::External => varc::aot::Weights::External,
            },
            ukernels: args.ukernels == UkernelsArg::Link,
        };
        let runtime = args.runtime_lib.as_deref();
        return crate::commands::aot::emit(model, target, aot, config, to, runtime);
    }
    let text = match kind {
        Emit::Obj | Emit::So => unreachable!("handled above"),
        Emit::Ptx => bail!("--emit ptx needs --target cuda, cuda:sm_80 or cuda:sm_90"),
        // The host's kernels are the ones `varc run` executes; a cross
        // target gets the plain lowering its objects are compiled from.
        Emit::Kernels if target.is_host() => {
            varc_ir::kernel::program_to_text(&model.lower_for_host()?)
        }
        Emit::Kernels => varc_ir::kernel::program_to_text(&model.lower()?),
        Emit::Clif | Emit::Asm => {
            let kernels = model.compile_for(target)?;
            let mut out = String::new();
            for k in kernels {
                out.push_str(&format!(
                    "; kernel {}  ({} bytes of code)\n",
                    k.name, k.code_size
                ));
                match kind {
                    Emit::Clif => out.push_str(&k.clif),
                    _ => out.push_str(k.disasm.as_deref().unwrap_or("; (no listing)\n")),
                }
                out.push('\n');
            }
            out
        }
    };
    match to {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check(
    model: &LoadedModel,
    outputs: &[(String, Tensor)],
    expect: &std::path::Path,
    (rtol, atol): (f64, f64),
) -> Result<ExitCode> {
    let wanted = read_tensors(expect)?;
    println!(
        "check against {} (|got-want| <= {atol:e} + {rtol:e}*|want|)",
        expect.display()
    );
    let mut all_ok = true;
    for (name, got) in outputs {
        let Some((_, want)) = wanted.iter().find(|(n, _)| n == name) else {
            bail!(
                "{} has no tensor '{name}' (model outputs: {})",
                expect.display(),
                model.output_names().join(", ")
            );
        };
        let a =
            compare(got, want, rtol, atol).map_err(|e| anyhow::anyhow!("output '{name}': {e}"))?;
        all_ok &= a.passed();
        println!(
            "  {name}: {}  max abs {:.3e}  max rel {:.3e}  ({} of {} outside tolerance)",
            if a.passed() { "ok  " } else { "FAIL" },
            a.max_abs,
            a.max_rel,
            a.mismatches,
            a.count
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub(crate) fn summarize(name: &str, t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.5}")).collect();
    let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in &v {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
    }
    let mean = if v.is_empty() {
        0.0
    } else {
        sum / v.len() as f64
    };
    format!(
        "{name}: {}{:?}  min {lo:.4}  max {hi:.4}  mean {mean:.4}  [{}{}]",
        t.dtype(),
        t.shape(),
        head.join(", "),
        if v.len() > 4 { ", ..." } else { "" }
    )
}
