//! Lowering of reductions and the ops built from them: Reduce*, ArgMax /
//! ArgMin, CumSum, Softmax / LogSoftmax and the normalisations.
//!
//! A reduction kernel's domain is the input shape with the reduced axes set
//! to 1 (the "kept" shape); its value is an [`Expr::Reduce`] over one
//! reduction variable per reduced axis. Statistics (row max, mean, inverse
//! standard deviation) live in kept-shape temps, which later kernels load
//! with the full shape's index (size-1 dims broadcast for free).

use super::{Cx, View, const_ints, input, known_shape, out_index, var};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{Access, Affine, BinaryFn, Expr, Guard, ReduceFn, UnaryFn, Var};
use crate::op::{Op, ReduceKind};
use crate::shape::normalize_axis;

pub fn lower(
    cx: &mut Cx,
    op: &Op,
    ins: &[Option<View>],
    outs: &[TypeInfo],
) -> Result<Vec<View>, String> {
    let out_ty = outs.first().ok_or("the node has no output")?;
    let out_shape = known_shape(out_ty)?;
    let x = input(ins, 0)?;
    match op {
        Op::Reduce {
            kind,
            axes,
            noop_with_empty_axes,
            ..
        } => {
            let axes = match axes {
                Some(a) => a.clone(),
                None => const_ints(cx, ins, 1, "axes")?.unwrap_or_default(),
            };
            let rank = x.shape.len();
            let reduced: Vec<usize> = if axes.is_empty() {
                if *noop_with_empty_axes {
                    vec![]
                } else {
                    (0..rank).collect()
                }
            } else {
                norm_axes(&axes, rank)?
            };
            let kept = reduce(cx, x, *kind, &reduced)?;
            Ok(vec![cx.reshape(&kept, &out_shape)])
        }
        Op::ArgReduce {
            max,
            axis,
            select_last_index,
            ..
        } => {
            let ax = normalize_axis(*axis, x.shape.len())?;
            let kept = arg_reduce(cx, x, ax, *max, *select_last_index)?;
            Ok(vec![cx.reshape(&kept, &out_shape)])
        }
        Op::CumSum { exclusive, reverse } => {
            let axis = const_ints(cx, ins, 1, "axis")?.ok_or("axis is required")?;
            let [axis] = axis[..] else {
                return Err("axis must hold exactly one element".into());
            };
            let ax = normalize_axis(axis, x.shape.len())?;
            Ok(vec![cumsum(cx, x, ax, *exclusive, *reverse)])
        }
        Op::Softmax {
            axis,
            log,
            coerce_2d,
        } => {
            require_float(x.dtype, "Softmax")?;
            let rank = x.shape.len();
            if *coerce_2d {
                let (outer, cols) = if rank == 0 {
                    (1, 1)
                } else {
                    let ax = normalize_axis(*axis, rank)?;
                    (
                        x.shape[..ax].iter().product(),
                        x.shape[ax..].iter().product(),
                    )
                };
                let x2 = cx.reshape(x, &[outer, cols]);
                let y = softmax(cx, &x2, 1, *log);
                Ok(vec![cx.reshape(&y, &x.shape)])
            } else {
                if rank == 0 {
                    return Err("Softmax needs an input of rank ≥ 1".into());
                }
                let ax = normalize_axis(*axis, rank)?;
                Ok(vec![softmax(cx, x, ax, *log)])
            }
        }
        Op::LayerNorm {
            axis,
            epsilon,
            stash_type,
            ..
        } => {
            require_float(x.dtype, "X")?;
            let ax = normalize_axis(*axis, x.shape.len())?;
            let stash = stash_dtype(*stash_type)?;
            let scale = input(ins, 1)?;
            let bias = ins.get(2).and_then(|b| b.as_ref());
            layer_norm(cx, x, scale, bias, ax, *epsilon, stash, outs)
        }
        Op::RmsNorm {
            axis,
            epsilon,
            stash_type,
            ..
        } => {
            require_float(x.dtype, "X")?;
            let ax = normalize_axis(*axis, x.shape.len())?;
            let stash = stash_dtype(*stash_type)?;
            let scale = input(ins, 1)?;
            check_affine(scale, x, "scale")?;
            let bias = ins.get(2).and_then(|b| b.as_ref());
            if let Some(b) = bias {
                check_affine(b, x, "B")?;
            }
            let dt = stat_dtype(x.dtype, stash);
            let axes: Vec<usize> = (ax..x.shape.len()).collect();
            let n = count(x, &axes);
            // inv = 1/sqrt(Σx²/N + ε)
            let inv = reduce_kernel(
                cx,
                &x.shape,
                &axes,
                ReduceFn::Sum,
                dt,
                |i| {
                    let v = cast(x.dtype, dt, x.load(i));
                    mul(v.clone(), v)
                },
                |s| rsqrt(add(div(s, c(dt, n)), c(dt, *epsilon as f64))),
            );
            let idx = out_index(x.shape.len());
            let mut y = mul(
                mul(x.load(&idx), cast(dt, x.dtype, inv.load(&idx))),
                scale.load_broadcast(&x.shape),
            );
            if let Some(b) = bias {
                y = add(y, b.load_broadcast(&x.shape));
            }
            let out = cx.temp(x.dtype, &x.shape);
            cx.emit(&out, y);
            Ok(vec![out])
        }
        Op::InstanceNorm { epsilon } => {
            require_float(x.dtype, "X")?;
            let (_, ch) = nc(x)?;
            let (scale, bias) = (input(ins, 1)?, input(ins, 2)?);
            for (t, w) in [(scale, "scale"), (bias, "B")] {
                if t.dtype != x.dtype || t.shape != [ch] {
                    return Err(format!("{w} must be a [{ch}] tensor of {}", x.dtype));
                }
            }
            let axes: Vec<usize> = (2..x.shape.len()).collect();
            let per_channel = |v: &View| v.load(&[var(Var::Out(1))]);
            let y = normalize(
                cx,
                x,
                &axes,
                *epsilon,
                per_channel(scale),
                Some(per_channel(bias)),
                None,
            )?;
            Ok(vec![y])
        }
        Op::GroupNorm {
            num_groups,
            epsilon,
            per_group_affine,
            ..
        } => {
            require_float(x.dtype, "X")?;
            let (n, ch) = nc(x)?;
            let g = *num_groups;
            if g == 0 || ch % g != 0 {
                return Err(format!("{ch} channels cannot be split into {g} groups"));
            }
            let cg = ch / g;
            let spatial: usize = x.shape[2..].iter().product();
            let affine_len = if *per_group_affine { g } else { ch };
            let (scale, bias) = (input(ins, 1)?, input(ins, 2)?);
            for (t, w) in [(scale, "scale"), (bias, "bias")] {
                if t.dtype != x.dtype || t.numel() != affine_len || t.shape.len() != 1 {
                    return Err(format!(
                        "{w} must be a [{affine_len}] tensor of {}",
                        x.dtype
                    ));
                }
            }
            // [N, G, C/G, S]: statistics over the last two axes.
            let x4 = cx.reshape(x, &[n, g, cg, spatial]);
            let at = if *per_group_affine {
                var(Var::Out(1))
            } else {
                Affine {
                    offset: 0,
                    terms: vec![(Var::Out(1), cg as i64), (Var::Out(2), 1)],
                }
            };
            let y = normalize(
                cx,
                &x4,
                &[2, 3],
                *epsilon,
                scale.load(std::slice::from_ref(&at)),
                Some(bias.load(&[at])),
                None,
            )?;
            Ok(vec![cx.reshape(&y, &x.shape)])
        }
        other => Err(format!("{} is not a reduction op", other.kind())),
    }
}

