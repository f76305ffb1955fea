//! ONNX `Resize` semantics as per-axis linear maps: the one place where they
//! live. The reference interpreter applies these maps; the CPU/CUDA backends
//! and the fusion passes reuse them as precomputed matrices (DESIGN.md,
//! "Resize is a constant linear map").
//!
//! A resize of an N-D tensor is separable: output element `(o_0, …, o_{n-1})`
//! is `Σ_{i_0…i_{n-1}} Π_d R_d[o_d, i_d] · x[i_0, …, i_{n-1}]`, with one
//! [`AxisMap`] `R_d` per axis (the identity for axes that are not resized).
//! The only non-linear parts are `tf_crop_and_resize` outputs whose source
//! coordinate falls outside the input (they are the constant
//! `extrapolation_value`, recorded in [`AxisMap::fill`]) and the rounding of
//! integer element types.
//!
//! The formulas follow the ONNX spec (Resize-10…19) and, where the spec is
//! silent or ambiguous, the ONNX reference implementation
//! (`onnx/reference/ops/op_resize.py`, onnx 1.23), which generated the
//! expected outputs of the ONNX backend node tests. The choices:
//!
//! - **Nominal output width.** `align_corners`, `pytorch_half_pixel` and
//!   `half_pixel_symmetric` use the *nominal* output width `scale · L_in`,
//!   which may be fractional when `scales` is given (the reference does this,
//!   and `test_resize_downsample_scales_linear_align_corners` depends on it:
//!   2×4 → 1×2 at scale 0.6 gives `[1, 3.142857]`). A nominal width within
//!   1e-12 (relative) of an integer is snapped to it, so `sizes` inputs, whose
//!   scale is `L_out / L_in`, use exactly `L_out`.
//! - **`pytorch_half_pixel` with a 1-wide output** (nominal width 1) maps to
//!   `x_original = -0.5`, as the reference implementation does (the spec text
//!   says 0; onnxruntime uses 0). The two differ only for cubic and antialiased
//!   filters: with edge clamping, linear and nearest give input 0 either way.
//! - **`tf_crop_and_resize`** uses the integer output length in its formula
//!   (the spec's `length_resized`; identical to the reference for `sizes`,
//!   which is what every node test uses). With `scales`, the output length is
//!   the spec's `floor(L_in · (roi_end − roi_start) · scale)` (the reference
//!   and onnxruntime ignore the roi there; see [`output_shape_with_roi`]).
//! - **Identity axes.** An axis whose scale is within 1e-9 of 1 and whose
//!   length is unchanged (and, for `tf_crop_and_resize`, whose roi is
//!   [0, 1]) is the identity, whatever the mode: the reference skips such
//!   axes (this matters for `pytorch_half_pixel` 1 → 1 only).
//! - **`exclude_outside`**: out-of-range taps get weight 0 and the rest are
//!   divided by their sum; a row whose weights are all zero stays zero (the
//!   reference's guard). For linear this equals edge clamping. It is ignored
//!   for `nearest`: there the single chosen tap may lie outside (e.g. 1 → 16
//!   asymmetric rounds 0.56 up to index 1), and the reference's result, 0, is
//!   no interpolation at all; we read the edge instead (onnxruntime applies
//!   exclude_outside to cubic only).
//! - **Edge clamping** (`exclude_outside = 0`): out-of-range taps read the edge
//!   element with their weight unchanged; duplicate indices are folded into
//!   one tap. Zero weights are dropped.
//! - **Antialias** applies to linear and cubic only (the reference rejects it
//!   for nearest; here it is ignored) and stretches the filter by
//!   `1 / min(scale, 1)`, weights normalised by their sum.
//! - **Opset 10** (`scales_input_only`): the coordinate transform is
//!   `asymmetric` whatever `coord` says (onnxruntime's behaviour; the opset-10
//!   spec gives none), and `nearest` picks `ceil(x)` when down-sampling
//!   (scale < 1) and `floor(x)` otherwise (onnxruntime's legacy rule).

use crate::op::{AspectPolicy, CoordMode, NearestMode, ResizeAttrs, ResizeMode};
use crate::shape::normalize_axis;

/// One axis of a resize: output index `o` is `Σ_{(i, w) ∈ taps[o]} w · x[i]`,
/// or the constant `fill[o]` when that is `Some`.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisMap {
    pub out_len: usize,
    pub in_len: usize,
    /// Per output index: (input index, weight), indices ascending and distinct.
    pub taps: Vec<Vec<(usize, f64)>>,
    /// Per output index: `Some(extrapolation_value)` for `tf_crop_and_resize`
    /// outputs whose source lies outside the input (their `taps` are empty).
    pub fill: Vec<Option<f64>>,
}

impl AxisMap {
    /// The identity map of length `n`.
    pub fn identity(n: usize) -> AxisMap {
        AxisMap {
            out_len: n,
            in_len: n,
            taps: (0..n).map(|i| vec![(i, 1.0)]).collect(),
            fill: vec![None; n],
        }
    }

    /// True when the map copies its input unchanged.
    pub fn is_identity(&self) -> bool {
        self.out_len == self.in_len
            && self.fill.iter().all(Option::is_none)
            && self
                .taps
                .iter()
                .enumerate()
                .all(|(o, t)| t.len() == 1 && t[0] == (o, 1.0))
    }

