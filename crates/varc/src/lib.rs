//! varc: compile ONNX models of coarse-to-fine image generators (VAR, FlowAR).
//!
//! This facade is what the CLI and embedding programs use: load a model
//! (decode → import → verify → infer types with symbolic dims bound), then
//! compile it for the host CPU ([`LoadedModel::compile_host`]) or for a
//! cross target, or emit PTX for CUDA ([`LoadedModel::compile_cuda`]), and
//! run it — or run the reference interpreter.

pub mod aot;
mod compile;
pub mod cuda;
mod embed;
mod optimize;
pub mod timing;

pub use compile::Executable;
pub use embed::Compiler;
pub use optimize::PassOptions;
pub use varc_backend_cpu::Target;
pub use varc_ir::{DType, Tensor};

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use varc_ir::infer::InferResult;
use varc_ir::{Graph, Op, TypeInfo};
use varc_runtime::NamedTensors;
use varc_runtime::random::{SplitMix64, random_tensor};

/// A model ready to run: its imported graph with every value typed.
pub struct LoadedModel {
    pub path: PathBuf,
    pub model: varc_onnx::Model,
    pub inferred: InferResult,
    /// Optimisation passes run before lowering (`None`: off).
    pub pipeline: Option<varc_ir::passes::PipelineOptions>,
    /// Whether [`LoadedModel::optimize`] already ran on `model.graph`.
    pub optimized: bool,
}

