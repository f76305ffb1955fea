//! `varc inspect`: the facts of a model, as text or JSON.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use varc::{LoadedModel, load, parse_dims};
use varc_ir::{Graph, Op};

#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Bind a symbolic dimension, e.g. --dim batch=2 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Print the facts as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the graph as Graphviz DOT to this file.
    #[arg(long, value_name = "FILE")]
    pub dot: Option<PathBuf>,
    /// Print the whole graph IR as text.
    #[arg(long)]
    pub ir: bool,
    /// Lower to kernels and print the memory plan: arena size, peak live
    /// bytes, weight bytes.
    #[arg(long)]
    pub memory: bool,
    /// Run the optimisation passes and print, per pass, what fired, where,
    /// why not elsewhere, and FLOPs before and after.
    #[arg(long)]
    pub passes: bool,
}

#[derive(Serialize)]
struct MemoryFacts {
    kernels: usize,
    arena_bytes: usize,
    peak_live_bytes: usize,
    weight_bytes: usize,
}

#[derive(Serialize)]
struct Facts {
    model: String,
    producer: String,
    ir_version: i64,
    opsets: BTreeMap<String, i64>,
    inputs: Vec<ValueFacts>,
    outputs: Vec<ValueFacts>,
    nodes: usize,
    ops: BTreeMap<String, OpFacts>,
    parameters: u64,
    parameter_bytes: u64,
    flops: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryFacts>,
}

#[derive(Serialize)]
struct ValueFacts {
    name: String,
    dtype: String,
    shape: String,
}

#[derive(Serialize, Default)]
struct OpFacts {
    count: usize,
    flops: u64,
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    if args.passes {
        let opts = varc::PassOptions::default();
        super::passes::report_model(&args.model, &args.dims, &opts, true, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dims = parse_dims(&args.dims)?;
    let model =
        load(&args.model, &dims).with_context(|| format!("inspecting {}", args.model.display()))?;
    let mut facts = gather(&args, &model);
    if args.memory {
        let program = model.lower_for_host()?;
        let plan = varc_ir::kernel::plan::plan(&program);
        facts.memory = Some(MemoryFacts {
            kernels: program.kernels.len(),
            arena_bytes: plan.arena_bytes,
            peak_live_bytes: plan.peak_live_bytes,
            weight_bytes: plan.weight_bytes,
        });
    }
    if let Some(dot) = &args.dot {
        std::fs::write(dot, varc_ir::print::to_dot(model.graph()))
            .with_context(|| format!("writing {}", dot.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        print_text(&facts);
        if args.ir {
            println!("\n{}", varc_ir::print::to_text(model.graph()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn value_facts(g: &Graph, v: varc_ir::ValueRef) -> ValueFacts {
    let value = g.value(v);
    let (dtype, shape) = match &value.ty {
        Some(t) => (t.dtype.to_string(), t.shape.to_string()),
        None => ("?".into(), "?".into()),
    };
    ValueFacts {
        name: value.name.clone(),
        dtype,
        shape,
    }
}

fn gather(args: &InspectArgs, m: &LoadedModel) -> Facts {
    let g = m.graph();
    let mut ops: BTreeMap<String, OpFacts> = BTreeMap::new();
    let mut flops = 0u64;
    let mut nodes = 0;
    for (_, node) in g.nodes() {
        if matches!(node.op, Op::Input | Op::Const(_)) {
            continue;
        }
        nodes += 1;
        let ins: Vec<Option<&varc_ir::TypeInfo>> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| g.value(v).ty.as_ref()))
            .collect();
        let outs: Vec<varc_ir::TypeInfo> =
            node.outputs.iter().filter_map(|o| o.ty.clone()).collect();
        let f = varc_ir::cost::node_flops(node, &ins, &outs);
        let e = ops.entry(node.op.kind().to_string()).or_default();
        e.count += 1;
        e.flops += f;
        flops += f;
    }
    let (parameters, parameter_bytes) = varc_ir::cost::param_count(g);
    Facts {
        model: args.model.display().to_string(),
        producer: m.model.producer.clone(),
        ir_version: m.model.ir_version,
        opsets: m.model.opsets.iter().cloned().collect(),
        inputs: g
            .inputs
            .iter()
            .map(|&id| value_facts(g, varc_ir::ValueRef { node: id, slot: 0 }))
            .collect(),
        outputs: g.outputs.iter().map(|&v| value_facts(g, v)).collect(),
        nodes,
        ops,
        parameters: parameters as u64,
        parameter_bytes: parameter_bytes as u64,
        flops,
        memory: None,
    }
}

fn print_text(f: &Facts) {
    println!("model     {}", f.model);
    println!(
        "producer  {}   (ONNX IR version {})",
        f.producer, f.ir_version
    );
    let opsets: Vec<String> = f
        .opsets
        .iter()
        .map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    println!("opsets    {}", opsets.join(", "));
    println!("inputs");
    for v in &f.inputs {
        println!("  {:<32} {}{}", v.name, v.dtype, v.shape);
    }
    println!("outputs");
    for v in &f.outputs {
        println!("  {:<32} {}{}", v.name, v.dtype, v.shape);
    }
    println!("ops       {} nodes", f.nodes);
    let mut by_count: Vec<_> = f.ops.iter().collect();
    by_count.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    for (kind, o) in by_count {
        println!("  {kind:<24} {:>6}   {:>14} FLOPs", o.count, group(o.flops));
    }
    println!(
        "FLOPs     {} total (a multiply-add counts 2)",
        group(f.flops)
    );
    println!(
        "params    {} elements, {} bytes",
        group(f.parameters),
        group(f.parameter_bytes)
    );
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