fn c(dtype: DType, value: f64) -> Expr {
    Expr::Const { value, dtype }
}

fn add(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Add, a, b)
}

fn sub(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Sub, a, b)
}

fn mul(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Mul, a, b)
}

fn div(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Div, a, b)
}

fn rsqrt(a: Expr) -> Expr {
    Expr::unary(UnaryFn::Rsqrt, a)
}

/// `e` (of type `from`) converted to `to`.
fn cast(from: DType, to: DType, e: Expr) -> Expr {
    if from == to {
        e
    } else {
        Expr::Cast(to, Box::new(e))
    }
}

fn require_float(dt: DType, what: &str) -> Result<(), String> {
    if dt.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {dt}"))
    }
}

/// The element type an ONNX `stash_type` code names.
fn stash_dtype(code: i64) -> Result<DType, String> {
    match code {
        1 => Ok(DType::F32),
        10 => Ok(DType::F16),
        11 => Ok(DType::F64),
        16 => Ok(DType::BF16),
        other => Err(format!("unsupported stash_type {other}")),
    }
}

/// Statistics are kept in f32 at least (f64 when the data or the stash
/// type is f64): f16/bf16 statistics would lose the normalisation.
fn stat_dtype(x: DType, stash: DType) -> DType {
    if x == DType::F64 || stash == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn norm_axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let n = normalize_axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated in {list:?}"));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// Element count over `axes` of `x`, as f64.
fn count(x: &View, axes: &[usize]) -> f64 {
    axes.iter().map(|&a| x.shape[a]).product::<usize>() as f64
}

/// `shape` with the `axes` set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

/// Emits `out[kept] = finish(op over axes of body(idx))` into a fresh
/// kept-shape temp of type `dtype`. `body` gets one index per dim of
/// `shape`: the reduction variable on reduced axes, `Out(d)` elsewhere.
fn reduce_kernel(
    cx: &mut Cx,
    shape: &[usize],
    axes: &[usize],
    op: ReduceFn,
    dtype: DType,
    body: impl FnOnce(&[Affine]) -> Expr,
    finish: impl FnOnce(Expr) -> Expr,
) -> View {
    let mut vars = Vec::with_capacity(axes.len());
    let idx: Vec<Affine> = (0..shape.len())
        .map(|d| {
            if axes.contains(&d) {
                let id = cx.red();
                vars.push((id, shape[d]));
                var(Var::Red(id))
            } else {
                var(Var::Out(d))
            }
        })
        .collect();
    let b = body(&idx);
    // Over no axes, each element is reduced alone: the fold's identity
    // combined with one value is that value, for every ReduceFn.
    let r = if vars.is_empty() {
        b
    } else {
        Expr::Reduce {
            op,
            vars,
            body: Box::new(b),
        }
    };
    let out = cx.temp(dtype, &kept_shape(shape, axes));
    cx.emit(&out, finish(r));
    out
}

/// Reduce `x` over `axes` (sorted); the result has the kept shape.
fn reduce(cx: &mut Cx, x: &View, kind: ReduceKind, axes: &[usize]) -> Result<View, String> {
    use ReduceKind::*;
    let dt = x.dtype;
    if dt == DType::Bool && !matches!(kind, Max | Min) {
        return Err("only ReduceMax and ReduceMin are defined for bool tensors".into());
    }
    if dt == DType::Bool {
        // Max is "any" and Min is "all". Counting keeps the empty set right:
        // ONNX gives the dtype's minimum (false) for Max and maximum (true)
        // for Min, which a −inf/+inf identity cast to bool would not.
        let count_of = |e: Expr| Expr::Cast(DType::F32, Box::new(e));
        let zero = Expr::f32(0.0);
        return Ok(if kind == Max {
            reduce_kernel(
                cx,
                &x.shape,
                axes,
                ReduceFn::Sum,
                dt,
                |i| count_of(x.load(i)),
                |r| Expr::binary(BinaryFn::Lt, zero.clone(), r),
            )
        } else {
            let not = |i: &[Affine]| count_of(Expr::unary(UnaryFn::Not, x.load(i)));
            reduce_kernel(cx, &x.shape, axes, ReduceFn::Sum, dt, not, |r| {
                Expr::binary(BinaryFn::Eq, r, zero.clone())
            })
        });
    }
    let n = count(x, axes);
    let square = |i: &[Affine]| mul(x.load(i), x.load(i));
    let plain = |i: &[Affine]| x.load(i);
    let sum = ReduceFn::Sum;
    Ok(match kind {
        Sum => reduce_kernel(cx, &x.shape, axes, sum, dt, plain, |r| r),
        Mean => reduce_kernel(cx, &x.shape, axes, sum, dt, plain, |r| div(r, c(dt, n))),
        Max => reduce_kernel(cx, &x.shape, axes, ReduceFn::Max, dt, plain, |r| r),
        Min => reduce_kernel(cx, &x.shape, axes, ReduceFn::Min, dt, plain, |r| r),
        Prod => reduce_kernel(cx, &x.shape, axes, ReduceFn::Prod, dt, plain, |r| r),
        L1 => reduce_kernel(
            cx,
            &x.shape,
            axes,
            sum,
            dt,
            |i| Expr::unary(UnaryFn::Abs, x.load(i)),
            |r| r,
        ),
        L2 => reduce_kernel(cx, &x.shape, axes, sum, dt, square, |r| {
            Expr::unary(UnaryFn::Sqrt, r)
        }),
        SumSquare => reduce_kernel(cx, &x.shape, axes, sum, dt, square, |r| r),
        LogSum => reduce_kernel(cx, &x.shape, axes, sum, dt, plain, |r| {
            Expr::unary(UnaryFn::Log, r)
        }),
        LogSumExp => {
            require_float(dt, "ReduceLogSumExp")?;
            // Shift by the largest finite element (0 when there is none), as
            // the reference does: an all -inf group gives -inf, not NaN.
            let finite = |e: Expr| {
                Expr::binary(
                    BinaryFn::Lt,
                    Expr::unary(UnaryFn::Abs, e),
                    c(dt, f64::INFINITY),
                )
            };
            let m = reduce_kernel(
                cx,
                &x.shape,
                axes,
                ReduceFn::Max,
                dt,
                |i| Expr::select(finite(x.load(i)), x.load(i), c(dt, f64::NEG_INFINITY)),
                |r| r,
            );
            let shift = |i: &[Affine]| Expr::select(finite(m.load(i)), m.load(i), c(dt, 0.0));
            let kept = kept_shape(&x.shape, axes);
            let ki = out_index(kept.len());
            reduce_kernel(
                cx,
                &x.shape,
                axes,
                sum,
                dt,
                |i| Expr::unary(UnaryFn::Exp, sub(x.load(i), shift(i))),
                |r| add(Expr::unary(UnaryFn::Log, r), shift(&ki)),
            )
        }
    })
}

/// ArgMax / ArgMin along `ax` (kept shape, int64): the extreme value first
/// (NaN-propagating, so a NaN is the extreme), then the first (or last)
/// index holding it.
fn arg_reduce(cx: &mut Cx, x: &View, ax: usize, max: bool, last: bool) -> Result<View, String> {
    let len = x.shape[ax];
    if len == 0 && kept_shape(&x.shape, &[ax]).iter().product::<usize>() > 0 {
        return Err(format!(
            "cannot take an arg-reduction over axis {ax} of size 0"
        ));
    }
    let f = if max { ReduceFn::Max } else { ReduceFn::Min };
    let m = reduce_kernel(cx, &x.shape, &[ax], f, x.dtype, |i| x.load(i), |r| r);
    let (pick, miss) = if last {
        (ReduceFn::Max, -1.0)
    } else {
        (ReduceFn::Min, len as f64)
    };
    let body = |i: &[Affine]| {
        let v = || x.load(i);
        let hit = Expr::binary(
            BinaryFn::Or,
            Expr::binary(BinaryFn::Eq, v(), m.load(i)),
            Expr::unary(UnaryFn::Not, Expr::binary(BinaryFn::Eq, v(), v())),
        );
        let k = Expr::Index(i[ax].terms[0].0);
        Expr::select(hit, k, c(DType::I64, miss))
    };
    Ok(reduce_kernel(
        cx,
        &x.shape,
        &[ax],
        pick,
        DType::I64,
        body,
        |r| r,
    ))
}

/// CumSum along `ax`: out[i] = Σ x[k] over k ≤ i (k < i exclusive; k ≥ i or
/// k > i reversed), a reduction whose loads are guarded by k's position.
fn cumsum(cx: &mut Cx, x: &View, ax: usize, exclusive: bool, reverse: bool) -> View {
    let rank = x.shape.len();
    let len = x.shape[ax] as i64;
    let out = cx.temp(x.dtype, &x.shape);
    let id = cx.red();
    let mut idx = out_index(rank);
    idx[ax] = var(Var::Red(id));
    // Guard on i − k (forward) or k − i (reverse) ∈ [lo, len + lo).
    let (i, k) = (Var::Out(ax), Var::Red(id));
    let (p, q) = if reverse { (k, i) } else { (i, k) };
    let lo = exclusive as i64;
    let load = Expr::Load {
        access: Box::new(Access {
            buf: x.buf,
            index: x.address(&idx),
            gathers: vec![],
        }),
        guards: vec![Guard {
            index: Affine {
                offset: 0,
                terms: vec![(p, 1), (q, -1)],
            },
            lo,
            hi: len + lo,
        }],
        fill: 0.0,
    };
    let value = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(id, x.shape[ax])],
        body: Box::new(load),
    };
    cx.emit(&out, value);
    out
}

