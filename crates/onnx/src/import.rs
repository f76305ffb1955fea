//! `ModelProto` → [`Model`]: initializers become constants, the remaining
//! graph inputs become `Op::Input`s, nodes become typed ops wired by value
//! name (in any order in the file), graph outputs are resolved last.

use crate::attrs::Issue;
use crate::decode::{
    SUPPORTED_OPSETS, decode_model, decode_model_shared, default_opset, imported_version,
    is_default_domain,
};
use crate::error::{OnnxError, Unsupported};
use crate::ops::{self, Built};
use crate::proto::tensor_shape_proto::dimension;
use crate::proto::type_proto;
use crate::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use crate::tensor::{convert, dtype_from_onnx, onnx_type_label};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use varc_ir::{Dim, Graph, NodeId, Op, Shape, TypeInfo, Value, ValueRef};

/// An imported model.
#[derive(Debug)]
pub struct Model {
    pub graph: Graph,
    /// The default-domain (ai.onnx) opset.
    pub opset: i64,
    /// Every (domain, version) the model imports, as written.
    pub opsets: Vec<(String, i64)>,
    pub ir_version: i64,
    /// Producer name and version, e.g. "pytorch 2.5.1".
    pub producer: String,
    pub doc: String,
}

/// Reads and imports a `.onnx` file; external data is looked up next to it.
pub fn load_model(path: &Path) -> Result<Model, OnnxError> {
    load_model_with(path, &mut |_| {})
}

/// [`load_model`], calling `stage` after each step ("map file", "protobuf
/// decode", "import to graph", "unmap file"), for timing.
///
/// A regular file is memory-mapped rather than read (see `crate::mmap`):
/// tensors' `raw_data` stay views of the file's pages until converted, and
/// each tensor's pages are unmapped once it is, so that a model's weights
/// are resident once while it is imported.
pub fn load_model_with(path: &Path, stage: &mut dyn FnMut(&str)) -> Result<Model, OnnxError> {
    let io = |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || meta.len() == 0 {
        // Empty files, folders and pipes: as std::fs::read reports them.
        let bytes = std::fs::read(path).map_err(io)?;
        stage("read file");
        let m = decode_model(&bytes)?;
        stage("protobuf decode");
        return import_proto(&m, Some(model_dir(path)));
    }
    let map = crate::mmap::FileMap::new(&file).map_err(io)?;
    stage("map file");
    let m = decode_model_shared(map.bytes())?;
    stage("protobuf decode");
    let model = import(&m, Some(model_dir(path)), &|b| map.release(b))?;
    stage("import to graph");
    drop(m);
    stage("unmap file");
    Ok(model)
}

/// The folder a model's external data paths are relative to.
pub fn model_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Imports a serialized model. `model_dir` is the folder external data paths
/// are relative to; without it, a model with external data is an error.
pub fn import_model(bytes: &[u8], model_dir: Option<&Path>) -> Result<Model, OnnxError> {
    import_proto(&decode_model(bytes)?, model_dir)
}

/// Imports a decoded model.
pub fn import_proto(m: &ModelProto, model_dir: Option<&Path>) -> Result<Model, OnnxError> {
    import(m, model_dir, &|_| {})
}

/// [`import_proto`], calling `converted` with each initializer's `raw_data`
/// once the tensor no longer needs it.
fn import(
    m: &ModelProto,
    model_dir: Option<&Path>,
    converted: &dyn Fn(&[u8]),
) -> Result<Model, OnnxError> {
    let opset = default_opset(m)?;
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    let built = build_all(g, opset, &m.opset_import, model_dir)?;
    let graph = Importer::new(g, model_dir, converted).run(built)?;
    Ok(Model {
        graph,
        opset,
        opsets: m
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
        ir_version: m.ir_version,
        producer: format!("{} {}", m.producer_name, m.producer_version)
            .trim()
            .to_string(),
        doc: m.doc_string.clone(),
    })
}

/// Every node of the model's graph that varc cannot import, and why: op
/// types, domains, attributes and attribute values it does not support.
pub fn unsupported_ops(m: &ModelProto) -> Vec<Unsupported> {
    let Some(g) = &m.graph else {
        return Vec::new();
    };
    let opset = imported_version(&m.opset_import, "").unwrap_or(*SUPPORTED_OPSETS.end());
    scan(g, opset, &m.opset_import, None).1
}

/// The display name of node `i` (generated when the model gives none).
fn label(i: usize, n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!("{}_{i}", n.op_type)
    } else {
        n.name.clone()
    }
}

