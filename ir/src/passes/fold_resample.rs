//! `fold-resample`: every constant linear resampling becomes one
//! [`Op::Resample`] (per-axis matrices, var-flowar.md §5.6–5.7), and chains
//! of them compose into one.
//!
//! 1. **Resize / AveragePool.** A float Resize with constant roi, scales and
//!    sizes (no `tf_crop_and_resize` fill), and AveragePool with kernel =
//!    stride and no padding, become Resample with their per-axis maps.
//! 2. **Exporter area subgraphs.** torch's dynamo exporter writes
//!    `F.interpolate(mode='area')` with non-dividing sizes as
//!    `Transpose → GatherND(const) → Transpose → ReduceMean` (uniform
//!    windows) or `… → Where(mask, 0, ·) → Gather … Add … → Div` (variable
//!    windows). Rather than matching those literally, the pass takes the
//!    data operand `X` of each Gather/GatherND with constant indices and
//!    follows forward every node that is linear in `X` with constant
//!    operands (layout ops, Gather/GatherND/Slice with constant indices,
//!    Where against a zero constant, ReduceSum/ReduceMean, Add/Sub of two
//!    such values, Mul/Div by a constant, Neg). Each value there is
//!    evaluated exactly as a tensor of sparse linear forms over `X`'s
//!    elements (data movement through the constant folder on an index
//!    tensor, so op semantics stay in the reference interpreter). A value of
//!    `X`'s rank whose forms factor as `⊗_d R_d` — checked on every output
//!    element, so the factorisation is proved, not sampled — is `Resample(X)`
//!    with those `R_d`; the last such value on each path is rewritten.
//! 3. **Composition.** `Resample(Resample(x))` where the inner one has no
//!    other user becomes one Resample with `R_d = R_d^outer · R_d^inner`
//!    (FlowAR's `area(bicubic(·))`).

use super::matchers::{add, konst, out0, shape};
use super::resample::{describe, maps};
use super::{Pass, PassCx, PassReport, eliminate_dead};
use crate::error::IrError;
use crate::graph::{Graph, Node, NodeId, ValueRef};
use crate::op::{BinaryOp, Op, ReduceKind, UnaryOp};
use crate::resample::AxisMap;
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

pub struct FoldResample;

/// Largest source tensor, and largest intermediate, the linear-form
/// evaluation takes on (elements).
const MAX_SOURCE: usize = 1 << 18;
const MAX_ELEMS: usize = 1 << 20;
/// Largest number of (source, weight) terms held over a whole region.
const MAX_TERMS: usize = 1 << 23;

impl Pass for FoldResample {
    fn name(&self) -> &'static str {
        "fold-resample"
    }
    fn about(&self) -> &'static str {
        "constant Resize, AveragePool(k=s) and exporter area subgraphs → Resample; compose chains"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        // Dead originals would count as users when composing: drop them
        // after each phase.
        convert_resamples(g, cx, &mut rep, self.name());
        eliminate_dead(g);
        fold_linear_regions(g, cx, &mut rep, self.name());
        eliminate_dead(g);
        compose_chains(g, cx, &mut rep, self.name());
        eliminate_dead(g);
        Ok(rep)
    }
}

/// `None` for identity maps (the canonical form of `Op::Resample`).
fn to_slots(maps: Vec<AxisMap>) -> Vec<Option<AxisMap>> {
    maps.into_iter()
        .map(|m| (!m.is_identity()).then_some(m))
        .collect()
}

fn describe_slots(maps: &[Option<AxisMap>]) -> String {
    let axes: Vec<String> = maps
        .iter()
        .enumerate()
        .filter_map(|(d, m)| {
            let m = m.as_ref()?;
            Some(format!(
                "axis {d}: {}→{} ({} taps)",
                m.in_len,
                m.out_len,
                m.max_taps()
            ))
        })
        .collect();
    if axes.is_empty() {
        "identity".into()
    } else {
        axes.join(", ")
    }
}

fn is_float(g: &Graph, v: ValueRef) -> bool {
    g.value(v).ty.as_ref().is_some_and(|t| t.dtype.is_float())
}

