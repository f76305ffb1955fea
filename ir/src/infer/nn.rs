//! Type rules of the contraction, window and resampling ops: MatMul, Gemm,
//! Attention, Conv, pooling and Resize.

use super::dims;
use super::rules::{Ctx, R, RuleError, axes, bad, known_eq, same_dtype, ti};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::op::{AspectPolicy, AttentionAttrs, AutoPad, CoordMode, ResizeAttrs, Window};
use crate::resample;
use crate::shape::{Dim, Shape, broadcast};

pub(super) fn matmul(a: &TypeInfo, b: &TypeInfo) -> R<TypeInfo> {
    same_dtype(a, b)?;
    if a.shape.rank() == 0 || b.shape.rank() == 0 {
        return bad("MatMul operands must have rank ≥ 1");
    }
    let (mut ad, mut bd) = (a.shape.0.clone(), b.shape.0.clone());
    let (a1, b1) = (ad.len() == 1, bd.len() == 1);
    if a1 {
        ad.insert(0, Dim::Known(1));
    }
    if b1 {
        bd.push(Dim::Known(1));
    }
    let (m, ka) = (&ad[ad.len() - 2], &ad[ad.len() - 1]);
    let (kb, n) = (&bd[bd.len() - 2], &bd[bd.len() - 1]);
    known_eq(ka, kb, "inner dimensions")?;
    let batch = broadcast(
        &Shape(ad[..ad.len() - 2].to_vec()),
        &Shape(bd[..bd.len() - 2].to_vec()),
    )?;
    let mut out = batch.0;
    if !a1 {
        out.push(m.clone());
    }
    if !b1 {
        out.push(n.clone());
    }
    Ok(ti(a.dtype, out))
}

pub(super) fn gemm(
    a: &TypeInfo,
    b: &TypeInfo,
    cc: Option<&TypeInfo>,
    ta: bool,
    tb: bool,
) -> R<TypeInfo> {
    same_dtype(a, b)?;
    if a.shape.rank() != 2 || b.shape.rank() != 2 {
        return bad("Gemm operands must be 2-D");
    }
    let (a, bb) = (&a.shape.0, &b.shape.0);
    let (m, ka) = if ta { (&a[1], &a[0]) } else { (&a[0], &a[1]) };
    let (kb, n) = if tb {
        (&bb[1], &bb[0])
    } else {
        (&bb[0], &bb[1])
    };
    known_eq(ka, kb, "inner dimensions")?;
    let out = Shape(vec![m.clone(), n.clone()]);
    if let Some(cc) = cc {
        same_dtype(b, cc)?;
        broadcast(&cc.shape, &out)?;
    }
    Ok(ti(b.dtype, out.0))
}

/// The dims of an opset-23 Attention, whatever its layout.
#[derive(Clone, Debug)]
pub(crate) struct AttnDims {
    pub batch: Dim,
    pub q_heads: Dim,
    pub kv_heads: Dim,
    pub q_len: Dim,
    /// New keys/values.
    pub kv_len: Dim,
    /// Past plus new keys/values.
    pub total_len: Dim,
    pub head: Dim,
    pub v_head: Dim,
    pub four_d: bool,
}

pub(crate) fn attention_dims(
    a: &AttentionAttrs,
    q: &TypeInfo,
    k: &TypeInfo,
    v: &TypeInfo,
    past_k: Option<&TypeInfo>,
) -> R<AttnDims> {
    let r = q.shape.rank();
    if (r != 3 && r != 4) || k.shape.rank() != r || v.shape.rank() != r {
        return bad("Q, K and V must all be 3-D or all be 4-D");
    }
    let (q, k, v) = (&q.shape.0, &k.shape.0, &v.shape.0);
    let mut d = if r == 4 {
        known_eq(&k[1], &v[1], "key and value head counts")?;
        AttnDims {
            batch: q[0].clone(),
            q_heads: q[1].clone(),
            kv_heads: k[1].clone(),
            q_len: q[2].clone(),
            kv_len: k[2].clone(),
            total_len: k[2].clone(),
            head: q[3].clone(),
            v_head: v[3].clone(),
            four_d: true,
        }
    } else {
        let (Some(hq), Some(hkv)) = (a.q_num_heads, a.kv_num_heads) else {
            return bad("3-D Attention needs q_num_heads and kv_num_heads");
        };
        let head = dims::div_exact(&q[2], hq)?;
        let k_head = dims::div_exact(&k[2], hkv)?;
        known_eq(&head, &k_head, "query and key head sizes")?;
        AttnDims {
            batch: q[0].clone(),
            q_heads: Dim::Known(hq),
            kv_heads: Dim::Known(hkv),
            q_len: q[1].clone(),
            kv_len: k[1].clone(),
            total_len: k[1].clone(),
            head,
            v_head: dims::div_exact(&v[2], hkv)?,
            four_d: false,
        }
    };
    if r == 4 {
        known_eq(&d.head, &k[3], "query and key head sizes")?;
    }
    known_eq(&d.kv_len, &v[r - 2], "key and value sequence lengths")?;
    for (x, name) in [(&k[0], "key"), (&v[0], "value")] {
        known_eq(&d.batch, x, &format!("query and {name} batch sizes"))?;
    }
    if let (Dim::Known(hq), Dim::Known(hkv)) = (&d.q_heads, &d.kv_heads)
        && (*hkv == 0 || hq % hkv != 0)
    {
        return bad(format!(
            "{hq} query heads do not group over {hkv} key/value heads"
        ));
    }
    if let Some(p) = past_k {
        if p.shape.rank() != 4 {
            return bad("past_key must be 4-D");
        }
        known_eq(&p.shape.0[1], &d.kv_heads, "past and new key head counts")?;
        known_eq(&p.shape.0[3], &d.head, "past and new key head sizes")?;
        d.total_len = dims::add(&p.shape.0[2], &d.kv_len)?;
    }
    Ok(d)
}

