//! Attention (opset 23) as five kernels over `(B, q_heads, S_q, L)`:
//!
//! 1. `S = softcap(scale · Σ_d Q·K) + bias` (bias: the float mask, or 0/−∞
//!    for a bool one, −∞ past the mask's last dim; −∞ where causal or
//!    `nonpad_kv_seqlen` masking hides a key);
//! 2. `M = max_j S`;  3. `E = exp(S − M)`;  4. `Z = Σ_j E`;
//! 5. `Y = (Σ_j E·V) / Z`, zero where the whole row is masked (`M = −∞`).
//!
//! With [`LowerOptions::fused_attention`](crate::lower::LowerOptions) and a
//! case the fused microkernels take (f32, no softcap, no mask or an f32
//! additive one covering every key, no `nonpad_kv_seqlen`, no scores
//! output), `Y` is instead one kernel over `(B, q_heads, S_q, d_v)` whose
//! nested reductions recompute the same `S` (from the same builder,
//! [`Scores`]), tagged with [`Library::Attention`]: a backend runs it
//! flash-attention style without the score matrix, and the interpreter
//! evaluates the loop nest as its specification.
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
use crate::kernel::{
    Affine, AttentionCall, BinaryFn, Expr, Guard, Library, Operand4, ReduceFn, UnaryFn, Var,
};
use crate::lower::{Cx, View, input, out_index, var};
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

/// The score `S` at query `Out(i_axis)` and key `j`, written once for the
/// five-kernel form (`j` the last domain axis) and the fused one (`j` a
/// reduction variable).
struct Scores<'a> {
    q: View,
    k: View,
    dom: &'a Dom,
    mask: Option<&'a View>,
    /// `(B, q_heads, S_q, L)`.
    target: [usize; 4],
    dt: DType,
    work: DType,
    scale: f64,
    softcap: f64,
    /// Key `j` is hidden where `j > i + offset` (causal).
    causal_offset: Option<Expr>,
    /// Keys at or past this are hidden (`nonpad_kv_seqlen`).
    nonpad_len: Option<Expr>,
}