    /// True when every output copies exactly one input (weight 1) or is a
    /// fill: the map is a gather (nearest mode).
    pub fn is_gather(&self) -> bool {
        self.taps
            .iter()
            .zip(&self.fill)
            .all(|(t, f)| f.is_some() || (t.len() == 1 && t[0].1 == 1.0))
    }

    /// True when some output is a constant fill (not a linear map then).
    pub fn has_fill(&self) -> bool {
        self.fill.iter().any(Option::is_some)
    }

    /// The largest number of taps of any output.
    pub fn max_taps(&self) -> usize {
        self.taps.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The dense `out_len × in_len` matrix, row-major. Fill rows are zero
    /// (the fill is not linear; see [`AxisMap::fill`]).
    pub fn to_dense(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.out_len * self.in_len];
        for (o, taps) in self.taps.iter().enumerate() {
            for &(i, w) in taps {
                m[o * self.in_len + i] += w;
            }
        }
        m
    }

    /// Per output: the sum of its weights (0 for fill rows). A per-token
    /// projection with bias commutes with the resize iff every sum is 1.
    pub fn row_sums(&self) -> Vec<f64> {
        self.taps
            .iter()
            .map(|t| t.iter().map(|&(_, w)| w).sum())
            .collect()
    }

    /// Applies the map to one contiguous line of `in_len` values.
    pub fn apply(&self, x: &[f64]) -> Result<Vec<f64>, String> {
        if x.len() != self.in_len {
            return Err(format!(
                "axis map expects {} inputs, got {}",
                self.in_len,
                x.len()
            ));
        }
        Ok(self
            .taps
            .iter()
            .zip(&self.fill)
            .map(|(t, f)| match f {
                Some(v) => *v,
                None => t.iter().map(|&(i, w)| w * x[i]).sum(),
            })
            .collect())
    }

    /// `self ∘ inner`: first `inner`, then `self` (e.g. FlowAR's
    /// `area(bicubic(·))` folded into one map). Fails when the lengths do not
    /// chain or `inner` has fill rows (then the composite is not linear).
    pub fn compose(&self, inner: &AxisMap) -> Result<AxisMap, String> {
        if inner.out_len != self.in_len {
            return Err(format!(
                "cannot compose a {}→{} map after a {}→{} map",
                self.in_len, self.out_len, inner.in_len, inner.out_len
            ));
        }
        if inner.has_fill() {
            return Err("cannot compose after a map with extrapolated outputs".into());
        }
        let mut taps = Vec::with_capacity(self.out_len);
        for t in &self.taps {
            let mut row = vec![0.0; inner.in_len];
            let mut used = vec![false; inner.in_len];
            for &(m, w) in t {
                for &(i, v) in &inner.taps[m] {
                    row[i] += w * v;
                    used[i] = true;
                }
            }
            taps.push(
                (0..inner.in_len)
                    .filter(|&i| used[i] && row[i] != 0.0)
                    .map(|i| (i, row[i]))
                    .collect(),
            );
        }
        Ok(AxisMap {
            out_len: self.out_len,
            in_len: inner.in_len,
            taps,
            fill: self.fill.clone(),
        })
    }
}

/// The Keys cubic convolution kernel `W(u)` with parameter `a`
/// (ONNX `cubic_coeff_a`).
pub fn cubic_weight(u: f64, a: f64) -> f64 {
    let x = u.abs();
    let x2 = x * x;
    let x3 = x * x2;
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// Adaptive average pooling (`F.interpolate(mode='area')`) along one axis:
/// output `i` averages inputs `[floor(i·in/out), ceil((i+1)·in/out))`.
/// Windows may overlap. An empty window (only when `in_len == 0`) gives an
/// output with no taps.
pub fn area_map(in_len: usize, out_len: usize) -> AxisMap {
    let mut taps = Vec::with_capacity(out_len);
    for i in 0..out_len {
        // u128: no overflow for any usize lengths.
        let (n, m, o) = (in_len as u128, i as u128, out_len as u128);
        let start = (m * n / o) as usize;
        let end = ((m + 1) * n).div_ceil(o) as usize;
        let len = end.saturating_sub(start);
        let w = if len == 0 { 0.0 } else { 1.0 / len as f64 };
        taps.push((start..end).map(|j| (j, w)).collect());
    }
    AxisMap {
        out_len,
        in_len,
        taps,
        fill: vec![None; out_len],
    }
}

/// The resolved resize of a whole tensor: its output shape and one map per
/// axis (identity maps for axes that are not resized).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizePlan {
    pub out_shape: Vec<usize>,
    /// Effective per-axis scale (1 for untouched axes).
    pub scales: Vec<f64>,
    /// Per-axis `(roi_start, roi_end)` (`(0, 1)` unless `tf_crop_and_resize`
    /// was given a roi for that axis).
    pub roi: Vec<(f64, f64)>,
    pub maps: Vec<AxisMap>,
}

/// The axes the roi/scales/sizes inputs refer to, normalised (all axes when
/// `attrs.axes` is `None`).
pub fn resize_axes(rank: usize, attrs: &ResizeAttrs) -> Result<Vec<usize>, String> {
    match &attrs.axes {
        None => Ok((0..rank).collect()),
        Some(axes) => {
            let mut out = Vec::with_capacity(axes.len());
            for &a in axes {
                let n = normalize_axis(a, rank).map_err(|e| format!("Resize axes: {e}"))?;
                if out.contains(&n) {
                    return Err(format!("Resize axes {axes:?} repeat axis {n}"));
                }
                out.push(n);
            }
            Ok(out)
        }
    }
}