/// Adds `Resample(x)` named after `name` and points the uses of `old` at it.
fn emit(g: &mut Graph, name: &str, x: ValueRef, maps: Vec<Option<AxisMap>>, old: ValueRef) {
    let new = add(
        g,
        &format!("{name}_resample"),
        Op::Resample { maps },
        &[Some(x)],
    );
    super::matchers::replace(g, old, new);
}

fn convert_resamples(g: &mut Graph, cx: &mut PassCx, rep: &mut PassReport, pass: &str) {
    let ids: Vec<NodeId> = g
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::Resize(_) | Op::AveragePool { .. }))
        .map(|(id, _)| id)
        .collect();
    for id in ids {
        let name = g.node(id).name.clone();
        let (x, m) = match maps(g, cx, id) {
            Ok(v) => v,
            Err(why) => {
                rep.skip(&name, format!("not a constant linear map: {why}"));
                continue;
            }
        };
        if !is_float(g, x) || !is_float(g, out0(id)) {
            rep.skip(&name, "not on floats (integer resizes round)");
            continue;
        }
        if m.iter().any(AxisMap::has_fill) {
            rep.skip(&name, "tf_crop_and_resize fill outputs are not linear");
            continue;
        }
        let what = format!("{} → Resample ({})", g.node(id).op.kind(), describe(&m));
        if !cx.allow(pass, &name, &what) {
            continue;
        }
        rep.fire(&name, what);
        let slots = to_slots(m);
        if slots.iter().all(Option::is_none) {
            super::matchers::replace(g, out0(id), x);
        } else {
            emit(g, &name, x, slots, out0(id));
        }
    }
}

fn compose_chains(g: &mut Graph, cx: &mut PassCx, rep: &mut PassReport, pass: &str) {
    let Ok(order) = g.topo_order() else { return };
    for id in order {
        if g.get(id).is_none() {
            continue;
        }
        let Op::Resample { maps: outer } = &g.node(id).op else {
            continue;
        };
        let Some(y) = g.node(id).inputs[0] else {
            continue;
        };
        let Op::Resample { maps: inner } = &g.node(y.node).op else {
            continue;
        };
        let name = g.node(id).name.clone();
        let inner_name = g.node(y.node).name.clone();
        if g.consumers(y).len() != 1 || g.outputs.contains(&y) {
            rep.skip(
                &name,
                format!("'{inner_name}' has other users: both results are needed"),
            );
            continue;
        }
        let composed: Result<Vec<Option<AxisMap>>, String> = outer
            .iter()
            .zip(inner)
            .map(|(o, i)| match (o, i) {
                (None, None) => Ok(None),
                (Some(o), None) => Ok(Some(o.clone())),
                (None, Some(i)) => Ok(Some(i.clone())),
                (Some(o), Some(i)) => o.compose(i).map(Some),
            })
            .collect();
        let composed = match composed {
            Ok(c) => c,
            Err(why) => {
                rep.skip(
                    &name,
                    format!("does not compose with '{inner_name}': {why}"),
                );
                continue;
            }
        };
        let composed: Vec<Option<AxisMap>> = composed
            .into_iter()
            .map(|m| m.filter(|m| !m.is_identity()))
            .collect();
        let what = format!(
            "composed with '{inner_name}' into one ({})",
            describe_slots(&composed)
        );
        if !cx.allow(pass, &name, &what) {
            continue;
        }
        rep.fire(&name, what);
        let x = g.node(y.node).inputs[0].expect("operand");
        // Rewrite in place so that a later node of the chain sees the result.
        g.node_mut(id).op = Op::Resample { maps: composed };
        g.set_input(id, 0, Some(x));
    }
}

// ------------------------------------------------------------ linear regions

/// A tensor whose elements are sparse linear forms over the source's
/// elements: `rows[k]` = (source flat index, weight), indices ascending.
#[derive(Clone)]
struct Lin {
    shape: Vec<usize>,
    rows: Rows,
}

