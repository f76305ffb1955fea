//! Indexing and shape-producing ops: Gather, GatherElements, GatherND,
//! Trilu, Range, Shape, Size, ConstantOfShape.

use crate::broadcast::{strides_i64, walk};
use crate::common::{MAX_ELEMENTS, R, axis as norm_axis, ints, numel, prod, tensor};
use crate::values::{Vals, gather_data};
use varc_ir::{Tensor, TensorData};

/// A possibly negative index into a dim of size `dim`, checked.
fn resolve(i: i64, dim: usize, what: impl Fn() -> String) -> R<usize> {
    let d = dim as i64;
    let j = if i < 0 { i + d } else { i };
    if (0..d).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!(
            "index {i} {} is out of range for a dim of size {dim}",
            what()
        ))
    }
}

/// Gather(data, indices) along `axis`; negative indices count from the end.
pub fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> R<Tensor> {
    let ax = norm_axis(axis, data.rank())?;
    let idx = ints(indices, "indices")?;
    let dim = data.shape()[ax];
    let idx = idx
        .iter()
        .enumerate()
        .map(|(p, &i)| resolve(i, dim, || format!("(indices element {p}, axis {ax})")))
        .collect::<R<Vec<usize>>>()?;
    let mut out_shape = data.shape()[..ax].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&data.shape()[ax + 1..]);
    numel(&out_shape)?;
    let (outer, inner) = (prod(&data.shape()[..ax]), prod(&data.shape()[ax + 1..]));
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &k in &idx {
            let base = (o * dim + k) * inner;
            src.extend(base..base + inner);
        }
    }
    tensor(out_shape, gather_data(data, &src)?)
}

/// GatherElements(data, indices): out[p] = data[p with p[axis] = indices[p]].
pub fn gather_elements(data: &Tensor, indices: &Tensor, axis: i64) -> R<Tensor> {
    let rank = data.rank();
    let ax = norm_axis(axis, rank)?;
    if indices.rank() != rank {
        return Err(format!(
            "indices rank {} differs from data rank {rank}",
            indices.rank()
        ));
    }
    for d in (0..rank).filter(|&d| d != ax) {
        if indices.shape()[d] > data.shape()[d] {
            return Err(format!(
                "indices shape {:?} exceeds data shape {:?} on axis {d}",
                indices.shape(),
                data.shape()
            ));
        }
    }
    let idx = ints(indices, "indices")?;
    let mut st = strides_i64(data.shape());
    let ax_stride = st[ax] as usize;
    st[ax] = 0;
    let bases = walk(indices.shape(), 0, &st)?;
    let dim = data.shape()[ax];
    let src = bases
        .iter()
        .zip(&idx)
        .enumerate()
        .map(|(p, (&b, &i))| {
            Ok(b + resolve(i, dim, || format!("(indices element {p}, axis {ax})"))? * ax_stride)
        })
        .collect::<R<Vec<usize>>>()?;
    tensor(indices.shape().to_vec(), gather_data(data, &src)?)
}

/// GatherND(data, indices) with `batch_dims` leading batch dims.
pub fn gather_nd(data: &Tensor, indices: &Tensor, batch_dims: usize) -> R<Tensor> {
    let (r, q) = (data.rank(), indices.rank());
    if r == 0 || q == 0 {
        return Err("data and indices must have rank ≥ 1".into());
    }
    let b = batch_dims;
    if b >= r.min(q) {
        return Err(format!(
            "batch_dims {b} must be less than both ranks ({r}, {q})"
        ));
    }
    if data.shape()[..b] != indices.shape()[..b] {
        return Err(format!(
            "batch dims differ: data {:?} vs indices {:?}",
            data.shape(),
            indices.shape()
        ));
    }
    let k = indices.shape()[q - 1];
    if k > r - b {
        return Err(format!(
            "index tuples of length {k} exceed the {} indexable dims",
            r - b
        ));
    }
    let idx = ints(indices, "indices")?;
    let mut out_shape = indices.shape()[..q - 1].to_vec();
    out_shape.extend_from_slice(&data.shape()[b + k..]);
    numel(&out_shape)?;
    let nbatch = prod(&data.shape()[..b]);
    let tuples = prod(&indices.shape()[b..q - 1]);
    let slice = prod(&data.shape()[b + k..]);
    let batch_stride = prod(&data.shape()[b..]);
    let st = varc_ir::shape::strides(data.shape());
    let mut src = Vec::with_capacity(nbatch * tuples * slice);
    for bi in 0..nbatch {
        for t in 0..tuples {
            let tup = &idx[(bi * tuples + t) * k..(bi * tuples + t + 1) * k];
            let mut off = bi * batch_stride;
            for (j, &i) in tup.iter().enumerate() {
                let d = b + j;
                off +=
                    resolve(i, data.shape()[d], || format!("(tuple {t}, component {j})"))? * st[d];
            }
            src.extend(off..off + slice);
        }
    }
    tensor(out_shape, gather_data(data, &src)?)
}

