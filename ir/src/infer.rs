//! Type and shape inference.
//!
//! Walks the graph in dependency order and gives every value a [`TypeInfo`].
//! Symbolic input dims are bound from `bindings` first. Ops whose output
//! shape depends on operand *values* (Reshape's shape, Resize's sizes, Slice's
//! starts, ...) read them from constants: initializers, Constant nodes, and
//! values folded on the way by a [`ConstFold`] — the reference interpreter's
//! node evaluator, so an op's semantics stay written once.
//!
//! Besides full constants, inference tracks *shape values*: small integer
//! tensors computed from shapes (`Shape`, then `Gather`, `Concat`, `Mul`, ...)
//! whose entries may be symbolic dims. They let `Reshape(x, Concat(Shape(x)[0],
//! [-1]))` keep its symbolic batch dim when nothing is bound. Dims that
//! symbolic arithmetic cannot resolve get generated names (see `dims`).
//!
//! Per-op rules live in `rules`; this file is the walk, the constants, and the
//! reconciliation with types the model declares.

mod dims;
mod nn;
mod rules;

use crate::error::IrError;
use crate::graph::{Graph, Node, NodeId, TypeInfo, ValueRef};
use crate::op::{BinaryOp, Op};
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, TensorData};
use dims::SymInt;
use rules::{Ctx, RuleError};
use std::collections::{BTreeMap, HashMap};

pub(crate) use nn::attention_dims;

/// Evaluates one node on constant operands. Implemented by the reference
/// interpreter; inference uses it to fold shape arithmetic.
pub trait ConstFold {
    /// `inputs[i]` is `None` for an omitted optional operand.
    fn fold(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String>;
}

/// A [`ConstFold`] that folds nothing (inference still tracks shape values).
pub struct NoFold;

impl ConstFold for NoFold {
    fn fold(&self, _: &Node, _: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
        Err("folding disabled".into())
    }
}

/// What inference learned besides the types it wrote into the graph.
#[derive(Debug, Default)]
pub struct InferResult {
    /// Values computed at compile time (folded nodes and known shapes), not
    /// including `Op::Const` outputs, which the graph already holds.
    pub consts: HashMap<ValueRef, Tensor>,
    /// Nodes whose output types could not be inferred statically (only from
    /// [`infer_types_partial`]): the node and why — a shape that depends on
    /// a run-time value, or an operand of unknown type.
    pub unknown: Vec<Unknown>,
}

/// A node [`infer_types_partial`] could not type statically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub node: NodeId,
    /// The operand whose run-time value the output shape depends on (None:
    /// an operand's own type was unknown).
    pub needs_input: Option<usize>,
    pub reason: String,
}

/// Largest total input (and output) element count a node may have to be folded.
pub const FOLD_LIMIT: usize = 65536;
/// Longest integer tensor tracked as a shape value.
const VALUE_LIMIT: usize = 64;

/// Infers every value's type, writing it into the graph (all or nothing: on
/// error the graph is unchanged). Errors name the offending node.
pub fn infer_types(
    graph: &mut Graph,
    bindings: &BTreeMap<String, usize>,
    folder: &dyn ConstFold,
) -> Result<InferResult, IrError> {
    infer(graph, bindings, folder, false)
}

/// Like [`infer_types`], but a node whose output shape depends on a run-time
/// value (and everything downstream of it) is left untyped and listed in
/// [`InferResult::unknown`] instead of failing. Enough for an interpreter,
/// which computes shapes as it goes; compiled backends need [`infer_types`].
pub fn infer_types_partial(
    graph: &mut Graph,
    bindings: &BTreeMap<String, usize>,
    folder: &dyn ConstFold,
) -> Result<InferResult, IrError> {
    infer(graph, bindings, folder, true)
}

fn infer(
    graph: &mut Graph,
    bindings: &BTreeMap<String, usize>,
    folder: &dyn ConstFold,
    partial: bool,
) -> Result<InferResult, IrError> {
    let order = graph.topo_order()?;
    let mut st = State {
        graph,
        bindings,
        types: HashMap::new(),
        folded: HashMap::new(),
        vals: HashMap::new(),
        partial,
        unknown: vec![],
    };
    for id in order {
        st.visit(id, folder)?;
    }
    let State {
        types,
        folded,
        unknown,
        ..
    } = st;
    for (v, t) in types {
        graph.value_mut(v).ty = Some(t);
    }
    Ok(InferResult {
        consts: folded,
        unknown,
    })
}

struct State<'g> {
    graph: &'g Graph,
    bindings: &'g BTreeMap<String, usize>,
    types: HashMap<ValueRef, TypeInfo>,
    folded: HashMap<ValueRef, Tensor>,
    vals: HashMap<ValueRef, Vec<SymInt>>,
    partial: bool,
    unknown: Vec<Unknown>,
}

