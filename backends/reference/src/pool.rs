//! AveragePool, MaxPool, GlobalAveragePool, GlobalMaxPool. Computed in f64,
//! rounded to X's element type.
//!
//! Window geometry (output size, auto_pad, ceil_mode with the rule that the
//! last window must start inside the input or its left padding) is shared
//! with Conv (`conv::geometry`). A window position is *valid* when it lies in
//! the input, and *counted* by `count_include_pad = 1` when it lies in the
//! input or the explicit/auto padding, `[−pad_begin, len + pad_end)`;
//! positions that only exist because of `ceil_mode` (past the end padding)
//! are never counted, as in the ONNX reference and onnxruntime. NaN inputs
//! compare false in MaxPool (onnxruntime's `x > max` rule); a window without
//! valid positions gives −∞ (MaxPool, saturating to the type's lowest value
//! for integers) or 0/0 = NaN (AveragePool without counted padding).

use crate::conv::{check_output_size, geometry};
use varc_ir::Tensor;
use varc_ir::op::Window;

fn check_input(op: &str, x: &Tensor) -> Result<(), String> {
    if x.rank() < 3 {
        return Err(format!(
            "{op}: X must have rank ≥ 3 (N, C, spatial…), got shape {:?}",
            x.shape()
        ));
    }
    if !(x.dtype().is_float() || x.dtype().is_int()) {
        return Err(format!("{op}: X must be numeric, got {}", x.dtype()));
    }
    Ok(())
}

/// Per spatial axis and output index: the valid input indices of the window
/// and the number of counted (input or padding) positions.
struct AxisWindows {
    valid: Vec<Vec<usize>>,
    counted: Vec<usize>,
}

fn pool_impl(
    op: &str,
    x: &Tensor,
    window: &Window,
    ceil_mode: bool,
    max: bool,
    count_include_pad: bool,
) -> Result<Tensor, String> {
    check_input(op, x)?;
    let kernel = window
        .kernel_shape
        .as_ref()
        .ok_or_else(|| format!("{op}: kernel_shape is required"))?;
    let xs = x.shape();
    let spatial = &xs[2..];
    let g = geometry(op, spatial, kernel, window, ceil_mode)?;
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend_from_slice(&g.out);
    check_output_size(op, &out_shape)?;

    let axes: Vec<AxisWindows> = (0..spatial.len())
        .map(|a| {
            let (len, pb, pe) = (
                spatial[a] as i64,
                g.pad_begin[a] as i64,
                g.pad_end[a] as i64,
            );
            let mut valid = Vec::with_capacity(g.out[a]);
            let mut counted = Vec::with_capacity(g.out[a]);
            for o in 0..g.out[a] {
                let mut v = Vec::with_capacity(g.kernel[a]);
                let mut c = 0;
                for k in 0..g.kernel[a] {
                    let i = (o * g.strides[a] + k * g.dilations[a]) as i64 - pb;
                    if (0..len).contains(&i) {
                        v.push(i as usize);
                    }
                    if i >= -pb && i < len + pe {
                        c += 1;
                    }
                }
                valid.push(v);
                counted.push(c);
            }
            AxisWindows { valid, counted }
        })
        .collect();

    let xv = x.to_f64_vec();
    let in_plane: usize = spatial.iter().product();
    let out_plane: usize = g.out.iter().product();
    let in_strides = varc_ir::shape::strides(spatial);
    let nsp = spatial.len();
    let planes = xs[0] * xs[1];
    let mut y = Vec::with_capacity(planes * out_plane);
    let mut o_idx = vec![0usize; nsp];
    let mut k_idx = vec![0usize; nsp];
    for p in 0..planes {
        let plane = &xv[p * in_plane..(p + 1) * in_plane];
        for oflat in 0..out_plane {
            let mut rem = oflat;
            for a in (0..nsp).rev() {
                o_idx[a] = rem % g.out[a];
                rem /= g.out[a];
            }
            let lists: Vec<&[usize]> = (0..nsp)
                .map(|a| axes[a].valid[o_idx[a]].as_slice())
                .collect();
            let n_valid: usize = lists.iter().map(|l| l.len()).product();
            let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
            if n_valid > 0 {
                k_idx.fill(0);
                loop {
                    let off: usize = (0..nsp).map(|a| lists[a][k_idx[a]] * in_strides[a]).sum();
                    let v = plane[off];
                    if max {
                        if v > acc {
                            acc = v;
                        }
                    } else {
                        acc += v;
                    }
                    // Next window position (odometer over the per-axis lists).
                    let mut a = nsp;
                    let done = loop {
                        if a == 0 {
                            break true;
                        }
                        a -= 1;
                        k_idx[a] += 1;
                        if k_idx[a] < lists[a].len() {
                            break false;
                        }
                        k_idx[a] = 0;
                    };
                    if done {
                        break;
                    }
                }
            }
            if !max {
                let count = if count_include_pad {
                    (0..nsp)
                        .map(|a| axes[a].counted[o_idx[a]])
                        .product::<usize>()
                } else {
                    n_valid
                };
                acc /= count as f64;
            }
            y.push(acc);
        }
    }
    Tensor::from_f64_as(x.dtype(), out_shape, &y)
}

