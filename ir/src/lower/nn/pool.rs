//! AveragePool, MaxPool, GlobalAveragePool, GlobalMaxPool: one kernel over
//! the output, reducing over the window taps through guarded loads (fill 0
//! for averages, −∞ for maxima). The average's divisor is separable
//! (a product of per-axis counts); when it varies at the borders it is a
//! precomputed table over the output's spatial positions.

use super::conv::geometry;
use super::{acc_type, cast, guarded, konst, out, red, shape_of};
use crate::graph::TypeInfo;
use crate::kernel::{BinaryFn, Expr, ReduceFn, Var};
use crate::lower::{Cx, View, input};
use crate::op::Window;
use crate::tensor::{Tensor, TensorData};

fn check(op: &str, x: &View) -> Result<(), String> {
    if x.shape.len() < 3 {
        return Err(format!(
            "{op}: X must have rank ≥ 3 (N, C, spatial…), got {:?}",
            x.shape
        ));
    }
    if !(x.dtype.is_float() || x.dtype.is_int()) {
        return Err(format!("{op}: X must be numeric, got {}", x.dtype));
    }
    Ok(())
}

/// AveragePool (`count_include_pad` is `Some`) or MaxPool (`None`).
pub(super) fn pool(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    window: &Window,
    ceil_mode: bool,
    count_include_pad: Option<bool>,
) -> Result<View, String> {
    let op = if count_include_pad.is_some() {
        "AveragePool"
    } else {
        "MaxPool"
    };
    let x = input(ins, 0)?;
    check(op, x)?;
    let kernel = window
        .kernel_shape
        .as_ref()
        .ok_or_else(|| format!("{op}: kernel_shape is required"))?;
    let spatial = &x.shape[2..];
    let g = geometry(spatial, kernel, window, ceil_mode).map_err(|e| format!("{op}: {e}"))?;
    let shape = shape_of(outs, 0)?;
    let mut want = x.shape[..2].to_vec();
    want.extend(&g.out);
    if shape != want {
        return Err(format!(
            "{op}: output type {shape:?} differs from the window geometry's {want:?}"
        ));
    }
    let ks: Vec<usize> = kernel.iter().map(|_| cx.red()).collect();
    let mut xi = vec![out(0), out(1)];
    let mut guards = vec![];
    for (a, &k) in ks.iter().enumerate() {
        let (idx, guard) = g.tap(a, Var::Out(2 + a), Var::Red(k), spatial[a]);
        xi.push(idx);
        guards.extend(guard);
    }
    let vars: Vec<(usize, usize)> = ks.iter().zip(kernel).map(|(&k, &n)| (k, n)).collect();
    let (dt, acc) = (x.dtype, acc_type(x.dtype));
    let y = cx.temp(dt, &shape);
    let Some(include) = count_include_pad else {
        let value = Expr::Reduce {
            op: ReduceFn::Max,
            vars,
            body: Box::new(guarded(x, &xi, guards, f64::NEG_INFINITY)),
        };
        cx.emit(&y, value);
        return Ok(y);
    };
    let sum = Expr::Reduce {
        op: ReduceFn::Sum,
        vars,
        body: Box::new(cast(guarded(x, &xi, guards, 0.0), dt, acc)),
    };
    // Per axis and output index: the number of counted window positions.
    let counts: Vec<Vec<usize>> = (0..spatial.len())
        .map(|a| {
            let (len, pb, pe) = (
                spatial[a] as i64,
                g.pad_begin[a] as i64,
                g.pad_end[a] as i64,
            );
            (0..g.out[a])
                .map(|o| {
                    (0..g.kernel[a])
                        .map(|k| (o * g.strides[a] + k * g.dilations[a]) as i64 - pb)
                        .filter(|&i| {
                            if include {
                                i >= -pb && i < len + pe
                            } else {
                                (0..len).contains(&i)
                            }
                        })
                        .count()
                })
                .collect()
        })
        .collect();
    let mut table = vec![1.0f64];
    for c in &counts {
        table = table
            .iter()
            .flat_map(|&t| c.iter().map(move |&n| t * n as f64))
            .collect();
    }
    let divisor = if table.iter().all(|&t| t == table[0]) {
        konst(table[0], acc)
    } else {
        let t = Tensor::new(g.out.clone(), TensorData::from_f64(acc, &table))?;
        let tv = cx.weight("pool_divisor", t);
        let idx: Vec<_> = (0..spatial.len()).map(|a| out(2 + a)).collect();
        tv.load(&idx)
    };
    cx.emit(&y, cast(Expr::binary(BinaryFn::Div, sum, divisor), acc, dt));
    Ok(y)
}

/// GlobalAveragePool (`max = false`) or GlobalMaxPool over all spatial axes.
pub(super) fn global(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    max: bool,
) -> Result<View, String> {
    let op = if max {
        "GlobalMaxPool"
    } else {
        "GlobalAveragePool"
    };
    let x = input(ins, 0)?;
    check(op, x)?;
    let shape = shape_of(outs, 0)?;
    let spatial = &x.shape[2..];
    let ks: Vec<usize> = spatial.iter().map(|_| cx.red()).collect();
    let mut xi = vec![out(0), out(1)];
    xi.extend(ks.iter().map(|&k| red(k)));
    let vars: Vec<(usize, usize)> = ks.iter().zip(spatial).map(|(&k, &n)| (k, n)).collect();
    let (dt, acc) = (x.dtype, acc_type(x.dtype));
    let y = cx.temp(dt, &shape);
    let value = if max {
        Expr::Reduce {
            op: ReduceFn::Max,
            vars,
            body: Box::new(x.load(&xi)),
        }
    } else {
        let plane: usize = spatial.iter().product();
        let sum = Expr::Reduce {
            op: ReduceFn::Sum,
            vars,
            body: Box::new(cast(x.load(&xi), dt, acc)),
        };
        cast(
            Expr::binary(BinaryFn::Div, sum, konst(plane as f64, acc)),
            acc,
            dt,
        )
    };
    cx.emit(&y, value);
    Ok(y)
}