type Scan = (Vec<Option<Built>>, Vec<Unsupported>, Option<OnnxError>);

/// Builds every node's op; collects the unsupported ones and the first
/// malformed one.
fn scan(g: &GraphProto, opset: i64, imports: &[OperatorSetIdProto], dir: Option<&Path>) -> Scan {
    let mut built = Vec::with_capacity(g.node.len());
    let mut unsupported = Vec::new();
    let mut first_error = None;
    for (i, node) in g.node.iter().enumerate() {
        let name = label(i, node);
        let result = if is_default_domain(&node.domain) {
            ops::build(node, opset, &name, dir)
        } else if imported_version(imports, &node.domain).is_some() {
            Err(Issue::Unsupported(format!(
                "domain '{}' is not supported (varc takes only the default ONNX domain)",
                node.domain
            )))
        } else {
            Err(Issue::Unsupported(format!(
                "domain '{}' is not supported, nor imported by the model",
                node.domain
            )))
        };
        built.push(match result {
            Ok(b) => Some(b),
            Err(Issue::Unsupported(reason)) => {
                unsupported.push(Unsupported {
                    node: name,
                    op: node.op_type.clone(),
                    domain: node.domain.clone(),
                    reason,
                });
                None
            }
            Err(Issue::Invalid(reason)) => {
                first_error.get_or_insert(OnnxError::node(&name, &node.op_type, reason));
                None
            }
            Err(Issue::Error(e)) => {
                first_error.get_or_insert(e);
                None
            }
        });
    }
    (built, unsupported, first_error)
}

fn build_all(
    g: &GraphProto,
    opset: i64,
    imports: &[OperatorSetIdProto],
    dir: Option<&Path>,
) -> Result<Vec<Built>, OnnxError> {
    let (built, unsupported, first_error) = scan(g, opset, imports, dir);
    if !unsupported.is_empty() {
        return Err(OnnxError::Unsupported(unsupported));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(built.into_iter().flatten().collect())
}

/// Where a node input comes from.
#[derive(Clone, Copy)]
enum Def {
    /// An initializer or graph input, already in the graph.
    Value(ValueRef),
    /// Output `slot` of node `index` (in file order).
    Node(usize, usize),
}

struct Importer<'a> {
    g: &'a GraphProto,
    dir: Option<&'a Path>,
    converted: &'a dyn Fn(&[u8]),
    graph: Graph,
    /// Initializers and graph inputs by name.
    values: HashMap<&'a str, ValueRef>,
    /// Declared types of intermediate values and outputs.
    decls: HashMap<&'a str, TypeInfo>,
    syms: SymGen,
}

