//! Per-op type rules: the output types of one node from its input types and,
//! for ops whose shape depends on operand values, those values.
//!
//! Shape rules follow the ONNX operator spec. Known dims are checked; a
//! symbolic dim passes any check that only a run-time value could fail.

use super::dims::{self, SymInt};
use super::nn::{attention, conv, gemm, matmul, pool, resample, resize};
use crate::dtype::DType;
use crate::graph::{Node, TypeInfo};
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::shape::{Dim, Shape, broadcast, normalize_axis};
use crate::tensor::Tensor;

/// Why a rule could not give the output types.
#[derive(Debug)]
pub(crate) enum RuleError {
    /// The node is ill-typed.
    Invalid(String),
    /// The output shape depends on the value of this (non-constant) input.
    NeedsValue(usize),
}

impl RuleError {
    pub fn message(&self) -> String {
        match self {
            RuleError::Invalid(s) => s.clone(),
            RuleError::NeedsValue(i) => format!("shape depends on the run-time value of input {i}"),
        }
    }
}

impl From<String> for RuleError {
    fn from(s: String) -> Self {
        RuleError::Invalid(s)
    }
}

impl From<&str> for RuleError {
    fn from(s: &str) -> Self {
        RuleError::Invalid(s.to_string())
    }
}

pub(crate) type R<T> = Result<T, RuleError>;

pub(super) fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(RuleError::Invalid(msg.into()))
}

/// What a rule knows about one node's operands.
pub(crate) struct Ctx<'a> {
    pub node: &'a Node,
    /// Operand types; `None` for an omitted optional operand.
    pub ins: Vec<Option<&'a TypeInfo>>,
    /// Constant operand values, where known.
    pub consts: Vec<Option<&'a Tensor>>,
    /// Integer operand values (possibly symbolic), where known.
    pub vals: Vec<Option<Vec<SymInt>>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn present(&self, i: usize) -> bool {
        matches!(self.ins.get(i), Some(Some(_)))
    }

    pub(super) fn opt(&self, i: usize) -> Option<&'a TypeInfo> {
        self.ins.get(i).copied().flatten()
    }

    pub(super) fn ty(&self, i: usize) -> R<&'a TypeInfo> {
        self.opt(i)
            .ok_or_else(|| RuleError::Invalid(format!("required input {i} is missing")))
    }

    /// Integer values (maybe symbolic) of input `i`; `None` when omitted.
    pub(super) fn sym_ints(&self, i: usize) -> R<Option<&[SymInt]>> {
        let Some(t) = self.opt(i) else {
            return Ok(None);
        };
        if !t.dtype.is_int() {
            return bad(format!(
                "input {i} must be an integer tensor, not {}",
                t.dtype
            ));
        }
        match self.vals.get(i) {
            Some(Some(v)) => Ok(Some(v)),
            _ => Err(RuleError::NeedsValue(i)),
        }
    }

    /// Integer values of input `i`, all of which must be known numbers.
    pub(super) fn ints(&self, i: usize) -> R<Option<Vec<i64>>> {
        match self.sym_ints(i)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(SymInt::as_int)
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or(RuleError::NeedsValue(i)),
        }
    }

    /// Values of input `i` as f64; `None` when omitted.
    pub(super) fn floats(&self, i: usize) -> R<Option<Vec<f64>>> {
        if !self.present(i) {
            return Ok(None);
        }
        match self.consts.get(i) {
            Some(Some(t)) => Ok(Some(t.to_f64_vec())),
            _ => Err(RuleError::NeedsValue(i)),
        }
    }
}

pub(super) fn ti(dtype: DType, dims: Vec<Dim>) -> TypeInfo {
    TypeInfo {
        dtype,
        shape: Shape(dims),
    }
}

pub(super) fn same_dtype(a: &TypeInfo, b: &TypeInfo) -> R<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        bad(format!("operand dtypes differ: {} vs {}", a.dtype, b.dtype))
    }
}

fn need_dtype(t: &TypeInfo, what: &str, ok: impl Fn(DType) -> bool) -> R<()> {
    if ok(t.dtype) {
        Ok(())
    } else {
        bad(format!("{what} cannot be {}", t.dtype))
    }
}

