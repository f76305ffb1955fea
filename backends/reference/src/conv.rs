//! Conv (N-D: 1-D, 2-D, 3-D, … through generic loops): pads, strides,
//! dilations, groups, auto_pad, optional bias. Computed in f64, rounded to X's
//! element type.
//!
//! The inner loop runs along the last spatial axis over the output positions
//! whose input lies inside the (unpadded) input, so padding costs nothing and
//! the index arithmetic is hoisted out of it.

use varc_ir::Tensor;
use varc_ir::op::{AutoPad, Window};
use varc_ir::tensor::checked_numel;

/// Refuse outputs beyond this many elements (hostile pads would otherwise
/// abort the process on allocation).
const MAX_ELEMS: usize = 1 << 32;

/// Resolved geometry of a convolution or pooling window over the spatial axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Padding before each spatial axis.
    pub pad_begin: Vec<usize>,
    /// Padding after each spatial axis.
    pub pad_end: Vec<usize>,
    pub out: Vec<usize>,
}

fn ones_or(v: &[usize], n: usize, what: &str) -> Result<Vec<usize>, String> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    if v.len() != n {
        return Err(format!(
            "{what} {v:?} has {} values for {n} spatial axes",
            v.len()
        ));
    }
    if v.contains(&0) {
        return Err(format!("{what} {v:?} must be ≥ 1"));
    }
    Ok(v.to_vec())
}

/// Resolves the window of a Conv/pool over `spatial` input extents with
/// `kernel` extents. `ceil_mode` only applies to pools with explicit pads.
pub(crate) fn geometry(
    op: &str,
    spatial: &[usize],
    kernel: &[usize],
    window: &Window,
    ceil_mode: bool,
) -> Result<Geometry, String> {
    let n = spatial.len();
    if kernel.len() != n {
        return Err(format!(
            "{op}: kernel_shape {kernel:?} has {} axes for {n} spatial axes",
            kernel.len()
        ));
    }
    if kernel.contains(&0) {
        return Err(format!("{op}: kernel_shape {kernel:?} has a zero extent"));
    }
    let strides = ones_or(&window.strides, n, &format!("{op}: strides"))?;
    let dilations = ones_or(&window.dilations, n, &format!("{op}: dilations"))?;
    let eff: Vec<usize> = (0..n)
        .map(|i| {
            (kernel[i] - 1)
                .checked_mul(dilations[i])
                .and_then(|v| v.checked_add(1))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{op}: dilated kernel overflows"))?;
    let auto = window.auto_pad.unwrap_or(AutoPad::NotSet);
    let (mut pad_begin, mut pad_end) = (vec![0; n], vec![0; n]);
    let mut out = vec![0; n];
    match auto {
        AutoPad::NotSet => {
            if !window.pads.is_empty() {
                if window.pads.len() != 2 * n {
                    return Err(format!(
                        "{op}: pads {:?} has {} values; expected {}",
                        window.pads,
                        window.pads.len(),
                        2 * n
                    ));
                }
                pad_begin.copy_from_slice(&window.pads[..n]);
                pad_end.copy_from_slice(&window.pads[n..]);
            }
            for i in 0..n {
                let padded = spatial[i]
                    .checked_add(pad_begin[i])
                    .and_then(|v| v.checked_add(pad_end[i]))
                    .ok_or_else(|| format!("{op}: pads overflow"))?;
                if padded < eff[i] {
                    return Err(format!(
                        "{op}: kernel extent {} (dilated) is larger than the padded input {} on spatial axis {i}",
                        eff[i], padded
                    ));
                }
                let span = padded - eff[i];
                out[i] = if ceil_mode {
                    let mut o = span.div_ceil(strides[i]) + 1;
                    // The last window must start inside the input or the left padding.
                    if (o - 1) * strides[i] >= spatial[i] + pad_begin[i] {
                        o -= 1;
                    }
                    o
                } else {
                    span / strides[i] + 1
                };
            }
        }
        AutoPad::Valid => {
            for i in 0..n {
                if spatial[i] < eff[i] {
                    return Err(format!(
                        "{op}: kernel extent {} (dilated) is larger than the input {} on spatial axis {i} (auto_pad VALID)",
                        eff[i], spatial[i]
                    ));
                }
                out[i] = (spatial[i] - eff[i]) / strides[i] + 1;
            }
        }
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..n {
                out[i] = spatial[i].div_ceil(strides[i]);
                let need = (out[i].saturating_sub(1) * strides[i])
                    .saturating_add(eff[i])
                    .saturating_sub(spatial[i]);
                let small = need / 2;
                if auto == AutoPad::SameUpper {
                    (pad_begin[i], pad_end[i]) = (small, need - small);
                } else {
                    (pad_begin[i], pad_end[i]) = (need - small, small);
                }
            }
        }
    }
    Ok(Geometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pad_begin,
        pad_end,
        out,
    })
}

