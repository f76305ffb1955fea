//! `varc run --target cuda[:sm_80|sm_90]` (and `varc MODEL.onnx --target
//! cuda`): write the PTX, launch plan and weights, then run them when a
//! CUDA driver and device are present.

use super::run::{Emit, RunArgs, check, summarize};
use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use std::time::Instant;
use varc::LoadedModel;
use varc::cuda::{CudaTarget, default_out_dir, open_device, run_cuda};
use varc_backend_cuda::{PLAN_FILE, PTX_FILE, WEIGHTS_FILE};
use varc_ir::Tensor;

pub fn run(
    args: &RunArgs,
    model: &LoadedModel,
    inputs: &[(String, Tensor)],
    source: &str,
    expect: Option<std::path::PathBuf>,
    tolerance: (f64, f64),
) -> Result<ExitCode> {
    let target = CudaTarget::parse(&args.target)?;
    let mut opts = varc_backend_cuda::Options::from_env()?;
    if let Some(p) = &args.cuda_precision {
        opts.precision = varc_backend_cuda::Precision::parse(p)?;
    }
    match args.emit {
        None => {}
        Some(Emit::Kernels) => {
            let text = varc_ir::kernel::program_to_text(&model.lower_cuda()?);
            return write_or_print(text, args.emit_path());
        }
        Some(Emit::Ptx) => {
            let text = model.compile_cuda_with(target, &opts)?.ptx;
            return write_or_print(text, args.emit_path());
        }
        Some(_) => bail!(
            "--target {} emits ptx or kernels (--emit ptx|kernels)",
            args.target
        ),
    }
    let t0 = Instant::now();
    let build = model.compile_cuda_with(target, &opts)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let dir = args
        .emit_to
        .clone()
        .unwrap_or_else(|| default_out_dir(&args.model));
    build.write(&dir)?;
    let serial = build.plan.kernels.iter().filter(|k| k.serial).count();
    println!("model   {}", args.model.display());
    println!(
        "cuda    {}: {} kernels ({serial} serial), {} PTX lines, arena {} bytes, weights {} bytes, compile {compile_ms:.1} ms",
        target.arch(),
        build.plan.kernels.len(),
        build.ptx.lines().count(),
        build.plan.arena_bytes,
        build.plan.weights_bytes
    );
    println!(
        "wrote   {}/{{{PTX_FILE}, {PLAN_FILE}, {WEIGHTS_FILE}}}",
        dir.display()
    );
    let device = match open_device() {
        Ok(d) => d,
        Err(why) => {
            println!("no CUDA driver/device found ({why}); nothing was run");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("inputs  {source}");
    let t1 = Instant::now();
    let outputs = run_cuda(&device, model, &build, inputs)?;
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;
    println!(
        "backend cuda ({})   run {run_ms:.2} ms (JIT, upload, kernels, download)",
        device.name
    );
    for (name, t) in &outputs {
        println!("  {}", summarize(name, t));
    }
    if let Some(out) = &args.output {
        varc_runtime::write_tensors(out, &outputs)?;
        println!("wrote {}", out.display());
    }
    match expect {
        Some(expect) => check(model, &outputs, &expect, tolerance),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn write_or_print(text: String, to: Option<&std::path::Path>) -> Result<ExitCode> {
    match to {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
