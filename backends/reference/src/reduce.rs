//! Reductions: Reduce* over a set of axes, ArgMax/ArgMin, Softmax and
//! LogSoftmax (per axis, or over flattened trailing dims with `coerce_2d`),
//! and CumSum.

use crate::broadcast::{strides_i64, walk};
use crate::common::{
    R, axes as norm_axes, axis as norm_axis, prod, require_float, scalar_int, tensor,
};
use varc_ir::op::ReduceKind;
use varc_ir::{DType, Tensor, TensorData};

/// For each element of `shape`, the index of its group when `reduced` axes
/// are collapsed; also the kept shape (reduced axes set to 1).
fn group_map(shape: &[usize], reduced: &[usize]) -> R<(Vec<usize>, Vec<usize>)> {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if reduced.contains(&i) { 1 } else { d })
        .collect();
    let mut st = strides_i64(&kept);
    for &a in reduced {
        st[a] = 0;
    }
    Ok((walk(shape, 0, &st)?, kept))
}

/// Smallest and largest values of an integer (or bool) dtype.
fn int_range(dt: DType) -> (i64, i64) {
    match dt {
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Reduce `x` over `axes` (empty: every axis, or none when
/// `noop_with_empty_axes`). Reducing over no axes reduces each element
/// alone, which is what the ONNX reference does for the noop case.
pub fn reduce(
    x: &Tensor,
    kind: ReduceKind,
    axes: &[i64],
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> R<Tensor> {
    let rank = x.rank();
    let reduced: Vec<usize> = if axes.is_empty() {
        if noop_with_empty_axes {
            vec![]
        } else {
            (0..rank).collect()
        }
    } else {
        norm_axes(axes, rank)?
    };
    let (map, kept) = group_map(x.shape(), &reduced)?;
    let groups = prod(&kept);
    let count = prod(&reduced.iter().map(|&a| x.shape()[a]).collect::<Vec<_>>());
    let out_shape: Vec<usize> = if keepdims {
        kept.clone()
    } else {
        (0..rank)
            .filter(|a| !reduced.contains(a))
            .map(|a| x.shape()[a])
            .collect()
    };
    let dt = x.dtype();
    use ReduceKind::*;
    let int_kind = matches!(kind, Sum | Prod | Max | Min | L1 | SumSquare);
    if dt == DType::Bool && !matches!(kind, Max | Min) {
        return Err("only ReduceMax and ReduceMin are defined for bool tensors".into());
    }
    if !dt.is_float() && int_kind {
        let v = x.to_i64_vec();
        let (lo, hi) = int_range(dt);
        let init = match kind {
            Prod => 1,
            Max => lo,
            Min => hi,
            _ => 0,
        };
        let mut acc = vec![init; groups];
        for (e, &g) in map.iter().enumerate() {
            let a = &mut acc[g];
            let x = v[e];
            *a = match kind {
                Sum => a.wrapping_add(x),
                Prod => a.wrapping_mul(x),
                Max => (*a).max(x),
                Min => (*a).min(x),
                L1 => a.wrapping_add(x.wrapping_abs()),
                _ => a.wrapping_add(x.wrapping_mul(x)),
            };
        }
        return tensor(out_shape, TensorData::from_i64(dt, &acc));
    }
    let v = x.to_f64_vec();
    let acc: Vec<f64> = match kind {
        LogSumExp => {
            // Shift by the largest finite element of each group.
            let mut mx = vec![f64::NEG_INFINITY; groups];
            for (e, &g) in map.iter().enumerate() {
                if v[e].is_finite() && v[e] > mx[g] {
                    mx[g] = v[e];
                }
            }
            let shift: Vec<f64> = mx
                .iter()
                .map(|&m| if m.is_finite() { m } else { 0.0 })
                .collect();
            let mut s = vec![0.0; groups];
            for (e, &g) in map.iter().enumerate() {
                s[g] += (v[e] - shift[g]).exp();
            }
            s.iter().zip(&shift).map(|(s, m)| s.ln() + m).collect()
        }
        Max | Min => {
            let init = if kind == Max {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            let mut acc = vec![init; groups];
            for (e, &g) in map.iter().enumerate() {
                let (a, x) = (acc[g], v[e]);
                acc[g] = if a.is_nan() || x.is_nan() {
                    f64::NAN
                } else if kind == Max {
                    a.max(x)
                } else {
                    a.min(x)
                };
            }
            acc
        }
        _ => {
            let mut acc = vec![if kind == Prod { 1.0 } else { 0.0 }; groups];
            for (e, &g) in map.iter().enumerate() {
                let x = v[e];
                match kind {
                    Prod => acc[g] *= x,
                    L1 => acc[g] += x.abs(),
                    L2 | SumSquare => acc[g] += x * x,
                    _ => acc[g] += x,
                }
            }
            for a in &mut acc {
                match kind {
                    Mean => *a /= count as f64,
                    L2 => *a = a.sqrt(),
                    LogSum => *a = a.ln(),
                    _ => {}
                }
            }
            acc
        }
    };
    tensor(out_shape, TensorData::from_f64(dt, &acc))
}

/// ArgMax / ArgMin along one axis, as int64. Ties go to the first index (the
/// last with `select_last_index`); a NaN counts as the extreme value.
pub fn arg_reduce(
    x: &Tensor,
    max: bool,
    axis: i64,
    keepdims: bool,
    select_last_index: bool,
) -> R<Tensor> {
    let rank = x.rank();
    let ax = norm_axis(axis, rank)?;
    let shape = x.shape();
    let (outer, len, inner) = (prod(&shape[..ax]), shape[ax], prod(&shape[ax + 1..]));
    if len == 0 && outer * inner > 0 {
        return Err(format!(
            "cannot take an arg-reduction over axis {ax} of size 0"
        ));
    }
    let mut out_shape = shape.to_vec();
    if keepdims {
        out_shape[ax] = 1;
    } else {
        out_shape.remove(ax);
    }
    // `better(candidate, best)`: does the candidate replace the best so far?
    let pick = |better: &dyn Fn(usize, usize) -> bool| -> Vec<i64> {
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                let mut best = 0;
                for k in 1..len {
                    if better(at(k), at(best)) {
                        best = k;
                    }
                }
                out.push(best as i64);
            }
        }
        out
    };
    let out = if x.dtype().is_float() {
        let v = x.to_f64_vec();
        pick(&|c, b| {
            let (c, b) = (v[c], v[b]);
            if b.is_nan() {
                select_last_index && c.is_nan()
            } else if c.is_nan() {
                true
            } else if select_last_index {
                if max { c >= b } else { c <= b }
            } else if max {
                c > b
            } else {
                c < b
            }
        })
    } else {
        let v = x.to_i64_vec();
        pick(&|c, b| {
            let (c, b) = (v[c], v[b]);
            match (max, select_last_index) {
                (true, false) => c > b,
                (true, true) => c >= b,
                (false, false) => c < b,
                (false, true) => c <= b,
            }
        })
    };
    tensor(out_shape, TensorData::I64(out))
}

/// Softmax / LogSoftmax. With `coerce_2d` (opset < 13) the input is viewed as
/// [prod(dims[..axis]), prod(dims[axis..])] and normalised along the second
/// dim. A row whose maximum is -inf (all -inf) gives NaN, as in the ONNX
/// reference (`x - max(x)` is NaN there).
pub fn softmax(x: &Tensor, axis: i64, log: bool, coerce_2d: bool) -> R<Tensor> {
    require_float(x, "Softmax")?;
    let shape = x.shape();
    let rank = shape.len();
    let (outer, len, inner) = if coerce_2d {
        // opset < 13 allows axis == rank? No: axis in [-r, r-1]; but a scalar
        // input has rank 0, handled as one row of one element.
        if rank == 0 {
            (1, 1, 1)
        } else {
            let ax = norm_axis(axis, rank)?;
            (prod(&shape[..ax]), prod(&shape[ax..]), 1)
        }
    } else if rank == 0 {
        return Err("Softmax needs an input of rank ≥ 1".into());
    } else {
        let ax = norm_axis(axis, rank)?;
        (prod(&shape[..ax]), shape[ax], prod(&shape[ax + 1..]))
    };
    let v = x.to_f64_vec();
    let mut out = vec![0.0; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let mut m = f64::NEG_INFINITY;
            let mut nan = false;
            for k in 0..len {
                let x = v[at(k)];
                nan |= x.is_nan();
                if x > m {
                    m = x;
                }
            }
            if nan {
                m = f64::NAN;
            }
            let mut s = 0.0;
            for k in 0..len {
                s += (v[at(k)] - m).exp();
            }
            let ls = s.ln();
            for k in 0..len {
                let d = v[at(k)] - m;
                out[at(k)] = if log { d - ls } else { d.exp() / s };
            }
        }
    }
    tensor(shape.to_vec(), TensorData::from_f64(x.dtype(), &out))
}

/// CumSum(x, axis) with `exclusive` and `reverse`.
pub fn cumsum(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool) -> R<Tensor> {
    let ax = norm_axis(scalar_int(axis, "axis")?, x.rank())?;
    let shape = x.shape();
    let (outer, len, inner) = (prod(&shape[..ax]), shape[ax], prod(&shape[ax + 1..]));
    let order: Vec<usize> = if reverse {
        (0..len).rev().collect()
    } else {
        (0..len).collect()
    };
    let dt = x.dtype();
    let data = if dt.is_float() {
        let v = x.to_f64_vec();
        let mut out = vec![0.0; v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = 0.0;
                for &k in &order {
                    let at = (o * len + k) * inner + i;
                    if exclusive {
                        out[at] = acc;
                        acc += v[at];
                    } else {
                        acc += v[at];
                        out[at] = acc;
                    }
                }
            }
        }
        TensorData::from_f64(dt, &out)
    } else if dt.is_int() {
        let v = x.to_i64_vec();
        let mut out = vec![0i64; v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = 0i64;
                for &k in &order {
                    let at = (o * len + k) * inner + i;
                    if exclusive {
                        out[at] = acc;
                        acc = acc.wrapping_add(v[at]);
                    } else {
                        acc = acc.wrapping_add(v[at]);
                        out[at] = acc;
                    }
                }
            }
        }
        TensorData::from_i64(dt, &out)
    } else {
        return Err(format!("CumSum is not defined for {dt} tensors"));
    };
    tensor(shape.to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn x23() -> Tensor {
        f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    }

    #[test]
    fn reduce_axes_and_keepdims() {
        let x = x23();
        let r = reduce(&x, ReduceKind::Sum, &[1], true, false).unwrap();
        assert_eq!(r.shape(), &[2, 1]);
        assert_eq!(r.as_f32().unwrap(), &[6.0, 15.0]);
        let r = reduce(&x, ReduceKind::Sum, &[-2], false, false).unwrap();
        assert_eq!(r.shape(), &[3]);
        assert_eq!(r.as_f32().unwrap(), &[5.0, 7.0, 9.0]);
        // empty axes: all
        let r = reduce(&x, ReduceKind::Mean, &[], false, false).unwrap();
        assert_eq!(r.shape(), &[] as &[usize]);
        assert_eq!(r.as_f32().unwrap(), &[3.5]);
        let r = reduce(&x, ReduceKind::Max, &[], true, false).unwrap();
        assert_eq!(r.shape(), &[1, 1]);
        assert_eq!(r.as_f32().unwrap(), &[6.0]);
        // noop with empty axes
        let r = reduce(&x, ReduceKind::Sum, &[], true, true).unwrap();
        assert_eq!(r, x);
        let r = reduce(&x, ReduceKind::SumSquare, &[], true, true).unwrap();
        assert_eq!(r.as_f32().unwrap(), &[1.0, 4.0, 9.0, 16.0, 25.0, 36.0]);
        assert!(reduce(&x, ReduceKind::Sum, &[1, -1], true, false).is_err());
        assert!(reduce(&x, ReduceKind::Sum, &[2], true, false).is_err());
    }

    #[test]
    fn reduce_kinds() {
        let x = x23();
        let r = |k| reduce(&x, k, &[1], false, false).unwrap().to_f64_vec();
        assert_eq!(r(ReduceKind::Prod), vec![6.0, 120.0]);
        assert_eq!(r(ReduceKind::Min), vec![1.0, 4.0]);
        assert_eq!(r(ReduceKind::L1), vec![6.0, 15.0]);
        assert_eq!(r(ReduceKind::SumSquare), vec![14.0, 77.0]);
        let l2 = r(ReduceKind::L2);
        assert!((l2[0] - 14f64.sqrt()).abs() < 1e-6);
        let ls = r(ReduceKind::LogSum);
        assert!((ls[0] - 6f64.ln()).abs() < 1e-6);
        let lse = r(ReduceKind::LogSumExp);
        let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((lse[0] - want).abs() < 1e-6);
        // LogSumExp does not overflow
        let big = f32t(&[2], &[1000.0, 1000.0]);
        let r = reduce(&big, ReduceKind::LogSumExp, &[], false, false).unwrap();
        assert!((r.to_f64_vec()[0] - (1000.0 + 2f64.ln())).abs() < 1e-3);
    }

    #[test]
    fn reduce_empty_sets() {
        let x = f32t(&[2, 0, 4], &[]);
        let r = reduce(&x, ReduceKind::Sum, &[1], true, false).unwrap();
        assert_eq!(r.shape(), &[2, 1, 4]);
        assert_eq!(r.as_f32().unwrap(), &[0.0; 8]);
        let r = reduce(&x, ReduceKind::Max, &[1], false, false).unwrap();
        assert_eq!(r.as_f32().unwrap(), &[f32::NEG_INFINITY; 8]);
        let r = reduce(&x, ReduceKind::Prod, &[1], false, false).unwrap();
        assert_eq!(r.as_f32().unwrap(), &[1.0; 8]);
        let r = reduce(&x, ReduceKind::LogSumExp, &[1], false, false).unwrap();
        assert_eq!(r.as_f32().unwrap(), &[f32::NEG_INFINITY; 8]);
        let xi = Tensor::new(vec![0], TensorData::I32(vec![])).unwrap();
        let r = reduce(&xi, ReduceKind::Max, &[], false, false).unwrap();
        assert_eq!(r.data(), &TensorData::I32(vec![i32::MIN]));
        let xb = Tensor::new(vec![0], TensorData::Bool(vec![])).unwrap();
        let r = reduce(&xb, ReduceKind::Max, &[], false, false).unwrap();
        assert_eq!(r.data(), &TensorData::Bool(vec![false]));
    }

    #[test]
    fn int_reduce() {
        let x = Tensor::from_i64(vec![2, 2], vec![1, -2, 3, 4]).unwrap();
        let r = reduce(&x, ReduceKind::Sum, &[0], false, false).unwrap();
        assert_eq!(r.data(), &TensorData::I64(vec![4, 2]));
        let r = reduce(&x, ReduceKind::Mean, &[1], false, false).unwrap();
        assert_eq!(r.data(), &TensorData::I64(vec![0, 3]));
    }

    #[test]
    fn argmax_argmin() {
        let x = f32t(&[2, 3], &[1.0, 3.0, 3.0, 0.0, -1.0, 0.0]);
        let r = arg_reduce(&x, true, 1, true, false).unwrap();
        assert_eq!(r.shape(), &[2, 1]);
        assert_eq!(r.to_i64_vec(), vec![1, 0]);
        let r = arg_reduce(&x, true, -1, false, true).unwrap();
        assert_eq!(r.to_i64_vec(), vec![2, 2]);
        let r = arg_reduce(&x, false, 0, false, false).unwrap();
        assert_eq!(r.to_i64_vec(), vec![1, 1, 1]);
        assert!(arg_reduce(&f32t(&[0], &[]), true, 0, false, false).is_err());
    }

    #[test]
    fn softmax_rows() {
        let x = f32t(&[2, 2], &[0.0, 0.0, 1000.0, f32::NEG_INFINITY]);
        let s = softmax(&x, -1, false, false).unwrap();
        assert_eq!(s.as_f32().unwrap(), &[0.5, 0.5, 1.0, 0.0]);
        let l = softmax(&x, 1, true, false).unwrap();
        let lv = l.as_f32().unwrap();
        assert!((lv[0] + std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(lv[2], 0.0);
        assert_eq!(lv[3], f32::NEG_INFINITY);
        // an all -inf row is NaN, like the ONNX reference
        let x = f32t(&[1, 2], &[f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!(
            softmax(&x, 1, false, false)
                .unwrap()
                .as_f32()
                .unwrap()
                .iter()
                .all(|v| v.is_nan())
        );
        // axis 0 of [2,2]
        let x = f32t(&[2, 2], &[0.0, 1.0, 0.0, 1.0]);
        assert_eq!(
            softmax(&x, 0, false, false).unwrap().as_f32().unwrap(),
            &[0.5; 4]
        );
        // coerce_2d flattens trailing dims
        let x = f32t(&[1, 2, 2], &[0.0; 4]);
        assert_eq!(
            softmax(&x, 1, false, true).unwrap().as_f32().unwrap(),
            &[0.25; 4]
        );
    }

    #[test]
    fn cumsum_modes() {
        let x = f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let ax = Tensor::from_i64(vec![], vec![1]).unwrap();
        let c = |e, r| cumsum(&x, &ax, e, r).unwrap().to_f64_vec();
        assert_eq!(c(false, false), vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
        assert_eq!(c(true, false), vec![0.0, 1.0, 3.0, 0.0, 4.0, 9.0]);
        assert_eq!(c(false, true), vec![6.0, 5.0, 3.0, 15.0, 11.0, 6.0]);
        assert_eq!(c(true, true), vec![5.0, 3.0, 0.0, 11.0, 6.0, 0.0]);
        let ax0 = Tensor::from_i64(vec![1], vec![-2]).unwrap();
        assert_eq!(
            cumsum(&x, &ax0, false, false).unwrap().to_f64_vec(),
            vec![1.0, 2.0, 3.0, 5.0, 7.0, 9.0]
        );
    }
}