pub(super) fn axis(a: i64, rank: usize) -> R<usize> {
    Ok(normalize_axis(a, rank)?)
}

/// Normalised, duplicate-free axes.
pub(super) fn axes(list: &[i64], rank: usize) -> R<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, rank)?;
        if out.contains(&a) {
            return bad(format!("axis {a} is repeated"));
        }
        out.push(a);
    }
    Ok(out)
}

fn int_to_dim(v: i64) -> R<Dim> {
    Ok(SymInt::Int(v).to_dim()?)
}

pub(super) fn known_eq(a: &Dim, b: &Dim, what: &str) -> R<Dim> {
    dims::unify(a, b).ok_or_else(|| RuleError::Invalid(format!("{what} differ: {a} vs {b}")))
}

/// Output types of `c.node`. Ops with optional outputs give as many as the
/// node has; the caller checks the count.
pub(crate) fn infer_node(c: &Ctx) -> R<Vec<TypeInfo>> {
    let node = c.node;
    let n_out = node.outputs.len();
    let x = || c.ty(0);
    let same = || x().cloned();
    let one = |t: TypeInfo| Ok(vec![t]);
    match &node.op {
        Op::Input => bad("graph input has no declared type"),
        Op::Const(t) => one(ti(t.dtype(), Shape::known(t.shape()).0)),
        Op::Identity
        | Op::Gelu { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::InstanceNorm { .. }
        | Op::RmsNorm { .. } => one(same()?),
        Op::Unary(u) => one(unary(*u, x()?)?),
        Op::Binary(b) => one(binary(*b, x()?, c.ty(1)?)?),
        Op::Variadic(_) => {
            let mut acc = x()?.clone();
            for i in 1..c.ins.len() {
                let t = c.ty(i)?;
                same_dtype(&acc, t)?;
                acc.shape = broadcast(&acc.shape, &t.shape)?;
            }
            one(acc)
        }
        Op::Clip => {
            for i in 1..3 {
                if let Some(t) = c.opt(i) {
                    same_dtype(x()?, t)?;
                }
            }
            one(same()?)
        }
        Op::Where => {
            let (cond, a, b) = (x()?, c.ty(1)?, c.ty(2)?);
            need_dtype(cond, "Where's condition", |d| d == DType::Bool)?;
            same_dtype(a, b)?;
            let s = broadcast(&broadcast(&cond.shape, &a.shape)?, &b.shape)?;
            one(ti(a.dtype, s.0))
        }
        Op::Cast { to } => one(ti(*to, x()?.shape.0.clone())),
        Op::CastLike => one(ti(c.ty(1)?.dtype, x()?.shape.0.clone())),
        Op::Softmax { axis: a, .. } => {
            axis(*a, x()?.shape.rank())?;
            one(same()?)
        }
        Op::Reduce {
            axes: attr,
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let t = x()?;
            let list = match attr {
                Some(a) => Some(a.clone()),
                None => c.ints(1)?,
            };
            let r = t.shape.rank();
            let list = match list {
                Some(l) if !l.is_empty() => axes(&l, r)?,
                _ if *noop_with_empty_axes => return one(t.clone()),
                _ => (0..r).collect(),
            };
            one(ti(t.dtype, reduced(&t.shape, &list, *keepdims)))
        }
        Op::ArgReduce {
            axis: a, keepdims, ..
        } => {
            let t = x()?;
            let a = axis(*a, t.shape.rank())?;
            one(ti(DType::I64, reduced(&t.shape, &[a], *keepdims)))
        }
        Op::LayerNorm {
            axis: a,
            stash_type,
            ..
        } => {
            let t = x()?;
            same_dtype(t, c.ty(1)?)?;
            if let Some(b) = c.opt(2) {
                same_dtype(t, b)?;
            }
            let a = axis(*a, t.shape.rank())?;
            let stash = onnx_dtype(*stash_type).unwrap_or(DType::F32);
            let mut stat = t.shape.0[..a].to_vec();
            stat.resize(t.shape.rank(), Dim::Known(1));
            let mut v = vec![t.clone()];
            v.extend((1..n_out.min(3)).map(|_| ti(stash, stat.clone())));
            Ok(v)
        }
        Op::GroupNorm { num_groups, .. } => {
            let t = x()?;
            if t.shape.rank() < 2 {
                return bad("GroupNormalization needs an input of rank ≥ 2");
            }
            if *num_groups == 0 {
                return bad("num_groups is 0");
            }
            if let Dim::Known(ch) = t.shape.0[1]
                && ch % num_groups != 0
            {
                return bad(format!(
                    "{ch} channels do not split into {num_groups} groups"
                ));
            }
            one(t.clone())
        }
        Op::MatMul => one(matmul(x()?, c.ty(1)?)?),
        Op::Gemm {
            trans_a, trans_b, ..
        } => one(gemm(x()?, c.ty(1)?, c.opt(2), *trans_a, *trans_b)?),
        Op::Attention(a) => attention(c, a, n_out),
        Op::Conv { window, group } => one(conv(c, window, *group)?),
        Op::AveragePool {
            window, ceil_mode, ..
        } => one(pool(c, window, *ceil_mode)?),
        Op::MaxPool { window, ceil_mode } => {
            let y = pool(c, window, *ceil_mode)?;
            let idx = ti(DType::I64, y.shape.0.clone());
            Ok(if n_out > 1 { vec![y, idx] } else { vec![y] })
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let t = x()?;
            if t.shape.rank() < 3 {
                return bad("global pooling needs an input of rank ≥ 3");
            }
            let mut d = t.shape.0[..2].to_vec();
            d.resize(t.shape.rank(), Dim::Known(1));
            one(ti(t.dtype, d))
        }
        Op::Resize(a) => one(resize(c, a)?),
        Op::Resample { maps } => one(resample(c, maps)?),
        Op::Reshape { allowzero } => one(reshape(c, *allowzero)?),
        Op::Transpose { perm } => {
            let t = x()?;
            let r = t.shape.rank();
            let perm = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            let mut seen = vec![false; r];
            if perm.len() != r
                || perm
                    .iter()
                    .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
            {
                return bad(format!("perm {perm:?} is not a permutation of {r} axes"));
            }
            one(ti(
                t.dtype,
                perm.iter().map(|&p| t.shape.0[p].clone()).collect(),
            ))
        }
        Op::Concat { axis: a } => one(concat(c, *a)?),
        Op::Split {
            axis: a,
            split,
            num_outputs,
        } => split_rule(c, *a, split.as_deref(), *num_outputs),
        Op::Slice => one(slice(c)?),
        Op::Squeeze { axes: attr } => one(squeeze(c, attr.as_deref())?),
        Op::Unsqueeze { axes: attr } => {
            let t = x()?;
            let list = match attr {
                Some(a) => a.clone(),
                None => c.ints(1)?.ok_or("Unsqueeze needs axes")?,
            };
            let r = t.shape.rank() + list.len();
            let ax = axes(&list, r)?;
            let mut src = t.shape.0.iter();
            let d = (0..r)
                .map(|i| {
                    if ax.contains(&i) {
                        Dim::Known(1)
                    } else {
                        src.next().cloned().unwrap_or(Dim::Known(1))
                    }
                })
                .collect();
            one(ti(t.dtype, d))
        }
        Op::Flatten { axis: a } => {
            let t = x()?;
            // Flatten's axis lies in [-r, r]; a negative one counts from r.
            let r = t.shape.rank() as i64;
            let a = if *a < 0 { *a + r } else { *a };
            if !(0..=r).contains(&a) {
                return Err(format!("axis {a} is out of range for rank {r}").into());
            }
            let a = a as usize;
            let d = vec![
                dims::product(&t.shape.0[..a])?,
                dims::product(&t.shape.0[a..])?,
            ];
            one(ti(t.dtype, d))
        }
        Op::Expand => {
            let t = x()?;
            let target = sym_dims(c.sym_ints(1)?.ok_or("Expand needs a shape")?)?;
            one(ti(t.dtype, broadcast(&t.shape, &Shape(target))?.0))
        }
        Op::Tile => {
            let t = x()?;
            let reps = c.ints(1)?.ok_or("Tile needs repeats")?;
            if reps.len() != t.shape.rank() {
                return bad(format!(
                    "{} repeats for rank {}",
                    reps.len(),
                    t.shape.rank()
                ));
            }
            let d = t
                .shape
                .0
                .iter()
                .zip(&reps)
                .map(|(d, &r)| Ok(dims::mul(d, &int_to_dim(r)?)?));
            one(ti(t.dtype, d.collect::<R<_>>()?))
        }
        Op::Pad { .. } => one(pad(c)?),
        Op::Shape { start, end } => {
            let (s, e) = shape_range(x()?.shape.rank(), *start, *end);
            one(ti(DType::I64, vec![Dim::Known(e - s)]))
        }
        Op::Size => one(ti(DType::I64, vec![])),
        Op::ConstantOfShape { value } => {
            let target = sym_dims(c.sym_ints(0)?.ok_or("ConstantOfShape needs a shape")?)?;
            one(ti(value.dtype(), target))
        }
        Op::Range => one(range(c)?),
        Op::Gather { axis: a } => {
            let (t, idx) = (x()?, c.ty(1)?);
            need_dtype(idx, "indices", |d| matches!(d, DType::I64 | DType::I32))?;
            let a = axis(*a, t.shape.rank())?;
            let mut d = t.shape.0[..a].to_vec();
            d.extend(idx.shape.0.iter().cloned());
            d.extend(t.shape.0[a + 1..].iter().cloned());
            one(ti(t.dtype, d))
        }
        Op::GatherElements { axis: a } => {
            let (t, idx) = (x()?, c.ty(1)?);
            need_dtype(idx, "indices", |d| matches!(d, DType::I64 | DType::I32))?;
            axis(*a, t.shape.rank())?;
            if idx.shape.rank() != t.shape.rank() {
                return bad("indices and data ranks differ");
            }
            one(ti(t.dtype, idx.shape.0.clone()))
        }
        Op::GatherND { batch_dims } => {
            let (t, idx) = (x()?, c.ty(1)?);
            need_dtype(idx, "indices", |d| matches!(d, DType::I64 | DType::I32))?;
            let q = idx.shape.rank();
            let m = match idx.shape.0.last() {
                Some(Dim::Known(m)) => *m,
                _ => return bad("the last dim of GatherND's indices must be known"),
            };
            let b = *batch_dims;
            if b >= q || b + m > t.shape.rank() {
                return bad("GatherND's indices do not fit the data's rank");
            }
            let mut d = idx.shape.0[..q - 1].to_vec();
            d.extend(t.shape.0[b + m..].iter().cloned());
            one(ti(t.dtype, d))
        }
        Op::Trilu { .. } => {
            if x()?.shape.rank() < 2 {
                return bad("Trilu needs an input of rank ≥ 2");
            }
            if let Some(k) = c.opt(1) {
                need_dtype(k, "k", |d| d == DType::I64)?;
            }
            one(same()?)
        }
        Op::CumSum { .. } => {
            need_dtype(c.ty(1)?, "CumSum's axis", DType::is_int)?;
            one(same()?)
        }
    }
}

/// ONNX TensorProto data-type codes of the float types a stash may use.
pub(crate) fn onnx_dtype(code: i64) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        10 => DType::F16,
        11 => DType::F64,
        16 => DType::BF16,
        _ => return None,
    })
}