impl<'g> State<'g> {
    fn konst(&self, v: ValueRef) -> Option<&Tensor> {
        self.folded.get(&v).or_else(|| const_of(self.graph, v))
    }

    fn visit(&mut self, id: NodeId, folder: &dyn ConstFold) -> Result<(), IrError> {
        let node = self.graph.node(id);
        let declared: Vec<Option<TypeInfo>> = node
            .outputs
            .iter()
            .map(|o| o.ty.as_ref().map(|t| bind(t, self.bindings)))
            .collect();
        let (outs, folded, vals) = if let Op::Input = node.op {
            let t = declared.first().cloned().flatten();
            let t = t.ok_or_else(|| node.error("graph input has no declared type"))?;
            (vec![t], vec![], None)
        } else {
            crate::verify::check_arity(node)?;
            if self.partial {
                let untyped = node
                    .inputs
                    .iter()
                    .flatten()
                    .any(|v| !self.types.contains_key(v));
                if untyped {
                    self.unknown.push(Unknown {
                        node: id,
                        needs_input: None,
                        reason: "an operand's type is not known statically".into(),
                    });
                    return Ok(());
                }
            }
            let ctx = self.ctx(node)?;
            let outs = match infer_outputs(&ctx, &declared) {
                Err((RuleErrorKind::NeedsValue(slot), e)) if self.partial => {
                    self.unknown.push(Unknown {
                        node: id,
                        needs_input: Some(slot),
                        reason: e.to_string(),
                    });
                    return Ok(());
                }
                other => other.map_err(|(_, e)| e)?,
            };
            let (folded, vals) = fold(&ctx, &outs, folder)?;
            (outs, folded, vals)
        };
        let at = |slot| ValueRef { node: id, slot };
        for (slot, t) in folded.into_iter().enumerate() {
            self.folded.insert(at(slot), t);
        }
        if let Some(v) = vals {
            self.vals.insert(at(0), v);
        }
        for (slot, t) in outs.into_iter().enumerate() {
            check_size(&t).map_err(|e| node.error(format!("output {slot}: {e}")))?;
            if !self.vals.contains_key(&at(slot))
                && let Some(v) = self.konst(at(slot)).and_then(int_vals)
            {
                self.vals.insert(at(slot), v);
            }
            self.types.insert(at(slot), t);
        }
        Ok(())
    }

    /// The rule context of `node`: operand types, constants, shape values.
    fn ctx(&self, node: &'g Node) -> Result<Ctx<'_>, IrError> {
        let mut ctx = Ctx {
            node,
            ins: vec![],
            consts: vec![],
            vals: vec![],
        };
        for (i, v) in node.inputs.iter().enumerate() {
            let Some(v) = *v else {
                ctx.ins.push(None);
                ctx.consts.push(None);
                ctx.vals.push(None);
                continue;
            };
            let t = self.types.get(&v);
            let t =
                t.ok_or_else(|| node.error(format!("input {i} refers to a value with no type")))?;
            ctx.ins.push(Some(t));
            ctx.consts.push(self.konst(v));
            ctx.vals.push(self.vals.get(&v).cloned());
        }
        Ok(ctx)
    }
}

/// Folds the node when its operands are small constants (giving one tensor per
/// output), or failing that computes the shape value of its output 0 (and the
/// tensor, when every entry is a number).
fn fold(
    ctx: &Ctx,
    outs: &[TypeInfo],
    folder: &dyn ConstFold,
) -> Result<(Vec<Tensor>, Option<Vec<SymInt>>), IrError> {
    let node = ctx.node;
    let present: Vec<_> = ctx
        .ins
        .iter()
        .zip(&ctx.consts)
        .filter(|(t, _)| t.is_some())
        .collect();
    let in_elems = present
        .iter()
        .try_fold(0usize, |acc, (_, c)| acc.checked_add(c.as_ref()?.numel()));
    let small = |t: &TypeInfo| t.shape.numel().is_some_and(|n| n <= FOLD_LIMIT);
    let foldable = !matches!(node.op, Op::Const(_))
        && !present.is_empty()
        && in_elems.is_some_and(|n| n <= FOLD_LIMIT)
        && outs.iter().all(small);
    // A folder that cannot give every output leaves the node unfolded.
    if foldable
        && let Ok(ts) = folder.fold(node, &ctx.consts)
        && ts.len() >= outs.len()
    {
        for (slot, (t, want)) in ts.iter().zip(outs).enumerate() {
            let got = TypeInfo {
                dtype: t.dtype(),
                shape: Shape::known(t.shape()),
            };
            if &got != want {
                return Err(node.error(format!(
                    "folding output {slot} gives {got} but inference gives {want}"
                )));
            }
        }
        return Ok((ts.into_iter().take(outs.len()).collect(), None));
    }
    let Some(vals) = outs.first().and_then(|o| propagate(ctx, o)) else {
        return Ok((vec![], None));
    };
    let ints: Option<Vec<i64>> = vals.iter().map(SymInt::as_int).collect();
    let t = match (ints, outs[0].shape.as_known()) {
        (Some(ints), Some(shape)) => {
            Tensor::new(shape, TensorData::from_i64(outs[0].dtype, &ints)).ok()
        }
        _ => None,
    };
    Ok((t.into_iter().collect(), Some(vals)))
}

/// Whether a failed rule needs a run-time value or found the node ill-typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleErrorKind {
    NeedsValue(usize),
    Invalid,
}

