//! Conv (1-D, 2-D, 3-D, … alike): direct convolution, one kernel over
//! `[N, M, O…]` (or `[N, G, M/G, O…]` with groups, so the input channel
//! `g·C/G + ci` stays affine) reducing over the input channels of the group
//! and the kernel taps. Padding is a guard on each spatial input index.

use super::{acc_type, cast, guarded, lin, out, red, shape_of, split_axis};
use crate::graph::TypeInfo;
use crate::kernel::{Affine, BinaryFn, Expr, Guard, ReduceFn, Var};
use crate::lower::{Cx, View, input};
use crate::op::{AutoPad, Window};

/// Resolved window geometry over the spatial axes (the ONNX rules, as the
/// reference interpreter's `conv::geometry`).
pub(super) struct Geometry {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub pad_end: Vec<usize>,
    pub out: Vec<usize>,
}

fn list(v: &[usize], n: usize, what: &str) -> Result<Vec<usize>, String> {
    match v.len() {
        0 => Ok(vec![1; n]),
        l if l == n && !v.contains(&0) => Ok(v.to_vec()),
        _ => Err(format!("{what} {v:?} must be {n} values ≥ 1")),
    }
}

pub(super) fn geometry(
    spatial: &[usize],
    kernel: &[usize],
    w: &Window,
    ceil_mode: bool,
) -> Result<Geometry, String> {
    let n = spatial.len();
    if kernel.len() != n || kernel.contains(&0) {
        return Err(format!(
            "kernel shape {kernel:?} does not fit {n} spatial axes"
        ));
    }
    let strides = list(&w.strides, n, "strides")?;
    let dilations = list(&w.dilations, n, "dilations")?;
    let eff: Vec<usize> = (0..n)
        .map(|i| {
            (kernel[i] - 1)
                .checked_mul(dilations[i])
                .and_then(|v| v.checked_add(1))
        })
        .collect::<Option<_>>()
        .ok_or("dilated kernel extent overflows")?;
    let auto = w.auto_pad.unwrap_or(AutoPad::NotSet);
    let (mut pad_begin, mut pad_end, mut outv) = (vec![0; n], vec![0; n], vec![0; n]);
    for i in 0..n {
        let (len, s) = (spatial[i], strides[i]);
        match auto {
            AutoPad::NotSet | AutoPad::Valid => {
                if auto == AutoPad::NotSet && !w.pads.is_empty() {
                    if w.pads.len() != 2 * n {
                        return Err(format!("pads {:?} must have {} values", w.pads, 2 * n));
                    }
                    (pad_begin[i], pad_end[i]) = (w.pads[i], w.pads[n + i]);
                }
                let padded = len
                    .checked_add(pad_begin[i])
                    .and_then(|v| v.checked_add(pad_end[i]))
                    .ok_or("pads overflow")?;
                let span = padded.checked_sub(eff[i]).ok_or_else(|| {
                    format!("window of extent {} exceeds padded input {padded}", eff[i])
                })?;
                outv[i] = if ceil_mode && auto == AutoPad::NotSet {
                    let o = span.div_ceil(s) + 1;
                    if (o - 1) * s >= len + pad_begin[i] {
                        o - 1
                    } else {
                        o
                    }
                } else {
                    span / s + 1
                };
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                outv[i] = len.div_ceil(s);
                let need = (outv[i].saturating_sub(1) * s + eff[i]).saturating_sub(len);
                let small = need / 2;
                (pad_begin[i], pad_end[i]) = if auto == AutoPad::SameUpper {
                    (small, need - small)
                } else {
                    (need - small, small)
                };
            }
        }
    }
    Ok(Geometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pad_begin,
        pad_end,
        out: outv,
    })
}

