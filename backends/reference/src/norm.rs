//! Normalisations: LayerNormalization (with its optional Mean and InvStdDev
//! outputs), RMSNormalization, InstanceNormalization, GroupNormalization.
//!
//! Statistics are computed in f64 (two passes: mean, then the mean squared
//! deviation) whatever `stash_type` says; `stash_type` only picks the element
//! type of LayerNormalization's Mean and InvStdDev outputs, as the spec's
//! type constraint U does.

use crate::broadcast::index_map;
use crate::common::{R, axis as norm_axis, prod, require_float, same_dtype, stash_dtype, tensor};
use varc_ir::{Tensor, TensorData};

/// An affine operand (scale or bias) broadcast to `shape`, as f64 per element.
fn affine(t: &Tensor, x: &Tensor, what: &str) -> R<Vec<f64>> {
    same_dtype(x, t, what)?;
    let map = index_map(t.shape(), x.shape()).map_err(|e| format!("{what}: {e}"))?;
    let v = t.to_f64_vec();
    Ok(map.into_iter().map(|i| v[i]).collect())
}

/// LayerNormalization(X, Scale, B?) → (Y, Mean?, InvStdDev?), `n_outputs` of them.
pub fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    epsilon: f32,
    stash_type: i64,
    n_outputs: usize,
) -> R<Vec<Tensor>> {
    require_float(x, "X")?;
    if !(1..=3).contains(&n_outputs) {
        return Err(format!("has {n_outputs} outputs; 1 to 3 are defined"));
    }
    let stash = stash_dtype(stash_type)?;
    let ax = norm_axis(axis, x.rank())?;
    let (rows, cols) = (prod(&x.shape()[..ax]), prod(&x.shape()[ax..]));
    let s = affine(scale, x, "Scale")?;
    let b = bias.map(|b| affine(b, x, "B")).transpose()?;
    let v = x.to_f64_vec();
    let eps = epsilon as f64;
    let mut y = vec![0.0; v.len()];
    let mut means = Vec::with_capacity(rows);
    let mut inv_stds = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            let i = r * cols + c;
            let n = (v[i] - mean) * inv * s[i];
            y[i] = match &b {
                Some(b) => n + b[i],
                None => n,
            };
        }
        means.push(mean);
        inv_stds.push(inv);
    }
    let stat_shape: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if i < ax { d } else { 1 })
        .collect();
    let mut out = vec![tensor(
        x.shape().to_vec(),
        TensorData::from_f64(x.dtype(), &y),
    )?];
    if n_outputs > 1 {
        out.push(tensor(
            stat_shape.clone(),
            TensorData::from_f64(stash, &means),
        )?);
    }
    if n_outputs > 2 {
        out.push(tensor(stat_shape, TensorData::from_f64(stash, &inv_stds))?);
    }
    Ok(out)
}

/// RMSNormalization(X, Scale, B?): X / sqrt(mean(X²) + ε) · Scale (+ B)
/// over dims [axis..). `B` is varc's extension (adaLN's shift).
pub fn rms_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    epsilon: f32,
    stash_type: i64,
) -> R<Tensor> {
    require_float(x, "X")?;
    stash_dtype(stash_type)?;
    let ax = norm_axis(axis, x.rank())?;
    let (rows, cols) = (prod(&x.shape()[..ax]), prod(&x.shape()[ax..]));
    let s = affine(scale, x, "Scale")?;
    let b = bias.map(|b| affine(b, x, "B")).transpose()?;
    let v = x.to_f64_vec();
    let eps = epsilon as f64;
    let mut y = vec![0.0; v.len()];
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let ms = row.iter().map(|x| x * x).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..cols {
            let i = r * cols + c;
            let n = v[i] * inv * s[i];
            y[i] = match &b {
                Some(b) => n + b[i],
                None => n,
            };
        }
    }
    tensor(x.shape().to_vec(), TensorData::from_f64(x.dtype(), &y))
}

/// Normalises each of `groups` consecutive runs of `len` elements of `v`,
/// then applies `scale[g]`/`bias[g]` chosen per element by `affine_of`.
fn normalize_runs(
    v: &[f64],
    len: usize,
    eps: f64,
    affine_of: impl Fn(usize) -> (f64, f64),
) -> Vec<f64> {
    let mut y = vec![0.0; v.len()];
    if len == 0 {
        return y;
    }
    for (g, run) in v.chunks(len).enumerate() {
        let mean = run.iter().sum::<f64>() / len as f64;
        let var = run.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (k, x) in run.iter().enumerate() {
            let i = g * len + k;
            let (s, b) = affine_of(i);
            y[i] = (x - mean) * inv * s + b;
        }
    }
    y
}

/// Checks X is [N, C, ...] and returns (N, C, spatial size).
fn nc_dims(x: &Tensor) -> R<(usize, usize, usize)> {
    require_float(x, "X")?;
    if x.rank() < 2 {
        return Err(format!(
            "X must have rank ≥ 2 ([N, C, ...]), got shape {:?}",
            x.shape()
        ));
    }
    Ok((x.shape()[0], x.shape()[1], prod(&x.shape()[2..])))
}

fn vec_of_len(t: &Tensor, x: &Tensor, len: usize, what: &str) -> R<Vec<f64>> {
    same_dtype(x, t, what)?;
    if t.numel() != len {
        return Err(format!(
            "{what} must hold {len} elements, got shape {:?}",
            t.shape()
        ));
    }
    Ok(t.to_f64_vec())
}

