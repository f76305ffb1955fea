//! `varc run`: one run of a model, outputs summarised or saved.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use varc::{LoadedModel, load, load_for_inputs, manifest_tolerance, parse_dims, sibling_file};
use varc_ir::Tensor;
use varc_runtime::{compare, read_tensors, write_tensors};

#[derive(Clone, Copy, ValueEnum)]
pub enum Backend {
    /// The reference interpreter: slow, obviously correct.
    Reference,
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
    #[arg(long, value_enum, default_value = "reference")]
    pub backend: Backend,
    /// Bind a symbolic dimension, e.g. --dim batch=2 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

    let t1 = Instant::now();
    let outputs = match args.backend {
        Backend::Reference => model.run_reference(&inputs)?,
    };
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;

    println!("model   {}", args.model.display());
    println!("inputs  {source}");
    println!("backend reference   load {load_ms:.1} ms   run {run_ms:.1} ms");
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

fn check(
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

fn summarize(name: &str, t: &Tensor) -> String {
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