impl Geometry {
    /// Input index along spatial axis `a` for output var `o` and tap var `k`,
    /// and its guard when the window can leave the input.
    pub(super) fn tap(&self, a: usize, o: Var, k: Var, len: usize) -> (Affine, Option<Guard>) {
        let (s, d, pb) = (
            self.strides[a] as i64,
            self.dilations[a] as i64,
            self.pad_begin[a] as i64,
        );
        let idx = lin(&[(o, s), (k, d)], -pb);
        let last = (self.out[a] as i64 - 1) * s - pb + (self.kernel[a] as i64 - 1) * d;
        let guard = (pb > 0 || last >= len as i64).then(|| Guard {
            index: idx.clone(),
            lo: 0,
            hi: len as i64,
        });
        (idx, guard)
    }
}

pub(super) fn conv(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    window: &Window,
    group: usize,
) -> Result<View, String> {
    let (x, w) = (input(ins, 0)?, input(ins, 1)?);
    let bias = ins.get(2).and_then(Option::as_ref);
    let (xs, ws) = (&x.shape, &w.shape);
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "Conv needs X and W of equal rank ≥ 3, got {xs:?} and {ws:?}"
        ));
    }
    if !x.dtype.is_float() || w.dtype != x.dtype || bias.is_some_and(|b| b.dtype != x.dtype) {
        return Err(format!(
            "Conv: X, W and B must share one float type (X is {})",
            x.dtype
        ));
    }
    let (nb, c, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    if group == 0 || c != cg * group || !m.is_multiple_of(group) {
        return Err(format!(
            "Conv: X {xs:?} and W {ws:?} do not fit group {group}"
        ));
    }
    if let Some(b) = bias
        && b.shape != [m]
    {
        return Err(format!("Conv: bias shape {:?} must be [{m}]", b.shape));
    }
    let kernel = &ws[2..];
    if window.kernel_shape.as_deref().is_some_and(|k| k != kernel) {
        return Err(format!(
            "Conv: kernel_shape {:?} differs from W's {kernel:?}",
            window.kernel_shape
        ));
    }
    let spatial = &xs[2..];
    let g = geometry(spatial, kernel, window, false)?;
    let shape = shape_of(outs, 0)?;
    let mut want = vec![nb, m];
    want.extend(&g.out);
    if shape != want {
        return Err(format!(
            "Conv: output type {shape:?} differs from the window geometry's {want:?}"
        ));
    }
    let mg = m / group;
    // Domain axes: n, [g,] co-in-group, spatial outputs.
    let lead = if group > 1 { 3 } else { 2 };
    let co = if group > 1 {
        lin(&[(Var::Out(1), mg as i64), (Var::Out(2), 1)], 0)
    } else {
        out(1)
    };
    let ci = cx.red();
    let ks: Vec<usize> = kernel.iter().map(|_| cx.red()).collect();
    let chan = if group > 1 {
        lin(&[(Var::Out(1), cg as i64), (Var::Red(ci), 1)], 0)
    } else {
        red(ci)
    };
    let mut xi = vec![out(0), chan];
    let mut guards = vec![];
    for (a, &k) in ks.iter().enumerate() {
        let (idx, guard) = g.tap(a, Var::Out(lead + a), Var::Red(k), spatial[a]);
        xi.push(idx);
        guards.extend(guard);
    }
    let mut wi = vec![co.clone(), red(ci)];
    wi.extend(ks.iter().map(|&k| red(k)));
    let acc = acc_type(x.dtype);
    let xl = cast(guarded(x, &xi, guards, 0.0), x.dtype, acc);
    let wl = cast(w.load(&wi), x.dtype, acc);
    let mut vars = vec![(ci, cg)];
    vars.extend(ks.iter().zip(kernel).map(|(&k, &n)| (k, n)));
    let mut value = Expr::Reduce {
        op: ReduceFn::Sum,
        vars,
        body: Box::new(Expr::binary(BinaryFn::Mul, xl, wl)),
    };
    if let Some(b) = bias {
        value = Expr::binary(BinaryFn::Add, value, cast(b.load(&[co]), x.dtype, acc));
    }
    let y = cx.temp(x.dtype, &shape);
    let store = if group > 1 {
        split_axis(&y, 1, group)
    } else {
        y.clone()
    };
    cx.emit(&store, cast(value, acc, x.dtype));
    Ok(y)
}
