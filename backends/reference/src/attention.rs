//! Attention (opset 23), per the ONNX spec and its reference implementation
//! (`onnx/reference/ops/op_attention.py`, onnx 1.23). Computed in f64,
//! rounded to the input types.
//!
//! - Q/K/V are all 4-D `(B, H, S, hd)` or all 3-D `(B, S, H·hd)` (then
//!   `q_num_heads` / `kv_num_heads` are required; head `h` is columns
//!   `h·hd .. (h+1)·hd`). Y has Q's layout; present_key/present_value are
//!   always 4-D `(B, kv_heads, past + S_kv, hd)`.
//! - GQA: q heads must be a multiple of kv heads; kv head `j` serves q heads
//!   `j·g .. (j+1)·g`, `g = q_heads / kv_heads` (the reference's
//!   `np.repeat`).
//! - Scores: `scale · Q·Kᵀ` (scale default `1/sqrt(hd)`; the spec's
//!   `sqrt(scale)` split is an overflow guard that f64 does not need), then
//!   `softcap · tanh(x / softcap)` when softcap > 0, then + bias, then softmax
//!   over the keys, then · V.
//! - Bias: the float mask is added as is; a bool mask contributes 0 (true)
//!   or −∞ (false). A mask whose last dim is shorter than the total sequence
//!   length (past + new) is padded at the end with −∞ / false (the reference
//!   does this, even for a last dim of 1); the mask then broadcasts
//!   (numpy rules, right-aligned) to `(B, q_heads, S_q, L)`.
//! - `is_causal`: query `i` may attend key `j` iff `j ≤ i + offset`, where
//!   `offset` is the past length (bottom-right alignment); combined
//!   additively with the mask. The optional 7th input `nonpad_kv_seqlen`
//!   (opset 24) is honoured like the reference: keys `j ≥ nonpad[b]` are
//!   masked and, without past_key, the causal offset is `nonpad[b] − S_q`.
//! - A query row whose bias is −∞ everywhere gives a zero row in Y and in the
//!   mode-3 output (the spec's errata; the reference's guard).
//! - `qk_matmul_output_mode`: 0 = `scale·QKᵀ`, 1 = after softcap, 2 = after
//!   softcap and bias, 3 = softmax. Mode 0 follows the spec text: the
//!   reference returns the softcapped scores for mode 0 as well (they differ
//!   only when softcap > 0).
//! - `softmax_precision` is accepted and ignored: the softmax runs in f64.

use varc_ir::Tensor;
use varc_ir::op::AttentionAttrs;
use varc_ir::tensor::checked_numel;

const MAX_ELEMS: usize = 1 << 32;

/// A 4-D view `(B, H, S, D)` of a 3-D or 4-D tensor, in f64.
struct Heads {
    b: usize,
    h: usize,
    s: usize,
    d: usize,
    v: Vec<f64>,
}

impl Heads {
    fn at(&self, b: usize, h: usize, s: usize) -> &[f64] {
        let off = ((b * self.h + h) * self.s + s) * self.d;
        &self.v[off..off + self.d]
    }