fn sym_dims(v: &[SymInt]) -> R<Vec<Dim>> {
    Ok(v.iter().map(SymInt::to_dim).collect::<Result<_, _>>()?)
}

fn unary(u: UnaryOp, t: &TypeInfo) -> R<TypeInfo> {
    match u {
        UnaryOp::Not => need_dtype(t, "Not's operand", |d| d == DType::Bool).map(|_| t.clone()),
        UnaryOp::IsNaN | UnaryOp::IsInf => {
            need_dtype(t, "the operand", DType::is_float)?;
            Ok(ti(DType::Bool, t.shape.0.clone()))
        }
        _ => Ok(t.clone()),
    }
}

fn binary(b: BinaryOp, x: &TypeInfo, y: &TypeInfo) -> R<TypeInfo> {
    // Pow's exponent may have its own type; everything else is homogeneous.
    if b != BinaryOp::Pow {
        same_dtype(x, y)?;
    }
    if matches!(b, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor) {
        need_dtype(x, "a logical operand", |d| d == DType::Bool)?;
    }
    let shape = broadcast(&x.shape, &y.shape)?;
    let dtype = if b.yields_bool() {
        DType::Bool
    } else {
        x.dtype
    };
    Ok(TypeInfo { dtype, shape })
}

fn reduced(s: &Shape, axes: &[usize], keepdims: bool) -> Vec<Dim> {
    s.0.iter()
        .enumerate()
        .filter_map(|(i, d)| match axes.contains(&i) {
            false => Some(d.clone()),
            true if keepdims => Some(Dim::Known(1)),
            true => None,
        })
        .collect()
}

