//! Attention (opset 23) as five kernels over `(B, q_heads, S_q, L)`:
//!
//! 1. `S = softcap(scale · Σ_d Q·K) + bias` (bias: the float mask, or 0/−∞
//!    for a bool one, −∞ past the mask's last dim; −∞ where causal or
//!    `nonpad_kv_seqlen` masking hides a key);
//! 2. `M = max_j S`;  3. `E = exp(S − M)`;  4. `Z = Σ_j E`;
//! 5. `Y = (Σ_j E·V) / Z`, zero where the whole row is masked (`M = −∞`).
//!
//! Grouped-query heads split the head axis of the domain into
//! `(kv_head, group)` so that the K/V head stays affine. 3-D inputs are
//! viewed as 4-D `(B, H, S, hd)` without a copy. With `past_key`/
//! `past_value`, `present = concat(past, new)` is written by two copy
//! kernels and attention reads it; without, present is the (viewed) input.
//! Scores and probabilities are held in f32 (f64 for f64 inputs).

use super::{cast, compute_type, konst, narrow, out, permute, red, shape_of, split_axis};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{Affine, BinaryFn, Expr, Guard, ReduceFn, UnaryFn, Var};
use crate::lower::{Cx, View, input, out_index};
use crate::op::AttentionAttrs;

const NEG_INF: f64 = f64::NEG_INFINITY;

/// A 3-D `(B, S, H·d)` operand as 4-D `(B, H, S, d)`; 4-D ones unchanged.
fn heads(v: &View, h: Option<usize>, what: &str) -> Result<View, String> {
    match (v.shape.len(), h) {
        (4, _) => Ok(v.clone()),
        (3, Some(h)) if h > 0 && v.shape[2].is_multiple_of(h) => {
            Ok(permute(&split_axis(v, 2, h), &[0, 2, 1, 3]))
        }
        (3, _) => Err(format!(
            "Attention: 3-D {what} {:?} needs q_num_heads/kv_num_heads dividing its last dim",
            v.shape
        )),
        (r, _) => Err(format!(
            "Attention: {what} must be 3-D or 4-D, got rank {r}"
        )),
    }
}

/// Index helpers for a domain over `(B, heads, S_q, X)`, with the head axis
/// split into `(kv_head, group)` when `group > 1`.
struct Dom {
    group: usize,
    kvh: usize,
}

impl Dom {
    fn split(&self, v: &View) -> View {
        if self.group > 1 {
            split_axis(v, 1, self.kvh)
        } else {
            v.clone()
        }
    }
    fn qhead(&self) -> Affine {
        if self.group > 1 {
            Affine {
                offset: 0,
                terms: vec![(Var::Out(1), self.group as i64), (Var::Out(2), 1)],
            }
        } else {
            out(1)
        }
    }
    fn kvhead(&self) -> Affine {
        out(1)
    }
    fn i(&self) -> Affine {
        out(self.i_axis())
    }
    fn i_axis(&self) -> usize {
        if self.group > 1 { 3 } else { 2 }
    }
    fn last(&self) -> Var {
        Var::Out(self.i_axis() + 1)
    }
}

