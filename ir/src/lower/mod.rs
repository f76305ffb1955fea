//! Lowering: graph IR → kernel IR. Each ONNX op's semantics for the compiled
//! backends are written here, once (the reference interpreter keeps its own,
//! independent implementation over the graph IR: the two paths check each
//! other).
//!
//! Values live in buffers seen through [`View`]s (shape, element strides,
//! offset), so Reshape of contiguous data, Transpose, Expand, Squeeze,
//! Unsqueeze, Slice and Identity cost no kernel: a consumer simply loads
//! through the view. An op that computes something appends kernels to the
//! [`Program`] through a [`Cx`].
//!
//! Every value must have a static type: lowering runs after
//! [`crate::infer::infer_types`] (with every symbolic dim bound).

mod elementwise;
mod movement;
mod nn;
mod reduce;

use crate::dtype::DType;
use crate::graph::{Graph, NodeId, TypeInfo, ValueRef};
use crate::kernel::{Access, Affine, BufId, BufKind, Buffer, Expr, Kernel, Program, Var};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::{IrError, Node};
use std::collections::HashMap;

/// A buffer seen as a tensor: element `[i0, .., in]` lives at
/// `offset + Σ strides[d]·i_d` (strides may be 0 for broadcast dims).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub buf: BufId,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<i64>,
    pub offset: i64,
}

impl View {
    /// A whole buffer, row-major.
    pub fn contiguous(buf: BufId, dtype: DType, shape: &[usize]) -> View {
        View {
            buf,
            dtype,
            shape: shape.to_vec(),
            strides: crate::shape::strides(shape)
                .into_iter()
                .map(|s| s as i64)
                .collect(),
            offset: 0,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the view is plain row-major storage from its offset (dims of
    /// extent 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let want = crate::shape::strides(&self.shape);
        self.shape
            .iter()
            .zip(&self.strides)
            .zip(&want)
            .all(|((&n, &s), &w)| n == 1 || s == w as i64)
    }

    /// The address of element `idx` (one affine index per dim).
    pub fn address(&self, idx: &[Affine]) -> Affine {
        let mut a = Affine::constant(self.offset);
        for ((ix, &s), &n) in idx.iter().zip(&self.strides).zip(&self.shape) {
            if n == 1 || s == 0 {
                continue;
            }
            a.offset += ix.offset * s;
            for &(v, c) in &ix.terms {
                add_term(&mut a, v, c * s);
            }
        }
        a
    }

    /// Loads element `idx`.
    pub fn load(&self, idx: &[Affine]) -> Expr {
        Expr::load(self.buf, self.address(idx))
    }

    /// Loads the element that broadcasts to point `Out(0..rank)` of a domain
    /// of shape `out` (numpy rules: leading dims missing, size-1 dims
    /// repeated).
    pub fn load_broadcast(&self, out: &[usize]) -> Expr {
        let lead = out.len() - self.shape.len();
        let idx: Vec<Affine> = (0..self.shape.len())
            .map(|d| var(Var::Out(lead + d)))
            .collect();
        self.load(&idx)
    }
}

impl View {
    /// The view with its axes reordered: axis `i` of the result is axis
    /// `perm[i]` of `self` (ONNX Transpose).
    pub fn permute(&self, perm: &[usize]) -> View {
        View {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            ..self.clone()
        }
    }

    /// The view broadcast (numpy rules) to `shape`: missing leading dims and
    /// size-1 dims that grow get stride 0. `shape` must be a valid broadcast
    /// target.
    pub fn broadcast_to(&self, shape: &[usize]) -> View {
        let lead = shape.len() - self.shape.len();
        let strides = (0..shape.len())
            .map(|d| {
                if d < lead || self.shape[d - lead] != shape[d] {
                    0
                } else {
                    self.strides[d - lead]
                }
            })
            .collect();
        View {
            shape: shape.to_vec(),
            strides,
            ..self.clone()
        }
    }

    /// Every `step`-th element of `axis` (`step` may be negative), `count`
    /// of them, starting at index `start`.
    pub fn slice_axis(&self, axis: usize, start: usize, count: usize, step: i64) -> View {
        let mut v = self.clone();
        if count > 0 {
            v.offset += start as i64 * self.strides[axis];
        }
        v.shape[axis] = count;
        v.strides[axis] = if count > 1 {
            self.strides[axis] * step
        } else {
            0
        };
        v
    }

    /// Elements `start..start + len` of `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> View {
        self.slice_axis(axis, start, len, 1)
    }

    /// The same elements (row-major order) seen with `shape`, when that is
    /// possible without copying (numpy's no-copy reshape rule); `None`
    /// otherwise. `shape` must have the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Option<View> {
        let row_major = |v: &View| View {
            shape: shape.to_vec(),
            strides: crate::shape::strides(shape)
                .into_iter()
                .map(|s| s as i64)
                .collect(),
            ..v.clone()
        };
        if self.numel() == 0 {
            return Some(row_major(self));
        }
        if self.is_contiguous() {
            return Some(row_major(self));
        }
        // Old dims without the 1s; grouped against new dims by products.
        let (od, os): (Vec<usize>, Vec<i64>) = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1)
            .map(|(&n, &s)| (n, s))
            .unzip();
        let nd = shape;
        let mut ns = vec![0i64; nd.len()];
        let (mut oi, mut oj, mut ni, mut nj) = (0usize, 1usize, 0usize, 1usize);
        while ni < nd.len() && oi < od.len() {
            let mut np = nd[ni];
            let mut op = od[oi];
            while np != op {
                if np < op {
                    np *= *nd.get(nj)?;
                    nj += 1;
                } else {
                    op *= *od.get(oj)?;
                    oj += 1;
                }
            }
            for ok in oi..oj - 1 {
                if os[ok] != od[ok + 1] as i64 * os[ok + 1] {
                    return None;
                }
            }
            ns[nj - 1] = os[oj - 1];
            for nk in (ni + 1..nj).rev() {
                ns[nk - 1] = ns[nk] * nd[nk] as i64;
            }
            ni = nj;
            nj += 1;
            oi = oj;
            oj += 1;
        }
        Some(View {
            shape: shape.to_vec(),
            strides: ns,
            ..self.clone()
        })
    }
}