pub(crate) fn check_output_size(op: &str, shape: &[usize]) -> Result<(), String> {
    match checked_numel(shape) {
        Some(n) if n <= MAX_ELEMS => Ok(()),
        _ => Err(format!(
            "{op}: output shape {shape:?} is too large for the reference interpreter"
        )),
    }
}

/// For one spatial axis: per kernel tap `k`, the output range `[lo, hi)` whose
/// input position `o·s − pad + k·d` lies in `[0, len)`, and the input position
/// of output `lo`.
pub(crate) fn tap_ranges(
    len: usize,
    out: usize,
    stride: usize,
    dil: usize,
    pad: usize,
    k: usize,
) -> Vec<(usize, usize, usize)> {
    (0..k)
        .map(|t| {
            let off = (t * dil) as i64 - pad as i64; // input = o·s + off
            let (s, len, out) = (stride as i64, len as i64, out as i64);
            // o·s + off ≥ 0  ⇔  o ≥ ceil(−off / s)
            let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
            // o·s + off ≤ len − 1  ⇔  o ≤ floor((len − 1 − off) / s)
            let hi = if len - 1 - off < 0 {
                0
            } else {
                (len - 1 - off) / s + 1
            };
            let (lo, hi) = (lo.min(out), hi.min(out).max(lo.min(out)));
            let start = if hi > lo { (lo * s + off) as usize } else { 0 };
            (lo as usize, hi as usize, start)
        })
        .collect()
}