/// Per-axis `(start, end)` of the roi input (`[starts…, ends…]` over the
/// resized axes); axes without a roi get `(0, 1)`. An absent or empty roi is
/// the full range.
pub fn full_roi(
    rank: usize,
    roi: Option<&[f64]>,
    attrs: &ResizeAttrs,
) -> Result<Vec<(f64, f64)>, String> {
    let axes = resize_axes(rank, attrs)?;
    let mut out = vec![(0.0, 1.0); rank];
    let roi = match roi {
        Some(r) if !r.is_empty() => r,
        _ => return Ok(out),
    };
    if roi.len() != 2 * axes.len() {
        return Err(format!(
            "Resize roi has {} values; expected {} (starts and ends of {} axes)",
            roi.len(),
            2 * axes.len(),
            axes.len()
        ));
    }
    if roi.iter().any(|v| !v.is_finite()) {
        return Err(format!("Resize roi {roi:?} is not finite"));
    }
    for (i, &d) in axes.iter().enumerate() {
        out[d] = (roi[i], roi[axes.len() + i]);
    }
    Ok(out)
}

/// Output shape and effective per-axis scale of a Resize; see
/// [`output_shape_with_roi`] (this one assumes a full roi).
pub fn output_shape(
    in_shape: &[usize],
    scales: Option<&[f64]>,
    sizes: Option<&[i64]>,
    attrs: &ResizeAttrs,
) -> Result<(Vec<usize>, Vec<f64>), String> {
    output_shape_with_roi(in_shape, None, scales, sizes, attrs)
}

/// Output shape and effective per-axis scale of a Resize (exact ONNX rules).
///
/// - Exactly one of `scales` / `sizes` must be given (an empty slice counts as
///   absent), with one value per resized axis (`attrs.axes`, or every axis).
/// - `scales`: `L_out = floor(L_in · scale)` (f64 arithmetic, like the
///   reference), or `floor(L_in · (roi_end − roi_start) · scale)` for
///   `tf_crop_and_resize` (the spec's rule); the effective scale is the given
///   one. Scales must be finite and > 0.
/// - `sizes` with `stretch`: `L_out = sizes[i]`, scale `L_out / L_in`.
/// - `sizes` with `not_larger` / `not_smaller`: `s = min` / `max` over the
///   resized axes of `sizes[i] / L_in`; every resized axis gets
///   `L_out = floor(s · L_in + 0.5)` (round half up) and scale `s`.
/// - Axes not listed in `attrs.axes` keep their length and scale 1.
pub fn output_shape_with_roi(
    in_shape: &[usize],
    roi: Option<&[f64]>,
    scales: Option<&[f64]>,
    sizes: Option<&[i64]>,
    attrs: &ResizeAttrs,
) -> Result<(Vec<usize>, Vec<f64>), String> {
    let rank = in_shape.len();
    let axes = resize_axes(rank, attrs)?;
    let scales = scales.filter(|s| !s.is_empty());
    let sizes = sizes.filter(|s| !s.is_empty());
    let mut out = in_shape.to_vec();
    let mut eff = vec![1.0; rank];
    match (scales, sizes) {
        (Some(_), Some(_)) => Err("Resize takes scales or sizes, not both".into()),
        (None, None) => Err("Resize needs one of scales and sizes".into()),
        (Some(scales), None) => {
            if scales.len() != axes.len() {
                return Err(format!(
                    "Resize scales has {} values for {} axes",
                    scales.len(),
                    axes.len()
                ));
            }
            let rois = if attrs.coord == CoordMode::TfCropAndResize && !attrs.scales_input_only {
                full_roi(rank, roi, attrs)?
            } else {
                vec![(0.0, 1.0); rank]
            };
            for (i, &d) in axes.iter().enumerate() {
                let s = scales[i];
                if !(s.is_finite() && s > 0.0) {
                    return Err(format!(
                        "Resize scale {s} (axis {d}) must be finite and > 0"
                    ));
                }
                let (start, end) = rois[d];
                let len = in_shape[d] as f64 * (end - start) * s;
                out[d] = to_len(len.floor(), d)?;
                eff[d] = s;
            }
            Ok((out, eff))
        }
        (None, Some(sizes)) => {
            if sizes.len() != axes.len() {
                return Err(format!(
                    "Resize sizes has {} values for {} axes",
                    sizes.len(),
                    axes.len()
                ));
            }
            if let Some(&bad) = sizes.iter().find(|&&s| s < 0) {
                return Err(format!("Resize sizes {sizes:?} has a negative value {bad}"));
            }
            let ratio = |i: usize, d: usize| sizes[i] as f64 / in_shape[d] as f64;
            match attrs.keep_aspect_ratio_policy {
                AspectPolicy::Stretch => {
                    for (i, &d) in axes.iter().enumerate() {
                        out[d] = usize::try_from(sizes[i])
                            .map_err(|_| format!("Resize size {} is too large", sizes[i]))?;
                        if in_shape[d] == 0 && out[d] != 0 {
                            return Err(format!(
                                "Resize cannot resize empty axis {d} to {}",
                                out[d]
                            ));
                        }
                        eff[d] = if in_shape[d] == 0 { 1.0 } else { ratio(i, d) };
                    }
                }
                policy => {
                    if let Some(&d) = axes.iter().find(|&&d| in_shape[d] == 0) {
                        return Err(format!(
                            "Resize keep_aspect_ratio_policy cannot scale empty axis {d}"
                        ));
                    }
                    let rs = axes.iter().enumerate().map(|(i, &d)| ratio(i, d));
                    let s = if policy == AspectPolicy::NotLarger {
                        rs.fold(f64::INFINITY, f64::min)
                    } else {
                        rs.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &d in &axes {
                        out[d] = to_len((s * in_shape[d] as f64 + 0.5).floor(), d)?;
                        eff[d] = s;
                    }
                }
            }
            Ok((out, eff))
        }
    }
}

fn to_len(v: f64, axis: usize) -> Result<usize, String> {
    // 2^53: beyond it f64 lengths are not exact; no real tensor gets there.
    if v.is_finite() && (0.0..=9.007_199_254_740_992e15).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!(
            "Resize output length {v} (axis {axis}) is out of range"
        ))
    }
}