/// Sparse rows in one allocation (row `k` is `terms[off[k]..off[k + 1]]`).
#[derive(Clone)]
struct Rows {
    off: Vec<usize>,
    terms: Vec<(u32, f64)>,
}

impl Rows {
    fn with_capacity(n: usize) -> Rows {
        let mut off = Vec::with_capacity(n + 1);
        off.push(0);
        Rows {
            off,
            terms: Vec::with_capacity(n),
        }
    }
    fn len(&self) -> usize {
        self.off.len() - 1
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, k: usize) -> Option<&[(u32, f64)]> {
        Some(&self.terms[*self.off.get(k)?..*self.off.get(k + 1)?])
    }
    fn row(&self, k: usize) -> &[(u32, f64)] {
        &self.terms[self.off[k]..self.off[k + 1]]
    }
    fn iter(&self) -> impl Iterator<Item = &[(u32, f64)]> {
        self.off.windows(2).map(|w| &self.terms[w[0]..w[1]])
    }
    fn push(&mut self, row: impl IntoIterator<Item = (u32, f64)>) {
        self.terms.extend(row);
        self.off.push(self.terms.len());
    }
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

fn iota(s: &[usize]) -> Tensor {
    let n = numel(s);
    Tensor::from_i64(s.to_vec(), (0..n as i64).collect()).expect("iota")
}

/// Appends `row` to `out` with equal indices summed and zeros dropped.
fn merge_into(row: &mut [(u32, f64)], out: &mut Rows) {
    row.sort_by_key(|t| t.0);
    let start = out.terms.len();
    for &(i, w) in row.iter() {
        let n = out.terms.len();
        if n > start && out.terms[n - 1].0 == i {
            out.terms[n - 1].1 += w;
        } else {
            out.terms.push((i, w));
        }
    }
    let mut k = start;
    for j in start..out.terms.len() {
        if out.terms[j].1 != 0.0 {
            out.terms[k] = out.terms[j];
            k += 1;
        }
    }
    out.terms.truncate(k);
    out.off.push(out.terms.len());
}

/// Flat index into `from` (broadcast to `to`) of every element of `to`.
fn bcast(from: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    if from.len() > to.len() {
        return None;
    }
    let pad = to.len() - from.len();
    let f: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(from.iter().copied())
        .collect();
    if f.iter().zip(to).any(|(&a, &b)| a != b && a != 1) {
        return None;
    }
    let strides = crate::shape::strides(&f);
    let n = numel(to);
    let mut out = Vec::with_capacity(n);
    let mut ix = vec![0usize; to.len()];
    for _ in 0..n {
        out.push(
            (0..to.len())
                .map(|d| if f[d] == 1 { 0 } else { ix[d] * strides[d] })
                .sum(),
        );
        for d in (0..to.len()).rev() {
            ix[d] += 1;
            if ix[d] < to[d] {
                break;
            }
            ix[d] = 0;
        }
    }
    Some(out)
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], d: usize| {
        let p = r - s.len();
        if d < p { 1 } else { s[d - p] }
    };
    (0..r)
        .map(|d| match (get(a, d), get(b, d)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

struct Region<'g, 'c> {
    g: &'g Graph,
    cx: &'g PassCx<'c>,
    lins: HashMap<ValueRef, Lin>,
    terms: usize,
}

/// A constant whose elements are all zero.
fn zero_const(t: &Tensor) -> bool {
    t.dtype().is_float() && t.to_f64_vec().iter().all(|&v| v == 0.0)
}

impl Region<'_, '_> {
    fn lin(&self, v: Option<ValueRef>) -> Option<&Lin> {
        self.lins.get(&v?)
    }

    /// The node evaluated on index tensors: `ins` replaces operand `slot`
    /// (the linear one); other operands are their constants.
    fn fold_indices(&self, node: &Node, slot: usize, idx: &Tensor) -> Option<Tensor> {
        let mut consts: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
        for (k, v) in node.inputs.iter().enumerate() {
            consts.push(match v {
                None => None,
                Some(_) if k == slot => Some(idx),
                Some(v) => Some(konst(self.g, self.cx, *v)?),
            });
        }
        let mut n = node.clone();
        n.outputs.truncate(1);
        self.cx.folder.fold(&n, &consts).ok()?.into_iter().next()
    }

    /// Rows picked by an index tensor (negative: an empty row).
    fn pick(&self, from: &Lin, idx: &Tensor) -> Option<Lin> {
        let iv = idx.to_i64_vec();
        let mut rows = Rows::with_capacity(iv.len());
        for &i in &iv {
            match usize::try_from(i) {
                Ok(i) => rows.push(from.rows.get(i)?.iter().copied()),
                Err(_) => rows.push([]),
            }
        }
        Some(Lin {
            shape: idx.shape().to_vec(),
            rows,
        })
    }

    /// The linear forms of `node`'s result, when it is linear in the
    /// region's values with constant other operands.
    fn eval(&self, node: &Node) -> Option<Lin> {
        let ins = &node.inputs;
        let nonconst: Vec<usize> = (0..ins.len())
            .filter(|&k| ins[k].is_some_and(|v| konst(self.g, self.cx, v).is_none()))
            .collect();
        let lin_at = |k: usize| self.lin(ins.get(k).copied().flatten());
        match &node.op {
            Op::Identity
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::Slice
            | Op::Expand
            | Op::Gather { .. }
            | Op::GatherND { .. } => {
                if nonconst != [0] {
                    return None;
                }
                let x = lin_at(0)?;
                let idx = self.fold_indices(node, 0, &iota(&x.shape))?;
                self.pick(x, &idx)
            }
            Op::Where => {
                // Where(cond, a, b): cond constant; each of a, b linear or a zero constant.
                if nonconst.contains(&0) || nonconst.is_empty() {
                    return None;
                }
                let mut parts: Vec<Option<&Lin>> = vec![];
                let mut enc: Vec<Tensor> = vec![];
                for k in [1, 2] {
                    let v = ins[k]?;
                    match (self.lins.get(&v), konst(self.g, self.cx, v)) {
                        (Some(l), _) => {
                            let n = numel(&l.shape) as i64;
                            // Rows of b are numbered after those of a.
                            let off =
                                parts.first().copied().flatten().map_or(0, |a| a.rows.len()) as i64;
                            parts.push(Some(l));
                            enc.push(
                                Tensor::from_i64(l.shape.clone(), (off..off + n).collect()).ok()?,
                            );
                        }
                        (None, Some(t)) if zero_const(t) => {
                            parts.push(None);
                            enc.push(
                                Tensor::from_i64(t.shape().to_vec(), vec![-1; t.numel()]).ok()?,
                            );
                        }
                        _ => return None,
                    }
                }
                let cond = konst(self.g, self.cx, ins[0]?)?;
                let mut n = node.clone();
                n.outputs.truncate(1);
                let out = self
                    .cx
                    .folder
                    .fold(&n, &[Some(cond), Some(&enc[0]), Some(&enc[1])])
                    .ok()?
                    .into_iter()
                    .next()?;
                let n1 = parts[0].map_or(0, |l| l.rows.len() as i64);
                let iv = out.to_i64_vec();
                let mut rows = Rows::with_capacity(iv.len());
                for &i in &iv {
                    if i < 0 {
                        rows.push([]);
                    } else if i < n1 {
                        rows.push(parts[0]?.rows.get(i as usize)?.iter().copied());
                    } else {
                        rows.push(parts[1]?.rows.get((i - n1) as usize)?.iter().copied());
                    }
                }
                Some(Lin {
                    shape: out.shape().to_vec(),
                    rows,
                })
            }
            Op::Unary(UnaryOp::Neg) => {
                let x = lin_at(0)?;
                let mut rows = Rows::with_capacity(x.rows.len());
                for r in x.rows.iter() {
                    rows.push(r.iter().map(|&(i, w)| (i, -w)));
                }
                Some(Lin {
                    shape: x.shape.clone(),
                    rows,
                })
            }
            Op::Binary(op @ (BinaryOp::Add | BinaryOp::Sub)) => {
                let (a, b) = (lin_at(0)?, lin_at(1)?);
                let s = broadcast_shape(&a.shape, &b.shape)?;
                let (ia, ib) = (bcast(&a.shape, &s)?, bcast(&b.shape, &s)?);
                let sign = if *op == BinaryOp::Sub { -1.0 } else { 1.0 };
                let mut rows = Rows::with_capacity(ia.len());
                let mut scratch = vec![];
                for (&i, &j) in ia.iter().zip(&ib) {
                    scratch.clear();
                    scratch.extend_from_slice(a.rows.row(i));
                    scratch.extend(b.rows.row(j).iter().map(|&(k, w)| (k, sign * w)));
                    merge_into(&mut scratch, &mut rows);
                }
                Some(Lin { shape: s, rows })
            }
            Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Div)) => {
                if nonconst.len() != 1 || (*op == BinaryOp::Div && nonconst[0] != 0) {
                    return None;
                }
                let k = nonconst[0];
                let x = lin_at(k)?;
                let c = konst(self.g, self.cx, ins[1 - k]?)?;
                if !c.dtype().is_float() {
                    return None;
                }
                let cv = c.to_f64_vec();
                let s = broadcast_shape(&x.shape, c.shape())?;
                let (ix, ic) = (bcast(&x.shape, &s)?, bcast(c.shape(), &s)?);
                let mut rows = Rows::with_capacity(ix.len());
                for (&i, &j) in ix.iter().zip(&ic) {
                    let f = match *op {
                        BinaryOp::Div if cv[j] == 0.0 => return None,
                        BinaryOp::Div => 1.0 / cv[j],
                        _ => cv[j],
                    };
                    rows.push(
                        x.rows
                            .row(i)
                            .iter()
                            .map(|&(k, w)| (k, w * f))
                            .filter(|t| t.1 != 0.0),
                    );
                }
                Some(Lin { shape: s, rows })
            }
            Op::Reduce {
                kind: kind @ (ReduceKind::Sum | ReduceKind::Mean),
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                if nonconst != [0] {
                    return None;
                }
                let x = lin_at(0)?;
                let r = x.shape.len();
                let list = match axes {
                    Some(a) => a.clone(),
                    None => match ins.get(1).copied().flatten() {
                        Some(v) => konst(self.g, self.cx, v)?.to_i64_vec(),
                        None => vec![],
                    },
                };
                let mut red: Vec<usize> = list
                    .iter()
                    .map(|&a| crate::shape::normalize_axis(a, r).ok())
                    .collect::<Option<_>>()?;
                if red.is_empty() {
                    if *noop_with_empty_axes {
                        return Some(x.clone());
                    }
                    red = (0..r).collect();
                }
                let kept: Vec<usize> = (0..r).filter(|d| !red.contains(d)).collect();
                let kept_shape: Vec<usize> = kept.iter().map(|&d| x.shape[d]).collect();
                let count: usize = red.iter().map(|&d| x.shape[d]).product();
                let kstrides = crate::shape::strides(&kept_shape);
                let mut acc: Vec<Vec<(u32, f64)>> = vec![vec![]; numel(&kept_shape)];
                let mut ix = vec![0usize; r];
                for row in x.rows.iter() {
                    let o: usize = kept.iter().zip(&kstrides).map(|(&d, &s)| ix[d] * s).sum();
                    acc[o].extend_from_slice(row);
                    for d in (0..r).rev() {
                        ix[d] += 1;
                        if ix[d] < x.shape[d] {
                            break;
                        }
                        ix[d] = 0;
                    }
                }
                let f = if *kind == ReduceKind::Mean {
                    1.0 / count.max(1) as f64
                } else {
                    1.0
                };
                let mut rows = Rows::with_capacity(acc.len());
                for mut r in acc {
                    r.iter_mut().for_each(|t| t.1 *= f);
                    merge_into(&mut r, &mut rows);
                }
                let shape = if *keepdims {
                    (0..r)
                        .map(|d| if red.contains(&d) { 1 } else { x.shape[d] })
                        .collect()
                } else {
                    kept_shape
                };
                Some(Lin { shape, rows })
            }
            _ => None,
        }
    }
}

/// Whether `node` may extend a linear region (its op is one [`Region::eval`] takes).
fn linear_kind(op: &Op) -> bool {
    matches!(
        op,
        Op::Identity
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::Slice
            | Op::Expand
            | Op::Gather { .. }
            | Op::GatherND { .. }
            | Op::Where
            | Op::Unary(UnaryOp::Neg)
            | Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div)
            | Op::Reduce {
                kind: ReduceKind::Sum | ReduceKind::Mean,
                ..
            }
    )
}