/// InstanceNormalization(X, scale[C], B[C]).
pub fn instance_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, epsilon: f32) -> R<Tensor> {
    let (_, c, spatial) = nc_dims(x)?;
    let s = vec_of_len(scale, x, c, "scale")?;
    let b = vec_of_len(bias, x, c, "B")?;
    let y = normalize_runs(&x.to_f64_vec(), spatial, epsilon as f64, |i| {
        let ch = (i / spatial.max(1)) % c.max(1);
        (s[ch], b[ch])
    });
    tensor(x.shape().to_vec(), TensorData::from_f64(x.dtype(), &y))
}

/// GroupNormalization(X, scale, bias): scale/bias per group (opset 18,
/// `per_group_affine`) or per channel (opset 21).
pub fn group_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    num_groups: usize,
    epsilon: f32,
    per_group_affine: bool,
) -> R<Tensor> {
    let (_, c, spatial) = nc_dims(x)?;
    if num_groups == 0 || c % num_groups != 0 {
        return Err(format!(
            "{c} channels cannot be split into {num_groups} groups"
        ));
    }
    let per_group = c / num_groups;
    let affine_len = if per_group_affine { num_groups } else { c };
    let s = vec_of_len(scale, x, affine_len, "scale")?;
    let b = vec_of_len(bias, x, affine_len, "bias")?;
    let y = normalize_runs(&x.to_f64_vec(), per_group * spatial, epsilon as f64, |i| {
        let ch = (i / spatial.max(1)) % c;
        let k = if per_group_affine { ch / per_group } else { ch };
        (s[k], b[k])
    });
    tensor(x.shape().to_vec(), TensorData::from_f64(x.dtype(), &y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::DType;

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn layer_norm_rows() {
        // rows [1,2,3] and [2,4,6]: mean 2 / 4, var 2/3 / 8/3
        let x = f32t(&[2, 3], &[1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);
        let s = f32t(&[3], &[1.0, 2.0, 1.0]);
        let b = f32t(&[3], &[0.0, 0.0, 1.0]);
        let out = layer_norm(&x, &s, Some(&b), -1, 0.0, 1, 3).unwrap();
        let k = (1.5f64).sqrt(); // 1/sqrt(2/3)
        close(&out[0].to_f64_vec(), &[-k, 0.0, k + 1.0, -k, 0.0, k + 1.0]);
        assert_eq!(out[1].shape(), &[2, 1]);
        close(&out[1].to_f64_vec(), &[2.0, 4.0]);
        close(&out[2].to_f64_vec(), &[k, k / 2.0]);
        assert_eq!(out[2].dtype(), DType::F32);
        // axis 0 normalises everything together; no bias
        let out = layer_norm(&x, &f32t(&[], &[1.0]), None, 0, 1e-5, 1, 1).unwrap();
        assert_eq!(out.len(), 1);
        let sum: f64 = out[0].to_f64_vec().iter().sum();
        assert!(sum.abs() < 1e-5);
        // mismatched scale
        assert!(layer_norm(&x, &f32t(&[2], &[1.0, 1.0]), None, -1, 1e-5, 1, 1).is_err());
        assert!(layer_norm(&x, &s, None, 2, 1e-5, 1, 1).is_err());
    }

    #[test]
    fn rms_norm_rows() {
        let x = f32t(&[1, 2], &[3.0, 4.0]);
        let s = f32t(&[2], &[1.0, 2.0]);
        let y = rms_norm(&x, &s, None, -1, 0.0, 1).unwrap();
        let r = (12.5f64).sqrt();
        close(&y.to_f64_vec(), &[3.0 / r, 8.0 / r]);
        // adaLN form: per-row scale and shift broadcast over the row.
        let x = f32t(&[2, 1, 2], &[3.0, 4.0, 1.0, 1.0]);
        let s = f32t(&[2, 1, 1], &[2.0, 3.0]);
        let b = f32t(&[2, 1, 1], &[0.5, -1.0]);
        let y = rms_norm(&x, &s, Some(&b), -1, 0.0, 1).unwrap();
        close(
            &y.to_f64_vec(),
            &[6.0 / r + 0.5, 8.0 / r + 0.5, 3.0 - 1.0, 3.0 - 1.0],
        );
        assert!(rms_norm(&x, &s, Some(&f32t(&[3], &[0.0; 3])), -1, 0.0, 1).is_err());
    }

    #[test]
    fn instance_and_group_norm() {
        // N=1, C=2, spatial 2
        let x = f32t(&[1, 2, 2], &[1.0, 3.0, 10.0, 20.0]);
        let s = f32t(&[2], &[1.0, 2.0]);
        let b = f32t(&[2], &[0.0, 1.0]);
        let y = instance_norm(&x, &s, &b, 0.0).unwrap();
        close(&y.to_f64_vec(), &[-1.0, 1.0, -1.0, 3.0]);
        // one group = layer norm over C and spatial, per-channel affine
        let y = group_norm(&x, &s, &b, 1, 0.0, false).unwrap();
        let v = x.to_f64_vec();
        let mean = v.iter().sum::<f64>() / 4.0;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        let want: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(i, x)| (x - mean) / sd * [1.0, 2.0][i / 2] + [0.0, 1.0][i / 2])
            .collect();
        close(&y.to_f64_vec(), &want);
        // two groups with per-group affine = instance norm here
        let y = group_norm(&x, &s, &b, 2, 0.0, true).unwrap();
        close(&y.to_f64_vec(), &[-1.0, 1.0, -1.0, 3.0]);
        assert!(group_norm(&x, &s, &b, 3, 0.0, false).is_err());
        assert!(group_norm(&x, &f32t(&[1], &[1.0]), &b, 2, 0.0, false).is_err());
    }
}