impl<'a> Importer<'a> {
    fn new(g: &'a GraphProto, dir: Option<&'a Path>, converted: &'a dyn Fn(&[u8])) -> Importer<'a> {
        let mut used = HashSet::new();
        for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
            if let Some(type_proto::Value::TensorType(t)) =
                vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                for d in t.shape.iter().flat_map(|s| &s.dim) {
                    if let Some(dimension::Value::DimParam(p)) = &d.value {
                        used.insert(p.clone());
                    }
                }
            }
        }
        Importer {
            g,
            dir,
            converted,
            graph: Graph::new(g.name.clone()),
            values: HashMap::new(),
            decls: HashMap::new(),
            syms: SymGen { used, next: 0 },
        }
    }

    fn run(mut self, built: Vec<Built>) -> Result<Graph, OnnxError> {
        self.initializers()?;
        self.inputs()?;
        self.declarations()?;
        self.nodes(built)?;
        self.outputs()?;
        Ok(self.graph)
    }

    fn define(&mut self, name: &'a str, v: ValueRef, what: &str) -> Result<(), OnnxError> {
        if name.is_empty() {
            return Err(OnnxError::Model(format!("a {what} has no name")));
        }
        if self.values.insert(name, v).is_some() {
            return Err(OnnxError::value(
                name,
                format!("is defined twice (again as a {what})"),
            ));
        }
        Ok(())
    }

    fn initializers(&mut self) -> Result<(), OnnxError> {
        if let Some(s) = self.g.sparse_initializer.first() {
            let name = s.values.as_ref().map_or("", |v| v.name.as_str());
            return Err(OnnxError::tensor(
                name,
                "sparse initializers are not supported",
            ));
        }
        for t in &self.g.initializer {
            if t.name.is_empty() {
                return Err(OnnxError::Model("an initializer has no name".into()));
            }
            let tensor = convert(t, &t.name, self.dir)?;
            (self.converted)(&t.raw_data);
            let v = self.graph.add_const(t.name.clone(), tensor);
            self.define(&t.name, v, "initializer")?;
        }
        Ok(())
    }

    fn inputs(&mut self) -> Result<(), OnnxError> {
        let inits: HashSet<&str> = self.g.initializer.iter().map(|t| t.name.as_str()).collect();
        for vi in &self.g.input {
            // An input with an initializer of the same name is a constant
            // (IR < 4 listed every initializer as an input): the initializer wins.
            if inits.contains(vi.name.as_str()) {
                continue;
            }
            let ty = self
                .syms
                .type_info(vi)
                .map_err(|r| OnnxError::value(&vi.name, format!("graph input: {r}")))?
                .ok_or_else(|| {
                    OnnxError::value(
                        &vi.name,
                        "graph input declares no complete tensor type (element type and rank are needed)",
                    )
                })?;
            let id = self.graph.add_input(vi.name.clone(), ty);
            self.define(&vi.name, ValueRef { node: id, slot: 0 }, "graph input")?;
        }
        Ok(())
    }

    /// Types from value_info and graph outputs, attached to node outputs.
    /// A value_info entry varc cannot use is only a missing hint; a graph
    /// output of a type varc cannot produce is an error.
    fn declarations(&mut self) -> Result<(), OnnxError> {
        for vi in &self.g.value_info {
            if let Ok(Some(ty)) = self.syms.type_info(vi) {
                self.decls.insert(&vi.name, ty);
            }
        }
        for vi in &self.g.output {
            let ty = self
                .syms
                .type_info(vi)
                .map_err(|r| OnnxError::value(&vi.name, format!("graph output: {r}")))?;
            if let Some(ty) = ty {
                self.decls.insert(&vi.name, ty);
            }
        }
        Ok(())
    }

    /// Adds every node in a dependency order.
    fn nodes(&mut self, built: Vec<Built>) -> Result<(), OnnxError> {
        let g: &'a GraphProto = self.g;
        let nodes = &g.node;
        // Which node produces each output name.
        let mut producer: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, (node, b)) in nodes.iter().zip(&built).enumerate() {
            for (slot, out) in node.output.iter().take(b.n_out).enumerate() {
                if out.is_empty() {
                    continue;
                }
                let clash = if self.values.contains_key(out.as_str()) {
                    Some("an initializer or graph input".to_string())
                } else {
                    producer
                        .insert(out, (i, slot))
                        .map(|(j, _)| format!("node '{}'", label(j, &nodes[j])))
                };
                if let Some(other) = clash {
                    return Err(OnnxError::node(
                        &label(i, node),
                        &node.op_type,
                        format!("output '{out}' is already defined by {other}"),
                    ));
                }
            }
        }
        // Resolve every input name.
        let mut defs: Vec<Vec<Option<Def>>> = Vec::with_capacity(nodes.len());
        for (i, (node, b)) in nodes.iter().zip(&built).enumerate() {
            let mut d = Vec::with_capacity(b.n_in);
            for (slot, name) in node.input.iter().take(b.n_in).enumerate() {
                d.push(if name.is_empty() {
                    None
                } else if let Some(&v) = self.values.get(name.as_str()) {
                    Some(Def::Value(v))
                } else if let Some(&(j, s)) = producer.get(name.as_str()) {
                    Some(Def::Node(j, s))
                } else {
                    return Err(OnnxError::node(
                        &label(i, node),
                        &node.op_type,
                        format!("input {slot} '{name}' is not defined by any initializer, graph input or node output"),
                    ));
                });
            }
            defs.push(d);
        }
        let order = dependency_order(&defs);
        let mut ids: Vec<Option<NodeId>> = vec![None; nodes.len()];
        let mut deferred = Vec::new();
        let mut built: Vec<Option<Built>> = built.into_iter().map(Some).collect();
        for &i in &order {
            let node = &nodes[i];
            let Some(b) = built[i].take() else { continue };
            if let Op::Const(t) = b.op {
                ids[i] = Some(self.graph.add_const(node.output[0].clone(), t).node);
                continue;
            }
            let mut inputs = Vec::with_capacity(defs[i].len());
            for (slot, d) in defs[i].iter().enumerate() {
                inputs.push(match *d {
                    None => None,
                    Some(Def::Value(v)) => Some(v),
                    Some(Def::Node(j, s)) => match ids[j] {
                        Some(id) => Some(ValueRef { node: id, slot: s }),
                        None => {
                            // Only on a cycle: wired once every node exists.
                            deferred.push((i, slot, j, s));
                            None
                        }
                    },
                });
            }
            let outputs = node.output[..b.n_out]
                .iter()
                .map(|name| Value {
                    name: name.clone(),
                    ty: self.decls.get(name.as_str()).cloned(),
                })
                .collect();
            ids[i] = Some(self.graph.add_node(label(i, node), b.op, inputs, outputs)?);
        }
        let ids: Vec<NodeId> = ids.into_iter().flatten().collect();
        if ids.len() != nodes.len() {
            return Err(OnnxError::Model(
                "internal error: a node was not added".into(),
            ));
        }
        for &(i, slot, j, s) in &deferred {
            self.graph.set_input(
                ids[i],
                slot,
                Some(ValueRef {
                    node: ids[j],
                    slot: s,
                }),
            );
        }
        if !deferred.is_empty() {
            self.graph.topo_order()?;
        }
        for (name, &(i, s)) in &producer {
            self.values.insert(
                name,
                ValueRef {
                    node: ids[i],
                    slot: s,
                },
            );
        }
        Ok(())
    }

    fn outputs(&mut self) -> Result<(), OnnxError> {
        for vi in &self.g.output {
            if vi.name.is_empty() {
                return Err(OnnxError::Model("a graph output has no name".into()));
            }
            let v = self.values.get(vi.name.as_str()).copied().ok_or_else(|| {
                OnnxError::value(
                    &vi.name,
                    "graph output is not produced by any node, initializer or graph input",
                )
            })?;
            self.graph.outputs.push(v);
        }
        Ok(())
    }
}

