//! `varc bench`: compile once, warm up, time repeated runs.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use varc::{load, load_for_inputs, parse_dims, sibling_file};
use varc_runtime::read_tensors;

#[derive(Args)]
pub struct BenchArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Timed runs after the warm-up.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Bind a symbolic dimension, e.g. --dim batch=2 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Threads one run uses.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// Skip this optimisation pass (repeatable; see `varc passes`).
    #[arg(long = "disable-pass", value_name = "NAME")]
    pub disable: Vec<String>,
    /// Run no optimisation passes.
    #[arg(long)]
    pub no_passes: bool,
}

#[derive(Serialize)]
struct Figures {
    model: String,
    kernels: usize,
    compile_ms: f64,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    gflops: f64,
    threads: usize,
}

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    let dims = parse_dims(&args.dims)?;
    let ctx = || format!("loading {}", args.model.display());
    let (model, inputs) = match sibling_file(&args.model, "inputs") {
        Some(p) => {
            let inputs = read_tensors(&p)?;
            (
                load_for_inputs(&args.model, &dims, &inputs).with_context(ctx)?,
                inputs,
            )
        }
        None => {
            let model = load(&args.model, &dims).with_context(ctx)?;
            let inputs = model.random_inputs(0)?;
            (model, inputs)
        }
    };
    let mut model = model;
    if args.no_passes {
        model.pipeline = None;
    } else if let Some(p) = model.pipeline.as_mut() {
        p.disabled.extend(args.disable.iter().cloned());
    }
    // Counted before the model is handed over: compiling consumes it, so
    // that its weights are not held twice.
    let flops = varc_ir::cost::graph_flops(model.graph()) as f64;
    let exe = model.into_executable()?.with_threads(args.threads as usize);
    varc::timing::mark("compile done");
    for _ in 0..args.warmup {
        exe.run(&inputs)?;
    }
    let mut times = Vec::with_capacity(args.iters.max(1));
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        exe.run(&inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        varc::timing::mark("run");
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let f = Figures {
        model: args.model.display().to_string(),
        kernels: exe.program().kernels.len(),
        compile_ms: exe.compile_ms,
        min_ms: times[0],
        median_ms: median,
        max_ms: times[times.len() - 1],
        gflops: flops / (median * 1e-3) / 1e9,
        threads: exe.threads(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        println!("model    {}", f.model);
        println!("compile  {:.1} ms ({} kernels)", f.compile_ms, f.kernels);
        println!(
            "run      median {:.3} ms   min {:.3}   max {:.3}   ({} runs, {} threads)",
            f.median_ms, f.min_ms, f.max_ms, args.iters, f.threads
        );
        println!("speed    {:.2} GFLOP/s", f.gflops);
    }
    Ok(ExitCode::SUCCESS)
}