pub(super) fn attention(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    a: &AttentionAttrs,
) -> Result<Vec<View>, String> {
    let opt = |i: usize| ins.get(i).and_then(Option::as_ref);
    let (q_in, k_in, v_in) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
    let rank = q_in.shape.len();
    if k_in.shape.len() != rank || v_in.shape.len() != rank {
        return Err("Attention: Q, K and V must have the same rank".into());
    }
    if !q_in.dtype.is_float() || k_in.dtype != q_in.dtype || v_in.dtype != q_in.dtype {
        return Err("Attention: Q, K and V must share one float type".into());
    }
    if !(0..=3).contains(&a.qk_matmul_output_mode) {
        return Err(format!(
            "Attention: qk_matmul_output_mode {} is not 0..3",
            a.qk_matmul_output_mode
        ));
    }
    let q = heads(q_in, a.q_num_heads, "Q")?;
    let k_new = heads(k_in, a.kv_num_heads, "K")?;
    let v_new = heads(v_in, a.kv_num_heads, "V")?;
    let (b, qh, sq, hd) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (kvh, skv, vd) = (k_new.shape[1], k_new.shape[2], v_new.shape[3]);
    if k_new.shape[0] != b
        || v_new.shape[0] != b
        || k_new.shape[3] != hd
        || v_new.shape[1] != kvh
        || v_new.shape[2] != skv
    {
        return Err(format!(
            "Attention: Q {:?}, K {:?}, V {:?} do not agree",
            q.shape, k_new.shape, v_new.shape
        ));
    }
    if kvh == 0 || !qh.is_multiple_of(kvh) {
        return Err(format!(
            "Attention: {qh} q heads are not a multiple of {kvh} kv heads"
        ));
    }
    let (past_k, past_v, nonpad) = (opt(4), opt(5), opt(6));
    if past_k.is_some() != past_v.is_some() {
        return Err("Attention: past_key and past_value must be given together".into());
    }
    if nonpad.is_some() && past_k.is_some() {
        return Err(
            "Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value".into(),
        );
    }
    let past_len = past_k.map_or(0, |p| p.shape.get(2).copied().unwrap_or(0));
    let k = present(cx, &k_new, past_k, "key")?;
    let v = present(cx, &v_new, past_v, "value")?;
    let l = k.shape[2];
    let dom = Dom {
        group: qh / kvh,
        kvh,
    };
    let work = compute_type(q.dtype);
    let dt = q.dtype;
    let scale = match a.scale {
        Some(s) => f64::from(s),
        None if hd > 0 => 1.0 / (hd as f64).sqrt(),
        None => return Err("Attention: head size 0 has no default scale".into()),
    };
    let softcap = f64::from(a.softcap);
    let scores4 = [b, qh, sq, l];

    // Raw scores, capped scores, then the biased scores S.
    let raw = |cx: &mut Cx| {
        let e = cx.red();
        let j = crate::lower::var(dom.last());
        let ql = cast(q.load(&[out(0), dom.qhead(), dom.i(), red(e)]), dt, work);
        let kl = cast(k.load(&[out(0), dom.kvhead(), j, red(e)]), dt, work);
        let dot = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(e, hd)],
            body: Box::new(Expr::binary(BinaryFn::Mul, ql, kl)),
        };
        Expr::binary(BinaryFn::Mul, dot, konst(scale, work))
    };
    let capped = |x: Expr| {
        if softcap > 0.0 {
            let t = Expr::unary(
                UnaryFn::Tanh,
                Expr::binary(BinaryFn::Div, x, konst(softcap, work)),
            );
            Expr::binary(BinaryFn::Mul, t, konst(softcap, work))
        } else {
            x
        }
    };
    let mut s_val = capped(raw(cx));
    if let Some(m) = opt(3) {
        s_val = Expr::binary(BinaryFn::Add, s_val, mask_bias(m, &dom, scores4, work)?);
    }
    let j = Expr::Index(dom.last());
    let i = Expr::Index(Var::Out(dom.i_axis()));
    let nonpad_len = match nonpad {
        Some(np) => {
            if !np.dtype.is_int() || np.shape != [b] {
                return Err(format!(
                    "Attention: nonpad_kv_seqlen must be {b} integers, got {}{:?}",
                    np.dtype, np.shape
                ));
            }
            Some(cast(np.load(&[out(0)]), np.dtype, DType::I64))
        }
        None => None,
    };
    if a.is_causal {
        let offset = match &nonpad_len {
            Some(n) => Expr::binary(BinaryFn::Sub, n.clone(), konst(sq as f64, DType::I64)),
            None => konst(past_len as f64, DType::I64),
        };
        let ok = Expr::binary(
            BinaryFn::Le,
            j.clone(),
            Expr::binary(BinaryFn::Add, i, offset),
        );
        s_val = Expr::select(ok, s_val, konst(NEG_INF, work));
    }
    if let Some(n) = nonpad_len {
        s_val = Expr::select(
            Expr::binary(BinaryFn::Lt, j, n),
            s_val,
            konst(NEG_INF, work),
        );
    }
    let s = cx.temp(work, &scores4);
    cx.emit(&dom.split(&s), s_val);

    // Row max, exponentials, row sums.
    let rows = cx.temp(work, &[b, qh, sq]);
    let jr = cx.red();
    let s_row = s.load(&[out(0), out(1), out(2), red(jr)]);
    let reduce = |op, body| Expr::Reduce {
        op,
        vars: vec![(jr, l)],
        body: Box::new(body),
    };
    cx.emit(&rows, reduce(ReduceFn::Max, s_row.clone()));
    let e = cx.temp(work, &scores4);
    let idx4 = out_index(4);
    let shifted = Expr::binary(BinaryFn::Sub, s.load(&idx4), rows.load(&idx4[..3]));
    cx.emit(&e, Expr::unary(UnaryFn::Exp, shifted));
    let z = cx.temp(work, &[b, qh, sq]);
    cx.emit(
        &z,
        reduce(ReduceFn::Sum, e.load(&[out(0), out(1), out(2), red(jr)])),
    );

    // Y = (Σ_j E·V) / Z, zero for fully masked rows.
    let y_shape = shape_of(outs, 0)?;
    let y = cx.temp(dt, &y_shape);
    let y4 = heads(&y, Some(qh), "Y")?;
    if y4.shape != [b, qh, sq, vd] {
        return Err(format!(
            "Attention: output type {y_shape:?} does not fit ({b}, {qh}, {sq}, {vd})"
        ));
    }
    let jv = cx.red();
    let row = [out(0), dom.qhead(), dom.i()];
    let el = e.load(&[row[0].clone(), row[1].clone(), row[2].clone(), red(jv)]);
    let vl = cast(
        v.load(&[out(0), dom.kvhead(), red(jv), crate::lower::var(dom.last())]),
        dt,
        work,
    );
    let pv = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(jv, l)],
        body: Box::new(Expr::binary(BinaryFn::Mul, el, vl)),
    };
    let masked = Expr::binary(BinaryFn::Eq, rows.load(&row), konst(NEG_INF, work));
    let yv = Expr::select(
        masked,
        konst(0.0, work),
        Expr::binary(BinaryFn::Div, pv, z.load(&row)),
    );
    cx.emit(&dom.split(&y4), cast(yv, work, dt));

    let mut results = vec![y];
    if outs.len() >= 2 {
        results.push(k.clone());
    }
    if outs.len() >= 3 {
        results.push(v.clone());
    }
    if outs.len() >= 4 {
        let qk = cx.temp(dt, &scores4);
        let value = match a.qk_matmul_output_mode {
            0 => raw(cx),
            1 => capped(raw(cx)),
            2 => s.load(&out_index(4)),
            _ => {
                let masked =
                    Expr::binary(BinaryFn::Eq, rows.load(&idx4[..3]), konst(NEG_INF, work));
                let p = Expr::binary(BinaryFn::Div, e.load(&idx4), z.load(&idx4[..3]));
                Expr::select(masked, konst(0.0, work), p)
            }
        };
        let target = if a.qk_matmul_output_mode <= 1 {
            dom.split(&qk)
        } else {
            qk.clone()
        };
        cx.emit(&target, cast(value, work, dt));
        results.push(qk);
    }
    Ok(results)
}

