//! Lowering of data movement and indexing ops.
//!
//! Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Expand, Slice, Split and
//! Identity are views: no kernel (Reshape of a non-viewable layout copies
//! once). Concat writes each operand into its sub-range of one buffer; Tile,
//! Pad, Gather*, Trilu, Range and ConstantOfShape are one kernel each.
//! Indices that depend on data go through gather terms, so an index out of
//! range stops the program with an error instead of reading out of bounds.

use super::{Cx, View, const_ints, input, known_shape, out_index, var};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{Access, Affine, BinaryFn, Expr, GatherTerm, Guard, Var};
use crate::op::{Op, PadMode};
use crate::shape::normalize_axis;
use crate::tensor::{Tensor, TensorData};

pub fn lower(
    cx: &mut Cx,
    op: &Op,
    ins: &[Option<View>],
    outs: &[TypeInfo],
) -> Result<Vec<View>, String> {
    let out_ty = outs.first().ok_or("the node has no output")?;
    let shape = known_shape(out_ty)?;
    let one = |v: View| Ok(vec![v]);
    match op {
        Op::Identity => one(input(ins, 0)?.clone()),
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            let x = input(ins, 0)?;
            if x.numel() != shape.iter().product::<usize>() {
                return Err(format!("cannot view {:?} as {shape:?}", x.shape));
            }
            one(cx.reshape(x, &shape))
        }
        Op::Transpose { perm } => {
            let x = input(ins, 0)?;
            let rank = x.shape.len();
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..rank).rev().collect());
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
            }
            one(x.permute(&perm))
        }
        Op::Expand => {
            let x = input(ins, 0)?;
            check_broadcast(&x.shape, &shape)?;
            one(x.broadcast_to(&shape))
        }
        Op::Slice => one(slice(cx, input(ins, 0)?, ins)?),
        Op::Split { axis, .. } => {
            let x = input(ins, 0)?;
            let ax = normalize_axis(*axis, x.shape.len())?;
            let mut start = 0;
            let mut views = Vec::with_capacity(outs.len());
            for o in outs {
                let s = known_shape(o)?;
                let n = *s.get(ax).ok_or("split output has the wrong rank")?;
                if start + n > x.shape[ax] {
                    return Err(format!("split sizes exceed the dim {}", x.shape[ax]));
                }
                views.push(x.narrow(ax, start, n));
                start += n;
            }
            Ok(views)
        }
        Op::Concat { axis } => {
            let xs = ins
                .iter()
                .enumerate()
                .map(|(i, x)| x.as_ref().ok_or_else(|| format!("missing input {i}")))
                .collect::<Result<Vec<&View>, String>>()?;
            let ax = normalize_axis(*axis, shape.len())?;
            let out = cx.temp(out_ty.dtype, &shape);
            let mut base = 0;
            for x in xs {
                let n = x.shape[ax];
                if x.dtype != out.dtype || base + n > shape[ax] {
                    return Err("operands do not fit the concatenated output".into());
                }
                if n > 0 {
                    let dst = out.narrow(ax, base, n);
                    cx.emit(&dst, x.load(&out_index(x.shape.len())));
                }
                base += n;
            }
            one(out)
        }
        Op::Tile => one(tile(cx, input(ins, 0)?, &shape)?),
        Op::Pad { mode } => one(pad(cx, ins, *mode, &shape)?),
        Op::Shape { start, end } => {
            let x = input(ins, 0)?;
            let r = x.shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let dims: Vec<i64> = if e > s {
                x.shape[s..e].iter().map(|&d| d as i64).collect()
            } else {
                vec![]
            };
            let t = Tensor::new(vec![dims.len()], TensorData::I64(dims))?;
            one(cx.weight("shape", t))
        }
        Op::Size => {
            let x = input(ins, 0)?;
            let t = Tensor::new(vec![], TensorData::I64(vec![x.numel() as i64]))?;
            one(cx.weight("size", t))
        }
        Op::ConstantOfShape { value } => {
            let v = *value
                .to_f64_vec()
                .first()
                .ok_or("value must hold one element")?;
            let out = cx.temp(value.dtype(), &shape);
            cx.emit(
                &out,
                Expr::Const {
                    value: v,
                    dtype: value.dtype(),
                },
            );
            one(out)
        }
        Op::Range => {
            let (s, d) = (input(ins, 0)?, input(ins, 2)?);
            let dt = out_ty.dtype;
            if s.dtype != dt || d.dtype != dt || s.numel() != 1 || d.numel() != 1 {
                return Err(
                    "start, limit and delta must be one-element tensors of the output's type"
                        .into(),
                );
            }
            let i = Expr::Cast(dt, Box::new(Expr::Index(Var::Out(0))));
            let value = Expr::binary(
                BinaryFn::Add,
                scalar_load(s),
                Expr::binary(BinaryFn::Mul, i, scalar_load(d)),
            );
            let out = cx.temp(dt, &shape);
            cx.emit(&out, value);
            one(out)
        }
        Op::Gather { axis } => one(gather(cx, input(ins, 0)?, input(ins, 1)?, *axis, &shape)?),
        Op::GatherElements { axis } => {
            let (data, idx) = (input(ins, 0)?, input(ins, 1)?);
            let rank = data.shape.len();
            let ax = normalize_axis(*axis, rank)?;
            require_int(idx)?;
            if idx.shape.len() != rank || idx.shape != shape {
                return Err("indices must have the data's rank and the output's shape".into());
            }
            if (0..rank).any(|d| d != ax && idx.shape[d] > data.shape[d]) {
                return Err(format!(
                    "indices shape {:?} exceeds data shape {:?}",
                    idx.shape, data.shape
                ));
            }
            let index = idx.load(&out_index(rank));
            let value = gather_load(
                data,
                |d| (d == ax).then_some(index.clone()),
                |d| var(Var::Out(d)),
            );
            let out = cx.temp(data.dtype, &shape);
            cx.emit(&out, value);
            one(out)
        }
        Op::GatherND { batch_dims } => one(gather_nd(
            cx,
            input(ins, 0)?,
            input(ins, 1)?,
            *batch_dims,
            &shape,
        )?),
        Op::Trilu { upper } => {
            let x = input(ins, 0)?;
            let rank = x.shape.len();
            if rank < 2 {
                return Err(format!("input must have rank ≥ 2, got shape {:?}", x.shape));
            }
            let k = match (ins.get(1).and_then(|k| k.as_ref()), cx.const_input(1)) {
                (None, _) => Expr::Const {
                    value: 0.0,
                    dtype: DType::I64,
                },
                (Some(_), Some(t)) => {
                    let v = t.to_i64_vec();
                    if v.len() != 1 || !t.dtype().is_int() {
                        return Err("k must be a one-element integer tensor".into());
                    }
                    Expr::Const {
                        value: v[0] as f64,
                        dtype: DType::I64,
                    }
                }
                (Some(k), None) => {
                    if k.numel() != 1 || !k.dtype.is_int() {
                        return Err("k must be a one-element integer tensor".into());
                    }
                    Expr::Cast(DType::I64, Box::new(scalar_load(k)))
                }
            };
            // Column minus row, compared with k.
            let diff = Expr::binary(
                BinaryFn::Sub,
                Expr::Index(Var::Out(rank - 1)),
                Expr::Index(Var::Out(rank - 2)),
            );
            let keep = if *upper {
                Expr::binary(BinaryFn::Le, k, diff)
            } else {
                Expr::binary(BinaryFn::Le, diff, k)
            };
            let zero = Expr::Const {
                value: 0.0,
                dtype: x.dtype,
            };
            let out = cx.temp(x.dtype, &x.shape);
            cx.emit(&out, Expr::select(keep, x.load(&out_index(rank)), zero));
            one(out)
        }
        other => Err(format!("{} is not a data movement op", other.kind())),
    }
}