impl Scores<'_> {
    /// `scale · Σ_e Q·K`.
    fn raw(&self, cx: &mut Cx, j: Var) -> Expr {
        let (dom, work, dt) = (self.dom, self.work, self.dt);
        let e = cx.red();
        let ql = cast(
            self.q.load(&[out(0), dom.qhead(), dom.i(), red(e)]),
            dt,
            work,
        );
        let kl = cast(
            self.k.load(&[out(0), dom.kvhead(), var(j), red(e)]),
            dt,
            work,
        );
        let dot = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(e, self.q.shape[3])],
            body: Box::new(Expr::binary(BinaryFn::Mul, ql, kl)),
        };
        Expr::binary(BinaryFn::Mul, dot, konst(self.scale, work))
    }

    fn capped(&self, x: Expr) -> Expr {
        if self.softcap > 0.0 {
            let c = konst(self.softcap, self.work);
            let t = Expr::unary(UnaryFn::Tanh, Expr::binary(BinaryFn::Div, x, c.clone()));
            Expr::binary(BinaryFn::Mul, t, c)
        } else {
            x
        }
    }

    /// `softcap(raw) + bias`, −∞ where causal or padding masking hides `j`.
    fn biased(&self, cx: &mut Cx, j: Var) -> Result<Expr, String> {
        let mut s = self.capped(self.raw(cx, j));
        if let Some(m) = self.mask {
            let bias = mask_bias(m, self.dom, self.target, j, self.work)?;
            s = Expr::binary(BinaryFn::Add, s, bias);
        }
        let jx = Expr::Index(j);
        if let Some(offset) = &self.causal_offset {
            let i = Expr::Index(Var::Out(self.dom.i_axis()));
            let limit = Expr::binary(BinaryFn::Add, i, offset.clone());
            let ok = Expr::binary(BinaryFn::Le, jx.clone(), limit);
            s = Expr::select(ok, s, konst(NEG_INF, self.work));
        }
        if let Some(n) = &self.nonpad_len {
            let ok = Expr::binary(BinaryFn::Lt, jx, n.clone());
            s = Expr::select(ok, s, konst(NEG_INF, self.work));
        }
        Ok(s)
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
    let scores4 = [b, qh, sq, l];
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
    let causal_offset = a.is_causal.then(|| match &nonpad_len {
        Some(n) => Expr::binary(BinaryFn::Sub, n.clone(), konst(sq as f64, DType::I64)),
        None => konst(past_len as f64, DType::I64),
    });
    let scores = Scores {
        q: q.clone(),
        k: k.clone(),
        dom: &dom,
        mask: opt(3),
        target: scores4,
        dt,
        work,
        scale,
        softcap: f64::from(a.softcap),
        causal_offset,
        nonpad_len,
    };

    // Y and its view (B, q_heads, S_q, d_v); the other outputs are views.
    let y_out = |cx: &mut Cx| -> Result<(View, View), String> {
        let y_shape = shape_of(outs, 0)?;
        let y = cx.temp(dt, &y_shape);
        let y4 = heads(&y, Some(qh), "Y")?;
        if y4.shape != [b, qh, sq, vd] {
            return Err(format!(
                "Attention: output type {y_shape:?} does not fit ({b}, {qh}, {sq}, {vd})"
            ));
        }
        Ok((y, y4))
    };
    let mut results = vec![];
    if outs.len() >= 2 {
        results.push(k.clone());
    }
    if outs.len() >= 3 {
        results.push(v.clone());
    }

    if let Some(bias) = fusable(cx, &scores, outs.len()) {
        let (y, y4) = y_out(cx)?;
        let value = fused_value(cx, &scores, &v)?;
        let call = AttentionCall {
            q: operand(&q),
            k: operand(&k),
            v: operand(&v),
            bias,
            out: operand(&y4),
            batch: b,
            q_heads: qh,
            kv_heads: kvh,
            s_q: sq,
            s_kv: l,
            head_dim: hd,
            v_head_dim: vd,
            // The loop nest multiplies by the f32 constant.
            scale: f64::from(scale as f32),
            causal_offset: a.is_causal.then_some(past_len as i64),
        };
        cx.emit(&dom.split(&y4), value);
        if let Some(kern) = cx.program.kernels.last_mut() {
            kern.library = Some(Library::Attention(call));
        }
        results.insert(0, y);
        return Ok(results);
    }

    let s_val = scores.biased(cx, dom.last())?;
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
    let (y, y4) = y_out(cx)?;
    results.insert(0, y);
    let jv = cx.red();
    let row = [out(0), dom.qhead(), dom.i()];
    let el = e.load(&[row[0].clone(), row[1].clone(), row[2].clone(), red(jv)]);
    let vl = cast(
        v.load(&[out(0), dom.kvhead(), red(jv), var(dom.last())]),
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

    if outs.len() >= 4 {
        let qk = cx.temp(dt, &scores4);
        let value = match a.qk_matmul_output_mode {
            0 => scores.raw(cx, dom.last()),
            1 => {
                let raw = scores.raw(cx, dom.last());
                scores.capped(raw)
            }
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

/// An operand view (4-D) as a library call operand.
fn operand(v: &View) -> Operand4 {
    Operand4 {
        buf: v.buf,
        offset: v.offset,
        strides: [v.strides[0], v.strides[1], v.strides[2], v.strides[3]],
    }
}

/// Whether this node lowers to the fused kernel: asked for, and a case
/// the microkernels take. `Some(bias operand)` when it does.
fn fusable(cx: &Cx, s: &Scores, n_outs: usize) -> Option<Option<Operand4>> {
    let l = s.target[3];
    let bias = match s.mask {
        None => None,
        // A shorter last dim pads with −∞: not an additive tensor.
        Some(m) if m.dtype == DType::F32 && m.shape.len() <= 4 && m.shape.last() == Some(&l) => {
            Some(operand(&m.broadcast_to(&s.target)))
        }
        Some(_) => return None,
    };
    let supported = cx.opts.fused_attention
        && s.dt == DType::F32
        && s.softcap <= 0.0
        && s.nonpad_len.is_none()
        && n_outs <= 3;
    supported.then_some(bias)
}

/// The fused kernel's value at `(b, head, i, c)`:
/// `select(M = −∞, 0, Σ_j exp(S_j − M)·V[j, c] / Σ_j exp(S_j − M))` with
/// `M = max_j S_j`. Each occurrence of `S` and `M` gets fresh reduction
/// variables (ids are unique within a kernel).
fn fused_value(cx: &mut Cx, s: &Scores, v: &View) -> Result<Expr, String> {
    let (dom, work, l) = (s.dom, s.work, s.target[3]);
    let max = |cx: &mut Cx| -> Result<Expr, String> {
        let j = cx.red();
        Ok(Expr::Reduce {
            op: ReduceFn::Max,
            vars: vec![(j, l)],
            body: Box::new(s.biased(cx, Var::Red(j))?),
        })
    };
    let exp_at = |cx: &mut Cx, j: usize| -> Result<Expr, String> {
        let sj = s.biased(cx, Var::Red(j))?;
        let m = max(cx)?;
        Ok(Expr::unary(
            UnaryFn::Exp,
            Expr::binary(BinaryFn::Sub, sj, m),
        ))
    };
    let jz = cx.red();
    let z = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(jz, l)],
        body: Box::new(exp_at(cx, jz)?),
    };
    let jv = cx.red();
    let vl = cast(
        v.load(&[out(0), dom.kvhead(), red(jv), var(dom.last())]),
        s.dt,
        work,
    );
    let pv = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(jv, l)],
        body: Box::new(Expr::binary(BinaryFn::Mul, exp_at(cx, jv)?, vl)),
    };
    let masked = Expr::binary(BinaryFn::Eq, max(cx)?, konst(NEG_INF, work));
    let y = Expr::select(masked, konst(0.0, work), Expr::binary(BinaryFn::Div, pv, z));
    Ok(cast(y, work, s.dt))
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
fn mask_bias(m: &View, dom: &Dom, target: [usize; 4], j: Var, work: DType) -> Result<Expr, String> {
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
    let full = [out(0), dom.qhead(), dom.i(), var(j)];
    let idx = &full[4 - r..];
    let guards = if last < target[3] {
        vec![Guard {
            index: var(j),
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

#[cfg(test)]
mod tests;
