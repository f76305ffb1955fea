//! Resize: applies the per-axis interpolation matrices of `varc_ir::resample`.
//!
//! The maps are applied separably, one axis at a time from the first to the
//! last (the order of the ONNX reference implementation), in f64. Maps that
//! are pure gathers (nearest, no extrapolation) are applied as an index gather
//! on the original storage, so every element type — i64 beyond 2^53, bool,
//! f16 — is copied bit-exactly. Otherwise integer and bool results are rounded
//! half to even and saturated (the reference's `saturate_cast`); float results
//! are rounded to the input type.

use varc_ir::op::ResizeAttrs;
use varc_ir::resample::{self, AxisMap};
use varc_ir::tensor::checked_numel;
use varc_ir::{DType, Tensor};

/// Refuse outputs beyond this many elements (a hostile scale would otherwise
/// abort the process on allocation).
const MAX_ELEMS: usize = 1 << 32;

/// Resize(X, roi?, scales?, sizes?) per the ONNX spec (opsets 10–19).
///
/// Empty `roi` / `scales` / `sizes` tensors count as absent; exactly one of
/// scales and sizes must remain. With `attrs.scales_input_only` (opset 10,
/// inputs `(X, scales)`) a scales tensor passed in the `roi` slot is accepted
/// as the scales.
pub fn resize(
    x: &Tensor,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
    attrs: &ResizeAttrs,
) -> Result<Tensor, String> {
    fn present(t: Option<&Tensor>) -> Option<&Tensor> {
        t.filter(|t| t.numel() > 0)
    }
    let (roi, scales) = if attrs.scales_input_only {
        (None, present(scales).or(present(roi)))
    } else {
        (present(roi), present(scales))
    };
    let sizes = present(sizes);

    let roi_v = match roi {
        Some(t) if t.dtype() == DType::Bool => {
            return Err("Resize roi must be numeric, not bool".into());
        }
        Some(t) => Some(t.to_f64_vec()),
        None => None,
    };
    let scales_v = match scales {
        Some(t) if !t.dtype().is_float() => {
            return Err(format!(
                "Resize scales must be a float tensor, got {}",
                t.dtype()
            ));
        }
        Some(t) => Some(t.to_f64_vec()),
        None => None,
    };
    let sizes_v = match sizes {
        Some(t) if !t.dtype().is_int() => {
            return Err(format!(
                "Resize sizes must be an integer tensor, got {}",
                t.dtype()
            ));
        }
        Some(t) => Some(t.to_i64_vec()),
        None => None,
    };
    for (name, t) in [("roi", roi), ("scales", scales), ("sizes", sizes)] {
        if let Some(t) = t
            && t.rank() != 1
        {
            return Err(format!(
                "Resize {name} must be 1-D, got shape {:?}",
                t.shape()
            ));
        }
    }

    // Check the size before building the maps (they hold one row per output).
    let (out_shape, _) = resample::output_shape_with_roi(
        x.shape(),
        roi_v.as_deref(),
        scales_v.as_deref(),
        sizes_v.as_deref(),
        attrs,
    )?;
    match checked_numel(&out_shape) {
        Some(n) if n <= MAX_ELEMS && out_shape.iter().all(|&d| d <= MAX_ELEMS) => {}
        _ => {
            return Err(format!(
                "Resize output shape {out_shape:?} is too large for the reference interpreter"
            ));
        }
    }
    let plan = resample::plan(
        x.shape(),
        roi_v.as_deref(),
        scales_v.as_deref(),
        sizes_v.as_deref(),
        attrs,
    )?;
    apply_maps(x, &plan.maps)
}