fn require_int(v: &View) -> Result<(), String> {
    if v.dtype.is_int() {
        Ok(())
    } else {
        Err(format!(
            "indices must be an integer tensor, got {}",
            v.dtype
        ))
    }
}

/// The one element of a one-element view.
fn scalar_load(v: &View) -> Expr {
    v.load(&vec![Affine::default(); v.shape.len()])
}

fn i64c(v: i64) -> Expr {
    Expr::Const {
        value: v as f64,
        dtype: DType::I64,
    }
}

fn check_broadcast(from: &[usize], to: &[usize]) -> Result<(), String> {
    let ok = from.len() <= to.len()
        && from
            .iter()
            .zip(&to[to.len() - from.len()..])
            .all(|(&f, &t)| f == t || f == 1);
    if ok {
        Ok(())
    } else {
        Err(format!("cannot broadcast {from:?} to {to:?}"))
    }
}

/// A load of `data` where each dim is addressed by `affine(d)`, except the
/// dims for which `gathered(d)` gives a data-dependent index expression.
fn gather_load(
    data: &View,
    gathered: impl Fn(usize) -> Option<Expr>,
    affine: impl Fn(usize) -> Affine,
) -> Expr {
    let rank = data.shape.len();
    let mut idx = Vec::with_capacity(rank);
    let mut gathers = Vec::new();
    for d in 0..rank {
        match gathered(d) {
            Some(index) => {
                idx.push(Affine::default());
                gathers.push(GatherTerm {
                    index,
                    dim: data.shape[d],
                    stride: data.strides[d],
                });
            }
            None => idx.push(affine(d)),
        }
    }
    Expr::Load {
        access: Box::new(Access {
            buf: data.buf,
            index: data.address(&idx),
            gathers,
        }),
        guards: vec![],
        fill: 0.0,
    }
}