/// Runs the node's rule and reconciles the result with declared types.
fn infer_outputs(
    ctx: &Ctx,
    declared: &[Option<TypeInfo>],
) -> Result<Vec<TypeInfo>, (RuleErrorKind, IrError)> {
    let node = ctx.node;
    let mut outs = rules::infer_node(ctx).map_err(|e| {
        let kind = match e {
            rules::RuleError::NeedsValue(slot) => RuleErrorKind::NeedsValue(slot),
            rules::RuleError::Invalid(_) => RuleErrorKind::Invalid,
        };
        (kind, node.error(e.message()))
    })?;
    let invalid = |e| (RuleErrorKind::Invalid, e);
    if outs.len() < node.outputs.len() {
        return Err(invalid(node.error(format!(
            "has {} outputs but {} produces at most {}",
            node.outputs.len(),
            node.op.kind(),
            outs.len()
        ))));
    }
    outs.truncate(node.outputs.len());
    outs.into_iter()
        .zip(declared)
        .enumerate()
        .map(|(slot, (t, decl))| match decl {
            None => Ok(t),
            Some(d) => merge(d, t).map_err(|e| {
                invalid(node.error(format!(
                    "output {slot} ('{}'): {e}",
                    node.outputs[slot].name
                )))
            }),
        })
        .collect()
}

/// Checks a node's recorded types against its rule, without constants other
/// than `Op::Const` operands: value-dependent shapes are not checked. Used by
/// the verifier.
pub(crate) fn check_node_types(graph: &Graph, id: NodeId) -> Result<(), IrError> {
    let node = graph.node(id);
    if let Op::Input = node.op {
        return match node.outputs.first().and_then(|o| o.ty.as_ref()) {
            Some(_) => Ok(()),
            None => Err(node.error("graph input has no type")),
        };
    }
    let mut ctx = Ctx {
        node,
        ins: vec![],
        consts: vec![],
        vals: vec![],
    };
    for v in &node.inputs {
        let t = match v {
            None => None,
            Some(v) => match graph.value(*v).ty.as_ref() {
                Some(t) => Some(t),
                None => return Ok(()),
            },
        };
        let c = v.and_then(|v| const_of(graph, v));
        ctx.ins.push(t);
        ctx.consts.push(c);
        ctx.vals.push(c.and_then(int_vals));
    }
    let outs = match rules::infer_node(&ctx) {
        Ok(outs) => outs,
        Err(RuleError::NeedsValue(_)) => return Ok(()),
        Err(e) => return Err(node.error(e.message())),
    };
    for (slot, (o, t)) in node.outputs.iter().zip(outs).enumerate() {
        if let Some(decl) = &o.ty {
            merge(decl, t).map_err(|e| node.error(format!("output {slot} ('{}'): {e}", o.name)))?;
        }
    }
    Ok(())
}

fn const_of(g: &Graph, v: ValueRef) -> Option<&Tensor> {
    match g.get(v.node).map(|n| &n.op) {
        Some(Op::Const(t)) if v.slot == 0 => Some(t),
        _ => None,
    }
}

/// A small integer tensor's values as shape values.
fn int_vals(t: &Tensor) -> Option<Vec<SymInt>> {
    (t.dtype().is_int() && t.rank() <= 1 && t.numel() <= VALUE_LIMIT)
        .then(|| t.to_i64_vec().into_iter().map(SymInt::Int).collect())
}

fn bind(t: &TypeInfo, bindings: &BTreeMap<String, usize>) -> TypeInfo {
    TypeInfo {
        dtype: t.dtype,
        shape: t.shape.bind(bindings),
    }
}