/// Applies one map per axis of `x` (`maps.len() == x.rank()`, each map's
/// `in_len` equal to that axis' length).
pub fn apply_maps(x: &Tensor, maps: &[AxisMap]) -> Result<Tensor, String> {
    if maps.len() != x.rank() {
        return Err(format!(
            "{} axis maps for a rank-{} tensor",
            maps.len(),
            x.rank()
        ));
    }
    for (d, (m, &n)) in maps.iter().zip(x.shape()).enumerate() {
        if m.in_len != n || m.taps.len() != m.out_len || m.fill.len() != m.out_len {
            return Err(format!("axis map {d} does not fit axis length {n}"));
        }
        if m.taps.iter().flatten().any(|&(i, _)| i >= n) {
            return Err(format!("axis map {d} reads past axis length {n}"));
        }
    }
    let out_shape: Vec<usize> = maps.iter().map(|m| m.out_len).collect();
    if maps.iter().all(AxisMap::is_identity) {
        return Ok(x.clone());
    }
    if maps.iter().all(|m| m.is_gather() && !m.has_fill()) {
        let idx = gather_indices(x.shape(), maps);
        return Tensor::new(out_shape, x.data().gather(&idx));
    }

    let mut shape = x.shape().to_vec();
    let mut data = x.to_f64_vec();
    for (d, m) in maps.iter().enumerate() {
        if m.is_identity() {
            continue;
        }
        data = apply_axis(&data, &shape, d, m);
        shape[d] = m.out_len;
    }
    let dtype = x.dtype();
    if !dtype.is_float() {
        for v in &mut data {
            *v = v.round_ties_even();
        }
    }
    Tensor::from_f64_as(dtype, out_shape, &data)
}

/// `data` (row-major, `shape`) resized along `axis` by `m`.
fn apply_axis(data: &[f64], shape: &[usize], axis: usize, m: &AxisMap) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    let mut out = vec![0.0; outer * m.out_len * inner];
    if inner == 0 {
        return out;
    }
    for o in 0..outer {
        let src_block = &data[o * n * inner..(o + 1) * n * inner];
        let dst_block = &mut out[o * m.out_len * inner..(o + 1) * m.out_len * inner];
        for (j, dst) in dst_block.chunks_exact_mut(inner).enumerate() {
            if let Some(f) = m.fill[j] {
                dst.fill(f);
                continue;
            }
            for &(i, w) in &m.taps[j] {
                let src = &src_block[i * inner..(i + 1) * inner];
                for (y, &v) in dst.iter_mut().zip(src) {
                    *y += w * v;
                }
            }
        }
    }
    out
}