    fn from_tensor(name: &str, t: &Tensor, heads: Option<usize>) -> Result<Heads, String> {
        let sh = t.shape();
        if !t.dtype().is_float() {
            return Err(format!(
                "Attention: {name} must be a float tensor, got {}",
                t.dtype()
            ));
        }
        match (sh.len(), heads) {
            (4, _) => {
                if let Some(h) = heads
                    && h != sh[1]
                {
                    return Err(format!(
                        "Attention: {name} shape {sh:?} has {} heads, attribute says {h}",
                        sh[1]
                    ));
                }
                Ok(Heads {
                    b: sh[0],
                    h: sh[1],
                    s: sh[2],
                    d: sh[3],
                    v: t.to_f64_vec(),
                })
            }
            (3, Some(h)) => {
                if h == 0 || !sh[2].is_multiple_of(h) {
                    return Err(format!(
                        "Attention: {name} hidden size {} is not a multiple of {h} heads",
                        sh[2]
                    ));
                }
                let (b, s, d) = (sh[0], sh[1], sh[2] / h);
                let src = t.to_f64_vec();
                let mut v = vec![0.0; src.len()];
                for bi in 0..b {
                    for si in 0..s {
                        for hi in 0..h {
                            let from = (bi * s + si) * h * d + hi * d;
                            let to = ((bi * h + hi) * s + si) * d;
                            v[to..to + d].copy_from_slice(&src[from..from + d]);
                        }
                    }
                }
                Ok(Heads { b, h, s, d, v })
            }
            (3, None) => Err(format!(
                "Attention: 3-D {name} needs the q_num_heads and kv_num_heads attributes"
            )),
            (r, _) => Err(format!(
                "Attention: {name} must be 3-D or 4-D, got rank {r}"
            )),
        }
    }

    /// Concatenates `past` (4-D) before `self` along the sequence axis.
    fn after(self, name: &str, past: Option<&Tensor>) -> Result<Heads, String> {
        let Some(p) = past else { return Ok(self) };
        let ps = p.shape();
        if !p.dtype().is_float() {
            return Err(format!(
                "Attention: past_{name} must be a float tensor, got {}",
                p.dtype()
            ));
        }
        if ps.len() != 4 || ps[0] != self.b || ps[1] != self.h || ps[3] != self.d {
            return Err(format!(
                "Attention: past_{name} shape {ps:?} must be ({}, {}, past_len, {})",
                self.b, self.h, self.d
            ));
        }
        let pv = p.to_f64_vec();
        let s = ps[2] + self.s;
        let mut v = Vec::with_capacity(self.b * self.h * s * self.d);
        for bh in 0..self.b * self.h {
            v.extend_from_slice(&pv[bh * ps[2] * self.d..(bh + 1) * ps[2] * self.d]);
            v.extend_from_slice(&self.v[bh * self.s * self.d..(bh + 1) * self.s * self.d]);
        }
        Ok(Heads { s, v, ..self })
    }
}