/// Trilu(x, k?): keeps the upper (j - i ≥ k) or lower (j - i ≤ k) triangle
/// of the last two dims, zeroing the rest.
pub fn trilu(x: &Tensor, k: Option<&Tensor>, upper: bool) -> R<Tensor> {
    if x.rank() < 2 {
        return Err(format!(
            "input must have rank ≥ 2, got shape {:?}",
            x.shape()
        ));
    }
    let k = match k {
        Some(t) => crate::common::scalar_int(t, "k")?,
        None => 0,
    };
    let rank = x.rank();
    let (rows, cols) = (x.shape()[rank - 2], x.shape()[rank - 1]);
    let idx: Vec<Option<usize>> = (0..x.numel())
        .map(|e| {
            let (i, j) = ((e / cols.max(1)) % rows.max(1), e % cols.max(1));
            let diff = j as i64 - i as i64;
            let keep = if upper { diff >= k } else { diff <= k };
            keep.then_some(e)
        })
        .collect();
    let zero = Vals::of(&Tensor::zeros(x.dtype(), vec![1])?);
    Vals::of(x)
        .pick(&idx, &zero)?
        .into_tensor(x.dtype(), x.shape().to_vec())
}

fn one_value(t: &Tensor, what: &str) -> R<()> {
    if t.numel() == 1 {
        Ok(())
    } else {
        Err(format!(
            "{what} must be a scalar, got shape {:?}",
            t.shape()
        ))
    }
}

/// Range(start, limit, delta): max(ceil((limit - start) / delta), 0)
/// elements start + i·delta. Floats compute in f64 (as the ONNX reference's
/// `np.arange` on Python scalars does) and round to the dtype.
pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> R<Tensor> {
    for (t, w) in [(start, "start"), (limit, "limit"), (delta, "delta")] {
        one_value(t, w)?;
        crate::common::same_dtype(start, t, "Range")?;
    }
    let dt = start.dtype();
    let too_many = |n: f64| format!("Range would produce {n} elements");
    if dt.is_float() {
        let (s, l, d) = (
            start.to_f64_vec()[0],
            limit.to_f64_vec()[0],
            delta.to_f64_vec()[0],
        );
        if d == 0.0 {
            return Err("delta is 0".into());
        }
        let n = ((l - s) / d).ceil().max(0.0);
        if !n.is_finite() || n > MAX_ELEMENTS as f64 {
            return Err(too_many(n));
        }
        let n = n as usize;
        let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
        tensor(vec![n], TensorData::from_f64(dt, &v))
    } else if dt.is_int() {
        let (s, l, d) = (
            start.to_i64_vec()[0] as i128,
            limit.to_i64_vec()[0] as i128,
            delta.to_i64_vec()[0] as i128,
        );
        if d == 0 {
            return Err("delta is 0".into());
        }
        let diff = l - s;
        let mut n = diff / d;
        if diff % d != 0 && ((diff % d > 0) == (d > 0)) {
            n += 1;
        }
        let n = n.max(0);
        if n > MAX_ELEMENTS as i128 {
            return Err(too_many(n as f64));
        }
        let v: Vec<i64> = (0..n).map(|i| (s + i * d) as i64).collect();
        tensor(vec![n as usize], TensorData::from_i64(dt, &v))
    } else {
        Err(format!("Range is not defined for {dt} tensors"))
    }
}

/// Shape(x) dims [start, end) (negative counts from the end, clamped).
pub fn shape(x: &Tensor, start: i64, end: Option<i64>) -> R<Tensor> {
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<i64> = if e > s {
        x.shape()[s..e].iter().map(|&d| d as i64).collect()
    } else {
        vec![]
    };
    tensor(vec![dims.len()], TensorData::I64(dims))
}

pub fn size(x: &Tensor) -> R<Tensor> {
    tensor(vec![], TensorData::I64(vec![x.numel() as i64]))
}