/// Flat input index of every output element when every map is a gather.
fn gather_indices(in_shape: &[usize], maps: &[AxisMap]) -> Vec<usize> {
    let mut idx = vec![0usize];
    for (d, m) in maps.iter().enumerate() {
        let stride: usize = in_shape[d + 1..].iter().product();
        let mut next = Vec::with_capacity(idx.len() * m.out_len);
        for &base in &idx {
            for t in &m.taps {
                next.push(base + t[0].0 * stride);
            }
        }
        idx = next;
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::TensorData;
    use varc_ir::op::{AspectPolicy, CoordMode, NearestMode, ResizeMode};

    fn attrs(mode: ResizeMode, coord: CoordMode) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::Stretch,
            scales_input_only: false,
        }
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn assert_close(got: &Tensor, want: &[f64], tol: f64) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len());
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol, "element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn nearest_upsample_replicates() {
        // test_resize_upsample_scales_nearest
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let scales = f32s(&[4], &[1.0, 1.0, 2.0, 3.0]);
        let y = resize(
            &x,
            None,
            Some(&scales),
            None,
            &attrs(ResizeMode::Nearest, CoordMode::HalfPixel),
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 6]);
        #[rustfmt::skip]
        let want = [
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
        ];
        assert_close(&y, &want, 0.0);
    }

    #[test]
    fn linear_downsample_matches_node_test() {
        // test_resize_downsample_scales_linear: [[1,2,3,4],[5,6,7,8]] × 0.6 → [[2.6666665, 4.3333331]]
        let x = f32s(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let scales = f32s(&[4], &[1.0, 1.0, 0.6, 0.6]);
        let y = resize(
            &x,
            None,
            Some(&scales),
            None,
            &attrs(ResizeMode::Linear, CoordMode::HalfPixel),
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 2]);
        assert_close(&y, &[2.6666665, 4.3333331], 1e-6);
    }

    #[test]
    fn cubic_upsample_is_tensor_product() {
        let x: Vec<f32> = (0..16).map(|i| (i * i % 7) as f32 - 2.0).collect();
        let xt = f32s(&[1, 1, 4, 4], &x);
        let sizes = Tensor::from_i64(vec![4], vec![1, 1, 7, 9]).unwrap();
        let at = attrs(ResizeMode::Cubic, CoordMode::HalfPixel);
        let y = resize(&xt, None, None, Some(&sizes), &at).unwrap();
        assert_eq!(y.shape(), &[1, 1, 7, 9]);
        let mh = resample::axis_map(4, 7, 7.0 / 4.0, (0.0, 1.0), &at)
            .unwrap()
            .to_dense();
        let mw = resample::axis_map(4, 9, 9.0 / 4.0, (0.0, 1.0), &at)
            .unwrap()
            .to_dense();
        let mut want = vec![0.0; 63];
        for o in 0..7 {
            for p in 0..9 {
                for i in 0..4 {
                    for j in 0..4 {
                        want[o * 9 + p] += mh[o * 4 + i] * mw[p * 4 + j] * x[i * 4 + j] as f64;
                    }
                }
            }
        }
        assert_close(&y, &want, 1e-5);
    }

    #[test]
    fn integer_inputs() {
        // Nearest on i64 is an exact gather, even beyond 2^53.
        let big = (1i64 << 60) + 1;
        let x = Tensor::from_i64(vec![2], vec![big, -3]).unwrap();
        let scales = f32s(&[1], &[2.0]);
        let y = resize(
            &x,
            None,
            Some(&scales),
            None,
            &attrs(ResizeMode::Nearest, CoordMode::Asymmetric),
        )
        .unwrap();
        assert_eq!(y.to_i64_vec(), vec![big, big, -3, -3]);
        // Linear on u8 rounds half to even and saturates.
        let x = Tensor::new(vec![2], TensorData::U8(vec![0, 255])).unwrap();
        let sizes = Tensor::from_i64(vec![1], vec![4]).unwrap();
        let y = resize(
            &x,
            None,
            None,
            Some(&sizes),
            &attrs(ResizeMode::Linear, CoordMode::AlignCorners),
        )
        .unwrap();
        // 0, 85, 170, 255
        assert_eq!(y.data(), &TensorData::U8(vec![0, 85, 170, 255]));
        let y = resize(
            &x,
            None,
            None,
            Some(&sizes),
            &attrs(ResizeMode::Cubic, CoordMode::AlignCorners),
        )
        .unwrap();
        assert_eq!(y.dtype(), DType::U8);
    }

    #[test]
    fn tf_crop_and_resize_with_axes() {
        // test_resize_tf_crop_and_resize_axes_2_3
        let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let xt = f32s(&[1, 1, 4, 4], &x);
        let roi = f32s(&[4], &[0.4, 0.6, 0.6, 0.8]);
        let sizes = Tensor::from_i64(vec![2], vec![3, 3]).unwrap();
        let mut at = attrs(ResizeMode::Linear, CoordMode::TfCropAndResize);
        at.axes = Some(vec![2, 3]);
        let y = resize(&xt, Some(&roi), None, Some(&sizes), &at).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        #[rustfmt::skip]
        let want = [
            7.6000004, 7.9, 8.2,
            8.8, 9.1, 9.400001,
            10.0, 10.3, 10.6,
        ];
        assert_close(&y, &want, 1e-5);
        // Extrapolation: roi beyond the input.
        let roi = f32s(&[8], &[0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7]);
        let sizes = Tensor::from_i64(vec![4], vec![1, 1, 3, 3]).unwrap();
        let mut at = attrs(ResizeMode::Linear, CoordMode::TfCropAndResize);
        at.extrapolation_value = 10.0;
        let y = resize(&xt, Some(&roi), None, Some(&sizes), &at).unwrap();
        #[rustfmt::skip]
        let want = [
            7.6000004, 10.0, 10.0,
            12.400001, 10.0, 10.0,
            10.0, 10.0, 10.0,
        ];
        assert_close(&y, &want, 1e-5);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        let s2 = f32s(&[2], &[1.0, 2.0]);
        let s4 = f32s(&[4], &[1.0, 1.0, 2.0, 2.0]);
        let sz = Tensor::from_i64(vec![4], vec![1, 1, 4, 4]).unwrap();
        assert!(resize(&x, None, Some(&s2), None, &at).is_err());
        assert!(resize(&x, None, Some(&s4), Some(&sz), &at).is_err());
        assert!(resize(&x, None, None, None, &at).is_err());
        let neg = f32s(&[4], &[1.0, 1.0, -2.0, 2.0]);
        assert!(resize(&x, None, Some(&neg), None, &at).is_err());
        let nan = f32s(&[4], &[1.0, 1.0, f32::NAN, 2.0]);
        assert!(resize(&x, None, Some(&nan), None, &at).is_err());
        let huge = f32s(&[4], &[1.0, 1.0, 1e9, 1e9]);
        assert!(resize(&x, None, Some(&huge), None, &at).is_err());
        let fsizes = f32s(&[4], &[1.0, 1.0, 4.0, 4.0]);
        assert!(resize(&x, None, None, Some(&fsizes), &at).is_err());
        // Empty tensors are absent.
        let empty = f32s(&[0], &[]);
        let y = resize(&x, Some(&empty), Some(&empty), Some(&sz), &at).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
    }

    #[test]
    fn opset10_scales_in_second_slot() {
        let x = f32s(&[1, 1, 1, 2], &[1.0, 3.0]);
        let scales = f32s(&[4], &[1.0, 1.0, 1.0, 2.0]);
        let mut at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        at.scales_input_only = true;
        let y = resize(&x, Some(&scales), None, None, &at).unwrap();
        // asymmetric: x_ori = 0, 0.5, 1, 1.5 → 1, 2, 3, 3
        assert_close(&y, &[1.0, 2.0, 3.0, 3.0], 0.0);
    }

    #[test]
    fn opset10_node_tests() {
        // The opset-10 backend tests (onnx 1.5): inputs (X, scales).
        let mut at = attrs(ResizeMode::Nearest, CoordMode::HalfPixel);
        at.scales_input_only = true;
        let x = f32s(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let down = f32s(&[4], &[1.0, 1.0, 0.6, 0.6]);
        // test_resize_downsample_nearest: [[1, 3]] (ceil when down-sampling).
        let y = resize(&x, Some(&down), None, None, &at).unwrap();
        assert_close(&y, &[1.0, 3.0], 0.0);
        // test_resize_upsample_nearest.
        let x2 = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let up = f32s(&[4], &[1.0, 1.0, 2.0, 3.0]);
        let y = resize(&x2, Some(&up), None, None, &at).unwrap();
        #[rustfmt::skip]
        assert_close(&y, &[
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
        ], 0.0);
        at.mode = ResizeMode::Linear;
        // test_resize_downsample_linear: [[1, 2.66666651]].
        let y = resize(&x, Some(&down), None, None, &at).unwrap();
        assert_close(&y, &[1.0, 2.66666651], 1e-6);
        // test_resize_upsample_linear.
        let up2 = f32s(&[4], &[1.0, 1.0, 2.0, 2.0]);
        let y = resize(&x2, Some(&up2), None, None, &at).unwrap();
        #[rustfmt::skip]
        assert_close(&y, &[
            1.0, 1.5, 2.0, 2.0,
            2.0, 2.5, 3.0, 3.0,
            3.0, 3.5, 4.0, 4.0,
            3.0, 3.5, 4.0, 4.0,
        ], 0.0);
    }
}
