//! Conv (1-D, 2-D, 3-D, … alike), in one of two forms:
//!
//! * **im2col** (f32 windows larger than one tap, or padded): a few copy
//!   kernels gather the input windows into a temp `col[N, C·K, P]` (`K` the
//!   taps, `P` the output points), then one contraction kernel
//!   `y[n, co, p] = Σ_r W[co, r] · col[n, r, p]` with a single reduction
//!   variable, the shape the backends run as a matrix product (the CPU JIT
//!   through its sgemm microkernel). The copy is split along the last
//!   spatial axis per tap into the points whose window stays inside the
//!   input (a plain strided copy, no guard on the innermost axis, so it
//!   vectorises) and the border points (zeros). Large outputs are cut into
//!   chunks along the first spatial axis so the temp stays small.
//! * **direct** (everything else, and tiny convolutions; and, with
//!   `LowerOptions::conv_library`, every 2-D f32 convolution of one group,
//!   its kernel tagged `Library::Conv` unless tiny): one kernel over
//!   `[N, M, O…]` (or `[N, G, M/G, O…]` with groups, so the input channel
//!   `g·C/G + ci` stays affine) reducing over the input channels of the
//!   group and the kernel taps. Padding is a guard on each spatial input
//!   index.

use super::{acc_type, cast, guarded, lin, narrow, out, red, shape_of, split_axis};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{
    Access, Affine, BinaryFn, ConvCall, Expr, Guard, Library, Operand4, ReduceFn, Var,
};
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
    let taps: usize = kernel.iter().product();
    let points: usize = g.out.iter().product();
    let padded = g.pad_begin.iter().chain(&g.pad_end).any(|&p| p > 0);
    let big = mg * points * cg * taps >= IM2COL_MIN_WORK;
    let library = cx.opts.conv_library && x.dtype == DType::F32 && group == 1 && spatial.len() == 2;
    if x.dtype == DType::F32 && (taps > 1 || padded) && big && !library {
        return im2col(cx, x, w, bias, &shape, &g, group);
    }
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
    if library && big {
        let call = conv_call(x, w, &y, &g);
        if let Some(k) = cx.program.kernels.last_mut() {
            k.library = Some(Library::Conv(call));
        }
    }
    Ok(y)
}

/// The library call the direct kernel of a 2-D f32 convolution computes
/// (its `Reduce`). Strides of extent-1 axes of W and Y are set to what
/// flattening asks (they address nothing), so that contiguous tensors of
/// any shape pass the call's check.
fn conv_call(x: &View, w: &View, y: &View, g: &Geometry) -> ConvCall {
    let op = |v: &View| Operand4 {
        buf: v.buf,
        offset: v.offset,
        strides: [v.strides[0], v.strides[1], v.strides[2], v.strides[3]],
    };
    let (xo, mut wo, mut yo) = (op(x), op(w), op(y));
    let (kh, kw) = (g.kernel[0] as i64, g.kernel[1] as i64);
    if kw == 1 {
        wo.strides[3] = 1;
    }
    if kh == 1 {
        wo.strides[2] = kw * wo.strides[3];
    }
    if w.shape[1] == 1 {
        wo.strides[1] = kh * wo.strides[2];
    }
    if y.shape[3] == 1 {
        yo.strides[3] = 1;
    }
    if y.shape[2] == 1 {
        yo.strides[2] = y.shape[3] as i64 * yo.strides[3];
    }
    ConvCall {
        x: xo,
        w: wo,
        out: yo,
        batch: x.shape[0],
        in_channels: x.shape[1],
        out_channels: w.shape[0],
        in_size: [x.shape[2], x.shape[3]],
        out_size: [g.out[0], g.out[1]],
        kernel: [g.kernel[0], g.kernel[1]],
        strides: [g.strides[0], g.strides[1]],
        dilations: [g.dilations[0], g.dilations[1]],
        pads: [g.pad_begin[0], g.pad_begin[1]],
    }
}

/// Smallest `M/G · P · C/G · K` (multiply-adds per image and group) lowered
/// through im2col: below it the copy and the call cost more than they save.
const IM2COL_MIN_WORK: usize = 4096;

/// Largest im2col temp, in elements, before the output is cut into chunks
/// along its first spatial axis.
const IM2COL_MAX_COL: usize = 1 << 20;