fn gather(
    cx: &mut Cx,
    data: &View,
    idx: &View,
    axis: i64,
    shape: &[usize],
) -> Result<View, String> {
    let r = data.shape.len();
    let ax = normalize_axis(axis, r)?;
    require_int(idx)?;
    let q = idx.shape.len();
    if shape.len() != r - 1 + q {
        return Err(format!(
            "output rank {} does not match Gather's",
            shape.len()
        ));
    }
    let index = idx.load(&(ax..ax + q).map(|d| var(Var::Out(d))).collect::<Vec<_>>());
    let value = gather_load(
        data,
        |d| (d == ax).then_some(index.clone()),
        |d| {
            if d < ax {
                var(Var::Out(d))
            } else {
                var(Var::Out(d - 1 + q))
            }
        },
    );
    let out = cx.temp(data.dtype, shape);
    cx.emit(&out, value);
    Ok(out)
}

fn gather_nd(
    cx: &mut Cx,
    data: &View,
    idx: &View,
    b: usize,
    shape: &[usize],
) -> Result<View, String> {
    let (r, q) = (data.shape.len(), idx.shape.len());
    require_int(idx)?;
    if r == 0 || q == 0 || b >= r.min(q) {
        return Err("data and indices must have rank ≥ 1 and more dims than batch_dims".into());
    }
    let k = idx.shape[q - 1];
    if k > r - b || data.shape[..b] != idx.shape[..b] {
        return Err(format!(
            "indices {:?} do not fit data {:?} with batch_dims {b}",
            idx.shape, data.shape
        ));
    }
    if shape.len() != q - 1 + r - b - k {
        return Err(format!(
            "output rank {} does not match GatherND's",
            shape.len()
        ));
    }
    let lead: Vec<Affine> = (0..q - 1).map(|d| var(Var::Out(d))).collect();
    let component = |j: usize| {
        let mut at = lead.clone();
        at.push(Affine::constant(j as i64));
        idx.load(&at)
    };
    let value = gather_load(
        data,
        |d| (b..b + k).contains(&d).then(|| component(d - b)),
        |d| {
            if d < b {
                var(Var::Out(d))
            } else {
                var(Var::Out(q - 1 + d - (b + k)))
            }
        },
    );
    let out = cx.temp(data.dtype, shape);
    cx.emit(&out, value);
    Ok(out)
}