/// `Some(maps)` when the forms of `y` are `⊗_d R_d` applied to a source of
/// shape `xs` (same rank), checked on every output element.
fn factor(y: &Lin, xs: &[usize]) -> Option<Vec<AxisMap>> {
    let r = xs.len();
    if y.shape.len() != r || y.rows.is_empty() || xs.contains(&0) {
        return None;
    }
    let xstr = crate::shape::strides(xs);
    let ystr = crate::shape::strides(&y.shape);
    let unflat = |i: u32| -> Vec<usize> {
        let mut i = i as usize;
        xstr.iter()
            .map(|&s| {
                let q = i / s;
                i %= s;
                q
            })
            .collect()
    };
    // Candidate rows from the outputs (0, …, o_d, …, 0): their marginals
    // along d. If y = ⊗ R_d, that marginal is R_d[o_d]·Π_{e≠d} s_e(0) (s_e:
    // row sums), so dividing every axis but 0 by the total of output 0,
    // Π_e s_e(0), gives maps whose product is exactly y.
    let total0: f64 = y.rows.row(0).iter().map(|t| t.1).sum();
    if total0 == 0.0 || !total0.is_finite() {
        return None;
    }
    let mut maps = Vec::with_capacity(r);
    for d in 0..r {
        let mut taps = Vec::with_capacity(y.shape[d]);
        for o in 0..y.shape[d] {
            let row = y.rows.row(o * ystr[d]);
            let mut m = vec![0.0; xs[d]];
            let mut used = vec![false; xs[d]];
            for &(i, w) in row {
                let ii = unflat(i)[d];
                m[ii] += w;
                used[ii] = true;
            }
            let scale = if d == 0 { 1.0 } else { 1.0 / total0 };
            taps.push(
                (0..xs[d])
                    .filter(|&i| used[i] && m[i] != 0.0)
                    .map(|i| (i, m[i] * scale))
                    .collect::<Vec<_>>(),
            );
        }
        maps.push(AxisMap {
            out_len: y.shape[d],
            in_len: xs[d],
            fill: vec![None; y.shape[d]],
            taps,
        });
    }
    // Rows that sum to 1 up to rounding are made to sum to 1 (so that a
    // copied axis is exactly the identity); the proof below allows for it.
    for m in &mut maps {
        for t in &mut m.taps {
            let s: f64 = t.iter().map(|p| p.1).sum();
            if (s - 1.0).abs() <= 1e-12 {
                t.iter_mut().for_each(|p| p.1 /= s);
            }
        }
    }
    // Proof: every output's forms equal the product of its rows.
    let mut o = vec![0usize; r];
    for row in y.rows.iter() {
        let mut want: Vec<(usize, f64)> = vec![(0, 1.0)];
        for d in 0..r {
            let t = &maps[d].taps[o[d]];
            let sd = xstr[d];
            want = want
                .iter()
                .flat_map(|&(f, w)| t.iter().map(move |&(i, v)| (f + i * sd, w * v)))
                .collect();
            if want.len() > row.len() {
                return None;
            }
        }
        want.sort_by_key(|t| t.0);
        if want.len() != row.len()
            || want.iter().zip(row).any(|(&(i, w), &(j, v))| {
                i != j as usize || (w - v).abs() > 1e-9 * v.abs().max(1e-3)
            })
        {
            return None;
        }
        for d in (0..r).rev() {
            o[d] += 1;
            if o[d] < y.shape[d] {
                break;
            }
            o[d] = 0;
        }
    }
    Some(maps)
}

