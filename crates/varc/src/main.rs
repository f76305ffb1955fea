//! The `varc` command line.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// varc compiles ONNX models of coarse-to-fine image generators (VAR,
/// FlowAR) to native kernels. Today it imports, checks, inspects and runs
/// models on the reference interpreter.
#[derive(Parser)]
#[command(name = "varc", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    varc run models/minvar_dyn18.onnx            run on the shipped inputs, check the goldens\n  \
    varc run m.onnx --inputs in.npz --output out.safetensors\n  \
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Inspect(args) => commands::inspect::inspect(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