/// Attention(Q, K, V, attn_mask?, past_key?, past_value?) → (Y, present_key?,
/// present_value?, qk_matmul_output?); returns `num_outputs` tensors.
pub fn attention(
    inputs: &[Option<&Tensor>],
    attrs: &AttentionAttrs,
    num_outputs: usize,
) -> Result<Vec<Tensor>, String> {
    if !(1..=4).contains(&num_outputs) {
        return Err(format!(
            "Attention has 1 to 4 outputs, {num_outputs} requested"
        ));
    }
    if inputs.len() > 7 {
        return Err(format!(
            "Attention takes at most 7 inputs, got {}",
            inputs.len()
        ));
    }
    let input = |i: usize| inputs.get(i).copied().flatten();
    let (q_t, k_t, v_t) = match (input(0), input(1), input(2)) {
        (Some(q), Some(k), Some(v)) => (q, k, v),
        _ => return Err("Attention needs Q, K and V".into()),
    };
    let (mask_t, past_k, past_v, nonpad_t) = (input(3), input(4), input(5), input(6));
    let rank = q_t.rank();
    if k_t.rank() != rank || v_t.rank() != rank {
        return Err(format!(
            "Attention: Q, K, V must have the same rank, got {:?}, {:?}, {:?}",
            q_t.shape(),
            k_t.shape(),
            v_t.shape()
        ));
    }
    if past_k.is_some() != past_v.is_some() {
        return Err("Attention: past_key and past_value must be given together".into());
    }
    if nonpad_t.is_some() && past_k.is_some() {
        return Err(
            "Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value".into(),
        );
    }
    if !(0..=3).contains(&attrs.qk_matmul_output_mode) {
        return Err(format!(
            "Attention: qk_matmul_output_mode {} is not 0..3",
            attrs.qk_matmul_output_mode
        ));
    }
    // For 4-D inputs the head counts, when given, must match the shapes.
    let (qh_attr, kvh_attr) = (attrs.q_num_heads, attrs.kv_num_heads);
    if rank == 3 && (qh_attr.is_none() || kvh_attr.is_none()) {
        return Err(
            "Attention: 3-D inputs need the q_num_heads and kv_num_heads attributes".into(),
        );
    }
    let q = Heads::from_tensor("Q", q_t, qh_attr)?;
    let k_new = Heads::from_tensor("K", k_t, kvh_attr)?;
    let v_new = Heads::from_tensor("V", v_t, kvh_attr)?;
    if k_new.b != q.b || v_new.b != q.b {
        return Err("Attention: Q, K, V batch sizes differ".into());
    }
    if k_new.h != v_new.h || k_new.s != v_new.s {
        return Err(format!(
            "Attention: K (heads {}, length {}) and V (heads {}, length {}) disagree",
            k_new.h, k_new.s, v_new.h, v_new.s
        ));
    }
    if k_new.d != q.d {
        return Err(format!(
            "Attention: Q head size {} differs from K head size {}",
            q.d, k_new.d
        ));
    }
    if k_new.h == 0 || !q.h.is_multiple_of(k_new.h) {
        return Err(format!(
            "Attention: {} q heads are not a multiple of {} kv heads",
            q.h, k_new.h
        ));
    }
    let past_len = past_k.map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
    let k = k_new.after("key", past_k)?;
    let v = v_new.after("value", past_v)?;
    if k.s != v.s {
        return Err("Attention: past_key and past_value lengths differ".into());
    }
    let (b, qh, sq, hd) = (q.b, q.h, q.s, q.d);
    let (kvh, l, vd) = (k.h, k.s, v.d);
    let group = qh / kvh;
    for shape in [vec![b, qh, sq, l], vec![b, qh, sq, vd]] {
        match checked_numel(&shape) {
            Some(n) if n <= MAX_ELEMS => {}
            _ => {
                return Err(format!(
                    "Attention: intermediate shape {shape:?} is too large"
                ));
            }
        }
    }
    let scale = match attrs.scale {
        Some(s) => s as f64,
        None => {
            if hd == 0 {
                return Err("Attention: head size 0 has no default scale".into());
            }
            1.0 / (hd as f64).sqrt()
        }
    };
    let softcap = attrs.softcap as f64;

    // Additive bias, broadcast to (B, qh, Sq, L) through an index function.
    let mask = match mask_t {
        Some(m) => Some(Mask::new(m, [b, qh, sq, l])?),
        None => None,
    };
    let nonpad: Option<Vec<i64>> = match nonpad_t {
        Some(t) => {
            if !t.dtype().is_int() || t.numel() != b {
                return Err(format!(
                    "Attention: nonpad_kv_seqlen must be {b} integers, got {} of {}",
                    t.numel(),
                    t.dtype()
                ));
            }
            Some(t.to_i64_vec())
        }
        None => None,
    };
    let bias = |bi: usize, h: usize, i: usize, j: usize| -> f64 {
        let mut v = mask.as_ref().map_or(0.0, |m| m.get(bi, h, i, j));
        if attrs.is_causal {
            let offset = match (&nonpad, past_k) {
                (Some(np), None) => np[bi] - sq as i64,
                _ => past_len as i64,
            };
            if j as i64 > i as i64 + offset {
                v += f64::NEG_INFINITY;
            }
        }
        if let Some(np) = &nonpad
            && j as i64 >= np[bi]
        {
            v += f64::NEG_INFINITY;
        }
        v
    };

    let mut y = vec![0.0; b * qh * sq * vd];
    let want_qk = num_outputs == 4;
    let mut qk_out = if want_qk {
        vec![0.0; b * qh * sq * l]
    } else {
        vec![]
    };
    let mut scores = vec![0.0; l];
    let mut biased = vec![0.0; l];
    for bi in 0..b {
        for h in 0..qh {
            let kh = h / group;
            for i in 0..sq {
                let qrow = q.at(bi, h, i);
                let mut all_masked = true;
                for j in 0..l {
                    let dot: f64 = qrow.iter().zip(k.at(bi, kh, j)).map(|(a, c)| a * c).sum();
                    let raw = scale * dot;
                    let capped = if softcap > 0.0 {
                        softcap * (raw / softcap).tanh()
                    } else {
                        raw
                    };
                    let bj = bias(bi, h, i, j);
                    if bj != f64::NEG_INFINITY {
                        all_masked = false;
                    }
                    scores[j] = if attrs.qk_matmul_output_mode == 0 {
                        raw
                    } else {
                        capped
                    };
                    biased[j] = capped + bj;
                }
                let probs = softmax_row(&biased, all_masked);
                let row_off = ((bi * qh + h) * sq + i) * l;
                if want_qk {
                    let dst = &mut qk_out[row_off..row_off + l];
                    match attrs.qk_matmul_output_mode {
                        0 | 1 => dst.copy_from_slice(&scores),
                        2 => dst.copy_from_slice(&biased),
                        _ => dst.copy_from_slice(&probs),
                    }
                }
                let yrow = &mut y[((bi * qh + h) * sq + i) * vd..][..vd];
                for (j, &p) in probs.iter().enumerate() {
                    if p != 0.0 {
                        for (o, &vv) in yrow.iter_mut().zip(v.at(bi, kh, j)) {
                            *o += p * vv;
                        }
                    }
                }
            }
        }
    }

    let y_t = if rank == 3 {
        // (B, H, S, vd) → (B, S, H·vd)
        let mut t = vec![0.0; y.len()];
        for bi in 0..b {
            for h in 0..qh {
                for i in 0..sq {
                    let from = ((bi * qh + h) * sq + i) * vd;
                    let to = (bi * sq + i) * qh * vd + h * vd;
                    t[to..to + vd].copy_from_slice(&y[from..from + vd]);
                }
            }
        }
        Tensor::from_f64_as(q_t.dtype(), vec![b, sq, qh * vd], &t)?
    } else {
        Tensor::from_f64_as(q_t.dtype(), vec![b, qh, sq, vd], &y)?
    };
    let mut outs = vec![y_t];
    if num_outputs >= 2 {
        outs.push(Tensor::from_f64_as(k_t.dtype(), vec![b, kvh, l, hd], &k.v)?);
    }
    if num_outputs >= 3 {
        outs.push(Tensor::from_f64_as(v_t.dtype(), vec![b, kvh, l, vd], &v.v)?);
    }
    if want_qk {
        outs.push(Tensor::from_f64_as(
            q_t.dtype(),
            vec![b, qh, sq, l],
            &qk_out,
        )?);
    }
    Ok(outs)
}