/// Softmax / LogSoftmax along `ax`: row max, Σ exp(x − max), then the map.
/// A row with a NaN gives NaN; an all -inf row gives NaN (−inf − −inf).
fn softmax(cx: &mut Cx, x: &View, ax: usize, log: bool) -> View {
    let dt = x.dtype;
    let m = reduce_kernel(cx, &x.shape, &[ax], ReduceFn::Max, dt, |i| x.load(i), |r| r);
    let s = reduce_kernel(
        cx,
        &x.shape,
        &[ax],
        ReduceFn::Sum,
        dt,
        |i| Expr::unary(UnaryFn::Exp, sub(x.load(i), m.load(i))),
        |r| r,
    );
    let idx = out_index(x.shape.len());
    let d = || sub(x.load(&idx), m.load(&idx));
    let value = if log {
        sub(d(), Expr::unary(UnaryFn::Log, s.load(&idx)))
    } else {
        div(Expr::unary(UnaryFn::Exp, d()), s.load(&idx))
    };
    let out = cx.temp(dt, &x.shape);
    cx.emit(&out, value);
    out
}

/// Scale / bias must broadcast (unidirectionally) to x.
fn check_affine(t: &View, x: &View, what: &str) -> Result<(), String> {
    let ok = t.dtype == x.dtype
        && t.shape.len() <= x.shape.len()
        && t.shape
            .iter()
            .zip(&x.shape[x.shape.len() - t.shape.len()..])
            .all(|(&a, &b)| a == b || a == 1);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {}{:?} does not broadcast to X {}{:?}",
            t.dtype, t.shape, x.dtype, x.shape
        ))
    }
}