/// The im2col form (see the module docs): `shape` is Y's, `g` the resolved
/// window geometry. X, W and the bias are f32.
fn im2col(
    cx: &mut Cx,
    x: &View,
    w: &View,
    bias: Option<&View>,
    shape: &[usize],
    g: &Geometry,
    group: usize,
) -> Result<View, String> {
    let (nb, c, m) = (x.shape[0], x.shape[1], w.shape[0]);
    let (cg, mg) = (c / group, m / group);
    let sp = &x.shape[2..];
    let s = sp.len();
    let taps: usize = g.kernel.iter().product();
    let rest: usize = g.out[1..].iter().product();
    // Rows of the first spatial axis per chunk (one chunk for 1-D).
    let rows = if s == 1 {
        g.out[0]
    } else {
        (IM2COL_MAX_COL / (nb * c * taps * rest).max(1)).clamp(1, g.out[0])
    };
    let y = cx.temp(x.dtype, shape);
    let wk = cx.reshape(w, &[m, cg * taps]);
    for start in (0..g.out[0]).step_by(rows) {
        let len = rows.min(g.out[0] - start);
        let pc = len * rest;
        let mut col_shape = vec![nb, c];
        col_shape.extend(&g.kernel);
        col_shape.push(len);
        col_shape.extend(&g.out[1..]);
        let col = cx.temp(x.dtype, &col_shape);
        im2col_copy(cx, x, &col, g, start, len);
        // y[n, (g,) co, p] = Σ_r W[g·Mg + co, r] · col[n, g·Cg·K + r, p].
        let colm = col
            .reshape(&[nb, c * taps, pc])
            .expect("a temp is contiguous");
        let r = cx.red();
        // Domain: [n, (g,) co-in-group, p].
        let (co, chan, p) = if group > 1 {
            (
                lin(&[(Var::Out(1), mg as i64), (Var::Out(2), 1)], 0),
                lin(&[(Var::Out(1), (cg * taps) as i64), (Var::Red(r), 1)], 0),
                out(3),
            )
        } else {
            (out(1), red(r), out(2))
        };
        let xl = colm.load(&[out(0), chan, p]);
        let wl = wk.load(&[co.clone(), red(r)]);
        let mut value = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(r, cg * taps)],
            body: Box::new(Expr::binary(BinaryFn::Mul, xl, wl)),
        };
        if let Some(b) = bias {
            value = Expr::binary(BinaryFn::Add, value, b.load(&[co]));
        }
        let slab = narrow(&y, 2, start, len)
            .reshape(&[nb, m, pc])
            .expect("rows of a contiguous tensor merge");
        let store = if group > 1 {
            split_axis(&slab, 1, group)
        } else {
            slab
        };
        cx.emit(&store, value);
    }
    Ok(y)
}

/// Fills `col[n, c, k…, o₀ − start, o…]` with `x[n, c, o·s + k·d − pad]`
/// (zero outside the input) for output rows `start..start + len` of the
/// first spatial axis: per tap of the last spatial axis, one copy over the
/// points whose index stays inside the input and one zero fill per border.
fn im2col_copy(cx: &mut Cx, x: &View, col: &View, g: &Geometry, start: usize, len: usize) {
    let (nb, c) = (x.shape[0], x.shape[1]);
    let sp = &x.shape[2..];
    let s = sp.len();
    let last = s - 1;
    // Domain: [n, c, k₀ … k_{s−2}, o₀ … o_{s−1}] with the last output axis
    // narrowed to the range at hand.
    let kax = |a: usize| 2 + a;
    let oax = |a: usize| 2 + last + a;
    for t in 0..g.kernel[last] {
        let (st, d, pb) = (
            g.strides[last] as i64,
            g.dilations[last] as i64,
            g.pad_begin[last] as i64,
        );
        let on = g.out[last] as i64;
        let base = t as i64 * d - pb;
        // Inside: 0 ≤ o·st + base < len  ⇔  lo ≤ o < hi.
        let lo = if base >= 0 { 0 } else { (-base + st - 1) / st }.min(on);
        let hi = ((sp[last] as i64 - base + st - 1) / st).clamp(lo, on);
        for (from, to, inside) in [(0, lo, false), (lo, hi, true), (hi, on, false)] {
            if from >= to {
                continue;
            }
            let mut domain = vec![nb, c];
            domain.extend(&g.kernel[..last]);
            domain.extend(&g.out[..last]);
            domain.push((to - from) as usize);
            if s > 1 {
                domain[oax(0)] = len;
            }
            // Output row along axis a (chunk-relative for axis 0).
            let orow = |a: usize| {
                if a == last {
                    lin(&[(Var::Out(oax(a)), 1)], from)
                } else {
                    out(oax(a))
                }
            };
            let mut ci = vec![out(0), out(1)];
            ci.extend((0..last).map(|a| out(kax(a))));
            ci.push(Affine::constant(t as i64));
            ci.extend((0..s).map(orow));
            let store = Access {
                buf: col.buf,
                index: col.address(&ci),
                gathers: vec![],
            };
            let value = if inside {
                let mut xi = vec![out(0), out(1)];
                let mut guards = vec![];
                for (a, &extent) in sp.iter().enumerate() {
                    let (sa, da, pa) = (
                        g.strides[a] as i64,
                        g.dilations[a] as i64,
                        g.pad_begin[a] as i64,
                    );
                    let mut o = orow(a);
                    if a == 0 {
                        o.offset += start as i64;
                    }
                    let terms: Vec<_> = o.terms.iter().map(|&(v, k)| (v, k * sa)).collect();
                    let mut idx = lin(&terms, o.offset * sa - pa);
                    if a == last {
                        idx.offset += t as i64 * da;
                    } else {
                        idx.terms.push((Var::Out(kax(a)), da));
                        let top = (g.out[a] as i64 - 1) * sa - pa + (g.kernel[a] as i64 - 1) * da;
                        if pa > 0 || top >= extent as i64 {
                            guards.push(Guard {
                                index: idx.clone(),
                                lo: 0,
                                hi: extent as i64,
                            });
                        }
                    }
                    xi.push(idx);
                }
                guarded(x, &xi, guards, 0.0)
            } else {
                Expr::f32(0.0)
            };
            cx.emit_kernel(domain, store, value);
        }
    }
}

#[cfg(test)]
mod tests;
