//! `varc passes`: list the optimisation passes, or run them on a model and
//! report what fired where, why not elsewhere, and FLOPs before and after.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varc::{PassOptions, load, parse_dims};
use varc_ir::Op;
use varc_ir::passes::{PipelineReport, default_passes};

#[derive(Args)]
pub struct PassesArgs {
    /// The ONNX model (none: list the passes).
    pub model: Option<PathBuf>,
    /// Bind a symbolic dimension, e.g. --dim batch=2 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Skip this pass (repeatable).
    #[arg(long = "disable-pass", value_name = "NAME")]
    pub disable: Vec<String>,
    /// Print the graph IR after this pass (repeatable).
    #[arg(long = "print-after", value_name = "NAME")]
    pub print_after: Vec<String>,
    /// Apply only the first N rewrites, printing each.
    #[arg(long = "bisect-passes", value_name = "N")]
    pub bisect: Option<usize>,
    /// Print each pass's time.
    #[arg(long = "time-passes")]
    pub time: bool,
    /// Print the candidates each pass left alone, with the reason.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn passes(args: PassesArgs) -> Result<ExitCode> {
    let Some(model) = &args.model else {
        println!("{:<30} about", "pass");
        for p in default_passes() {
            let req = if p.required() { " (required)" } else { "" };
            println!("{:<30} {}{req}", p.name(), p.about());
        }
        let fuse = varc_ir::kernel::fuse::PASS_NAME;
        println!("{fuse:<30} {}", varc_ir::kernel::fuse::ABOUT);
        return Ok(ExitCode::SUCCESS);
    };
    let opts = PassOptions {
        disabled: args.disable.clone(),
        verify: true,
        bisect: args.bisect,
        print_after: args.print_after.clone(),
    };
    report_model(model, &args.dims, &opts, args.time, args.verbose)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the pipeline on `model` and prints the report (also `varc inspect --passes`).
pub fn report_model(
    model: &Path,
    dims: &[String],
    opts: &PassOptions,
    time: bool,
    verbose: bool,
) -> Result<()> {
    let dims = parse_dims(dims)?;
    let mut m = load(model, &dims).with_context(|| format!("loading {}", model.display()))?;
    let nodes_before = op_nodes(m.graph());
    let rep = m.optimize(opts)?;
    print_report(&rep, nodes_before, time, verbose);
    println!("nodes     {nodes_before} → {}", op_nodes(m.graph()));
    m.pipeline = Some(opts.clone());
    report_fusion(&mut m, time);
    let kernels = |m: &varc::LoadedModel| m.lower().map(|p| p.kernels.len());
    if let Ok(k_on) = kernels(&m) {
        let mut off = load(model, &dims)?;
        off.pipeline = None;
        let k_off = kernels(&off).map_or("?".into(), |k| k.to_string());
        println!("kernels   {k_off} → {k_on}");
    }
    Ok(())
}

/// Lowers `m` without kernel fusion, fuses, and prints what fusion did
/// (nothing when lowering fails: the kernels line reports that).
fn report_fusion(m: &mut varc::LoadedModel, time: bool) {
    let name = varc_ir::kernel::fuse::PASS_NAME;
    if !m.kernel_fusion() {
        println!("pass {name:<28} off");
        return;
    }
    let saved = m.pipeline.clone();
    if let Some(p) = m.pipeline.as_mut() {
        p.disabled.push(name.to_string());
    }
    let lowered = m.lower();
    m.pipeline = saved;
    let Ok(program) = lowered else {
        return;
    };
    let t0 = std::time::Instant::now();
    let (_, rep) = varc_ir::kernel::fuse::fuse_with_report(program);
    let t = if time {
        format!("  {:.2} ms", t0.elapsed().as_secs_f64() * 1e3)
    } else {
        String::new()
    };
    let fired = rep.inlined + rep.epilogues + rep.outputs + rep.dead;
    println!("pass {name:<28} fired {fired:>3}; {rep}{t}");
}

fn op_nodes(g: &varc_ir::Graph) -> usize {
    g.nodes()
        .filter(|(_, n)| !matches!(n.op, Op::Input | Op::Const(_)))
        .count()
}

fn print_report(rep: &PipelineReport, nodes_before: usize, time: bool, verbose: bool) {
    println!(
        "FLOPs     {} before passes, {} nodes",
        rep.flops_before, nodes_before
    );
    for run in &rep.passes {
        let r = &run.report;
        let t = if time {
            format!("  {:.2} ms", run.time.as_secs_f64() * 1e3)
        } else {
            String::new()
        };
        println!(
            "pass {:<28} fired {:>3}, left {:>3}; FLOPs after {}{t}",
            r.pass,
            r.fired.len(),
            r.skipped.len(),
            run.flops_after
        );
        for s in &r.fired {
            println!("  + {}: {}", s.node, s.what);
        }
        if verbose {
            for s in &r.skipped {
                println!("  - {}: {}", s.node, s.what);
            }
        } else if !r.skipped.is_empty() {
            println!(
                "  ({} candidates left alone; -v lists why)",
                r.skipped.len()
            );
        }
        for n in &r.notes {
            println!("  · {n}");
        }
    }
    for (pass, text) in &rep.printed {
        println!("\n# IR after {pass}\n{text}");
    }
    println!("FLOPs     {} → {}", rep.flops_before, rep.flops_after);
}