/// Resolves a Resize on a tensor of shape `in_shape` into its output shape
/// and per-axis maps. `roi`, `scales` and `sizes` are the op's optional inputs
/// (empty slices count as absent).
pub fn plan(
    in_shape: &[usize],
    roi: Option<&[f64]>,
    scales: Option<&[f64]>,
    sizes: Option<&[i64]>,
    attrs: &ResizeAttrs,
) -> Result<ResizePlan, String> {
    let rank = in_shape.len();
    let (out_shape, eff) = output_shape_with_roi(in_shape, roi, scales, sizes, attrs)?;
    let rois = if attrs.coord == CoordMode::TfCropAndResize && !attrs.scales_input_only {
        full_roi(rank, roi, attrs)?
    } else {
        vec![(0.0, 1.0); rank]
    };
    let axes = resize_axes(rank, attrs)?;
    let mut maps = Vec::with_capacity(rank);
    for d in 0..rank {
        if axes.contains(&d) {
            maps.push(axis_map(in_shape[d], out_shape[d], eff[d], rois[d], attrs)?);
        } else {
            maps.push(AxisMap::identity(in_shape[d]));
        }
    }
    Ok(ResizePlan {
        out_shape,
        scales: eff,
        roi: rois,
        maps,
    })
}

/// The map of one resized axis: `in_len → out_len` with effective `scale`
/// (given, or `out/in` for sizes) and `roi = (start, end)` (used by
/// `tf_crop_and_resize` only). See the module docs for the rules.
pub fn axis_map(
    in_len: usize,
    out_len: usize,
    scale: f64,
    roi: (f64, f64),
    attrs: &ResizeAttrs,
) -> Result<AxisMap, String> {
    if out_len == 0 {
        return Ok(AxisMap {
            out_len,
            in_len,
            taps: vec![],
            fill: vec![],
        });
    }
    if in_len == 0 {
        return Err(format!(
            "Resize cannot resize an empty axis to length {out_len}"
        ));
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(format!("Resize scale {scale} must be finite and > 0"));
    }
    if !(roi.0.is_finite() && roi.1.is_finite()) {
        return Err(format!("Resize roi {roi:?} is not finite"));
    }
    let legacy = attrs.scales_input_only;
    let coord = if legacy {
        CoordMode::Asymmetric
    } else {
        attrs.coord
    };
    let a = attrs.cubic_coeff_a as f64;
    if attrs.mode == ResizeMode::Cubic && !a.is_finite() {
        return Err(format!("Resize cubic_coeff_a {a} is not finite"));
    }
    let full_roi = (roi.0 - 0.0).abs() <= 1e-9 && (roi.1 - 1.0).abs() <= 1e-9;
    if out_len == in_len
        && (scale - 1.0).abs() <= 1e-9
        && (coord != CoordMode::TfCropAndResize || full_roi)
    {
        return Ok(AxisMap::identity(in_len));
    }

    let nominal = {
        let n = scale * in_len as f64;
        let r = n.round();
        if (n - r).abs() <= 1e-12 * r.max(1.0) {
            r
        } else {
            n
        }
    };
    let in_f = in_len as f64;
    let extrapolation = attrs.extrapolation_value as f64;
    let mut taps = Vec::with_capacity(out_len);
    let mut fill = Vec::with_capacity(out_len);
    for o in 0..out_len {
        let x = o as f64;
        let x_ori = match coord {
            CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::HalfPixelSymmetric => {
                let adjustment = out_len as f64 / nominal;
                let offset = in_f / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
            CoordMode::PytorchHalfPixel => {
                if nominal == 1.0 {
                    -0.5
                } else {
                    (x + 0.5) / scale - 0.5
                }
            }
            CoordMode::AlignCorners => {
                if nominal == 1.0 {
                    0.0
                } else {
                    x * (in_f - 1.0) / (nominal - 1.0)
                }
            }
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfHalfPixelForNn => (x + 0.5) / scale,
            CoordMode::TfCropAndResize => {
                let (start, end) = roi;
                let v = if out_len == 1 {
                    (end - start) * (in_f - 1.0) / 2.0
                } else {
                    x * (end - start) * (in_f - 1.0) / (out_len as f64 - 1.0)
                };
                v + start * (in_f - 1.0)
            }
        };
        if !x_ori.is_finite() {
            return Err(format!(
                "Resize source coordinate of output {o} is not finite (scale {scale})"
            ));
        }
        if coord == CoordMode::TfCropAndResize && (x_ori < 0.0 || x_ori > in_f - 1.0) {
            taps.push(vec![]);
            fill.push(Some(extrapolation));
            continue;
        }
        let row = if legacy && attrs.mode == ResizeMode::Nearest {
            // onnxruntime's opset-10 rule: ceil when down-sampling, else truncate.
            let pick = if scale < 1.0 {
                x_ori.ceil()
            } else {
                x_ori.trunc()
            };
            vec![(clamp_index(pick as i64, in_len), 1.0)]
        } else {
            row_taps(x_ori, in_len, scale, a, attrs)
        };
        taps.push(row);
        fill.push(None);
    }
    Ok(AxisMap {
        out_len,
        in_len,
        taps,
        fill,
    })
}

fn clamp_index(i: i64, in_len: usize) -> usize {
    i.clamp(0, in_len as i64 - 1) as usize
}

/// The taps of one output whose source coordinate is `x_ori`.
fn row_taps(
    x_ori: f64,
    in_len: usize,
    scale: f64,
    a: f64,
    attrs: &ResizeAttrs,
) -> Vec<(usize, f64)> {
    // Like the reference: the left neighbour is floor(x) — or x − 1 when x is
    // an integer, with ratio 1 — so that ratio ∈ (0, 1].
    let fl = x_ori.floor();
    let (base, r) = if x_ori == fl {
        (fl - 1.0, 1.0)
    } else {
        (fl, x_ori - fl)
    };
    let base = base as i64;
    // (offset of the first tap from `base`, weights)
    let (start, mut coeffs): (i64, Vec<f64>) = match attrs.mode {
        ResizeMode::Nearest => {
            let right = if r == 1.0 {
                true
            } else {
                match attrs.nearest_mode {
                    NearestMode::RoundPreferFloor => r > 0.5,
                    NearestMode::RoundPreferCeil => r >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                }
            };
            (
                0,
                if right {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                },
            )
        }
        ResizeMode::Linear if attrs.antialias => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let n = 2 - 2 * start;
            let c: Vec<f64> = (0..n)
                .map(|k| (1.0 - (((start + k) as f64 - r) * s).abs()).clamp(0.0, 1.0))
                .collect();
            (start, normalised(c))
        }
        ResizeMode::Linear => (0, vec![1.0 - r, r]),
        ResizeMode::Cubic if attrs.antialias => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            let n = 2 - 2 * start;
            let c: Vec<f64> = (0..n)
                .map(|k| cubic_weight(s * ((start + k) as f64 - r), a))
                .collect();
            (start, normalised(c))
        }
        ResizeMode::Cubic => {
            // The reference's Horner forms of W(1+r), W(r), W(1−r), W(2−r).
            let (r1, q, q1) = (r + 1.0, 1.0 - r, 2.0 - r);
            (
                -1,
                vec![
                    ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * q1 - 5.0 * a) * q1 + 8.0 * a) * q1 - 4.0 * a,
                ],
            )
        }
    };
    let first = base.saturating_add(start);
    let inside = |k: usize| {
        let i = first.saturating_add(k as i64);
        i >= 0 && i < in_len as i64
    };
    if attrs.exclude_outside && attrs.mode != ResizeMode::Nearest {
        for (k, c) in coeffs.iter_mut().enumerate() {
            if !inside(k) {
                *c = 0.0;
            }
        }
        let sum: f64 = coeffs.iter().sum();
        if sum != 0.0 {
            for c in &mut coeffs {
                *c /= sum;
            }
        }
    }
    // Clamp to the edge and fold duplicate indices (taps are ascending).
    let mut row: Vec<(usize, f64)> = Vec::with_capacity(coeffs.len());
    for (k, &c) in coeffs.iter().enumerate() {
        let i = clamp_index(first.saturating_add(k as i64), in_len);
        match row.last_mut() {
            Some((j, w)) if *j == i => *w += c,
            _ => row.push((i, c)),
        }
    }
    row.retain(|&(_, w)| w != 0.0);
    row
}