/// [N, C] of an [N, C, ...] input.
fn nc(x: &View) -> Result<(usize, usize), String> {
    if x.shape.len() < 2 {
        return Err(format!(
            "X must have rank ≥ 2 ([N, C, ...]), got shape {:?}",
            x.shape
        ));
    }
    Ok((x.shape[0], x.shape[1]))
}

/// Mean kernel, inverse-standard-deviation kernel (two-pass:
/// Σ(x − mean)²/N), then y = (x − mean)·inv·scale + bias over x's shape.
/// `scale`/`bias` are loads at the output point. Returns y, and the mean
/// and inv temps through `stats` when asked.
fn normalize(
    cx: &mut Cx,
    x: &View,
    axes: &[usize],
    epsilon: f32,
    scale: Expr,
    bias: Option<Expr>,
    stats: Option<(DType, &mut Vec<View>)>,
) -> Result<View, String> {
    let sdt = match &stats {
        Some((d, _)) => stat_dtype(x.dtype, *d),
        None => stat_dtype(x.dtype, DType::F32),
    };
    let n = count(x, axes);
    let mean = reduce_kernel(
        cx,
        &x.shape,
        axes,
        ReduceFn::Sum,
        sdt,
        |i| cast(x.dtype, sdt, x.load(i)),
        |s| div(s, c(sdt, n)),
    );
    let inv = reduce_kernel(
        cx,
        &x.shape,
        axes,
        ReduceFn::Sum,
        sdt,
        |i| {
            let d = sub(cast(x.dtype, sdt, x.load(i)), mean.load(i));
            mul(d.clone(), d)
        },
        |s| rsqrt(add(div(s, c(sdt, n)), c(sdt, epsilon as f64))),
    );
    let idx = out_index(x.shape.len());
    let dt = x.dtype;
    let norm = mul(
        sub(x.load(&idx), cast(sdt, dt, mean.load(&idx))),
        cast(sdt, dt, inv.load(&idx)),
    );
    let mut y = mul(norm, scale);
    if let Some(b) = bias {
        y = add(y, b);
    }
    let out = cx.temp(dt, &x.shape);
    cx.emit(&out, y);
    if let Some((_, views)) = stats {
        views.push(mean);
        views.push(inv);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn layer_norm(
    cx: &mut Cx,
    x: &View,
    scale: &View,
    bias: Option<&View>,
    ax: usize,
    epsilon: f32,
    stash: DType,
    outs: &[TypeInfo],
) -> Result<Vec<View>, String> {
    check_affine(scale, x, "Scale")?;
    if let Some(b) = bias {
        check_affine(b, x, "B")?;
    }
    if !(1..=3).contains(&outs.len()) {
        return Err(format!("has {} outputs; 1 to 3 are defined", outs.len()));
    }
    let axes: Vec<usize> = (ax..x.shape.len()).collect();
    let mut stats = Vec::new();
    let y = normalize(
        cx,
        x,
        &axes,
        epsilon,
        scale.load_broadcast(&x.shape),
        bias.map(|b| b.load_broadcast(&x.shape)),
        Some((stash, &mut stats)),
    )?;
    let mut result = vec![y];
    // Mean and InvStdDev, in the stash type.
    for (stat, ty) in stats.into_iter().zip(&outs[1..]) {
        let v = if stat.dtype == ty.dtype {
            stat
        } else {
            let o = cx.temp(ty.dtype, &stat.shape);
            cx.emit(
                &o,
                Expr::Cast(ty.dtype, Box::new(stat.load(&out_index(stat.shape.len())))),
            );
            o
        };
        let shape = known_shape(ty)?;
        result.push(cx.reshape(&v, &shape));
    }
    Ok(result)
}
