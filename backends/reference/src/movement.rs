//! Data movement: Reshape, Transpose, Concat, Split, Slice, Squeeze,
//! Unsqueeze, Flatten, Expand, Tile, Pad, Identity. No arithmetic: every
//! output element is a copy of an input element (or Pad's constant), so the
//! element type is kept exactly.

use crate::broadcast::{broadcast_shapes, index_map, strides_i64, walk};
use crate::common::{
    R, axes as norm_axes, axis as norm_axis, ints, numel, prod, same_dtype, tensor,
};
use crate::values::{Vals, concat_vals, gather_data};
use varc_ir::op::PadMode;
use varc_ir::{DType, Tensor};

fn one_d(t: &Tensor, what: &str) -> R<Vec<i64>> {
    if t.rank() != 1 {
        return Err(format!("{what} must be 1-D, got shape {:?}", t.shape()));
    }
    ints(t, what)
}

/// A view of `x` given output shape and, per output axis, the input stride
/// and the starting element offset.
fn strided(x: &Tensor, out_shape: Vec<usize>, start: i64, strides: &[i64]) -> R<Tensor> {
    let idx = walk(&out_shape, start, strides)?;
    tensor(out_shape, gather_data(x, &idx)?)
}

pub fn identity(x: &Tensor) -> Tensor {
    x.clone()
}

/// Reshape(data, shape): 0 copies the input dim (unless `allowzero`), one
/// -1 is inferred.
pub fn reshape(x: &Tensor, shape: &Tensor, allowzero: bool) -> R<Tensor> {
    let spec = one_d(shape, "shape")?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(format!("shape {spec:?} has more than one -1"));
                }
                out.push(1);
            }
            0 if !allowzero => match x.shape().get(i) {
                Some(&d) => out.push(d),
                None => {
                    return Err(format!(
                        "shape {spec:?} copies dim {i} (0) but the input has rank {}",
                        x.rank()
                    ));
                }
            },
            d if d < 0 => return Err(format!("shape {spec:?} has invalid dim {d}")),
            d => out.push(usize::try_from(d).map_err(|_| format!("dim {d} is too large"))?),
        }
    }
    if allowzero && infer.is_some() && spec.contains(&0) {
        return Err(format!("shape {spec:?} has both 0 and -1 with allowzero"));
    }
    if let Some(i) = infer {
        let known = varc_ir::tensor::checked_numel(&out).ok_or("shape overflows")?;
        if known == 0 || !x.numel().is_multiple_of(known) {
            return Err(format!(
                "cannot infer the -1 in {spec:?}: {} elements do not divide by {known}",
                x.numel()
            ));
        }
        out[i] = x.numel() / known;
    }
    if varc_ir::tensor::checked_numel(&out) != Some(x.numel()) {
        return Err(format!(
            "cannot reshape {:?} ({} elements) to {out:?}",
            x.shape(),
            x.numel()
        ));
    }
    x.clone().reshaped(out)
}

/// Transpose(x) with `perm` (`None` reverses the axes).
pub fn transpose(x: &Tensor, perm: Option<&[usize]>) -> R<Tensor> {
    let rank = x.rank();
    let perm: Vec<usize> = perm.map_or_else(|| (0..rank).rev().collect(), |p| p.to_vec());
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    let st = strides_i64(x.shape());
    let out_shape = perm.iter().map(|&p| x.shape()[p]).collect();
    let out_st: Vec<i64> = perm.iter().map(|&p| st[p]).collect();
    strided(x, out_shape, 0, &out_st)
}