/// Slice(data, starts, ends, axes?, steps?): a strided view, with the ONNX
/// clamping rules; negative steps give negative strides.
fn slice(cx: &mut Cx, x: &View, ins: &[Option<View>]) -> Result<View, String> {
    let rank = x.shape.len();
    let starts = const_ints(cx, ins, 1, "starts")?.ok_or("starts are required")?;
    let ends = const_ints(cx, ins, 2, "ends")?.ok_or("ends are required")?;
    let n = starts.len();
    let axes: Vec<usize> = match const_ints(cx, ins, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..n).collect(),
    };
    let steps = const_ints(cx, ins, 4, "steps")?.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut v = x.clone();
    for i in 0..n {
        let (ax, step) = (axes[i], steps[i]);
        if ax >= rank {
            return Err(format!("axis {ax} is out of range for rank {rank}"));
        }
        if step == 0 {
            return Err(format!("step for axis {ax} is 0"));
        }
        let dim = x.shape[ax] as i64;
        let (mut s, mut e) = (starts[i], ends[i]);
        if s < 0 {
            s = s.saturating_add(dim);
        }
        if e < 0 {
            e = e.saturating_add(dim);
        }
        let count = if dim == 0 {
            s = 0;
            0
        } else if step > 0 {
            s = s.clamp(0, dim);
            e = e.clamp(0, dim);
            if e > s { (e - s - 1) / step + 1 } else { 0 }
        } else {
            s = s.clamp(0, dim - 1);
            e = e.clamp(-1, dim - 1);
            if s > e {
                (s - e - 1) / step.saturating_neg() + 1
            } else {
                0
            }
        };
        v = v.slice_axis(ax, s as usize, count as usize, step);
    }
    Ok(v)
}

/// Tile: a kernel over [r0, d0, r1, d1, ..] storing copy (k, i) of each axis
/// at k·d + i.
fn tile(cx: &mut Cx, x: &View, shape: &[usize]) -> Result<View, String> {
    let rank = x.shape.len();
    if shape.len() != rank {
        return Err("repeats must have one entry per axis".into());
    }
    let mut domain = Vec::with_capacity(2 * rank);
    for (&o, &d) in shape.iter().zip(&x.shape) {
        if d == 0 {
            domain.extend([0, 0]);
            continue;
        }
        if o % d != 0 {
            return Err(format!(
                "output dim {o} is not a multiple of the input dim {d}"
            ));
        }
        domain.extend([o / d, d]);
    }
    let out = cx.temp(x.dtype, shape);
    let mut store = Affine::default();
    for a in 0..rank {
        let st = out.strides[a];
        store.terms.push((Var::Out(2 * a), st * x.shape[a] as i64));
        store.terms.push((Var::Out(2 * a + 1), st));
    }
    store.terms.retain(|&(_, c)| c != 0);
    let value = x.load(
        &(0..rank)
            .map(|a| var(Var::Out(2 * a + 1)))
            .collect::<Vec<_>>(),
    );
    cx.emit_kernel(
        domain,
        Access {
            buf: out.buf,
            index: store,
            gathers: vec![],
        },
        value,
    );
    Ok(out)
}

/// Integer expression helpers for Pad's index arithmetic (i64).
fn ib(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}

/// `a mod m` in [0, m) (Euclidean), for m > 0; integer Div truncates.
fn rem_euclid(a: impl Fn() -> Expr, m: i64) -> Expr {
    let r = || {
        ib(
            BinaryFn::Sub,
            a(),
            ib(BinaryFn::Mul, ib(BinaryFn::Div, a(), i64c(m)), i64c(m)),
        )
    };
    Expr::select(
        ib(BinaryFn::Lt, r(), i64c(0)),
        ib(BinaryFn::Add, r(), i64c(m)),
        r(),
    )
}