fn reshape(c: &Ctx, allowzero: bool) -> R<TypeInfo> {
    let x = c.ty(0)?;
    let target = c.sym_ints(1)?.ok_or("Reshape needs a shape")?;
    let mut infer_at = None;
    let mut out = Vec::with_capacity(target.len());
    for (i, v) in target.iter().enumerate() {
        out.push(match v {
            SymInt::Int(-1) if infer_at.is_some() => return bad("more than one -1 in the shape"),
            SymInt::Int(-1) => {
                infer_at = Some(i);
                Dim::Known(1)
            }
            SymInt::Int(0) if allowzero && target.contains(&SymInt::Int(-1)) => {
                return bad("allowzero shape has both 0 and -1");
            }
            SymInt::Int(0) if !allowzero => x.shape.0.get(i).cloned().ok_or_else(|| {
                format!(
                    "shape entry {i} is 0 but the input has rank {}",
                    x.shape.rank()
                )
            })?,
            v => v.to_dim()?,
        });
    }
    let Some(((ka, sa), (kb, sb))) = dims::cancel(&x.shape.0, &out) else {
        return bad("element count overflows");
    };
    match infer_at {
        Some(i) if sb.is_empty() => {
            if kb == 0 || ka % kb != 0 {
                return bad(format!("cannot reshape {} to {target:?}", x.shape));
            }
            let mut d = Dim::Known(ka / kb);
            for s in &sa {
                d = dims::mul(&Dim::Sym(s.clone()), &d)?;
            }
            out[i] = d;
        }
        Some(i) => out[i] = dims::opaque(&c.node.name, i),
        None if sa.is_empty() && sb.is_empty() && ka != kb => {
            return bad(format!(
                "cannot reshape {} ({ka} elements) to {} ({kb} elements)",
                x.shape,
                Shape(out)
            ));
        }
        None => {}
    }
    Ok(ti(x.dtype, out))
}

