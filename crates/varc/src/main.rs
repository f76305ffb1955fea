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
#[command(name = "varc", version, about, long_about = None)]
#[command(
    override_usage = "varc MODEL.onnx [RUN OPTIONS]   (the same as `varc run MODEL.onnx ...`)\n       varc <COMMAND> ..."
)]
#[command(after_help = "Examples:\n  \
    varc models/var_tf_dyn18.onnx                compile for this CPU, run, check the goldens\n  \
    varc models/minvar_dyn18.onnx --backend reference --threads 2\n  \
    varc m.onnx --target aarch64-unknown-linux-gnu --emit asm\n  \
    varc m.onnx --target cuda:sm_90              PTX + plan.json + weights.bin in m.cuda/ (runs on a GPU)\n  \
    varc m.onnx --emit so -o libm.so             ahead of time: libm.so + libm.h (C entry varc_m_run)\n  \
    varc m.onnx --target aarch64-unknown-linux-gnu --emit obj -o m.o\n  \
    varc m.onnx --emit obj -o m.o --weights external   m.o, m.h and the weights in m.weights\n  \
    varc m.onnx --emit obj -o m.o --ukernels link      matmuls call varc_sgemm: link libvarc_capi.a\n  \
    varc m.onnx --inputs in.npz --output out.safetensors\n  \
    varc inspect m.onnx --dim batch=2            shapes, op histogram, FLOPs, parameters\n  \
    varc inspect m.onnx --dot m.dot && dot -Tsvg m.dot > m.svg")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

/// `varc MODEL.onnx ...` is `varc run MODEL.onnx ...`: every run option
/// works in the short form, so it is rewritten before parsing.
fn with_default_command(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let first = argv.get(1).and_then(|a| a.to_str()).unwrap_or("-");
    let is_command = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first)
        || first == "help";
    if !first.starts_with('-') && !is_command {
        argv.insert(1, "run".into());
    }
    argv
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Inspect(args) => commands::inspect::inspect(args),
        Command::Bench(args) => commands::bench::bench(args),
        Command::Passes(args) => commands::passes::passes(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