/// ConstantOfShape(shape) filled with the one-element `value`.
pub fn constant_of_shape(shape: &Tensor, value: &Tensor) -> R<Tensor> {
    if shape.rank() > 1 {
        return Err(format!("shape must be 1-D, got shape {:?}", shape.shape()));
    }
    let dims = ints(shape, "shape")?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("shape has a negative dim {d}")))
        .collect::<R<Vec<usize>>>()?;
    one_value(value, "value")?;
    let n = numel(&dims)?;
    tensor(dims, gather_data(value, &vec![0; n])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        i64t(shape, &(0..n as i64).collect::<Vec<_>>())
    }

    #[test]
    fn gather_negative_and_out_of_range() {
        let x = iota(&[3, 2]);
        let g = gather(&x, &i64t(&[2], &[-1, 0]), 0).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(g.to_i64_vec(), vec![4, 5, 0, 1]);
        let g = gather(&x, &i64t(&[], &[1]), 1).unwrap();
        assert_eq!(g.shape(), &[3]);
        assert_eq!(g.to_i64_vec(), vec![1, 3, 5]);
        let g = gather(&x, &i64t(&[1, 2], &[1, 1]), -1).unwrap();
        assert_eq!(g.shape(), &[3, 1, 2]);
        let e = gather(&x, &i64t(&[2], &[0, 3]), 0).unwrap_err();
        assert!(e.contains("index 3") && e.contains("element 1"), "{e}");
        assert!(gather(&x, &i64t(&[1], &[-4]), 0).is_err());
        let f = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
        assert!(gather(&x, &f, 0).is_err());
    }

    #[test]
    fn gather_elements_axes() {
        let x = iota(&[2, 2]); // [[0,1],[2,3]]
        let g = gather_elements(&x, &i64t(&[2, 2], &[0, 0, 1, 0]), 1).unwrap();
        assert_eq!(g.to_i64_vec(), vec![0, 0, 3, 2]);
        let g = gather_elements(&x, &i64t(&[1, 2], &[1, -2]), 0).unwrap();
        assert_eq!(g.to_i64_vec(), vec![2, 1]);
        assert!(gather_elements(&x, &i64t(&[1, 1], &[2]), 0).is_err());
    }

    #[test]
    fn gather_nd_batches() {
        let x = iota(&[2, 2]);
        let g = gather_nd(&x, &i64t(&[2, 2], &[0, 0, 1, 1]), 0).unwrap();
        assert_eq!(g.to_i64_vec(), vec![0, 3]);
        let g = gather_nd(&x, &i64t(&[2, 1], &[1, 0]), 0).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(g.to_i64_vec(), vec![2, 3, 0, 1]);
        // batch_dims = 1: data [2,2,2], indices [2,1]
        let x = iota(&[2, 2, 2]);
        let g = gather_nd(&x, &i64t(&[2, 1], &[1, 0]), 1).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(g.to_i64_vec(), vec![2, 3, 4, 5]);
        assert!(gather_nd(&x, &i64t(&[2, 1], &[2, 0]), 1).is_err());
    }

    #[test]
    fn trilu_k() {
        let x = iota(&[3, 3]);
        let u = trilu(&x, None, true).unwrap();
        assert_eq!(u.to_i64_vec(), vec![0, 1, 2, 0, 4, 5, 0, 0, 8]);
        let l = trilu(&x, Some(&i64t(&[], &[-1])), false).unwrap();
        assert_eq!(l.to_i64_vec(), vec![0, 0, 0, 3, 0, 0, 6, 7, 0]);
        let u = trilu(&x, Some(&i64t(&[], &[1])), true).unwrap();
        assert_eq!(u.to_i64_vec(), vec![0, 1, 2, 0, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn range_counts() {
        let s = |v: f32| Tensor::scalar_f32(v);
        let r = range(&s(1.0), &s(2.0), &s(0.3)).unwrap();
        assert_eq!(r.numel(), 4);
        let r = range(&s(5.0), &s(1.0), &s(1.0)).unwrap();
        assert_eq!(r.numel(), 0);
        let i = |v: i64| i64t(&[], &[v]);
        assert_eq!(
            range(&i(10), &i(4), &i(-3)).unwrap().to_i64_vec(),
            vec![10, 7]
        );
        assert_eq!(
            range(&i(0), &i(5), &i(2)).unwrap().to_i64_vec(),
            vec![0, 2, 4]
        );
        assert!(range(&i(0), &i(5), &i(0)).is_err());
        assert!(range(&i(0), &i(i64::MAX), &i(1)).is_err());
        assert!(range(&s(0.0), &s(1.0), &s(0.0)).is_err());
    }

    #[test]
    fn shape_size_constant_of_shape() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(shape(&x, 0, None).unwrap().to_i64_vec(), vec![2, 3, 4]);
        assert_eq!(shape(&x, -2, None).unwrap().to_i64_vec(), vec![3, 4]);
        assert_eq!(shape(&x, 1, Some(-1)).unwrap().to_i64_vec(), vec![3]);
        assert_eq!(shape(&x, 10, Some(-10)).unwrap().numel(), 0);
        assert_eq!(size(&x).unwrap().to_i64_vec(), vec![24]);
        let c = constant_of_shape(
            &i64t(&[2], &[2, 1]),
            &Tensor::from_f32(vec![1], vec![7.0]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.shape(), &[2, 1]);
        assert_eq!(c.as_f32().unwrap(), &[7.0, 7.0]);
        let c = constant_of_shape(&i64t(&[0], &[]), &i64t(&[1], &[3])).unwrap();
        assert_eq!(c.shape(), &[] as &[usize]);
        assert!(constant_of_shape(&i64t(&[1], &[-1]), &i64t(&[1], &[3])).is_err());
    }
}