fn concat(c: &Ctx, a: i64) -> R<TypeInfo> {
    let first = c.ty(0)?;
    let r = first.shape.rank();
    let a = axis(a, r)?;
    let mut out = first.shape.0.clone();
    for i in 1..c.ins.len() {
        let t = c.ty(i)?;
        same_dtype(first, t)?;
        if t.shape.rank() != r {
            return bad(format!(
                "input {i} has rank {}, input 0 rank {r}",
                t.shape.rank()
            ));
        }
        for (j, d) in t.shape.0.iter().enumerate() {
            out[j] = if j == a {
                dims::add(&out[j], d)?
            } else {
                known_eq(&out[j], d, "non-axis dims")?
            };
        }
    }
    Ok(ti(first.dtype, out))
}

fn split_rule(c: &Ctx, a: i64, split: Option<&[i64]>, num_outputs: usize) -> R<Vec<TypeInfo>> {
    let x = c.ty(0)?;
    let a = axis(a, x.shape.rank())?;
    let dim = &x.shape.0[a];
    let n = c.node.outputs.len();
    let sizes: Vec<Dim> = match split.map(<[i64]>::to_vec).or(c.ints(1)?) {
        Some(s) => {
            if s.len() != n {
                return bad(format!("{} split sizes for {n} outputs", s.len()));
            }
            let sizes: Vec<Dim> = s.iter().map(|&v| int_to_dim(v)).collect::<R<_>>()?;
            let total = sizes
                .iter()
                .try_fold(Dim::Known(0), |acc, d| dims::add(&acc, d))?;
            known_eq(dim, &total, "split sizes' sum and the axis extent")?;
            sizes
        }
        None => {
            let parts = if num_outputs > 0 { num_outputs } else { n };
            if parts != n || n == 0 {
                return bad(format!(
                    "num_outputs is {parts} but the node has {n} outputs"
                ));
            }
            match dim {
                Dim::Known(d) => {
                    let chunk = d.div_ceil(n);
                    let last = d
                        .checked_sub(chunk * (n - 1))
                        .ok_or_else(|| format!("{d} does not split into {n} parts"))?;
                    let mut v = vec![Dim::Known(chunk); n - 1];
                    v.push(Dim::Known(last));
                    v
                }
                d => vec![dims::div_exact(d, n)?; n],
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = x.shape.0.clone();
            d[a] = s;
            ti(x.dtype, d)
        })
        .collect())
}