pub fn average_pool(
    x: &Tensor,
    window: &Window,
    ceil_mode: bool,
    count_include_pad: bool,
) -> Result<Tensor, String> {
    pool_impl(
        "AveragePool",
        x,
        window,
        ceil_mode,
        false,
        count_include_pad,
    )
}

pub fn max_pool(x: &Tensor, window: &Window, ceil_mode: bool) -> Result<Tensor, String> {
    pool_impl("MaxPool", x, window, ceil_mode, true, false)
}

/// GlobalAveragePool (`max = false`) or GlobalMaxPool (`max = true`) over all
/// spatial axes: (N, C, D1, …) → (N, C, 1, …).
pub fn global_pool(x: &Tensor, max: bool) -> Result<Tensor, String> {
    let op = if max {
        "GlobalMaxPool"
    } else {
        "GlobalAveragePool"
    };
    check_input(op, x)?;
    let xs = x.shape();
    let plane: usize = xs[2..].iter().product();
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    let xv = x.to_f64_vec();
    let y: Vec<f64> = (0..xs[0] * xs[1])
        .map(|p| {
            let s = &xv[p * plane..(p + 1) * plane];
            if max {
                s.iter()
                    .fold(f64::NEG_INFINITY, |m, &v| if v > m { v } else { m })
            } else {
                s.iter().sum::<f64>() / plane as f64
            }
        })
        .collect();
    Tensor::from_f64_as(x.dtype(), out_shape, &y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::op::AutoPad;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn win(k: &[usize], pads: &[usize], strides: &[usize], dilations: &[usize]) -> Window {
        Window {
            kernel_shape: Some(k.to_vec()),
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            auto_pad: None,
        }
    }

    fn x5() -> Tensor {
        t(&[1, 1, 5, 5], (1..=25).map(|v| v as f32).collect())
    }

    fn close(got: &Tensor, want: &[f64]) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len(), "{g:?}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{g:?} vs {want:?}");
        }
    }

    #[test]
    fn average_pool_pads() {
        // test_averagepool_2d_precomputed_pads: k 5, pads 2 → 5×5, pads not counted.
        let y = average_pool(&x5(), &win(&[5, 5], &[2, 2, 2, 2], &[], &[]), false, false).unwrap();
        #[rustfmt::skip]
        close(&y, &[
            7.0, 7.5, 8.0, 8.5, 9.0,
            9.5, 10.0, 10.5, 11.0, 11.5,
            12.0, 12.5, 13.0, 13.5, 14.0,
            14.5, 15.0, 15.5, 16.0, 16.5,
            17.0, 17.5, 18.0, 18.5, 19.0,
        ]);
        // test_averagepool_2d_precomputed_pads_count_include_pad.
        let y = average_pool(&x5(), &win(&[5, 5], &[2, 2, 2, 2], &[], &[]), false, true).unwrap();
        #[rustfmt::skip]
        close(&y, &[
            2.52, 3.6, 4.8, 4.08, 3.24,
            4.56, 6.4, 8.4, 7.04, 5.52,
            7.2, 10.0, 13.0, 10.8, 8.4,
            6.96, 9.6, 12.4, 10.24, 7.92,
            6.12, 8.4, 10.8, 8.88, 6.84,
        ]);
    }

    #[test]
    fn ceil_mode() {
        // test_averagepool_2d_ceil: 4×4, k 3, s 2 → 2×2 with ceil_mode.
        let x = t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let y = average_pool(&x, &win(&[3, 3], &[], &[2, 2], &[]), true, false).unwrap();
        close(&y, &[6.0, 7.5, 12.0, 13.5]);
        let y = max_pool(&x, &win(&[3, 3], &[], &[2, 2], &[]), true).unwrap();
        close(&y, &[11.0, 12.0, 15.0, 16.0]);
        let y = average_pool(&x, &win(&[3, 3], &[], &[2, 2], &[]), false, false).unwrap();
        close(&y, &[6.0]);
        // The last window must start inside the input or the left padding:
        // len 5, k 2, s 2, pads (1, 1): ceil((5+2−2)/2)+1 = 4, but window 3
        // starts at 6−1 = 5 ≥ 5 → dropped → 3 outputs.
        let x1 = t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let y = average_pool(&x1, &win(&[2], &[1, 1], &[2], &[]), true, true).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3]);
        close(&y, &[0.5, 2.5, 4.5]);
        // Overhang past the end padding is never counted: len 4, k 3, s 2,
        // pads (0, 0), ceil → windows [0,3), [2,5): the second counts 2.
        let x4 = t(&[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        let y = average_pool(&x4, &win(&[3], &[], &[2], &[]), true, true).unwrap();
        close(&y, &[2.0, 3.5]);
    }

    #[test]
    fn dilations_and_strides() {
        // test_maxpool_2d_dilations: 4×4, k 2, dilation 2 → 2×2.
        let x = t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let y = max_pool(&x, &win(&[2, 2], &[], &[1, 1], &[2, 2]), false).unwrap();
        close(&y, &[11.0, 12.0, 15.0, 16.0]);
        // test_maxpool_2d_strides: 5×5, k 2, s 2 → 2×2.
        let y = max_pool(&x5(), &win(&[2, 2], &[], &[2, 2], &[]), false).unwrap();
        close(&y, &[7.0, 9.0, 17.0, 19.0]);
        let y = average_pool(&x5(), &win(&[3, 3], &[], &[2, 2], &[2, 2]), false, false).unwrap();
        // Only one window: rows/cols 0, 2, 4.
        close(&y, &[13.0]);
    }

    #[test]
    fn auto_pad() {
        // test_averagepool_2d_same_upper: 32×32 k 2 → pads (0, 1).
        let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let mut w = win(&[2, 2], &[], &[], &[]);
        w.auto_pad = Some(AutoPad::SameUpper);
        let y = average_pool(&x, &w, false, false).unwrap();
        close(&y, &[3.0, 4.0, 4.5, 6.0, 7.0, 7.5, 7.5, 8.5, 9.0]);
        w.auto_pad = Some(AutoPad::SameLower);
        let y = average_pool(&x, &w, false, false).unwrap();
        close(&y, &[1.0, 1.5, 2.5, 2.5, 3.0, 4.0, 5.5, 6.0, 7.0]);
        let y = average_pool(&x, &w, false, true).unwrap();
        close(&y, &[0.25, 0.75, 1.25, 1.25, 3.0, 4.0, 2.75, 6.0, 7.0]);
        w.auto_pad = Some(AutoPad::Valid);
        let y = max_pool(&x, &w, false).unwrap();
        close(&y, &[5.0, 6.0, 8.0, 9.0]);
    }

    #[test]
    fn one_and_three_d() {
        let x = t(&[1, 2, 4], vec![1.0, 5.0, 2.0, 0.0, -1.0, -2.0, -3.0, -4.0]);
        let y = max_pool(&x, &win(&[2], &[], &[], &[]), false).unwrap();
        close(&y, &[5.0, 5.0, 2.0, -1.0, -2.0, -3.0]);
        let x3 = t(&[1, 1, 2, 2, 2], (1..=8).map(|v| v as f32).collect());
        let y = average_pool(&x3, &win(&[2, 2, 2], &[], &[], &[]), false, false).unwrap();
        close(&y, &[4.5]);
        let y = max_pool(&x3, &win(&[1, 2, 2], &[], &[], &[]), false).unwrap();
        close(&y, &[4.0, 8.0]);
    }

    #[test]
    fn max_pool_on_int8() {
        use varc_ir::{DType, TensorData};
        let x = Tensor::new(vec![1, 1, 4], TensorData::I8(vec![-128, 5, 127, -3])).unwrap();
        let y = max_pool(&x, &win(&[2], &[1, 1], &[2], &[]), false).unwrap();
        assert_eq!(y.dtype(), DType::I8);
        assert_eq!(y.data(), &TensorData::I8(vec![-128, 127, -3]));
    }

    #[test]
    fn global_pools() {
        let x = t(
            &[1, 2, 2, 2],
            vec![1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0],
        );
        let y = global_pool(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        close(&y, &[2.5, -2.5]);
        let y = global_pool(&x, true).unwrap();
        close(&y, &[4.0, -1.0]);
        assert!(global_pool(&t(&[2, 2], vec![0.0; 4]), true).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = x5();
        let mut w = win(&[6, 6], &[], &[], &[]);
        assert!(average_pool(&x, &w, false, false).is_err());
        w.pads = vec![1, 1, 0, 0];
        assert!(average_pool(&x, &w, false, false).is_ok());
        w.kernel_shape = None;
        assert!(max_pool(&x, &w, false).is_err());
        assert!(max_pool(&x, &win(&[2], &[], &[], &[]), false).is_err());
        assert!(max_pool(&x, &win(&[2, 2], &[], &[0, 1], &[]), false).is_err());
        assert!(max_pool(&x, &win(&[2, 0], &[], &[], &[]), false).is_err());
        assert!(max_pool(&x, &win(&[2, 2], &[1, 1], &[], &[]), false).is_err());
        assert!(
            max_pool(
                &t(&[5, 5], vec![0.0; 25]),
                &win(&[2, 2], &[], &[], &[]),
                false
            )
            .is_err()
        );
        assert!(
            max_pool(
                &x,
                &win(&[2, 2], &[1 << 40, 1 << 40, 0, 0], &[], &[]),
                false
            )
            .is_err()
        );
    }
}
