//! The `varc` command line.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// varc compiles ONNX models of coarse-to-fine image generators (VAR,
/// FlowAR) to native kernels (Cranelift; x86-64 and aarch64).
///
/// `varc MODEL.onnx` compiles the model for this machine and runs it once on
/// its shipped inputs (or seeded random ones), printing compile time, run
/// time and the agreement with the shipped golden outputs.
#[derive(Parser)]
#[command(name = "varc", version, about, long_about = None, args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  \
    varc models/var_tf_dyn18.onnx                compile for this CPU, run, check the goldens\n  \
    varc run models/minvar_dyn18.onnx --backend reference\n  \
    varc run m.onnx --target aarch64-unknown-linux-gnu --emit asm\n  \
    varc m.onnx --target cuda:sm_90              PTX + plan.json + weights.bin in m.cuda/ (runs on a GPU)\n  \
    varc run m.onnx --emit so --emit-to libm.so  ahead of time: libm.so + libm.h (C entry varc_m_run)\n  \
    varc run m.onnx --emit obj --emit-to m.o --weights external   m.o, m.h and the weights in m.weights\n  \
    varc run m.onnx --emit obj --emit-to m.o --ukernels link      matmuls call varc_sgemm: link libvarc_capi.a\n  \
    varc run m.onnx --inputs in.npz --output out.safetensors\n  \
    varc inspect m.onnx --dim batch=2            shapes, op histogram, FLOPs, parameters\n  \
    varc inspect m.onnx --dot m.dot && dot -Tsvg m.dot > m.svg")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The model for the main job (compile for this machine, run once).
    model: Option<std::path::PathBuf>,
    /// Target for the main job: `host` (default), or `cuda`, `cuda:sm_80`,
    /// `cuda:sm_90` (writes `<model stem>.cuda/{model.ptx, plan.json,
    /// weights.bin}`, runs them when a CUDA device is present).
    #[arg(long)]
    target: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model once and print (or save) its outputs.
    Run(commands::run::RunArgs),
    /// Print what a model contains: opsets, inputs/outputs, ops, FLOPs, parameters.
    Inspect(commands::inspect::InspectArgs),
    /// Compile once, then time repeated runs (min/median/max, GFLOP/s).
    Bench(commands::bench::BenchArgs),
    /// List the optimisation passes, or run them on a model and report
    /// what fired where (--disable-pass, --print-after, --bisect-passes, --time-passes).
    Passes(commands::passes::PassesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.model) {
        (Some(Command::Run(args)), _) => commands::run::run(args),
        (Some(Command::Inspect(args)), _) => commands::inspect::inspect(args),
        (Some(Command::Bench(args)), _) => commands::bench::bench(args),
        (Some(Command::Passes(args)), _) => commands::passes::passes(args),
        (None, Some(model)) => {
            let mut args = commands::run::RunArgs::main_job(model);
            if let Some(target) = cli.target {
                args.target = target;
            }
            commands::run::run(args)
        }
        (None, None) => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