/// Conv(X, W, B?) per the ONNX spec.
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: &Window,
    group: usize,
) -> Result<Tensor, String> {
    let xs = x.shape();
    let ws = w.shape();
    if xs.len() < 3 {
        return Err(format!(
            "Conv: X must have rank ≥ 3 (N, C, spatial…), got shape {xs:?}"
        ));
    }
    if ws.len() != xs.len() {
        return Err(format!(
            "Conv: W shape {ws:?} must have the rank of X {xs:?}"
        ));
    }
    if !x.dtype().is_float() || !w.dtype().is_float() {
        return Err(format!(
            "Conv: X and W must be float tensors, got {} and {}",
            x.dtype(),
            w.dtype()
        ));
    }
    if group == 0 {
        return Err("Conv: group must be ≥ 1".into());
    }
    let (batch, c_in) = (xs[0], xs[1]);
    let (m_out, c_per_group) = (ws[0], ws[1]);
    if !c_in.is_multiple_of(group) || c_in / group != c_per_group {
        return Err(format!(
            "Conv: X has {c_in} channels; with group {group}, W {ws:?} needs {c_per_group}·{group}"
        ));
    }
    if !m_out.is_multiple_of(group) {
        return Err(format!(
            "Conv: {m_out} output channels are not divisible by group {group}"
        ));
    }
    let kernel = &ws[2..];
    if let Some(ks) = &window.kernel_shape
        && ks.as_slice() != kernel
    {
        return Err(format!(
            "Conv: kernel_shape {ks:?} does not match W's spatial shape {kernel:?}"
        ));
    }
    let spatial = &xs[2..];
    let g = geometry("Conv", spatial, kernel, window, false)?;
    let bias = match b {
        Some(b) => {
            if b.numel() != m_out || b.rank() != 1 {
                return Err(format!(
                    "Conv: bias shape {:?} must be [{m_out}]",
                    b.shape()
                ));
            }
            if !b.dtype().is_float() {
                return Err(format!(
                    "Conv: bias must be a float tensor, got {}",
                    b.dtype()
                ));
            }
            b.to_f64_vec()
        }
        None => vec![0.0; m_out],
    };
    let mut out_shape = vec![batch, m_out];
    out_shape.extend_from_slice(&g.out);
    check_output_size("Conv", &out_shape)?;

    let xv = x.to_f64_vec();
    let wv = w.to_f64_vec();
    let nsp = spatial.len();
    let last = nsp - 1;
    let in_plane: usize = spatial.iter().product();
    let out_plane: usize = g.out.iter().product();
    let k_plane: usize = kernel.iter().product();
    let out_row = g.out[last];
    let in_row = spatial[last];
    let rows_out = out_plane / out_row.max(1);
    let m_per_group = m_out / group;

    // Along the last axis: valid output range and input start per kernel tap.
    let last_ranges = tap_ranges(
        in_row,
        out_row,
        g.strides[last],
        g.dilations[last],
        g.pad_begin[last],
        kernel[last],
    );
    let s_last = g.strides[last];
    // Leading spatial axes: per axis, per (output index, kernel tap), the input
    // index if inside.
    let lead: Vec<Vec<Option<usize>>> = (0..last)
        .map(|a| {
            let mut t = Vec::with_capacity(g.out[a] * kernel[a]);
            for o in 0..g.out[a] {
                for k in 0..kernel[a] {
                    let i = (o * g.strides[a] + k * g.dilations[a]) as i64 - g.pad_begin[a] as i64;
                    t.push((i >= 0 && i < spatial[a] as i64).then_some(i as usize));
                }
            }
            t
        })
        .collect();
    let in_strides = varc_ir::shape::strides(spatial);

    let mut y = vec![0.0; checked_numel(&out_shape).unwrap_or(0)];
    if out_plane == 0 {
        return Tensor::from_f64_as(x.dtype(), out_shape, &y);
    }
    // Leading kernel taps (all but the last axis) enumerated once.
    let lead_kernel: usize = kernel[..last].iter().product();
    let mut out_idx = vec![0usize; last];
    let mut k_idx = vec![0usize; last];
    for n in 0..batch {
        for m in 0..m_out {
            let gi = m / m_per_group;
            let y_plane = &mut y[(n * m_out + m) * out_plane..][..out_plane];
            y_plane.fill(bias[m]);
            for c in 0..c_per_group {
                let ci = gi * c_per_group + c;
                let x_plane = &xv[(n * c_in + ci) * in_plane..][..in_plane];
                let w_k = &wv[(m * c_per_group + c) * k_plane..][..k_plane];
                for r in 0..rows_out {
                    // Output row r → multi-index over the leading axes.
                    let mut rem = r;
                    for a in (0..last).rev() {
                        out_idx[a] = rem % g.out[a];
                        rem /= g.out[a];
                    }
                    let y_row = &mut y_plane[r * out_row..][..out_row];
                    for kl in 0..lead_kernel {
                        let mut rem = kl;
                        for a in (0..last).rev() {
                            k_idx[a] = rem % kernel[a];
                            rem /= kernel[a];
                        }
                        let mut in_off = 0;
                        let mut inside = true;
                        for a in 0..last {
                            match lead[a][out_idx[a] * kernel[a] + k_idx[a]] {
                                Some(i) => in_off += i * in_strides[a],
                                None => {
                                    inside = false;
                                    break;
                                }
                            }
                        }
                        if !inside {
                            continue;
                        }
                        let x_row = &x_plane[in_off..in_off + in_row];
                        let w_row = &w_k[kl * kernel[last]..][..kernel[last]];
                        for (t, &wt) in w_row.iter().enumerate() {
                            let (lo, hi, start) = last_ranges[t];
                            if hi <= lo || wt == 0.0 {
                                continue;
                            }
                            let dst = &mut y_row[lo..hi];
                            if s_last == 1 {
                                for (o, &v) in dst.iter_mut().zip(&x_row[start..]) {
                                    *o += wt * v;
                                }
                            } else {
                                for (o, &v) in
                                    dst.iter_mut().zip(x_row[start..].iter().step_by(s_last))
                                {
                                    *o += wt * v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_f64_as(x.dtype(), out_shape, &y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn win(pads: &[usize], strides: &[usize], dilations: &[usize]) -> Window {
        Window {
            kernel_shape: None,
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            auto_pad: None,
        }
    }

    /// Direct formula: y[n,m,o] = b[m] + Σ_{c,k} w[m,c,k] · x[n, g·C/G + c, o·s − p + k·d].
    fn naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>, group: usize, g: &Geometry) -> Vec<f64> {
        let (xs, ws) = (x.shape(), w.shape());
        let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
        let nsp = xs.len() - 2;
        let sp = &xs[2..];
        let k = &ws[2..];
        let cpg = ws[1];
        let mpg = ws[0] / group;
        let mut out = vec![];
        let numel = |s: &[usize]| s.iter().product::<usize>();
        for n in 0..xs[0] {
            for m in 0..ws[0] {
                for oflat in 0..numel(&g.out) {
                    let mut o = vec![0; nsp];
                    let mut r = oflat;
                    for a in (0..nsp).rev() {
                        o[a] = r % g.out[a];
                        r /= g.out[a];
                    }
                    let mut acc = b.map_or(0.0, |b| b.to_f64_vec()[m]);
                    for c in 0..cpg {
                        for kflat in 0..numel(k) {
                            let mut kk = vec![0; nsp];
                            let mut r = kflat;
                            for a in (0..nsp).rev() {
                                kk[a] = r % k[a];
                                r /= k[a];
                            }
                            let mut xi = 0i64;
                            let mut ok = true;
                            for a in 0..nsp {
                                let i = (o[a] * g.strides[a] + kk[a] * g.dilations[a]) as i64
                                    - g.pad_begin[a] as i64;
                                if i < 0 || i >= sp[a] as i64 {
                                    ok = false;
                                }
                                xi = xi * sp[a] as i64 + i;
                            }
                            if ok {
                                let ci = (m / mpg) * cpg + c;
                                acc += wv[(m * cpg + c) * numel(k) + kflat]
                                    * xv[(n * xs[1] + ci) * numel(sp) + xi as usize];
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn conv2d_basic_node_test() {
        // test_basic_conv_with_padding / without padding.
        let x = t(&[1, 1, 5, 5], (0..25).map(|v| v as f32).collect());
        let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
        let y = conv(&x, &w, None, &win(&[1, 1, 1, 1], &[], &[]), 1).unwrap();
        #[rustfmt::skip]
        let want = [
            12.0, 21.0, 27.0, 33.0, 24.0,
            33.0, 54.0, 63.0, 72.0, 51.0,
            63.0, 99.0, 108.0, 117.0, 81.0,
            93.0, 144.0, 153.0, 162.0, 111.0,
            72.0, 111.0, 117.0, 123.0, 84.0,
        ];
        assert_eq!(y.shape(), &[1, 1, 5, 5]);
        assert_eq!(y.to_f64_vec(), want.to_vec());
        let y = conv(&x, &w, None, &win(&[], &[], &[]), 1).unwrap();
        assert_eq!(
            y.to_f64_vec(),
            vec![54.0, 63.0, 72.0, 99.0, 108.0, 117.0, 144.0, 153.0, 162.0]
        );
        // test_conv_with_strides_padding: stride 2, pads 1 → 3×3.
        let x7 = t(&[1, 1, 7, 5], (0..35).map(|v| v as f32).collect());
        let y = conv(&x7, &w, None, &win(&[1, 1, 1, 1], &[2, 2], &[]), 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 3]);
        assert_eq!(
            y.to_f64_vec(),
            vec![
                12.0, 27.0, 24.0, 63.0, 108.0, 81.0, 123.0, 198.0, 141.0, 112.0, 177.0, 124.0
            ]
        );
    }

    #[test]
    fn matches_naive_formula_nd() {
        let cases: Vec<(Vec<usize>, Vec<usize>, usize, Window)> = vec![
            (vec![2, 4, 9], vec![6, 2, 3], 2, win(&[2, 1], &[2], &[2])),
            (
                vec![1, 3, 7, 6],
                vec![4, 3, 3, 2],
                1,
                win(&[1, 0, 2, 1], &[2, 1], &[1, 2]),
            ),
            (
                vec![1, 6, 5, 5],
                vec![6, 1, 3, 3],
                6,
                win(&[1, 1, 1, 1], &[1, 1], &[1, 1]),
            ),
            (
                vec![1, 2, 4, 5, 3],
                vec![2, 2, 2, 3, 2],
                1,
                win(&[1, 0, 1, 0, 2, 0], &[1, 2, 1], &[2, 1, 1]),
            ),
            (
                vec![1, 2, 6, 6],
                vec![2, 2, 3, 3],
                1,
                win(&[3, 3, 3, 3], &[3, 3], &[1, 1]),
            ),
        ];
        for (i, (xs, ws, group, window)) in cases.into_iter().enumerate() {
            let x = t(&xs, pseudo(xs.iter().product(), i as u32));
            let w = t(&ws, pseudo(ws.iter().product(), 100 + i as u32));
            let b = t(&[ws[0]], pseudo(ws[0], 200 + i as u32));
            let y = conv(&x, &w, Some(&b), &window, group).unwrap();
            let g = geometry("Conv", &xs[2..], &ws[2..], &window, false).unwrap();
            let want = naive(&x, &w, Some(&b), group, &g);
            assert_eq!(&y.shape()[2..], g.out.as_slice());
            for (a, b) in y.to_f64_vec().iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "case {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn auto_pad_modes() {
        let x = t(&[1, 1, 5, 5], (0..25).map(|v| v as f32).collect());
        let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
        // test_conv_with_autopad_same: SAME_LOWER, stride 2 → pads (1, 1) → 3×3.
        let mut wd = win(&[], &[2, 2], &[]);
        wd.auto_pad = Some(AutoPad::SameLower);
        let y = conv(&x, &w, None, &wd, 1).unwrap();
        assert_eq!(
            y.to_f64_vec(),
            vec![12.0, 27.0, 24.0, 63.0, 108.0, 81.0, 72.0, 117.0, 84.0]
        );
        // Odd padding: kernel 2, stride 1 on 5 → need 1: SAME_UPPER pads the end.
        let w2 = t(&[1, 1, 2, 2], vec![1.0; 4]);
        let g_up = geometry(
            "Conv",
            &[5, 5],
            &[2, 2],
            &Window {
                auto_pad: Some(AutoPad::SameUpper),
                ..Window::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(
            (
                g_up.pad_begin.clone(),
                g_up.pad_end.clone(),
                g_up.out.clone()
            ),
            (vec![0, 0], vec![1, 1], vec![5, 5])
        );
        let g_lo = geometry(
            "Conv",
            &[5, 5],
            &[2, 2],
            &Window {
                auto_pad: Some(AutoPad::SameLower),
                ..Window::default()
            },
            false,
        )
        .unwrap();
        assert_eq!((g_lo.pad_begin, g_lo.pad_end), (vec![1, 1], vec![0, 0]));
        let wv = Window {
            auto_pad: Some(AutoPad::Valid),
            pads: vec![5, 5, 5, 5], // ignored with VALID
            ..Window::default()
        };
        let y = conv(&x, &w2, None, &wv, 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = t(&[1, 4, 5, 5], vec![0.0; 100]);
        let w = t(&[2, 2, 3, 3], vec![0.0; 36]);
        assert!(conv(&x, &w, None, &win(&[], &[], &[]), 0).is_err());
        assert!(conv(&x, &w, None, &win(&[], &[], &[]), 3).is_err());
        assert!(conv(&x, &w, None, &win(&[], &[], &[]), 1).is_err()); // 4 ≠ 2·1
        assert!(conv(&x, &w, None, &win(&[], &[], &[]), 2).is_ok());
        let w3 = t(&[3, 2, 3, 3], vec![0.0; 54]);
        assert!(conv(&x, &w3, None, &win(&[], &[], &[]), 2).is_err()); // 3 % 2
        let big = t(&[2, 2, 7, 7], vec![0.0; 196]);
        assert!(conv(&x, &big, None, &win(&[], &[], &[]), 2).is_err()); // kernel > input
        assert!(conv(&x, &big, None, &win(&[1, 1, 1, 1], &[], &[]), 2).is_ok());
        assert!(conv(&x, &w, None, &win(&[1, 1], &[], &[]), 2).is_err()); // pads length
        assert!(conv(&x, &w, None, &win(&[], &[0, 1], &[]), 2).is_err()); // zero stride
        assert!(conv(&x, &w, None, &win(&[], &[], &[1]), 2).is_err());
        let b = t(&[3], vec![0.0; 3]);
        assert!(conv(&x, &w, Some(&b), &win(&[], &[], &[]), 2).is_err());
        let mut wk = win(&[], &[], &[]);
        wk.kernel_shape = Some(vec![2, 2]);
        assert!(conv(&x, &w, None, &wk, 2).is_err());
        let x2 = t(&[4, 5], vec![0.0; 20]);
        assert!(conv(&x2, &w, None, &win(&[], &[], &[]), 2).is_err());
        assert!(conv(&x, &w, None, &win(&[usize::MAX, 0, 0, 0], &[], &[]), 2).is_err());
        assert!(conv(&x, &w, None, &win(&[1 << 40, 1 << 40, 0, 0], &[], &[]), 2).is_err());
    }

    #[test]
    fn keeps_dtype() {
        use varc_ir::DType;
        let x = t(&[1, 1, 3], vec![1.0, 2.0, 3.0]).cast(DType::F16);
        let w = t(&[1, 1, 2], vec![0.5, 0.25]).cast(DType::F16);
        let y = conv(&x, &w, None, &win(&[], &[], &[]), 1).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(y.to_f64_vec(), vec![1.0, 1.75]);
    }
}