/// Softmax of one row; a fully masked row (or an empty one) is all zeros.
fn softmax_row(x: &[f64], all_masked: bool) -> Vec<f64> {
    if all_masked {
        return vec![0.0; x.len()];
    }
    let m = x
        .iter()
        .fold(f64::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    if m == f64::NEG_INFINITY {
        // Every score is −∞ although the bias is not (scores of −∞).
        return vec![0.0; x.len()];
    }
    let e: Vec<f64> = x.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| v / s).collect()
}

/// The attention mask as an additive bias, padded and broadcast.
struct Mask {
    v: Vec<f64>,
    /// Strides of the padded mask aligned to (B, H, Sq, L); 0 on broadcast dims.
    strides: [usize; 4],
}

impl Mask {
    fn new(m: &Tensor, target: [usize; 4]) -> Result<Mask, String> {
        let sh = m.shape();
        if sh.is_empty() || sh.len() > 4 {
            return Err(format!(
                "Attention: attn_mask must have rank 1 to 4, got shape {sh:?}"
            ));
        }
        let is_bool = m.dtype() == varc_ir::DType::Bool;
        if !is_bool && !m.dtype().is_float() {
            return Err(format!(
                "Attention: attn_mask must be bool or float, got {}",
                m.dtype()
            ));
        }
        let raw = m.to_f64_vec();
        let last = sh[sh.len() - 1];
        let l = target[3];
        if last > l {
            return Err(format!(
                "Attention: attn_mask last dim {last} exceeds the total sequence length {l}"
            ));
        }
        // Pad the last dim to L (false / −∞), converting bool to 0 / −∞.
        let rows = raw.len() / last.max(1);
        let mut v = Vec::with_capacity(rows * l);
        for r in 0..rows {
            for j in 0..l {
                v.push(if j < last {
                    let x = raw[r * last + j];
                    if is_bool {
                        if x != 0.0 { 0.0 } else { f64::NEG_INFINITY }
                    } else {
                        x
                    }
                } else {
                    f64::NEG_INFINITY
                });
            }
        }
        let mut padded = sh.to_vec();
        *padded.last_mut().expect("rank ≥ 1") = l;
        let own = varc_ir::shape::strides(&padded);
        let mut strides = [0usize; 4];
        let off = 4 - padded.len();
        for (a, &d) in padded.iter().enumerate() {
            let t = target[off + a];
            if d == t {
                strides[off + a] = own[a];
            } else if d == 1 {
                strides[off + a] = 0;
            } else {
                return Err(format!(
                    "Attention: attn_mask shape {sh:?} does not broadcast to {target:?}"
                ));
            }
        }
        Ok(Mask { v, strides })
    }