pub(super) fn attention(c: &Ctx, a: &AttentionAttrs, n_out: usize) -> R<Vec<TypeInfo>> {
    let (q, k, v) = (c.ty(0)?, c.ty(1)?, c.ty(2)?);
    same_dtype(q, k)?;
    same_dtype(q, v)?;
    if c.present(4) != c.present(5) {
        return bad("past_key and past_value must be given together");
    }
    let d = attention_dims(a, q, k, v, c.opt(4))?;
    if let Some(pv) = c.opt(5) {
        same_dtype(q, pv)?;
        if pv.shape.rank() != 4 {
            return bad("past_value must be 4-D");
        }
        let past = c.ty(4)?.shape.0[2].clone();
        known_eq(&pv.shape.0[2], &past, "past key and value lengths")?;
        known_eq(&pv.shape.0[3], &d.v_head, "past and new value head sizes")?;
    }
    let scores = vec![
        d.batch.clone(),
        d.q_heads.clone(),
        d.q_len.clone(),
        d.total_len.clone(),
    ];
    if let Some(m) = c.opt(3) {
        if m.dtype != DType::Bool {
            same_dtype(q, m)?;
        }
        // The mask's last dim may be shorter than the total key length: the
        // spec pads it with -inf (false). Check the other dims broadcast.
        let mut lead = m.shape.clone();
        if let Some(last) = lead.0.last_mut() {
            if let (Some(n), Some(total)) = (last.known(), d.total_len.known())
                && n > total
            {
                return bad(format!(
                    "attn_mask's last dim {n} exceeds the key length {total}"
                ));
            }
            *last = Dim::Known(1);
        }
        broadcast(&lead, &Shape(scores.clone()))?;
    }
    let y = if d.four_d {
        vec![
            d.batch.clone(),
            d.q_heads.clone(),
            d.q_len.clone(),
            d.v_head.clone(),
        ]
    } else {
        let hidden = dims::mul(&d.q_heads, &d.v_head)?;
        vec![d.batch.clone(), d.q_len.clone(), hidden]
    };
    let present = |h: &Dim| {
        vec![
            d.batch.clone(),
            d.kv_heads.clone(),
            d.total_len.clone(),
            h.clone(),
        ]
    };
    let all = [y, present(&d.head), present(&d.v_head), scores];
    Ok(all
        .into_iter()
        .take(n_out.max(1))
        .map(|s| ti(q.dtype, s))
        .collect())
}