/// `1·v`.
pub fn var(v: Var) -> Affine {
    Affine {
        offset: 0,
        terms: vec![(v, 1)],
    }
}

fn add_term(a: &mut Affine, v: Var, c: i64) {
    if c == 0 {
        return;
    }
    match a.terms.iter_mut().find(|(w, _)| *w == v) {
        Some(t) => t.1 += c,
        None => a.terms.push((v, c)),
    }
    a.terms.retain(|(_, c)| *c != 0);
}

/// Per-domain-axis index `Out(d)` for d in 0..rank.
pub fn out_index(rank: usize) -> Vec<Affine> {
    (0..rank).map(|d| var(Var::Out(d))).collect()
}

/// What an op lowering can ask for and add.
pub struct Cx<'a> {
    pub program: &'a mut Program,
    /// The node being lowered (for names and errors).
    pub node: &'a Node,
    next_red: &'a mut usize,
    graph: &'a Graph,
    consts: &'a HashMap<ValueRef, Tensor>,
    /// How the caller asked for the graph to be lowered.
    pub opts: LowerOptions,
}

impl Cx<'_> {
    /// A fresh scratch buffer, viewed row-major.
    pub fn temp(&mut self, dtype: DType, shape: &[usize]) -> View {
        let n = self.program.buffers.len();
        let id = self.program.add_buffer(Buffer {
            name: format!("t{n}"),
            dtype,
            shape: shape.to_vec(),
            kind: BufKind::Temp,
        });
        View::contiguous(id, dtype, shape)
    }

    /// A read-only buffer holding `t`.
    pub fn weight(&mut self, name: &str, t: Tensor) -> View {
        let n = self.program.buffers.len();
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        let id = self.program.add_buffer(Buffer {
            name: format!("w{n}_{}", sanitize(name)),
            dtype,
            shape: shape.clone(),
            kind: BufKind::Weight(t),
        });
        View::contiguous(id, dtype, &shape)
    }

    /// The compile-time value of operand `slot`, when it has one.
    pub fn const_input(&self, slot: usize) -> Option<&Tensor> {
        let v = (*self.node.inputs.get(slot)?)?;
        self.graph.const_value(v).or_else(|| self.consts.get(&v))
    }

    /// A reduction variable id unique in the program.
    pub fn red(&mut self) -> usize {
        *self.next_red += 1;
        *self.next_red
    }

    /// Appends a kernel writing `value` at every point of `out`'s shape,
    /// stored row-major into `out`.
    pub fn emit(&mut self, out: &View, value: Expr) {
        let store = Access {
            buf: out.buf,
            index: out.address(&out_index(out.shape.len())),
            gathers: vec![],
        };
        self.emit_kernel(out.shape.clone(), store, value);
    }

    pub fn emit_kernel(&mut self, domain: Vec<usize>, store: Access, value: Expr) {
        let name = format!("{}:{}", self.node.name, self.node.op.kind());
        self.program.kernels.push(Kernel {
            name,
            domain,
            store,
            value,
            library: None,
        });
    }

    /// `v` seen with `shape` (same element count): a view when the strides
    /// allow it, else a contiguous copy seen with `shape`.
    pub fn reshape(&mut self, v: &View, shape: &[usize]) -> View {
        if let Some(r) = v.reshape(shape) {
            return r;
        }
        let m = self.materialize(v);
        m.reshape(shape).expect("a contiguous view reshapes")
    }

    /// Copies `v` into a fresh contiguous buffer (when it is not already one).
    pub fn materialize(&mut self, v: &View) -> View {
        if v.is_contiguous() && v.offset == 0 && self.program.buffer(v.buf).len() == v.numel() {
            return v.clone();
        }
        let out = self.temp(v.dtype, &v.shape);
        let value = v.load(&out_index(v.shape.len()));
        self.emit(&out, value);
        out
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect()
}