/// Pad(data, pads, constant_value?, axes?). Constant mode: guarded loads
/// with the value as fill (or a select, when the value is a run-time
/// tensor). Edge, reflect and wrap: the source index of each padded axis is
/// integer arithmetic on the output index, through a gather term.
fn pad(cx: &mut Cx, ins: &[Option<View>], mode: PadMode, shape: &[usize]) -> Result<View, String> {
    let x = input(ins, 0)?;
    let rank = x.shape.len();
    let pads = const_ints(cx, ins, 1, "pads")?.ok_or("pads are required")?;
    let axes: Vec<usize> = match const_ints(cx, ins, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} must have 2 entries per padded axis"));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[axes.len() + i];
    }
    for a in 0..rank {
        if x.shape[a] as i64 + begin[a] + end[a] != shape[a] as i64 {
            return Err(format!(
                "pads {pads:?} do not give the output shape {shape:?}"
            ));
        }
    }
    let padded = |a: usize| begin[a] != 0 || end[a] != 0;
    let out = cx.temp(x.dtype, shape);
    let value = if mode == PadMode::Constant {
        let idx: Vec<Affine> = (0..rank)
            .map(|a| Affine {
                offset: -begin[a],
                terms: vec![(Var::Out(a), 1)],
            })
            .collect();
        let guards: Vec<Guard> = (0..rank)
            .filter(|&a| padded(a))
            .map(|a| Guard {
                index: idx[a].clone(),
                lo: 0,
                hi: x.shape[a] as i64,
            })
            .collect();
        let load = |fill: f64| Expr::Load {
            access: Box::new(Access {
                buf: x.buf,
                index: x.address(&idx),
                gathers: vec![],
            }),
            guards: guards.clone(),
            fill,
        };
        let value = ins.get(2).and_then(|v| v.as_ref());
        match (value, cx.const_input(2)) {
            (None, _) => load(0.0),
            (Some(v), _) if v.numel() == 0 => load(0.0),
            (Some(v), _) if v.numel() != 1 => {
                return Err(format!(
                    "constant_value must be a scalar, got shape {:?}",
                    v.shape
                ));
            }
            (Some(_), Some(t)) => load(t.cast(x.dtype).to_f64_vec()[0]),
            (Some(v), None) => {
                // Run-time value: inside ? x : value.
                let mut inside: Option<Expr> = None;
                for g in &guards {
                    let a = g.index.terms[0].0;
                    let i = Expr::Index(a);
                    let off = -g.index.offset;
                    let c = ib(
                        BinaryFn::And,
                        ib(BinaryFn::Le, i64c(off), i.clone()),
                        ib(BinaryFn::Lt, i, i64c(off + g.hi)),
                    );
                    inside = Some(match inside {
                        None => c,
                        Some(p) => ib(BinaryFn::And, p, c),
                    });
                }
                let fill = scalar_load(v);
                let fill = if v.dtype == x.dtype {
                    fill
                } else {
                    Expr::Cast(x.dtype, Box::new(fill))
                };
                match inside {
                    None => load(0.0),
                    Some(c) => Expr::select(c, load(0.0), fill),
                }
            }
        }
    } else {
        for a in (0..rank).filter(|&a| padded(a)) {
            if x.shape[a] == 0 && shape[a] > 0 {
                return Err(format!("cannot pad empty axis {a} in {mode:?} mode"));
            }
        }
        let source = |a: usize| -> Expr {
            let d = x.shape[a] as i64;
            let i = || ib(BinaryFn::Sub, Expr::Index(Var::Out(a)), i64c(begin[a]));
            match mode {
                PadMode::Edge => ib(BinaryFn::Min, ib(BinaryFn::Max, i(), i64c(0)), i64c(d - 1)),
                PadMode::Wrap => rem_euclid(i, d),
                PadMode::Reflect if d == 1 => i64c(0),
                _ => {
                    let p = 2 * (d - 1);
                    let m = || rem_euclid(i, p);
                    Expr::select(
                        ib(BinaryFn::Lt, i64c(d - 1), m()),
                        ib(BinaryFn::Sub, i64c(p), m()),
                        m(),
                    )
                }
            }
        };
        gather_load(x, |a| padded(a).then(|| source(a)), |a| var(Var::Out(a)))
    };
    cx.emit(&out, value);
    Ok(out)
}