pub(super) fn conv(c: &Ctx, w: &Window, group: usize) -> R<TypeInfo> {
    let (x, wt) = (c.ty(0)?, c.ty(1)?);
    same_dtype(x, wt)?;
    let r = x.shape.rank();
    if r < 3 || wt.shape.rank() != r {
        return bad(format!(
            "Conv needs input and weight of equal rank ≥ 3, got {} and {}",
            x.shape, wt.shape
        ));
    }
    if group == 0 {
        return bad("group is 0");
    }
    let (xs, ws) = (&x.shape.0, &wt.shape.0);
    known_eq(
        &xs[1],
        &dims::mul(&ws[1], &Dim::Known(group))?,
        "input channels and weight channels × group",
    )?;
    if let Dim::Known(m) = ws[0]
        && m % group != 0
    {
        return bad(format!(
            "{m} output channels do not split into {group} groups"
        ));
    }
    let kernel: Vec<usize> = match &w.kernel_shape {
        Some(k) => {
            for (kd, wd) in k.iter().zip(&ws[2..]) {
                known_eq(&Dim::Known(*kd), wd, "kernel_shape and weight dims")?;
            }
            k.clone()
        }
        None => ws[2..]
            .iter()
            .map(Dim::known)
            .collect::<Option<_>>()
            .ok_or("the weight's spatial dims must be known")?,
    };
    if let Some(b) = c.opt(2) {
        same_dtype(x, b)?;
        if b.shape.rank() != 1 {
            return bad("Conv bias must be 1-D");
        }
        known_eq(&b.shape.0[0], &ws[0], "bias length and output channels")?;
    }
    let mut out = vec![xs[0].clone(), ws[0].clone()];
    out.extend(window_out(&c.node.name, x, &kernel, w, false)?);
    Ok(ti(x.dtype, out))
}

pub(super) fn pool(c: &Ctx, w: &Window, ceil_mode: bool) -> R<TypeInfo> {
    let x = c.ty(0)?;
    if x.shape.rank() < 3 {
        return bad("pooling needs an input of rank ≥ 3");
    }
    let kernel = w
        .kernel_shape
        .as_ref()
        .ok_or("pooling needs kernel_shape")?;
    let mut out = x.shape.0[..2].to_vec();
    out.extend(window_out(&c.node.name, x, kernel, w, ceil_mode)?);
    Ok(ti(x.dtype, out))
}

/// Spatial output dims of a convolution or pooling window over `x`.
fn window_out(
    name: &str,
    x: &TypeInfo,
    kernel: &[usize],
    w: &Window,
    ceil_mode: bool,
) -> R<Vec<Dim>> {
    let spatial = &x.shape.0[2..];
    let n = spatial.len();
    let list = |v: &[usize], len: usize, default: usize, what: &str| -> R<Vec<usize>> {
        match v.len() {
            0 => Ok(vec![default; len]),
            l if l == len => Ok(v.to_vec()),
            l => bad(format!("{what} has {l} entries, expected {len}")),
        }
    };
    if kernel.len() != n {
        return bad(format!(
            "kernel has {} dims for {n} spatial axes",
            kernel.len()
        ));
    }
    let strides = list(&w.strides, n, 1, "strides")?;
    let dil = list(&w.dilations, n, 1, "dilations")?;
    let pads = list(&w.pads, 2 * n, 0, "pads")?;
    if strides.contains(&0) || dil.contains(&0) {
        return bad("strides and dilations must be positive");
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, (pb, pe)) = (strides[i], (pads[i], pads[i + n]));
        let ek = kernel[i]
            .checked_sub(1)
            .and_then(|k| k.checked_mul(dil[i]))
            .and_then(|k| k.checked_add(1))
            .ok_or("kernel extent is zero or overflows")?;
        let mode = w.auto_pad.unwrap_or(AutoPad::NotSet);
        let Dim::Known(len) = spatial[i] else {
            // Symbolic extent: only the size-preserving cases stay nameable.
            let keeps = s == 1
                && match mode {
                    AutoPad::SameUpper | AutoPad::SameLower => true,
                    AutoPad::NotSet => pb.checked_add(pe) == Some(ek - 1),
                    AutoPad::Valid => ek == 1,
                };
            out.push(if keeps {
                spatial[i].clone()
            } else {
                dims::opaque(name, i + 2)
            });
            continue;
        };
        let o = match mode {
            AutoPad::SameUpper | AutoPad::SameLower => len.div_ceil(s),
            AutoPad::Valid | AutoPad::NotSet => {
                let (pb, pe) = if mode == AutoPad::Valid {
                    (0, 0)
                } else {
                    (pb, pe)
                };
                let padded = len
                    .checked_add(pb)
                    .and_then(|v| v.checked_add(pe))
                    .ok_or("padding overflows")?;
                let span = padded.checked_sub(ek).ok_or_else(|| {
                    format!(
                        "window of extent {ek} exceeds padded input {padded} on spatial axis {i}"
                    )
                })?;
                let mut o = if ceil_mode {
                    span.div_ceil(s) + 1
                } else {
                    span / s + 1
                };
                // The last window must start inside the input or its left padding.
                if ceil_mode && (o - 1) * s >= len + pb {
                    o -= 1;
                }
                o
            }
        };
        out.push(Dim::Known(o));
    }
    Ok(out)
}