pub fn concat(xs: &[&Tensor], axis: i64) -> R<Tensor> {
    let first = *xs.first().ok_or("needs at least one input")?;
    let rank = first.rank();
    let ax = norm_axis(axis, rank)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[ax] = 0;
    for x in xs {
        same_dtype(first, x, "Concat")?;
        let ok = x.rank() == rank && (0..rank).all(|i| i == ax || x.shape()[i] == first.shape()[i]);
        if !ok {
            return Err(format!(
                "input shapes {:?} and {:?} differ outside axis {ax}",
                first.shape(),
                x.shape()
            ));
        }
        out_shape[ax] = out_shape[ax]
            .checked_add(x.shape()[ax])
            .ok_or("concatenated dim overflows")?;
    }
    numel(&out_shape)?;
    let outer = prod(&first.shape()[..ax]);
    let inner = prod(&first.shape()[ax + 1..]);
    let parts: Vec<Vals> = xs.iter().map(|x| Vals::of(x)).collect();
    let all = concat_vals(&parts)?;
    let mut bases = Vec::with_capacity(xs.len());
    let mut base = 0;
    for x in xs {
        bases.push(base);
        base += x.numel();
    }
    let mut idx = Vec::with_capacity(all.len());
    for o in 0..outer {
        for (x, &b) in xs.iter().zip(&bases) {
            let blk = x.shape()[ax] * inner;
            idx.extend((0..blk).map(|e| b + o * blk + e));
        }
    }
    all.gather(&idx)?.into_tensor(first.dtype(), out_shape)
}

/// Split(x) into `n_outputs` parts along `axis`: sizes from `split` when
/// given, otherwise equal parts of ceil(dim / n) with the last smaller.
pub fn split(x: &Tensor, axis: i64, split: Option<&[i64]>, n_outputs: usize) -> R<Vec<Tensor>> {
    let ax = norm_axis(axis, x.rank())?;
    let dim = x.shape()[ax];
    let sizes: Vec<usize> = match split {
        Some(s) => {
            if s.len() != n_outputs {
                return Err(format!(
                    "split {s:?} has {} parts for {n_outputs} outputs",
                    s.len()
                ));
            }
            let sizes = s
                .iter()
                .map(|&v| {
                    usize::try_from(v).map_err(|_| format!("split {s:?} has a negative size"))
                })
                .collect::<R<Vec<usize>>>()?;
            if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
                return Err(format!("split {s:?} does not add up to the dim {dim}"));
            }
            sizes
        }
        None => {
            if n_outputs == 0 {
                return Err("Split needs at least one output".into());
            }
            let chunk = dim.div_ceil(n_outputs);
            let rest = chunk * (n_outputs - 1);
            if rest > dim {
                return Err(format!(
                    "dim {dim} cannot be split into {n_outputs} parts of {chunk}"
                ));
            }
            let mut v = vec![chunk; n_outputs - 1];
            v.push(dim - rest);
            v
        }
    };
    let st = strides_i64(x.shape());
    let mut offset = 0usize;
    let mut outs = Vec::with_capacity(sizes.len());
    for s in sizes {
        let mut shape = x.shape().to_vec();
        shape[ax] = s;
        outs.push(strided(x, shape, offset as i64 * st[ax], &st)?);
        offset += s;
    }
    Ok(outs)
}

/// Slice(data, starts, ends, axes?, steps?) with the spec's clamping.
pub fn slice(
    x: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> R<Tensor> {
    let rank = x.rank();
    let starts = one_d(starts, "starts")?;
    let ends = one_d(ends, "ends")?;
    let n = starts.len();
    let axes: Vec<usize> = match axes {
        Some(a) => norm_axes(&one_d(a, "axes")?, rank)?,
        None => (0..n).collect(),
    };
    let steps: Vec<i64> = match steps {
        Some(s) => one_d(s, "steps")?,
        None => vec![1; n],
    };
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts, ends, axes and steps differ in length ({n}, {}, {}, {})",
            ends.len(),
            axes.len(),
            steps.len()
        ));
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    let in_st = strides_i64(x.shape());
    let mut out_shape = x.shape().to_vec();
    let mut out_st = in_st.clone();
    let mut start_off = 0i64;
    for i in 0..n {
        let (ax, step) = (axes[i], steps[i]);
        if step == 0 {
            return Err(format!("step for axis {ax} is 0"));
        }
        let dim = x.shape()[ax] as i64;
        let (mut s, mut e) = (starts[i], ends[i]);
        if s < 0 {
            s += dim;
        }
        if e < 0 {
            e += dim;
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
            if s > e { (s - e - 1) / (-step) + 1 } else { 0 }
        };
        out_shape[ax] = count as usize;
        // With one element or none the stride is never used (and a huge
        // step must not overflow it).
        out_st[ax] = if count > 1 { in_st[ax] * step } else { 0 };
        if count > 0 {
            start_off += s * in_st[ax];
        }
    }
    strided(x, out_shape, start_off, &out_st)
}