/// `concat(past, new)` along the sequence (two copy kernels), or `new`.
fn present(cx: &mut Cx, new: &View, past: Option<&View>, what: &str) -> Result<View, String> {
    let Some(p) = past else {
        return Ok(new.clone());
    };
    let (b, h, s, d) = (new.shape[0], new.shape[1], new.shape[2], new.shape[3]);
    if p.shape.len() != 4
        || p.shape[0] != b
        || p.shape[1] != h
        || p.shape[3] != d
        || p.dtype != new.dtype
    {
        return Err(format!(
            "Attention: past_{what} {}{:?} must be {}({b}, {h}, past_len, {d})",
            p.dtype, p.shape, new.dtype
        ));
    }
    let pl = p.shape[2];
    let all = cx.temp(new.dtype, &[b, h, pl + s, d]);
    for (src, start, len) in [(p, 0, pl), (new, pl, s)] {
        if src.numel() > 0 {
            let dst = narrow(&all, 2, start, len);
            cx.emit(&dst, src.load(&out_index(4)));
        }
    }
    Ok(all)
}

/// The additive bias of `attn_mask` at domain point `(b, q_head, i, j)`:
/// broadcast (right-aligned) to `target`, padded past its last dim with −∞.
fn mask_bias(m: &View, dom: &Dom, target: [usize; 4], work: DType) -> Result<Expr, String> {
    let r = m.shape.len();
    let is_bool = m.dtype == DType::Bool;
    if r == 0 || r > 4 || !(is_bool || m.dtype.is_float()) {
        return Err(format!(
            "Attention: attn_mask {}{:?} must be bool or float of rank 1 to 4",
            m.dtype, m.shape
        ));
    }
    let last = m.shape[r - 1];
    let fits = (0..r).all(|a| {
        let t = target[4 - r + a];
        let d = m.shape[a];
        if a == r - 1 { d <= t } else { d == t || d == 1 }
    });
    if !fits {
        return Err(format!(
            "Attention: attn_mask shape {:?} does not broadcast to {target:?}",
            m.shape
        ));
    }
    let full = [out(0), dom.qhead(), dom.i(), crate::lower::var(dom.last())];
    let idx = &full[4 - r..];
    let guards = if last < target[3] {
        vec![Guard {
            index: crate::lower::var(dom.last()),
            lo: 0,
            hi: last as i64,
        }]
    } else {
        vec![]
    };
    let fill = if is_bool { 0.0 } else { NEG_INF };
    let load = super::guarded(m, idx, guards, fill);
    Ok(if is_bool {
        Expr::select(load, konst(0.0, work), konst(NEG_INF, work))
    } else {
        cast(load, m.dtype, work)
    })
}
