//! Index mapping: numpy-style (multidirectional) broadcasting, and the
//! general strided walk that transposes, slices and broadcasts are made of.
//!
//! Every mapper returns, for each element of the output in row-major order,
//! the flat index of the source element it reads.

use crate::common::{R, numel};

/// The broadcast shape of several shapes (ONNX multidirectional broadcasting).
pub fn broadcast_shapes(shapes: &[&[usize]]) -> R<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!(
                    "shapes {} cannot be broadcast together (dim {} vs {d})",
                    shapes
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    *o
                ));
            }
        }
    }
    Ok(out)
}

/// For each element of `out_shape`, the flat index of the element of a tensor
/// of `in_shape` that broadcasting reads (unidirectional: `in_shape` must
/// broadcast *to* `out_shape`).
pub fn index_map(in_shape: &[usize], out_shape: &[usize]) -> R<Vec<usize>> {
    if in_shape.len() > out_shape.len() {
        return Err(format!(
            "shape {in_shape:?} cannot be broadcast to {out_shape:?}"
        ));
    }
    let off = out_shape.len() - in_shape.len();
    let mut strides = vec![0i64; out_shape.len()];
    let mut acc = 1i64;
    for i in (0..in_shape.len()).rev() {
        let d = in_shape[i];
        let o = out_shape[off + i];
        if d == o {
            strides[off + i] = if d == 1 { 0 } else { acc };
        } else if d != 1 {
            return Err(format!(
                "shape {in_shape:?} cannot be broadcast to {out_shape:?}"
            ));
        }
        acc = acc.saturating_mul(d as i64);
    }
    walk(out_shape, 0, &strides)
}

/// Walks `out_shape` in row-major order and returns `start + Σ coord[i] *
/// strides[i]` for each element. Strides may be negative or zero; every
/// produced index must be non-negative (callers construct them so).
pub fn walk(out_shape: &[usize], start: i64, strides: &[i64]) -> R<Vec<usize>> {
    if strides.len() != out_shape.len() {
        return Err("internal: stride count differs from rank".into());
    }
    let n = numel(out_shape)?;
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return Ok(res);
    }
    let rank = out_shape.len();
    let mut counter = vec![0usize; rank];
    let mut off = start;
    for _ in 0..n {
        let idx =
            usize::try_from(off).map_err(|_| format!("internal: negative element index {off}"))?;
        res.push(idx);
        for ax in (0..rank).rev() {
            counter[ax] += 1;
            off += strides[ax];
            if counter[ax] < out_shape[ax] {
                break;
            }
            off -= strides[ax] * out_shape[ax] as i64;
            counter[ax] = 0;
        }
    }
    Ok(res)
}

/// Row-major strides of a shape, as i64.
pub fn strides_i64(shape: &[usize]) -> Vec<i64> {
    varc_ir::shape::strides(shape)
        .into_iter()
        .map(|s| s as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast() {
        assert_eq!(
            broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shapes(&[&[], &[5]]).unwrap(), vec![5]);
        assert_eq!(broadcast_shapes(&[&[0], &[1]]).unwrap(), vec![0]);
        assert_eq!(
            broadcast_shapes(&[&[3, 1], &[1, 4], &[1]]).unwrap(),
            vec![3, 4]
        );
        assert!(broadcast_shapes(&[&[2, 3], &[4, 3]]).is_err());
        assert!(broadcast_shapes(&[&[0], &[2]]).is_err());
    }

    #[test]
    fn maps_broadcast() {
        // [3,1] → [3,2]: rows repeat.
        assert_eq!(index_map(&[3, 1], &[3, 2]).unwrap(), vec![0, 0, 1, 1, 2, 2]);
        // [2] → [2,2]: columns.
        assert_eq!(index_map(&[2], &[2, 2]).unwrap(), vec![0, 1, 0, 1]);
        // scalar → anything.
        assert_eq!(index_map(&[], &[2, 2]).unwrap(), vec![0; 4]);
        assert_eq!(index_map(&[1, 1], &[1, 1]).unwrap(), vec![0]);
        assert!(index_map(&[2], &[3]).is_err());
        assert!(index_map(&[2, 2], &[2]).is_err());
        assert_eq!(index_map(&[0, 3], &[0, 3]).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn walks_negative_strides() {
        // reverse a [2,3] tensor along both axes
        assert_eq!(walk(&[2, 3], 5, &[-3, -1]).unwrap(), vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(walk(&[], 7, &[]).unwrap(), vec![7]);
    }
}