/// Static shape of a typed value.
pub fn known_shape(t: &TypeInfo) -> Result<Vec<usize>, String> {
    t.shape.as_known().ok_or_else(|| {
        format!(
            "shape {} is not static: bind its symbolic dims (--dim NAME=VALUE)",
            t.shape
        )
    })
}

/// Choices about the form of the lowered program; the values it computes
/// are the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Lower attention, where supported, to one kernel tagged with
    /// [`crate::kernel::Library::Attention`] (for backends with a fused
    /// attention microkernel; the kernel's own loop nest recomputes the
    /// scores and is only fit for the interpreter) instead of five kernels
    /// over a materialised score matrix.
    pub fused_attention: bool,
    /// Lower 2-D f32 convolutions of one group to one direct kernel
    /// tagged with [`crate::kernel::Library::Conv`] (for backends with an
    /// implicit-GEMM convolution microkernel) instead of im2col copies and
    /// a matrix product.
    pub conv_library: bool,
    /// Kernel fusion may substitute a contraction into an epilogue that
    /// reads it at several sites of one element
    /// ([`crate::kernel::fuse::FuseOptions::repeated_epilogue_reads`]): for
    /// backends that compute such a sum once (the host JIT's sgemm path).
    /// Read by the driver that runs fusion after lowering.
    pub repeated_epilogue_reads: bool,
}

/// Lowers a fully typed graph to a kernel program (default options).
pub fn lower(graph: &Graph, consts: &HashMap<ValueRef, Tensor>) -> Result<Program, IrError> {
    lower_with(graph, consts, &LowerOptions::default())
}