    fn get(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        let s = &self.strides;
        self.v[b * s[0] + h * s[1] + i * s[2] + j * s[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::{DType, TensorData};

    fn attrs() -> AttentionAttrs {
        AttentionAttrs {
            is_causal: false,
            q_num_heads: None,
            kv_num_heads: None,
            scale: None,
            softcap: 0.0,
            qk_matmul_output_mode: 0,
            softmax_precision: 0,
        }
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(99);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn t(shape: &[usize], seed: u32) -> Tensor {
        Tensor::from_f32(shape.to_vec(), pseudo(shape.iter().product(), seed)).unwrap()
    }

    /// Direct computation on 4-D tensors: K/V already include the past.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, qh, sq, hd): (usize, usize, usize, usize),
        (kvh, l, vd): (usize, usize, usize),
        scale: f64,
        bias: &dyn Fn(usize, usize, usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut y = vec![0.0; b * qh * sq * vd];
        for bi in 0..b {
            for h in 0..qh {
                let kh = h / (qh / kvh);
                for i in 0..sq {
                    let mut s = vec![0.0; l];
                    for (j, sj) in s.iter_mut().enumerate() {
                        let mut d = 0.0;
                        for e in 0..hd {
                            d += q[((bi * qh + h) * sq + i) * hd + e] as f64
                                * k[((bi * kvh + kh) * l + j) * hd + e] as f64;
                        }
                        *sj = d * scale + bias(bi, h, i, j);
                    }
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for j in 0..l {
                        let p = (s[j] - m).exp() / z;
                        for e in 0..vd {
                            y[((bi * qh + h) * sq + i) * vd + e] +=
                                p * v[((bi * kvh + kh) * l + j) * vd + e] as f64;
                        }
                    }
                }
            }
        }
        y
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn gqa_mask_past_causal_against_direct() {
        let (b, qh, kvh, sq, skv, past, hd, vd) = (2, 4, 2, 3, 3, 2, 5, 3);
        let l = past + skv;
        let q = t(&[b, qh, sq, hd], 1);
        let k = t(&[b, kvh, skv, hd], 2);
        let v = t(&[b, kvh, skv, vd], 3);
        let pk = t(&[b, kvh, past, hd], 4);
        let pv = t(&[b, kvh, past, vd], 5);
        // Float mask (B=1 broadcast, H broadcast) of shape (Sq, L).
        let mask = t(&[sq, l], 6);
        let mut a = attrs();
        a.is_causal = true;
        a.scale = Some(0.7);
        let outs = attention(
            &[
                Some(&q),
                Some(&k),
                Some(&v),
                Some(&mask),
                Some(&pk),
                Some(&pv),
            ],
            &a,
            4,
        )
        .unwrap();
        assert_eq!(outs.len(), 4);
        assert_eq!(outs[0].shape(), &[b, qh, sq, vd]);
        assert_eq!(outs[1].shape(), &[b, kvh, l, hd]);
        assert_eq!(outs[2].shape(), &[b, kvh, l, vd]);
        assert_eq!(outs[3].shape(), &[b, qh, sq, l]);
        // present = concat(past, new) along the sequence.
        let (pkv, kv) = (pk.as_f32().unwrap(), k.as_f32().unwrap());
        let mut kfull = vec![];
        let (pvv, vv) = (pv.as_f32().unwrap(), v.as_f32().unwrap());
        let mut vfull = vec![];
        for bh in 0..b * kvh {
            kfull.extend_from_slice(&pkv[bh * past * hd..(bh + 1) * past * hd]);
            kfull.extend_from_slice(&kv[bh * skv * hd..(bh + 1) * skv * hd]);
            vfull.extend_from_slice(&pvv[bh * past * vd..(bh + 1) * past * vd]);
            vfull.extend_from_slice(&vv[bh * skv * vd..(bh + 1) * skv * vd]);
        }
        assert_eq!(outs[1].as_f32().unwrap(), kfull.as_slice());
        assert_eq!(outs[2].as_f32().unwrap(), vfull.as_slice());
        let mv = mask.as_f32().unwrap().to_vec();
        let bias = |_: usize, _: usize, i: usize, j: usize| {
            let c = if j > i + past { f64::NEG_INFINITY } else { 0.0 };
            mv[i * l + j] as f64 + c
        };
        let want = direct(
            q.as_f32().unwrap(),
            &kfull,
            &vfull,
            (b, qh, sq, hd),
            (kvh, l, vd),
            0.7,
            &bias,
        );
        close(&outs[0].to_f64_vec(), &want, 1e-6);
        // Mode 0: raw scores; masked positions are not −∞ there.
        let qk = outs[3].to_f64_vec();
        assert!(qk.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn three_d_layout_matches_four_d() {
        let (b, qh, kvh, sq, skv, hd) = (1, 4, 1, 2, 3, 2);
        let q3 = t(&[b, sq, qh * hd], 11);
        let k3 = t(&[b, skv, kvh * hd], 12);
        let v3 = t(&[b, skv, kvh * hd], 13);
        let mut a = attrs();
        a.q_num_heads = Some(qh);
        a.kv_num_heads = Some(kvh);
        let out3 = attention(&[Some(&q3), Some(&k3), Some(&v3)], &a, 3).unwrap();
        assert_eq!(out3[0].shape(), &[b, sq, qh * hd]);
        assert_eq!(out3[1].shape(), &[b, kvh, skv, hd]);
        // Same thing in 4-D: (B, S, H·hd) → (B, H, S, hd).
        let to4 = |x: &Tensor, h: usize, s: usize| {
            let v = x.as_f32().unwrap();
            let mut o = vec![0.0f32; v.len()];
            for si in 0..s {
                for hi in 0..h {
                    for e in 0..hd {
                        o[(hi * s + si) * hd + e] = v[si * h * hd + hi * hd + e];
                    }
                }
            }
            Tensor::from_f32(vec![1, h, s, hd], o).unwrap()
        };
        let (q4, k4, v4) = (to4(&q3, qh, sq), to4(&k3, kvh, skv), to4(&v3, kvh, skv));
        let out4 = attention(&[Some(&q4), Some(&k4), Some(&v4)], &attrs(), 1).unwrap();
        let back = to4(&out3[0], qh, sq);
        close(&back.to_f64_vec(), &out4[0].to_f64_vec(), 1e-7);
        // 3-D without head counts is an error.
        assert!(attention(&[Some(&q3), Some(&k3), Some(&v3)], &attrs(), 1).is_err());
    }

    #[test]
    fn bool_mask_short_mask_and_fully_masked_rows() {
        let (b, h, sq, l, hd) = (1, 1, 3, 4, 2);
        let q = t(&[b, h, sq, hd], 21);
        let k = t(&[b, h, l, hd], 22);
        let v = t(&[b, h, l, hd], 23);
        // Bool mask of length 3 < L = 4: the 4th key is masked by padding.
        // Row 1 is all false → zero output row.
        let mask = Tensor::new(
            vec![sq, 3],
            TensorData::Bool(vec![
                true, false, true, false, false, false, true, true, true,
            ]),
        )
        .unwrap();
        let mut a = attrs();
        a.qk_matmul_output_mode = 3;
        let outs = attention(&[Some(&q), Some(&k), Some(&v), Some(&mask)], &a, 4).unwrap();
        let y = outs[0].to_f64_vec();
        assert_eq!(&y[2..4], &[0.0, 0.0]);
        let p = outs[3].to_f64_vec();
        assert_eq!(&p[4..8], &[0.0; 4]);
        assert_eq!(p[3], 0.0); // padded key
        assert_eq!(p[1], 0.0);
        assert!((p[0] + p[2] - 1.0).abs() < 1e-6);
        let keep = [[1.0, 0.0, 1.0, 0.0], [0.0; 4], [1.0, 1.0, 1.0, 0.0]];
        let bias = |_: usize, _: usize, i: usize, j: usize| {
            if keep[i][j] == 1.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        };
        let want = direct(
            q.as_f32().unwrap(),
            k.as_f32().unwrap(),
            v.as_f32().unwrap(),
            (b, h, sq, hd),
            (h, l, hd),
            1.0 / 2f64.sqrt(),
            &bias,
        );
        close(&y[0..2], &want[0..2], 1e-6);
        close(&y[4..6], &want[4..6], 1e-6);
    }

    #[test]
    fn softcap_and_qk_modes() {
        let (b, h, s, hd) = (1, 2, 2, 3);
        let q = t(&[b, h, s, hd], 31);
        let k = t(&[b, h, s, hd], 32);
        let v = t(&[b, h, s, hd], 33);
        let mask =
            Tensor::from_f32(vec![1, 1, s, s], vec![0.0, f32::NEG_INFINITY, 0.5, 0.0]).unwrap();
        let run = |mode: i64| {
            let mut a = attrs();
            a.softcap = 0.1;
            a.scale = Some(2.0);
            a.qk_matmul_output_mode = mode;
            attention(&[Some(&q), Some(&k), Some(&v), Some(&mask)], &a, 4).unwrap()
        };
        let (qv, kv) = (q.as_f32().unwrap(), k.as_f32().unwrap());
        let raw = |hh: usize, i: usize, j: usize| -> f64 {
            2.0 * (0..hd)
                .map(|e| qv[(hh * s + i) * hd + e] as f64 * kv[(hh * s + j) * hd + e] as f64)
                .sum::<f64>()
        };
        let m0 = run(0)[3].to_f64_vec();
        let m1 = run(1)[3].to_f64_vec();
        let m2 = run(2)[3].to_f64_vec();
        let m3 = run(3)[3].to_f64_vec();
        let mv = [0.0, f64::NEG_INFINITY, 0.5, 0.0];
        for hh in 0..h {
            for i in 0..s {
                for j in 0..s {
                    let at = (hh * s + i) * s + j;
                    let r = raw(hh, i, j);
                    let c = 0.1 * (r / 0.1).tanh();
                    assert!((m0[at] - r).abs() < 1e-5);
                    assert!((m1[at] - c).abs() < 1e-6);
                    assert_eq!(m2[at].is_infinite(), mv[i * s + j].is_infinite());
                    if mv[i * s + j].is_finite() {
                        assert!((m2[at] - (c + mv[i * s + j])).abs() < 1e-6);
                    }
                }
                let row: f64 = (0..s).map(|j| m3[(hh * s + i) * s + j]).sum();
                assert!((row - 1.0).abs() < 1e-6);
            }
        }
        // Row 0 masks key 1 (−∞ survives the softcap, which comes first).
        assert_eq!(m3[1], 0.0);
        assert!((m3[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn causal_without_past_is_lower_triangular() {
        let (s, hd) = (4, 2);
        let q = t(&[1, 1, s, hd], 41);
        let k = t(&[1, 1, s, hd], 42);
        let v = t(&[1, 1, s, hd], 43);
        let mut a = attrs();
        a.is_causal = true;
        a.qk_matmul_output_mode = 3;
        let p = attention(&[Some(&q), Some(&k), Some(&v)], &a, 4).unwrap()[3].to_f64_vec();
        for i in 0..s {
            for j in 0..s {
                assert_eq!(p[i * s + j] == 0.0, j > i, "({i}, {j})");
            }
        }
    }

    #[test]
    fn keeps_dtype_and_rejects_bad_input() {
        let q = t(&[1, 2, 2, 4], 51).cast(DType::F16);
        let k = t(&[1, 2, 3, 4], 52).cast(DType::F16);
        let v = t(&[1, 2, 3, 4], 53).cast(DType::F16);
        let y = attention(&[Some(&q), Some(&k), Some(&v)], &attrs(), 1).unwrap();
        assert_eq!(y[0].dtype(), DType::F16);
        let k3 = t(&[1, 3, 3, 4], 54);
        let v3 = t(&[1, 3, 3, 4], 55);
        let q4 = t(&[1, 4, 2, 4], 56);
        assert!(attention(&[Some(&q4), Some(&k3), Some(&v3)], &attrs(), 1).is_err()); // 4 % 3
        let kbad = t(&[1, 2, 3, 5], 57);
        let qf = t(&[1, 2, 2, 4], 58);
        let vf = t(&[1, 2, 3, 4], 59);
        assert!(attention(&[Some(&qf), Some(&kbad), Some(&vf)], &attrs(), 1).is_err()); // head size
        assert!(attention(&[Some(&qf), None, Some(&vf)], &attrs(), 1).is_err());
        let kf = t(&[1, 2, 3, 4], 60);
        let pk = t(&[1, 2, 1, 4], 61);
        assert!(
            attention(
                &[Some(&qf), Some(&kf), Some(&vf), None, Some(&pk), None],
                &attrs(),
                3
            )
            .is_err()
        );
        let mask = t(&[2, 2, 2, 3], 62); // batch 2 vs 1
        assert!(attention(&[Some(&qf), Some(&kf), Some(&vf), Some(&mask)], &attrs(), 1).is_err());
        let long = t(&[2, 4], 63); // longer than L = 3
        assert!(attention(&[Some(&qf), Some(&kf), Some(&vf), Some(&long)], &attrs(), 1).is_err());
        let mut a = attrs();
        a.qk_matmul_output_mode = 4;
        assert!(attention(&[Some(&qf), Some(&kf), Some(&vf)], &a, 4).is_err());
        assert!(attention(&[Some(&qf), Some(&kf), Some(&vf)], &attrs(), 5).is_err());
        let q3 = t(&[1, 2, 6], 64);
        let mut a = attrs();
        a.q_num_heads = Some(4);
        a.kv_num_heads = Some(2);
        assert!(attention(&[Some(&q3), Some(&q3), Some(&q3)], &a, 1).is_err()); // 6 % 4
    }
}