fn normalised(mut c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    if sum != 0.0 {
        for v in &mut c {
            *v /= sum;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const COORDS: [CoordMode; 6] = [
        CoordMode::HalfPixel,
        CoordMode::HalfPixelSymmetric,
        CoordMode::PytorchHalfPixel,
        CoordMode::AlignCorners,
        CoordMode::Asymmetric,
        CoordMode::TfHalfPixelForNn,
    ];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    fn windows(m: &AxisMap) -> Vec<(usize, usize)> {
        m.taps
            .iter()
            .map(|t| (t[0].0, t.last().unwrap().0 + 1))
            .collect()
    }

    #[test]
    fn rows_sum_to_one() {
        for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
            for coord in COORDS {
                for exclude in [false, true] {
                    for antialias in [false, true] {
                        let mut at = attrs(mode, coord);
                        at.exclude_outside = exclude;
                        at.antialias = antialias;
                        for a in [-0.5, -0.75, 0.3] {
                            at.cubic_coeff_a = a;
                            for (i, o) in [
                                (1, 16),
                                (2, 16),
                                (3, 16),
                                (5, 16),
                                (13, 16),
                                (16, 3),
                                (16, 7),
                                (7, 5),
                                (4, 1),
                            ] {
                                let m =
                                    axis_map(i, o, o as f64 / i as f64, (0.0, 1.0), &at).unwrap();
                                for (k, s) in m.row_sums().iter().enumerate() {
                                    assert!(
                                        (s - 1.0).abs() < 1e-12,
                                        "{mode:?} {coord:?} excl {exclude} aa {antialias} a {a} {i}->{o} row {k}: {s}"
                                    );
                                }
                                for t in &m.taps {
                                    assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
                                    assert!(t.iter().all(|&(j, _)| j < i));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bicubic_same_size_is_identity() {
        for coord in COORDS {
            let m = axis_map(16, 16, 1.0, (0.0, 1.0), &attrs(ResizeMode::Cubic, coord)).unwrap();
            assert!(m.is_identity(), "{coord:?}");
        }
        // Also when computed without the identity shortcut (scale just off 1):
        // half_pixel at x_ori = x gives taps W(2), W(1), W(0), W(1) = 0, 0, 1, 0.
        let m = axis_map(
            16,
            16,
            1.0 + 1e-15,
            (0.0, 1.0),
            &attrs(ResizeMode::Cubic, CoordMode::HalfPixel),
        )
        .unwrap();
        let d = m.to_dense();
        for o in 0..16 {
            for i in 0..16 {
                let want = if o == i { 1.0 } else { 0.0 };
                assert!((d[o * 16 + i] - want).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn one_by_one_input_gives_constant_map() {
        for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
            for coord in COORDS {
                for antialias in [false, true] {
                    let mut at = attrs(mode, coord);
                    at.antialias = antialias;
                    let m = axis_map(1, 16, 16.0, (0.0, 1.0), &at).unwrap();
                    assert!(
                        m.taps
                            .iter()
                            .all(|t| t.len() == 1 && t[0].0 == 0 && close(t[0].1, 1.0))
                    );
                }
            }
        }
    }

    #[test]
    fn var_area_windows() {
        let want: [(usize, &[(usize, usize)]); 5] = [
            (
                13,
                &[
                    (0, 2),
                    (1, 3),
                    (2, 4),
                    (3, 5),
                    (4, 7),
                    (6, 8),
                    (7, 9),
                    (8, 10),
                    (9, 12),
                    (11, 13),
                    (12, 14),
                    (13, 15),
                    (14, 16),
                ],
            ),
            (
                10,
                &[
                    (0, 2),
                    (1, 4),
                    (3, 5),
                    (4, 7),
                    (6, 8),
                    (8, 10),
                    (9, 12),
                    (11, 13),
                    (12, 15),
                    (14, 16),
                ],
            ),
            (6, &[(0, 3), (2, 6), (5, 8), (8, 11), (10, 14), (13, 16)]),
            (5, &[(0, 4), (3, 7), (6, 10), (9, 13), (12, 16)]),
            (3, &[(0, 6), (5, 11), (10, 16)]),
        ];
        for (n, w) in want {
            let m = area_map(16, n);
            assert_eq!(windows(&m), w.to_vec(), "16 -> {n}");
            for t in &m.taps {
                assert!(t.iter().all(|&(_, v)| close(v, 1.0 / t.len() as f64)));
            }
            assert!(m.row_sums().iter().all(|&s| close(s, 1.0)));
        }
        assert_eq!(windows(&area_map(16, 2)), vec![(0, 8), (8, 16)]);
        assert!(area_map(16, 16).is_identity());
        assert!(area_map(0, 3).taps.iter().all(Vec::is_empty));
    }

    #[test]
    fn nearest_x2_asymmetric_floor_replicates() {
        let mut at = attrs(ResizeMode::Nearest, CoordMode::Asymmetric);
        at.nearest_mode = NearestMode::Floor;
        let m = axis_map(5, 10, 2.0, (0.0, 1.0), &at).unwrap();
        assert!(m.is_gather());
        let idx: Vec<usize> = m.taps.iter().map(|t| t[0].0).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn nearest_modes() {
        // half_pixel 4 -> 8: x_ori = (x + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, ...
        let pick = |nm: NearestMode| {
            let mut at = attrs(ResizeMode::Nearest, CoordMode::HalfPixel);
            at.nearest_mode = nm;
            axis_map(4, 8, 2.0, (0.0, 1.0), &at)
                .unwrap()
                .taps
                .iter()
                .map(|t| t[0].0)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pick(NearestMode::RoundPreferFloor),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
        assert_eq!(pick(NearestMode::Floor), vec![0, 0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(pick(NearestMode::Ceil), vec![0, 1, 1, 2, 2, 3, 3, 3]);
        // asymmetric 2 -> 4 at scale 2: x_ori = 0, 0.5, 1, 1.5 (ties).
        let pick2 = |nm: NearestMode| {
            let mut at = attrs(ResizeMode::Nearest, CoordMode::Asymmetric);
            at.nearest_mode = nm;
            axis_map(2, 4, 2.0, (0.0, 1.0), &at)
                .unwrap()
                .taps
                .iter()
                .map(|t| t[0].0)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick2(NearestMode::RoundPreferFloor), vec![0, 0, 1, 1]);
        assert_eq!(pick2(NearestMode::RoundPreferCeil), vec![0, 1, 1, 1]);
    }

    #[test]
    fn align_corners_uses_the_nominal_width() {
        // test_resize_downsample_scales_linear_align_corners: [[1,2,3,4],[5,6,7,8]]
        // at scales 0.6 (as f32) → [[1, 3.142857]].
        let s = 0.6f32 as f64;
        let at = attrs(ResizeMode::Linear, CoordMode::AlignCorners);
        let (shape, eff) = output_shape(&[2, 4], Some(&[s, s]), None, &at).unwrap();
        assert_eq!(shape, vec![1, 2]);
        let mh = axis_map(2, 1, eff[0], (0.0, 1.0), &at).unwrap();
        let mw = axis_map(4, 2, eff[1], (0.0, 1.0), &at).unwrap();
        let rows: Vec<Vec<f64>> = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
            .iter()
            .map(|r| mw.apply(r).unwrap())
            .collect();
        let col0 = mh.apply(&[rows[0][0], rows[1][0]]).unwrap();
        let col1 = mh.apply(&[rows[0][1], rows[1][1]]).unwrap();
        assert!(close(col0[0], 1.0));
        assert!((col1[0] - 3.142857).abs() < 1e-6, "{}", col1[0]);
    }

    #[test]
    fn pytorch_half_pixel_one_wide_samples_at_minus_half() {
        // Cubic 4 → 1: x_ori = −0.5, taps −2, −1, 0, 1 with W(1.5), W(0.5), W(0.5), W(1.5).
        let at = attrs(ResizeMode::Cubic, CoordMode::PytorchHalfPixel);
        let m = axis_map(4, 1, 0.25, (0.0, 1.0), &at).unwrap();
        let (w15, w05) = (cubic_weight(1.5, -0.75), cubic_weight(0.5, -0.75));
        assert_eq!(m.taps[0].len(), 2);
        assert!(close(m.taps[0][0].1, w15 + 2.0 * w05));
        assert!(close(m.taps[0][1].1, w15));
        // Linear: both neighbours clamp to input 0.
        let m = axis_map(
            4,
            1,
            0.25,
            (0.0, 1.0),
            &attrs(ResizeMode::Linear, CoordMode::PytorchHalfPixel),
        )
        .unwrap();
        assert_eq!(m.taps[0], vec![(0, 1.0)]);
        // 1 → 1 is the identity (the reference skips unchanged axes).
        assert!(axis_map(1, 1, 1.0, (0.0, 1.0), &at).unwrap().is_identity());
    }

    #[test]
    fn tf_crop_and_resize_extrapolates() {
        let mut at = attrs(ResizeMode::Linear, CoordMode::TfCropAndResize);
        at.extrapolation_value = 10.0;
        // roi (0.4, 1.2) on 4 → 3: x_ori = 1.2, 2.4, 3.6 (> 3 → fill).
        let m = axis_map(4, 3, 0.75, (0.4, 1.2), &at).unwrap();
        assert_eq!(m.fill, vec![None, None, Some(10.0)]);
        assert!(m.taps[2].is_empty());
        assert!(close(m.taps[0][0].1, 0.8) && m.taps[0][0].0 == 1);
        assert!(m.has_fill() && m.row_sums()[2] == 0.0);
        // scales with a roi: floor(L · (end − start) · scale).
        let (shape, _) =
            output_shape_with_roi(&[10], Some(&[0.25, 0.75]), Some(&[2.0]), None, &at).unwrap();
        assert_eq!(shape, vec![10]);
        // Full roi, same size: identity.
        assert!(axis_map(4, 4, 1.0, (0.0, 1.0), &at).unwrap().is_identity());
    }

    #[test]
    fn exclude_outside_renormalises() {
        let mut at = attrs(ResizeMode::Cubic, CoordMode::HalfPixel);
        at.exclude_outside = true;
        // 4 → 8, output 0: x_ori = −0.25, taps −2..1 → only 0 and 1 inside.
        let m = axis_map(4, 8, 2.0, (0.0, 1.0), &at).unwrap();
        // base −1, ratio 0.75: index 0 is at distance 0.25, index 1 at 1.25.
        let (w0, w1) = (cubic_weight(0.25, -0.75), cubic_weight(1.25, -0.75));
        assert_eq!(m.taps[0].len(), 2);
        assert!(close(m.taps[0][0].1, w0 / (w0 + w1)));
        assert!(close(m.taps[0][1].1, w1 / (w0 + w1)));
    }

    #[test]
    fn antialias_widens_the_filter() {
        let mut at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        at.antialias = true;
        // 8 → 4 at scale 0.5: x_ori = 0.5, 2.5, ...; triangle of half-width 2.
        let m = axis_map(8, 4, 0.5, (0.0, 1.0), &at).unwrap();
        // Output 1: x_ori = 2.5, taps 1..4 weights ∝ 0.25, 0.75, 0.75, 0.25.
        let t = &m.taps[1];
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        for (p, w) in t.iter().zip([0.125, 0.375, 0.375, 0.125]) {
            assert!(close(p.1, w));
        }
        // Up-sampling: antialias changes nothing.
        let up_aa = axis_map(4, 8, 2.0, (0.0, 1.0), &at).unwrap();
        at.antialias = false;
        let up = axis_map(4, 8, 2.0, (0.0, 1.0), &at).unwrap();
        for (a, b) in up_aa.to_dense().iter().zip(up.to_dense()) {
            assert!(close(*a, b));
        }
    }

    #[test]
    fn output_shapes() {
        let mut at = attrs(ResizeMode::Nearest, CoordMode::HalfPixel);
        assert_eq!(
            output_shape(&[1, 1, 4, 4], Some(&[1.0, 1.0, 0.6, 1.7]), None, &at)
                .unwrap()
                .0,
            vec![1, 1, 2, 6]
        );
        let (s, e) = output_shape(&[1, 1, 2, 4], None, Some(&[1, 1, 3, 2]), &at).unwrap();
        assert_eq!(s, vec![1, 1, 3, 2]);
        assert!(close(e[2], 1.5) && close(e[3], 0.5));
        // keep_aspect_ratio_policy over axes [2, 3], 2×2 → sizes 7×8.
        at.axes = Some(vec![2, -1]);
        at.keep_aspect_ratio_policy = AspectPolicy::NotLarger;
        let (s, e) = output_shape(&[1, 1, 2, 2], None, Some(&[7, 8]), &at).unwrap();
        assert_eq!(s, vec![1, 1, 7, 7]);
        assert_eq!(e, vec![1.0, 1.0, 3.5, 3.5]);
        at.keep_aspect_ratio_policy = AspectPolicy::NotSmaller;
        assert_eq!(
            output_shape(&[1, 1, 2, 2], None, Some(&[7, 8]), &at)
                .unwrap()
                .0,
            vec![1, 1, 8, 8]
        );
        // Round half up: 3 × (5/2) = 7.5 → 8.
        let nl = ResizeAttrs {
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::NotLarger,
            ..at.clone()
        };
        assert_eq!(
            output_shape(&[3, 2], None, Some(&[100, 5]), &nl).unwrap().0,
            vec![8, 5]
        );
        // Errors, never panics.
        at.keep_aspect_ratio_policy = AspectPolicy::Stretch;
        assert!(output_shape(&[1, 1, 2, 2], None, Some(&[7]), &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], Some(&[1.0, f64::NAN]), None, &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], Some(&[1.0, -2.0]), None, &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], Some(&[1.0, 2.0]), Some(&[2, 2]), &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], None, None, &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], None, Some(&[-1, 2]), &at).is_err());
        assert!(output_shape(&[1, 1, 2, 2], Some(&[1e300, 1.0]), None, &at).is_err());
        at.axes = Some(vec![2, 2]);
        assert!(output_shape(&[1, 1, 2, 2], None, Some(&[7, 8]), &at).is_err());
        at.axes = Some(vec![4]);
        assert!(output_shape(&[1, 1, 2, 2], None, Some(&[7]), &at).is_err());
    }

    #[test]
    fn plan_maps_only_listed_axes() {
        let mut at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        at.axes = Some(vec![3]);
        let p = plan(&[1, 2, 3, 4], None, Some(&[2.0]), None, &at).unwrap();
        assert_eq!(p.out_shape, vec![1, 2, 3, 8]);
        assert!(p.maps[..3].iter().all(AxisMap::is_identity));
        assert!(!p.maps[3].is_identity());
    }

    #[test]
    fn opset10_is_asymmetric() {
        let mut at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        at.scales_input_only = true;
        let m = axis_map(2, 4, 2.0, (0.0, 1.0), &at).unwrap();
        // x_ori = 0, 0.5, 1, 1.5 → [x0], [x0/2 + x1/2], [x1], [x1] (clamped).
        assert_eq!(m.taps[0], vec![(0, 1.0)]);
        assert_eq!(m.taps[1], vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(m.taps[3], vec![(1, 1.0)]);
        at.mode = ResizeMode::Nearest;
        // Down-sampling 4 → 2 at 0.6 (legacy): x_ori = 0, 1.67 → ceil → 0, 2.
        let m = axis_map(4, 2, 0.6, (0.0, 1.0), &at).unwrap();
        assert_eq!(
            m.taps.iter().map(|t| t[0].0).collect::<Vec<_>>(),
            vec![0, 2]
        );
    }

    #[test]
    fn compose_folds_two_maps() {
        let at = attrs(ResizeMode::Cubic, CoordMode::HalfPixel);
        let up = axis_map(3, 16, 16.0 / 3.0, (0.0, 1.0), &at).unwrap();
        let down = area_map(16, 6);
        let m = down.compose(&up).unwrap();
        assert_eq!((m.out_len, m.in_len), (6, 3));
        let x = [0.3, -1.0, 2.5];
        let direct = down.apply(&up.apply(&x).unwrap()).unwrap();
        let folded = m.apply(&x).unwrap();
        for (a, b) in direct.iter().zip(&folded) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!(up.compose(&down).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let at = attrs(ResizeMode::Linear, CoordMode::HalfPixel);
        assert!(axis_map(0, 3, 1.0, (0.0, 1.0), &at).is_err());
        assert!(axis_map(3, 3, f64::NAN, (0.0, 1.0), &at).is_err());
        assert!(axis_map(3, 3, 0.0, (0.0, 1.0), &at).is_err());
        assert!(
            axis_map(3, 0, 0.0, (0.0, 1.0), &at)
                .unwrap()
                .taps
                .is_empty()
        );
        assert!(full_roi(2, Some(&[0.0, 1.0]), &at).is_err());
    }
}