/// Lowers a fully typed graph to a kernel program.
pub fn lower_with(
    graph: &Graph,
    consts: &HashMap<ValueRef, Tensor>,
    opts: &LowerOptions,
) -> Result<Program, IrError> {
    let mut program = Program::default();
    let mut values: HashMap<ValueRef, View> = HashMap::new();
    let mut next_red = 0usize;

    for (i, &id) in graph.inputs.iter().enumerate() {
        let node = graph.node(id);
        let ty = node.outputs[0]
            .ty
            .as_ref()
            .ok_or_else(|| node.error("graph input has no type"))?;
        let shape = known_shape(ty).map_err(|e| node.error(e))?;
        let buf = program.add_buffer(Buffer {
            name: sanitize(&node.outputs[0].name),
            dtype: ty.dtype,
            shape: shape.clone(),
            kind: BufKind::Input(i),
        });
        program.inputs.push(buf);
        values.insert(
            ValueRef { node: id, slot: 0 },
            View::contiguous(buf, ty.dtype, &shape),
        );
    }

    for id in graph.topo_order()? {
        let node = graph.node(id);
        if matches!(node.op, Op::Input) {
            continue;
        }
        let at = |slot| ValueRef { node: id, slot };
        // Values known at compile time become weights, whatever computed them.
        if let Some(t) = const_output(graph, consts, id)
            && node.outputs.len() == 1
        {
            let n = program.buffers.len();
            let buf = program.add_buffer(Buffer {
                name: format!("w{n}_{}", sanitize(&node.outputs[0].name)),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                kind: BufKind::Weight(t.clone()),
            });
            values.insert(at(0), View::contiguous(buf, t.dtype(), t.shape()));
            continue;
        }
        let ins: Vec<Option<View>> = node
            .inputs
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => Ok(None),
                Some(v) => values
                    .get(v)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| node.error(format!("input {i} has not been lowered"))),
            })
            .collect::<Result<_, IrError>>()?;
        let outs: Vec<TypeInfo> = node
            .outputs
            .iter()
            .enumerate()
            .map(|(slot, o)| {
                o.ty.clone().ok_or_else(|| {
                    node.error(format!("output {slot} ('{}') has no static type", o.name))
                })
            })
            .collect::<Result<_, IrError>>()?;
        let mut cx = Cx {
            program: &mut program,
            node,
            next_red: &mut next_red,
            graph,
            consts,
            opts: *opts,
        };
        let views = lower_node(&mut cx, &ins, &outs).map_err(|e| node.error(e))?;
        for (slot, v) in views.into_iter().enumerate() {
            values.insert(at(slot), v);
        }
    }

    // Outputs: a fresh Output buffer each, filled by a copy kernel (a later
    // pass lets the producing kernel store there directly).
    for (i, &v) in graph.outputs.iter().enumerate() {
        let node = graph.node(v.node);
        let view = values.get(&v).cloned().ok_or_else(|| {
            node.error(format!("output '{}' was not lowered", graph.value(v).name))
        })?;
        let buf = program.add_buffer(Buffer {
            name: sanitize(&graph.value(v).name),
            dtype: view.dtype,
            shape: view.shape.clone(),
            kind: BufKind::Output(i),
        });
        program.outputs.push(buf);
        let out = View::contiguous(buf, view.dtype, &view.shape);
        let value = view.load(&out_index(view.shape.len()));
        program.kernels.push(Kernel {
            name: format!("output:{}", graph.value(v).name),
            domain: view.shape.clone(),
            store: Access {
                buf,
                index: out.address(&out_index(out.shape.len())),
                gathers: vec![],
            },
            value,
            library: None,
        });
    }
    Ok(program)
}

fn const_output<'a>(
    graph: &'a Graph,
    consts: &'a HashMap<ValueRef, Tensor>,
    id: NodeId,
) -> Option<&'a Tensor> {
    let v = ValueRef { node: id, slot: 0 };
    graph.const_value(v).or_else(|| consts.get(&v))
}

/// Dispatches one node to its op's lowering; returns one view per output.
fn lower_node(cx: &mut Cx, ins: &[Option<View>], outs: &[TypeInfo]) -> Result<Vec<View>, String> {
    let op = cx.node.op.clone();
    match &op {
        Op::Input | Op::Const(_) => unreachable!("handled by the driver"),
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Variadic(_)
        | Op::Clip
        | Op::Where
        | Op::Cast { .. }
        | Op::CastLike
        | Op::Gelu { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. } => elementwise::lower(cx, &op, ins, outs),
        Op::Identity
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::Expand
        | Op::Tile
        | Op::Pad { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::GatherND { .. }
        | Op::Trilu { .. } => movement::lower(cx, &op, ins, outs),
        Op::Softmax { .. }
        | Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::CumSum { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::GroupNorm { .. } => reduce::lower(cx, &op, ins, outs),
        Op::MatMul
        | Op::Gemm { .. }
        | Op::Attention(_)
        | Op::Conv { .. }
        | Op::AveragePool { .. }
        | Op::MaxPool { .. }
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::Resize(_)
        | Op::Resample { .. } => nn::lower(cx, &op, ins, outs),
    }
}

/// Operand `i`, which the op requires.
pub fn input(ins: &[Option<View>], i: usize) -> Result<&View, String> {
    ins.get(i)
        .and_then(|v| v.as_ref())
        .ok_or_else(|| format!("missing input {i}"))
}

/// The ints of a compile-time constant operand (`None` when omitted).
pub(crate) fn const_ints(
    cx: &Cx,
    ins: &[Option<View>],
    slot: usize,
    what: &str,
) -> Result<Option<Vec<i64>>, String> {
    if ins.get(slot).and_then(|v| v.as_ref()).is_none() {
        return Ok(None);
    }
    let t = cx.const_input(slot).ok_or_else(|| {
        format!("{what} must be a compile-time constant for the compiled backends (it is computed at run time)")
    })?;
    if !t.dtype().is_int() {
        return Err(format!(
            "{what} must be an integer tensor, got {}",
            t.dtype()
        ));
    }
    Ok(Some(t.to_i64_vec()))
}