/// Sources: the data operand of each Gather/GatherND with constant
/// indices, followed back through layout ops.
fn sources(g: &Graph, cx: &PassCx) -> Vec<ValueRef> {
    let mut out = vec![];
    for (_, n) in g.nodes() {
        if !matches!(n.op, Op::Gather { .. } | Op::GatherND { .. }) {
            continue;
        }
        let (Some(data), Some(idx)) = (n.inputs[0], n.inputs.get(1).copied().flatten()) else {
            continue;
        };
        if konst(g, cx, idx).is_none() || konst(g, cx, data).is_some() {
            continue;
        }
        let mut x = data;
        for _ in 0..8 {
            let p = g.node(x.node);
            if !super::matchers::is_layout(&p.op) {
                break;
            }
            match p.inputs[0] {
                Some(v) if konst(g, cx, v).is_none() => x = v,
                _ => break,
            }
        }
        if !out.contains(&x) && is_float(g, x) {
            out.push(x);
        }
    }
    out
}

fn fold_linear_regions(g: &mut Graph, cx: &mut PassCx, rep: &mut PassReport, pass: &str) {
    let Ok(order) = g.topo_order() else { return };
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut plans: Vec<(ValueRef, ValueRef, Vec<AxisMap>)> = vec![];
    let mut srcs = sources(g, cx);
    srcs.sort_by_key(|v| pos.get(&v.node).copied());
    let mut covered: HashSet<ValueRef> = HashSet::new();
    for x in srcs {
        if covered.contains(&x) {
            continue;
        }
        let Some(xs) = shape(g, x) else { continue };
        if numel(&xs) > MAX_SOURCE || numel(&xs) == 0 {
            continue;
        }
        let mut reg = Region {
            g,
            cx,
            lins: HashMap::new(),
            terms: numel(&xs),
        };
        reg.lins.insert(
            x,
            Lin {
                shape: xs.clone(),
                rows: {
                    let mut r = Rows::with_capacity(numel(&xs));
                    (0..numel(&xs) as u32).for_each(|i| r.push([(i, 1.0)]));
                    r
                },
            },
        );
        // Values downstream of a gather (only those may become Resample).
        let mut gathered: HashSet<ValueRef> = HashSet::new();
        let mut members: Vec<ValueRef> = vec![];
        for &id in &order[pos[&x.node] + 1..] {
            let n = g.node(id);
            if n.outputs.len() != 1 || !linear_kind(&n.op) {
                continue;
            }
            let ins: Vec<ValueRef> = n.inputs.iter().flatten().copied().collect();
            let lin_ins: Vec<&ValueRef> = ins.iter().filter(|v| reg.lins.contains_key(v)).collect();
            if lin_ins.is_empty()
                || ins
                    .iter()
                    .any(|v| !reg.lins.contains_key(v) && konst(g, cx, *v).is_none())
            {
                continue;
            }
            let Some(l) = reg.eval(n) else { continue };
            let terms = l.rows.terms.len();
            if l.rows.len() > MAX_ELEMS || reg.terms + terms > MAX_TERMS {
                continue;
            }
            reg.terms += terms;
            let v = out0(id);
            if matches!(n.op, Op::Gather { .. } | Op::GatherND { .. })
                || lin_ins.iter().any(|v| gathered.contains(v))
            {
                gathered.insert(v);
            }
            reg.lins.insert(v, l);
            members.push(v);
            covered.insert(v);
        }
        // Values that factor; keep the last on each path.
        let mut factors: HashMap<ValueRef, Vec<AxisMap>> = HashMap::new();
        for &v in &members {
            if !gathered.contains(&v) || !is_float(g, v) {
                continue;
            }
            if let Some(m) = factor(&reg.lins[&v], &xs)
                && m.iter().any(|a| !a.is_gather())
                && shape(g, v).as_deref() == Some(&reg.lins[&v].shape[..])
            {
                factors.insert(v, m);
            }
        }
        let mut below: HashSet<ValueRef> = HashSet::new();
        for &v in members.iter().rev() {
            let down = g.consumers(v).iter().map(|&(u, _)| out0(u)).any(|u| {
                reg.lins.contains_key(&u) && (factors.contains_key(&u) || below.contains(&u))
            });
            if down {
                below.insert(v);
            } else if let Some(m) = factors.get(&v) {
                plans.push((x, v, m.clone()));
            }
        }
        if members.iter().any(|v| gathered.contains(v)) && !plans.iter().any(|p| p.0 == x) {
            rep.skip(
                &g.node(x.node).name,
                "the values gathered from it are not a separable per-axis map",
            );
        }
    }
    for (x, v, m) in plans {
        let name = g.node(v.node).name.clone();
        let what = format!(
            "linear subgraph from '{}' → Resample ({})",
            g.node(x.node).name,
            describe(&m)
        );
        if !cx.allow(pass, &name, &what) {
            continue;
        }
        rep.fire(&name, what);
        emit(g, &name, x, to_slots(m), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::op::Window;
    use crate::passes::testing::{kinds, run_one};

    fn pool(k: usize) -> Op {
        Op::AveragePool {
            window: Window {
                kernel_shape: Some(vec![k, k]),
                pads: vec![],
                strides: vec![k, k],
                dilations: vec![],
                auto_pad: None,
            },
            ceil_mode: false,
            count_include_pad: false,
        }
    }

    #[test]
    fn pools_become_one_composed_resample() {
        let mut b = B::default();
        let x = b.input("x", "f32[1,2,8,8]");
        let p = b.op(pool(2), &[x]);
        let q = b.op(pool(2), &[p]);
        let r = b.op(pool(1), &[q]);
        b.g.outputs = vec![r];
        let rep = run_one(&mut b.g, Box::new(FoldResample));
        assert_eq!(kinds(&b.g), vec!["Resample"], "{rep:?}");
        let (_, n) =
            b.g.nodes()
                .find(|(_, n)| n.op.kind() == "Resample")
                .unwrap();
        let Op::Resample { maps } = &n.op else {
            unreachable!()
        };
        assert!(maps[0].is_none() && maps[1].is_none());
        let m = maps[2].as_ref().unwrap();
        assert_eq!((m.in_len, m.out_len), (8, 2));
        assert!(m.taps.iter().all(|t| t.len() == 4));
        assert_eq!(
            rep.fired
                .iter()
                .filter(|s| s.what.contains("composed"))
                .count(),
            1
        );
    }

    #[test]
    fn a_shared_inner_resample_is_not_composed() {
        let mut b = B::default();
        let x = b.input("x", "f32[1,2,8,8]");
        let p = b.op(pool(2), &[x]);
        let q = b.op(pool(2), &[p]);
        b.g.outputs = vec![p, q];
        let rep = run_one(&mut b.g, Box::new(FoldResample));
        assert_eq!(kinds(&b.g), vec!["Resample", "Resample"]);
        assert!(rep.skipped[0].what.contains("other users"), "{rep:?}");
    }

    #[test]
    fn factor_proves_or_refuses() {
        // y[o0, o1] = 0.5·(x[o0, 2·o1] + x[o0, 2·o1 + 1]) on x[2, 4]: separable.
        let mut rows = Rows::with_capacity(4);
        for o0 in 0..2u32 {
            for o1 in 0..2u32 {
                rows.push([(o0 * 4 + 2 * o1, 0.5), (o0 * 4 + 2 * o1 + 1, 0.5)]);
            }
        }
        let y = Lin {
            shape: vec![2, 2],
            rows,
        };
        let m = factor(&y, &[2, 4]).unwrap();
        assert!(m[0].is_identity());
        assert_eq!(m[1].taps[1], vec![(2, 0.5), (3, 0.5)]);
        // A transpose is linear but not a per-axis map.
        let mut rows = Rows::with_capacity(4);
        for o0 in 0..2u32 {
            for o1 in 0..2u32 {
                rows.push([(o1 * 2 + o0, 1.0)]);
            }
        }
        let t = Lin {
            shape: vec![2, 2],
            rows,
        };
        assert!(factor(&t, &[2, 2]).is_none());
    }
}