/// Resize: with known input dims, the output shape comes from
/// [`resample::output_shape_with_roi`], the one place the ONNX sizing rules are
/// written (the reference interpreter uses it too). Symbolic input dims keep
/// their names where the rule allows (untouched axes, `sizes` with `stretch`,
/// integer scales) and become opaque symbols otherwise.
pub(super) fn resize(c: &Ctx, a: &ResizeAttrs) -> R<TypeInfo> {
    let x = c.ty(0)?;
    let r = x.shape.rank();
    let (scales_slot, sizes_slot) = if a.scales_input_only {
        (1, None)
    } else {
        (2, Some(3))
    };
    let sizes = match sizes_slot {
        Some(slot) => c.ints(slot)?.filter(|s| !s.is_empty()),
        None => None,
    };
    // With sizes given, scales and roi are not needed (and may be run-time values).
    let optional = |v: R<Option<Vec<f64>>>| match v {
        Err(RuleError::NeedsValue(_)) if sizes.is_some() => Ok(None),
        v => v,
    };
    let scales = optional(c.floats(scales_slot))?.filter(|s| !s.is_empty());
    let roi = match a.coord {
        CoordMode::TfCropAndResize if !a.scales_input_only => optional(c.floats(1))?,
        _ => None,
    };
    if scales.is_none() && sizes.is_none() {
        return bad("Resize needs scales or sizes");
    }
    // Symbolic dims are probed as 1, then restored below.
    let probe: Vec<usize> = x.shape.0.iter().map(|d| d.known().unwrap_or(1)).collect();
    let (out, _) = resample::output_shape_with_roi(
        &probe,
        roi.as_deref(),
        scales.as_deref(),
        sizes.as_deref(),
        a,
    )?;
    let mut dims: Vec<Dim> = out.into_iter().map(Dim::Known).collect();
    let ax = match &a.axes {
        Some(l) => axes(l, r)?,
        None => (0..r).collect(),
    };
    // keep_aspect_ratio_policy couples the resized axes; otherwise each is on its own.
    let coupled = sizes.is_some() && a.keep_aspect_ratio_policy != AspectPolicy::Stretch;
    let sym_resized = ax.iter().any(|&i| x.shape.0[i].known().is_none());
    for (i, d) in x.shape.0.iter().enumerate() {
        let pos = ax.iter().position(|&a| a == i);
        dims[i] = match (d, pos) {
            (Dim::Sym(_), None) => d.clone(),
            (_, None) => dims[i].clone(),
            (Dim::Known(_), Some(_)) if !coupled || !sym_resized => dims[i].clone(),
            (Dim::Sym(_), Some(_)) if sizes.is_some() && !coupled => dims[i].clone(),
            (Dim::Sym(_), Some(k)) if sizes.is_none() && roi.is_none() => {
                match scales.as_ref().map(|s| s[k]) {
                    Some(s) if s.fract() == 0.0 && s >= 1.0 && s < dims::MAX_ELEMS as f64 => {
                        dims::mul(d, &Dim::Known(s as usize))?
                    }
                    _ => dims::opaque(&c.node.name, i),
                }
            }
            _ => dims::opaque(&c.node.name, i),
        };
    }
    Ok(ti(x.dtype, dims))
}

/// Resample: each mapped axis becomes the map's `out_len`; its input length
/// must be the map's `in_len` (a symbolic dim passes: only a run-time value
/// could fail the check). One map slot per axis; float element types only.
pub(super) fn resample(c: &Ctx, maps: &[Option<resample::AxisMap>]) -> R<TypeInfo> {
    let x = c.ty(0)?;
    if !x.dtype.is_float() {
        return bad(format!("Resample takes a float tensor, not {}", x.dtype));
    }
    if maps.len() != x.shape.rank() {
        return bad(format!(
            "Resample has {} axis maps for a rank-{} input",
            maps.len(),
            x.shape.rank()
        ));
    }
    let mut dims = x.shape.0.clone();
    for (d, m) in maps.iter().enumerate() {
        let Some(m) = m else { continue };
        if m.taps.len() != m.out_len || m.fill.len() != m.out_len || m.has_fill() {
            return bad(format!(
                "Resample axis {d}: malformed map (fill rows or wrong row count)"
            ));
        }
        if m.taps.iter().flatten().any(|&(i, _)| i >= m.in_len) {
            return bad(format!("Resample axis {d}: a tap reads past {}", m.in_len));
        }
        known_eq(
            &dims[d],
            &Dim::Known(m.in_len),
            &format!("Resample axis {d}"),
        )?;
        dims[d] = Dim::Known(m.out_len);
    }
    Ok(ti(x.dtype, dims))
}