/// Squeeze(x, axes?): without axes, every dim of size 1 goes.
pub fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> R<Tensor> {
    let rank = x.rank();
    let drop: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => {
            let ax = norm_axes(a, rank)?;
            if let Some(&bad) = ax.iter().find(|&&i| x.shape()[i] != 1) {
                return Err(format!(
                    "cannot squeeze axis {bad} of size {}",
                    x.shape()[bad]
                ));
            }
            ax
        }
        _ => (0..rank).filter(|&i| x.shape()[i] == 1).collect(),
    };
    let shape = (0..rank)
        .filter(|i| !drop.contains(i))
        .map(|i| x.shape()[i])
        .collect();
    x.clone().reshaped(shape)
}

/// Unsqueeze(x, axes): axes refer to the output's rank.
pub fn unsqueeze(x: &Tensor, axes: &[i64]) -> R<Tensor> {
    let out_rank = x.rank() + axes.len();
    let ax = norm_axes(axes, out_rank)?;
    let mut dims = x.shape().iter();
    let shape = (0..out_rank)
        .map(|i| {
            if ax.contains(&i) {
                1
            } else {
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect();
    x.clone().reshaped(shape)
}

/// Flatten(x) to [prod(dims[..axis]), prod(dims[axis..])], axis in [-r, r].
pub fn flatten(x: &Tensor, axis: i64) -> R<Tensor> {
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = a as usize;
    let shape = vec![prod(&x.shape()[..a]), prod(&x.shape()[a..])];
    x.clone().reshaped(shape)
}

/// Expand(x, shape): bidirectional broadcast of x's shape with `shape`.
pub fn expand(x: &Tensor, shape: &Tensor) -> R<Tensor> {
    let spec = one_d(shape, "shape")?;
    let dims = spec
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("shape {spec:?} has a negative dim")))
        .collect::<R<Vec<usize>>>()?;
    let out = broadcast_shapes(&[x.shape(), &dims])?;
    numel(&out)?;
    let idx = index_map(x.shape(), &out)?;
    tensor(out, gather_data(x, &idx)?)
}

/// For each output element, the input element it reads (or `None`), given
/// per output axis the input coordinate of each output coordinate.
fn compose(
    out_shape: &[usize],
    in_shape: &[usize],
    maps: &[Vec<Option<usize>>],
) -> R<Vec<Option<usize>>> {
    let n = numel(out_shape)?;
    let st = varc_ir::shape::strides(in_shape);
    let rank = out_shape.len();
    let mut res = Vec::with_capacity(n);
    let mut c = vec![0usize; rank];
    for _ in 0..n {
        let mut off = Some(0usize);
        for ax in 0..rank {
            off = match (off, maps[ax][c[ax]]) {
                (Some(o), Some(i)) => Some(o + i * st[ax]),
                _ => None,
            };
        }
        res.push(off);
        for ax in (0..rank).rev() {
            c[ax] += 1;
            if c[ax] < out_shape[ax] {
                break;
            }
            c[ax] = 0;
        }
    }
    Ok(res)
}

/// Tile(x, repeats).
pub fn tile(x: &Tensor, repeats: &Tensor) -> R<Tensor> {
    let reps = one_d(repeats, "repeats")?;
    if reps.len() != x.rank() {
        return Err(format!(
            "repeats {reps:?} must have one entry per axis ({})",
            x.rank()
        ));
    }
    let mut out = Vec::with_capacity(reps.len());
    for (&d, &r) in x.shape().iter().zip(&reps) {
        let r = usize::try_from(r).map_err(|_| format!("repeats {reps:?} has a negative entry"))?;
        out.push(d.checked_mul(r).ok_or("tiled shape overflows")?);
    }
    numel(&out)?;
    let maps: Vec<Vec<Option<usize>>> = out
        .iter()
        .zip(x.shape())
        .map(|(&o, &d)| (0..o).map(|c| Some(c % d)).collect())
        .collect();
    let idx: Vec<usize> = compose(&out, x.shape(), &maps)?
        .into_iter()
        .flatten()
        .collect();
    tensor(out, gather_data(x, &idx)?)
}

/// Pad(data, pads, constant_value?, axes?) in constant, reflect, edge or wrap
/// mode. Negative pads crop.
pub fn pad(
    x: &Tensor,
    pads: &Tensor,
    value: Option<&Tensor>,
    axes: Option<&Tensor>,
    mode: PadMode,
) -> R<Tensor> {
    let rank = x.rank();
    let pads = ints(pads, "pads")?;
    let axes: Vec<usize> = match axes {
        Some(a) => norm_axes(&ints(a, "axes")?, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "pads {pads:?} must have 2 entries per padded axis ({})",
            axes.len()
        ));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[axes.len() + i];
    }
    let mut out_shape = Vec::with_capacity(rank);
    for a in 0..rank {
        let d = x.shape()[a] as i128 + begin[a] as i128 + end[a] as i128;
        let d = usize::try_from(d)
            .map_err(|_| format!("pads {pads:?} give axis {a} a negative or huge size"))?;
        out_shape.push(d);
    }
    numel(&out_shape)?;
    let mut maps = Vec::with_capacity(rank);
    for a in 0..rank {
        let d = x.shape()[a] as i128;
        if d == 0 && mode != PadMode::Constant && out_shape[a] > 0 {
            return Err(format!("cannot pad empty axis {a} in {mode:?} mode"));
        }
        let map: Vec<Option<usize>> = (0..out_shape[a] as i128)
            .map(|o| {
                let i = o - begin[a] as i128;
                let j = match mode {
                    PadMode::Constant => i,
                    PadMode::Edge => i.clamp(0, d - 1),
                    PadMode::Wrap => i.rem_euclid(d),
                    PadMode::Reflect if d == 1 => 0,
                    PadMode::Reflect => {
                        let p = 2 * (d - 1);
                        let m = i.rem_euclid(p);
                        if m >= d { p - m } else { m }
                    }
                };
                (0..d).contains(&j).then_some(j as usize)
            })
            .collect();
        maps.push(map);
    }
    let idx = compose(&out_shape, x.shape(), &maps)?;
    let fill = match value {
        Some(v) if v.numel() > 0 => {
            if v.numel() != 1 {
                return Err(format!(
                    "constant_value must be a scalar, got shape {:?}",
                    v.shape()
                ));
            }
            Vals::of(&v.cast(x.dtype()))
        }
        _ => Vals::of(&Tensor::zeros(x.dtype(), vec![1])?),
    };
    let dt: DType = x.dtype();
    Vals::of(x).pick(&idx, &fill)?.into_tensor(dt, out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::TensorData;

    fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn v1(v: &[i64]) -> Tensor {
        i64t(&[v.len()], v)
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        i64t(shape, &(0..n as i64).collect::<Vec<_>>())
    }

    #[test]
    fn reshape_zero_and_infer() {
        let x = iota(&[2, 3, 4]);
        let r = reshape(&x, &v1(&[0, -1]), false).unwrap();
        assert_eq!(r.shape(), &[2, 12]);
        let r = reshape(&x, &v1(&[-1, 0, 2]), false).unwrap();
        assert_eq!(r.shape(), &[4, 3, 2]);
        assert!(reshape(&x, &v1(&[-1, -1]), false).is_err());
        assert!(reshape(&x, &v1(&[5, -1]), false).is_err());
        assert!(reshape(&x, &v1(&[0, 0, 0, 0]), false).is_err());
        assert!(reshape(&x, &v1(&[7]), false).is_err());
        // allowzero: 0 means 0
        let e = iota(&[0, 3]);
        assert_eq!(reshape(&e, &v1(&[3, 0]), true).unwrap().shape(), &[3, 0]);
        assert!(reshape(&e, &v1(&[0, -1]), true).is_err());
        // empty shape → scalar
        assert_eq!(
            reshape(&iota(&[1, 1]), &v1(&[]), false).unwrap().shape(),
            &[] as &[usize]
        );
    }

    #[test]
    fn transpose_perm() {
        let x = iota(&[2, 3]);
        let t = transpose(&x, None).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.to_i64_vec(), vec![0, 3, 1, 4, 2, 5]);
        let x = iota(&[2, 3, 4]);
        let t = transpose(&x, Some(&[1, 2, 0])).unwrap();
        assert_eq!(t.shape(), &[3, 4, 2]);
        assert_eq!(&t.to_i64_vec()[..4], &[0, 12, 1, 13]);
        assert!(transpose(&x, Some(&[0, 0, 1])).is_err());
        assert!(transpose(&x, Some(&[0, 1])).is_err());
    }

    #[test]
    fn concat_axes() {
        let a = iota(&[2, 2]);
        let b = i64t(&[2, 1], &[8, 9]);
        let c = concat(&[&a, &b], -1).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_i64_vec(), vec![0, 1, 8, 2, 3, 9]);
        let e = i64t(&[0, 2], &[]);
        let c = concat(&[&a, &e, &a], 0).unwrap();
        assert_eq!(c.shape(), &[4, 2]);
        let c = concat(&[&e, &e], 0).unwrap();
        assert_eq!(c.shape(), &[0, 2]);
        assert!(concat(&[&a, &b], 0).is_err());
    }

    #[test]
    fn split_parts() {
        let x = iota(&[2, 5]);
        let p = split(&x, 1, None, 2).unwrap();
        assert_eq!(p[0].shape(), &[2, 3]);
        assert_eq!(p[1].shape(), &[2, 2]);
        assert_eq!(p[1].to_i64_vec(), vec![3, 4, 8, 9]);
        let p = split(&x, -1, Some(&[1, 4]), 2).unwrap();
        assert_eq!(p[0].to_i64_vec(), vec![0, 5]);
        assert!(split(&x, 1, Some(&[1, 3]), 2).is_err());
        assert!(split(&x, 1, Some(&[5]), 2).is_err());
        assert!(split(&iota(&[5]), 0, None, 4).is_err());
        let p = split(&iota(&[4]), 0, None, 3).unwrap();
        assert_eq!(
            p.iter().map(|t| t.numel()).collect::<Vec<_>>(),
            vec![2, 2, 0]
        );
    }

    #[test]
    fn slice_steps_and_clamping() {
        let x = iota(&[10]);
        let s = |st: i64, en: i64, step: i64| {
            slice(&x, &v1(&[st]), &v1(&[en]), None, Some(&v1(&[step])))
                .unwrap()
                .to_i64_vec()
        };
        assert_eq!(s(1, 4, 1), vec![1, 2, 3]);
        assert_eq!(s(-3, i64::MAX, 1), vec![7, 8, 9]);
        assert_eq!(s(0, 10, 3), vec![0, 3, 6, 9]);
        assert_eq!(s(-1, i64::MIN, -1), (0..10).rev().collect::<Vec<_>>());
        assert_eq!(s(8, 1, -3), vec![8, 5, 2]);
        assert_eq!(s(20, -20, -4), vec![9, 5, 1]);
        assert_eq!(s(5, 2, 1), Vec::<i64>::new());
        assert_eq!(s(-100, 2, 1), vec![0, 1]);
        let x2 = iota(&[3, 4]);
        let r = slice(
            &x2,
            &v1(&[1, -1]),
            &v1(&[3, -4]),
            Some(&v1(&[0, -1])),
            Some(&v1(&[1, -2])),
        )
        .unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        assert_eq!(r.to_i64_vec(), vec![7, 5, 11, 9]);
        assert!(slice(&x2, &v1(&[0]), &v1(&[1]), Some(&v1(&[0])), Some(&v1(&[0]))).is_err());
        assert!(slice(&x2, &v1(&[0, 0]), &v1(&[1, 1]), Some(&v1(&[1, 1])), None).is_err());
        let e = iota(&[0]);
        assert_eq!(
            slice(&e, &v1(&[-1]), &v1(&[i64::MIN]), None, Some(&v1(&[-1])))
                .unwrap()
                .numel(),
            0
        );
    }

    #[test]
    fn squeeze_unsqueeze_flatten() {
        let x = iota(&[1, 3, 1]);
        assert_eq!(squeeze(&x, None).unwrap().shape(), &[3]);
        assert_eq!(squeeze(&x, Some(&[-1])).unwrap().shape(), &[1, 3]);
        assert!(squeeze(&x, Some(&[1])).is_err());
        let y = iota(&[3]);
        assert_eq!(unsqueeze(&y, &[0, -1]).unwrap().shape(), &[1, 3, 1]);
        assert_eq!(unsqueeze(&y, &[1, 0]).unwrap().shape(), &[1, 1, 3]);
        assert!(unsqueeze(&y, &[0, 0]).is_err());
        assert!(unsqueeze(&y, &[3]).is_err());
        let z = iota(&[2, 3, 4]);
        assert_eq!(flatten(&z, 0).unwrap().shape(), &[1, 24]);
        assert_eq!(flatten(&z, 3).unwrap().shape(), &[24, 1]);
        assert_eq!(flatten(&z, -1).unwrap().shape(), &[6, 4]);
        assert!(flatten(&z, 4).is_err());
    }

    #[test]
    fn expand_and_tile() {
        let x = i64t(&[3, 1], &[1, 2, 3]);
        let e = expand(&x, &v1(&[2, 1, 2])).unwrap();
        assert_eq!(e.shape(), &[2, 3, 2]);
        assert_eq!(&e.to_i64_vec()[..6], &[1, 1, 2, 2, 3, 3]);
        // shape smaller than input keeps the input dims
        assert_eq!(expand(&x, &v1(&[1])).unwrap().shape(), &[3, 1]);
        assert!(expand(&x, &v1(&[2, 2])).is_err());
        let t = tile(&i64t(&[2], &[1, 2]), &v1(&[3])).unwrap();
        assert_eq!(t.to_i64_vec(), vec![1, 2, 1, 2, 1, 2]);
        let t = tile(&iota(&[2, 2]), &v1(&[1, 2])).unwrap();
        assert_eq!(t.to_i64_vec(), vec![0, 1, 0, 1, 2, 3, 2, 3]);
        assert!(tile(&iota(&[2, 2]), &v1(&[2])).is_err());
    }

    #[test]
    fn pad_modes() {
        let x = i64t(&[3], &[1, 2, 3]);
        let p = |pads: &[i64], mode| pad(&x, &v1(pads), None, None, mode).unwrap().to_i64_vec();
        assert_eq!(p(&[2, 1], PadMode::Constant), vec![0, 0, 1, 2, 3, 0]);
        assert_eq!(p(&[2, 1], PadMode::Edge), vec![1, 1, 1, 2, 3, 3]);
        assert_eq!(p(&[2, 2], PadMode::Reflect), vec![3, 2, 1, 2, 3, 2, 1]);
        assert_eq!(p(&[5, 0], PadMode::Reflect), vec![2, 1, 2, 3, 2, 1, 2, 3]);
        assert_eq!(p(&[2, 4], PadMode::Wrap), vec![2, 3, 1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(p(&[-1, 1], PadMode::Constant), vec![2, 3, 0]);
        // constant value and axes
        let x2 = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let r = pad(
            &x2,
            &v1(&[1, 0]),
            Some(&Tensor::scalar_f32(9.0)),
            Some(&v1(&[-1])),
            PadMode::Constant,
        )
        .unwrap();
        assert_eq!(r.shape(), &[2, 3]);
        assert_eq!(r.as_f32().unwrap(), &[9.0, 1.0, 2.0, 9.0, 3.0, 4.0]);
        assert!(pad(&x, &v1(&[-4, 0]), None, None, PadMode::Constant).is_err());
        assert!(pad(&x, &v1(&[1]), None, None, PadMode::Constant).is_err());
        let b = Tensor::new(vec![1], TensorData::Bool(vec![true])).unwrap();
        assert_eq!(
            pad(&b, &v1(&[1, 0]), None, None, PadMode::Constant)
                .unwrap()
                .data(),
            &TensorData::Bool(vec![false, true])
        );
    }
}