/// Parses `NAME=VALUE` symbolic-dimension bindings.
pub fn parse_dims(specs: &[String]) -> Result<BTreeMap<String, usize>> {
    specs
        .iter()
        .map(|s| {
            let (name, value) = s
                .split_once('=')
                .with_context(|| format!("--dim '{s}': expected NAME=VALUE, e.g. batch=2"))?;
            let value: usize = value
                .trim()
                .parse()
                .with_context(|| format!("--dim '{s}': '{value}' is not a non-negative integer"))?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// Loads, verifies and types a model; `dims` binds symbolic dimensions.
pub fn load(path: &Path, dims: &BTreeMap<String, usize>) -> Result<LoadedModel> {
    prepare(path, load_onnx(path)?, dims)
}

/// [`varc_onnx::load_model`], stage by stage for `VARC_TIMING=1`.
fn load_onnx(path: &Path) -> Result<varc_onnx::Model> {
    timing::start();
    Ok(varc_onnx::load_model_with(path, &mut timing::mark)?)
}

/// Like [`load`], with symbolic dimensions also bound from the shapes of the
/// inputs the model will run on (explicit `dims` win).
pub fn load_for_inputs(
    path: &Path,
    dims: &BTreeMap<String, usize>,
    inputs: &[(String, Tensor)],
) -> Result<LoadedModel> {
    let model = load_onnx(path)?;
    let mut bound = bind_from_inputs(&model.graph, inputs)?;
    bound.extend(dims.iter().map(|(k, v)| (k.clone(), *v)));
    prepare(path, model, &bound)
}

/// Symbol bindings implied by the shapes of `inputs` against the graph's
/// declared input shapes; one symbol seen with two extents is an error.
pub fn bind_from_inputs(
    graph: &Graph,
    inputs: &[(String, Tensor)],
) -> Result<BTreeMap<String, usize>> {
    let mut bound = BTreeMap::new();
    for &id in &graph.inputs {
        let value = &graph.node(id).outputs[0];
        let (Some(ty), Some((_, t))) = (&value.ty, inputs.iter().find(|(n, _)| *n == value.name))
        else {
            continue;
        };
        if ty.shape.rank() != t.rank() {
            bail!(
                "input '{}': expected rank {} ({}), got shape {:?}",
                value.name,
                ty.shape.rank(),
                ty.shape,
                t.shape()
            );
        }
        for (d, &n) in ty.shape.0.iter().zip(t.shape()) {
            if let varc_ir::Dim::Sym(s) = d {
                if let Some(&prev) = bound.get(s)
                    && prev != n
                {
                    bail!(
                        "input '{}': dimension '{s}' is {n} here but {prev} in another input",
                        value.name
                    );
                }
                bound.insert(s.clone(), n);
            }
        }
    }
    Ok(bound)
}

/// Loads a model with some graph inputs fixed to the given values (they
/// become constants), binding the remaining inputs' symbolic dims from
/// `inputs`. Static compilers need this for models whose shapes depend on an
/// input's value (axes, sizes, scales passed as inputs).
pub fn load_specialized(
    path: &Path,
    dims: &BTreeMap<String, usize>,
    inputs: &[(String, Tensor)],
    fixed: &[String],
) -> Result<LoadedModel> {
    let mut model = load_onnx(path)?;
    let mut bound = bind_from_inputs(&model.graph, inputs)?;
    bound.extend(dims.iter().map(|(k, v)| (k.clone(), *v)));
    let g = &mut model.graph;
    for name in fixed {
        let id = g
            .inputs
            .iter()
            .copied()
            .find(|&id| g.node(id).outputs[0].name == *name)
            .with_context(|| format!("'{name}' is not an input of the model"))?;
        let (_, t) = inputs
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("no value given for input '{name}'"))?;
        let old = varc_ir::ValueRef { node: id, slot: 0 };
        let new = g.add_const(name.clone(), t.clone());
        g.replace_uses(old, new);
        g.remove_node(id);
    }
    prepare(path, model, &bound)
}

/// Graph inputs whose run-time values the static shapes depend on.
pub fn shape_inputs(model: &LoadedModel) -> Vec<String> {
    let g = model.graph();
    let mut names: Vec<String> = model
        .inferred
        .unknown
        .iter()
        .filter_map(|u| {
            let v = g
                .node(u.node)
                .inputs
                .get(u.needs_input?)
                .copied()
                .flatten()?;
            matches!(g.node(v.node).op, Op::Input).then(|| g.value(v).name.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn prepare(
    path: &Path,
    mut model: varc_onnx::Model,
    dims: &BTreeMap<String, usize>,
) -> Result<LoadedModel> {
    varc_ir::verify::verify(&model.graph)?;
    timing::mark("verify");
    let inferred =
        varc_ir::infer::infer_types_partial(&mut model.graph, dims, &varc_backend_ref::RefFolder)?;
    timing::mark("type inference");
    Ok(LoadedModel {
        path: path.to_path_buf(),
        model,
        inferred,
        pipeline: Some(Default::default()),
        optimized: false,
    })
}

impl LoadedModel {
    pub fn graph(&self) -> &Graph {
        &self.model.graph
    }

    /// Graph inputs with their (bound) types.
    pub fn inputs(&self) -> Vec<(String, TypeInfo)> {
        let g = self.graph();
        g.inputs
            .iter()
            .map(|&id| {
                let v = &g.node(id).outputs[0];
                let ty =
                    v.ty.clone()
                        .expect("graph inputs carry their declared type");
                (v.name.clone(), ty)
            })
            .collect()
    }

    pub fn output_names(&self) -> Vec<String> {
        let g = self.graph();
        g.outputs.iter().map(|&v| g.value(v).name.clone()).collect()
    }

    /// Seeded random inputs. Integer inputs that index a table (Gather) stay
    /// inside it; symbolic dims must be bound.
    pub fn random_inputs(&self, seed: u64) -> Result<NamedTensors> {
        let mut rng = SplitMix64::new(seed);
        let g = self.graph();
        let mut out = Vec::new();
        for (&id, (name, ty)) in g.inputs.iter().zip(self.inputs()) {
            let Some(shape) = ty.shape.as_known() else {
                bail!(
                    "input '{name}' has symbolic shape {}: bind it with --dim NAME=VALUE",
                    ty.shape
                );
            };
            let high = index_bound(g, varc_ir::ValueRef { node: id, slot: 0 }).unwrap_or(2);
            out.push((name, random_tensor(&mut rng, ty.dtype, &shape, high)));
        }
        Ok(out)
    }

    /// Runs the reference interpreter; `inputs` are matched by name.
    pub fn run_reference(&self, inputs: &[(String, Tensor)]) -> Result<NamedTensors> {
        let expected: Vec<String> = self.inputs().into_iter().map(|(n, _)| n).collect();
        for (name, _) in inputs {
            if !expected.contains(name) {
                bail!(
                    "input '{name}' is not an input of the model (its inputs: {})",
                    expected.join(", ")
                );
            }
        }
        let map: HashMap<String, Tensor> = inputs.iter().cloned().collect();
        Ok(varc_backend_ref::run(self.graph(), &map)?)
    }
}

/// The smallest table extent an integer input indexes through Gather, if any.
fn index_bound(g: &Graph, v: varc_ir::ValueRef) -> Option<i64> {
    g.consumers(v)
        .into_iter()
        .filter_map(|(consumer, slot)| {
            let node = g.node(consumer);
            let Op::Gather { axis } = node.op else {
                return None;
            };
            if slot != 1 {
                return None;
            }
            let data_ty = g.value(node.inputs[0]?).ty.as_ref()?;
            let rank = data_ty.shape.rank();
            let axis = varc_ir::shape::normalize_axis(axis, rank).ok()?;
            data_ty.shape.0[axis].known().map(|d| d as i64)
        })
        .min()
}

/// `models/x.onnx` → `models/x.<suffix>.safetensors`, when that file exists.
pub fn sibling_file(model: &Path, suffix: &str) -> Option<PathBuf> {
    let stem = model.file_stem()?.to_str()?;
    let p = model.with_file_name(format!("{stem}.{suffix}.safetensors"));
    p.exists().then_some(p)
}

/// Tolerances for a shipped model, from models/manifest.json beside it.
pub fn manifest_tolerance(model: &Path) -> Option<(f64, f64)> {
    let manifest = model.parent()?.join("manifest.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    let file = model.file_name()?.to_str()?;
    let e = entries.iter().find(|e| e["file"] == file)?;
    Some((e["rtol"].as_f64()?, e["atol"].as_f64()?))
}