/// Node indices with producers first, file order among equals; nodes on (or
/// behind) a cycle come last in file order.
fn dependency_order(defs: &[Vec<Option<Def>>]) -> Vec<usize> {
    let n = defs.len();
    let mut pending = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in defs.iter().enumerate() {
        for def in d.iter().flatten() {
            if let Def::Node(j, _) = *def {
                pending[i] += 1;
                users[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while let Some(i) = ready.pop_first() {
        order.push(i);
        placed[i] = true;
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.insert(u);
            }
        }
    }
    order.extend((0..n).filter(|&i| !placed[i]));
    order
}

/// Declared types → [`TypeInfo`], naming unknown dims `unk__N`.
struct SymGen {
    used: HashSet<String>,
    next: usize,
}

impl SymGen {
    fn fresh(&mut self) -> Dim {
        loop {
            let name = format!("unk__{}", self.next);
            self.next += 1;
            if self.used.insert(name.clone()) {
                return Dim::Sym(name);
            }
        }
    }

    /// `Ok(None)` when the declaration is incomplete (no type, element type
    /// or rank); an error for non-tensor or unsupported types.
    fn type_info(&mut self, vi: &ValueInfoProto) -> Result<Option<TypeInfo>, String> {
        let Some(value) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Ok(None);
        };
        let t = match value {
            type_proto::Value::TensorType(t) => t,
            type_proto::Value::SequenceType(_) => {
                return Err("sequence types are not supported".into());
            }
            type_proto::Value::MapType(_) => return Err("map types are not supported".into()),
            type_proto::Value::OptionalType(_) => {
                return Err("optional types are not supported".into());
            }
            type_proto::Value::SparseTensorType(_) => {
                return Err("sparse tensor types are not supported".into());
            }
            type_proto::Value::OpaqueType(_) => return Err("opaque types are not supported".into()),
        };
        if t.elem_type == 0 {
            return Ok(None);
        }
        let dtype = dtype_from_onnx(t.elem_type).ok_or_else(|| {
            format!(
                "element type {} is not supported",
                onnx_type_label(t.elem_type)
            )
        })?;
        let Some(shape) = &t.shape else {
            return Ok(None);
        };
        let mut dims = Vec::with_capacity(shape.dim.len());
        for d in &shape.dim {
            dims.push(match &d.value {
                Some(dimension::Value::DimValue(v)) => Dim::Known(
                    usize::try_from(*v).map_err(|_| format!("negative dim {v} in its shape"))?,
                ),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => self.fresh(),
            });
        }
        Ok(Some(TypeInfo {
            dtype,
            shape: Shape(dims),
        }))
    }
}