/// Number of elements ONNX Slice takes from an axis of extent `dim`.
pub(crate) fn slice_len(dim: usize, start: i64, end: i64, step: i64) -> Result<usize, String> {
    if step == 0 {
        return Err("slice step is 0".into());
    }
    let (d, step) = (dim as i128, step as i128);
    let fix = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (s, e) = (fix(start), fix(end));
    let n = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (e - s + step - 1).div_euclid(step)
    } else {
        let (s, e) = (s.max(0).min(d - 1), e.max(-1).min(d - 1));
        (s - e + (-step) - 1).div_euclid(-step)
    };
    Ok(n.max(0) as usize)
}

/// Index of the first element a slice takes (valid when its length is > 0).
pub(crate) fn slice_start(dim: usize, start: i64, step: i64) -> usize {
    let d = dim as i128;
    let s = if start < 0 {
        start as i128 + d
    } else {
        start as i128
    };
    let s = if step > 0 {
        s.clamp(0, d)
    } else {
        s.max(0).min(d - 1)
    };
    s.max(0) as usize
}

/// The per-axis (axis, start, end, step) of a Slice node.
pub(crate) fn slice_params(c: &Ctx, rank: usize) -> R<Vec<(usize, i64, i64, i64)>> {
    let starts = c.ints(1)?.ok_or("Slice needs starts")?;
    let ends = c.ints(2)?.ok_or("Slice needs ends")?;
    let ax = match c.ints(3)? {
        Some(a) => axes(&a, rank)?,
        None => (0..starts.len()).collect(),
    };
    let steps = c.ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || ax.len() != starts.len() || steps.len() != starts.len() {
        return bad("starts, ends, axes and steps differ in length");
    }
    if ax.iter().any(|&a| a >= rank) {
        return bad("slice axis out of range");
    }
    Ok((0..starts.len())
        .map(|i| (ax[i], starts[i], ends[i], steps[i]))
        .collect())
}

fn slice(c: &Ctx) -> R<TypeInfo> {
    let x = c.ty(0)?;
    let mut out = x.shape.0.clone();
    for (a, s, e, st) in slice_params(c, x.shape.rank())? {
        out[a] = match &x.shape.0[a] {
            Dim::Known(d) => Dim::Known(slice_len(*d, s, e, st)?),
            d if s == 0 && st == 1 && e >= i32::MAX as i64 => d.clone(),
            _ if st == 0 => return bad("slice step is 0"),
            _ => dims::opaque(&c.node.name, a),
        };
    }
    Ok(ti(x.dtype, out))
}