/// Rejects absurd sizes (hostile models): any dim or element count > 2^40.
fn check_size(t: &TypeInfo) -> Result<(), String> {
    let mut n = 1usize;
    for d in t.shape.0.iter().filter_map(Dim::known) {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= dims::MAX_ELEMS)
            .unwrap_or(usize::MAX);
        if d > dims::MAX_ELEMS || n > dims::MAX_ELEMS {
            return Err(format!("{t} holds more than 2^40 elements"));
        }
    }
    Ok(())
}

/// Reconciles a declared type with the inferred one: dtypes and ranks must
/// agree, known dims must agree; the more precise dim wins (inferred over a
/// declared symbol, declared over a generated one).
fn merge(declared: &TypeInfo, inferred: TypeInfo) -> Result<TypeInfo, String> {
    let clash = || format!("declared as {declared} but inferred as {inferred}");
    if declared.dtype != inferred.dtype || declared.shape.rank() != inferred.shape.rank() {
        return Err(clash());
    }
    let generated = |s: &str| s.starts_with('?') || s.contains(['+', '*', '/', '(']);
    let mut dims = Vec::with_capacity(inferred.shape.rank());
    for (d, i) in declared.shape.0.iter().zip(&inferred.shape.0) {
        dims.push(match (d, i) {
            (Dim::Known(a), Dim::Known(b)) if a != b => return Err(clash()),
            (Dim::Known(_), Dim::Sym(_)) => d.clone(),
            (Dim::Sym(_), Dim::Sym(s)) if generated(s) => d.clone(),
            _ => i.clone(),
        });
    }
    Ok(TypeInfo {
        dtype: inferred.dtype,
        shape: Shape(dims),
    })
}

/// The shape value of a node's output 0, when it is a small integer tensor
/// computed from shapes by an op simple enough to mirror here.
fn propagate(ctx: &Ctx, out: &TypeInfo) -> Option<Vec<SymInt>> {
    if !out.dtype.is_int() || out.shape.rank() > 1 {
        return None;
    }
    let v = |i: usize| ctx.vals.get(i)?.as_ref();
    let r: Vec<SymInt> = match &ctx.node.op {
        Op::Shape { start, end } => {
            let s = &ctx.ins.first().copied()??.shape;
            let (a, b) = rules::shape_range(s.rank(), *start, *end);
            s.0[a..b].iter().map(SymInt::from_dim).collect()
        }
        Op::Size => vec![SymInt::from_dim(
            &dims::product(&ctx.ins.first().copied()??.shape.0).ok()?,
        )],
        Op::Identity
        | Op::Cast { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. } => v(0)?.clone(),
        Op::Concat { .. } => (0..ctx.ins.len())
            .map(|i| v(i).cloned())
            .collect::<Option<Vec<_>>>()?
            .concat(),
        Op::Gather { axis }
            if ctx.ins.first().copied()??.shape.rank() == 1 && (*axis == 0 || *axis == -1) =>
        {
            let data = v(0)?;
            let n = data.len() as i64;
            v(1)?
                .iter()
                .map(|i| {
                    let i = i.as_int()?;
                    let i = if i < 0 { i + n } else { i };
                    data.get(usize::try_from(i).ok()?).cloned()
                })
                .collect::<Option<_>>()?
        }
        Op::Slice if ctx.ins.first().copied()??.shape.rank() == 1 => {
            let data = v(0)?;
            let &[(_, s, e, step)] = rules::slice_params(ctx, 1).ok()?.as_slice() else {
                return None;
            };
            let n = rules::slice_len(data.len(), s, e, step).ok()?;
            let first = rules::slice_start(data.len(), s, step) as i64;
            (0..n as i64)
                .map(|k| data.get((first + k * step) as usize).cloned())
                .collect::<Option<_>>()?
        }
        Op::Binary(b) => {
            let op = match b {
                BinaryOp::Add => '+',
                BinaryOp::Sub => '-',
                BinaryOp::Mul => '*',
                BinaryOp::Div => '/',
                _ => return None,
            };
            let (x, y) = (v(0)?, v(1)?);
            let n = x.len().max(y.len());
            if (x.len() != n && x.len() != 1) || (y.len() != n && y.len() != 1) {
                return None;
            }
            let at = |s: &[SymInt], i: usize| s[if s.len() == 1 { 0 } else { i }].clone();
            (0..n)
                .map(|i| dims::int_binary(op, &at(x, i), &at(y, i)).ok())
                .collect::<Option<_>>()?
        }
        _ => return None,
    };
    let n = out.shape.numel();
    (r.len() <= VALUE_LIMIT && n.is_none_or(|n| n == r.len())).then_some(r)
}

#[cfg(test)]
pub(crate) mod tests;