fn squeeze(c: &Ctx, attr: Option<&[i64]>) -> R<TypeInfo> {
    let x = c.ty(0)?;
    let list = match attr {
        Some(a) => Some(a.to_vec()),
        None => c.ints(1)?,
    };
    let drop = match list {
        Some(l) => {
            let ax = axes(&l, x.shape.rank())?;
            if let Some(&a) = ax
                .iter()
                .find(|&&a| matches!(x.shape.0[a], Dim::Known(n) if n != 1))
            {
                return bad(format!(
                    "cannot squeeze axis {a} of extent {}",
                    x.shape.0[a]
                ));
            }
            ax
        }
        None if x.shape.0.iter().any(|d| matches!(d, Dim::Sym(_))) => {
            return bad(format!(
                "Squeeze without axes over symbolic shape {}",
                x.shape
            ));
        }
        None => (0..x.shape.rank())
            .filter(|&i| x.shape.0[i] == Dim::Known(1))
            .collect(),
    };
    Ok(ti(x.dtype, reduced(&x.shape, &drop, false)))
}

fn pad(c: &Ctx) -> R<TypeInfo> {
    let x = c.ty(0)?;
    let r = x.shape.rank();
    let pads = c.ints(1)?.ok_or("Pad needs pads")?;
    let ax = match c.ints(3)? {
        Some(a) => axes(&a, r)?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * ax.len() {
        return bad(format!("{} pads for {} axes", pads.len(), ax.len()));
    }
    if let Some(v) = c.opt(2) {
        same_dtype(x, v)?;
    }
    let mut out = x.shape.0.clone();
    for (i, &a) in ax.iter().enumerate() {
        let total = pads[i]
            .checked_add(pads[i + ax.len()])
            .ok_or("pads overflow")?;
        out[a] = dims::add_signed(&out[a], total)?;
    }
    Ok(ti(x.dtype, out))
}

/// The [start, end) range of dims ONNX Shape returns.
pub(crate) fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (fix(start), fix(end.unwrap_or(r)));
    (s, e.max(s))
}

fn range(c: &Ctx) -> R<TypeInfo> {
    let t = c.ty(0)?;
    for i in 1..3 {
        same_dtype(t, c.ty(i)?)?;
        if c.ty(i)?.shape.rank() != 0 {
            return bad("Range operands must be scalars");
        }
    }
    let n = if t.dtype.is_int() {
        let v = |i| c.sym_ints(i).map(|v| v.and_then(|v| v.first().cloned()));
        match (v(0)?, v(1)?, v(2)?) {
            (Some(SymInt::Int(s)), Some(SymInt::Int(l)), Some(SymInt::Int(d))) => {
                if d == 0 {
                    return bad("Range delta is 0");
                }
                // ceil((l - s) / d), with the signs folded into a positive divisor.
                let (num, den) = if d > 0 {
                    (l as i128 - s as i128, d as i128)
                } else {
                    (s as i128 - l as i128, -(d as i128))
                };
                let n = (num + den - 1).div_euclid(den).max(0);
                if n > dims::MAX_ELEMS as i128 {
                    return bad(format!("Range of {n} elements is too large"));
                }
                Dim::Known(n as usize)
            }
            (Some(SymInt::Int(0)), Some(l @ SymInt::Sym(_)), Some(SymInt::Int(1))) => l.to_dim()?,
            (Some(SymInt::Int(_)), Some(SymInt::Int(_)), _) => {
                return Err(RuleError::NeedsValue(2));
            }
            (Some(SymInt::Int(_)), _, _) => return Err(RuleError::NeedsValue(1)),
            _ => return Err(RuleError::NeedsValue(0)),
        }
    } else {
        let v = |i| {
            c.floats(i)
                .map(|v| v.and_then(|v| v.first().copied()).unwrap_or(f64::NAN))
        };
        let (s, l, d) = (v(0)?, v(1)?, v(2)?);
        if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
            return bad("Range needs finite operands and a nonzero delta");
        }
        let n = ((l - s) / d).ceil().max(0.0);
        if n > dims::MAX_ELEMS as f64 {
            return bad(format!("Range of {n} elements is too large"));
        }
        Dim::Known(n as usize)
    };
    Ok(ti(t.dtype, vec![n]))
}
