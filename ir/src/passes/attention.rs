//! Scaled dot-product attention decompositions → `Op::Attention`:
//! `MatMul(Q·a, Kᵀ·b) → [·c or /c] → [+ mask] → Softmax(last) → MatMul(·, V)`
//! with Kᵀ any chain of layout ops equal to swapping K's last two axes, and
//! scalar factors a, b, c anywhere (scale = a·b·c). 4-D (B, H, S, hd) forms
//! become 4-D Attention; 3-D (B, S, hd) forms 3-D Attention with one head.
//! Also the transposed form `MatMul(Vᵀ, Transpose(P))` = `(P·V)ᵀ` (VQGAN's
//! AttnBlock), rewritten as `Transpose(Attention(Q, K, Transpose(Vᵀ)))`,
//! with K built as `Transpose(Kᵀ)` when no tensor K is found upstream.

use super::matchers::{add, binary, out0, permute, product, shape, sole_user, trace_layout};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{AttentionAttrs, BinaryOp, Op};

pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }
    fn about(&self) -> &'static str {
        "MatMul(Q,Kᵀ)→[scale]→[+mask]→Softmax→MatMul(·,V) → Attention"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let anchors: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Softmax { log: false, .. }))
            .map(|(id, _)| id)
            .collect();
        for id in anchors {
            let name = g.node(id).name.clone();
            let m = match find(g, cx, id) {
                Ok(m) => m,
                Err(why) => {
                    rep.skip(&name, why);
                    continue;
                }
            };
            let what = format!(
                "{}{}-D Attention(scale={}{})",
                if m.transposed { "transposed " } else { "" },
                m.rank,
                m.scale,
                if m.mask.is_some() {
                    ", additive mask"
                } else {
                    ""
                }
            );
            if !cx.allow(self.name(), &name, &what) {
                continue;
            }
            let heads = (m.rank == 3).then_some(1);
            let attrs = AttentionAttrs {
                is_causal: false,
                q_num_heads: heads,
                kv_num_heads: heads,
                scale: Some(m.scale as f32),
                softcap: 0.0,
                qk_matmul_output_mode: 0,
                softmax_precision: 0,
            };
            let swap = || Op::Transpose {
                perm: Some(swap_last(m.rank)),
            };
            let k = match m.k {
                KSrc::Found(k) => k,
                KSrc::FromKt(kt) => add(g, &format!("{name}_k"), swap(), &[Some(kt)]),
            };
            let v = if m.transposed {
                add(g, &format!("{name}_v"), swap(), &[Some(m.v)])
            } else {
                m.v
            };
            let ins = [Some(m.q), Some(k), Some(v), m.mask];
            let mut y = add(g, &format!("{name}_attention"), Op::Attention(attrs), &ins);
            if m.transposed {
                y = add(g, &format!("{name}_attention_t"), swap(), &[Some(y)]);
            }
            super::matchers::replace(g, m.top, y);
            rep.fire(name, what);
        }
        if rep.changed() {
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

enum KSrc {
    /// K itself, found upstream of Kᵀ.
    Found(ValueRef),
    /// Only Kᵀ is available: K is built as its transpose.
    FromKt(ValueRef),
}

struct Match {
    q: ValueRef,
    k: KSrc,
    /// V, or Vᵀ when `transposed`.
    v: ValueRef,
    /// The form `MatMul(Vᵀ, Pᵀ)`: V is given transposed and the result is
    /// the transpose of the attention output.
    transposed: bool,
    mask: Option<ValueRef>,
    scale: f64,
    rank: usize,
    top: ValueRef,
}

/// The permutation swapping the last two of `rank` axes.
fn swap_last(rank: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(rank - 1, rank - 2);
    perm
}

fn is_matmul(g: &Graph, v: ValueRef) -> bool {
    matches!(g.node(v.node).op, Op::MatMul)
}

fn find(g: &Graph, cx: &PassCx, id: NodeId) -> Result<Match, String> {
    let n = g.node(id);
    let Op::Softmax {
        axis, coerce_2d, ..
    } = n.op
    else {
        unreachable!()
    };
    let s = n.inputs[0].ok_or("no operand")?;
    let ss = shape(g, s).ok_or("no static shape")?;
    let rank = ss.len();
    if !(rank == 3 || rank == 4) || coerce_2d || !(axis == -1 || axis == rank as i64 - 1) {
        return Err("not a softmax over the last axis of a 3-D or 4-D tensor".into());
    }
    let user = sole_user(g, out0(id)).ok_or("probabilities have other users")?;
    let un = g.node(user);
    let (v, transposed, top) = if matches!(un.op, Op::MatMul) && un.inputs[0] == Some(out0(id)) {
        (un.inputs[1].ok_or("no V")?, false, out0(user))
    } else if matches!(&un.op, Op::Transpose { perm: Some(p) } if *p == swap_last(rank)) {
        // P·V computed as (P·V)ᵀ = Vᵀ·Pᵀ.
        let pt = out0(user);
        let mm = sole_user(g, pt).ok_or("Pᵀ has other users")?;
        let mn = g.node(mm);
        if !matches!(mn.op, Op::MatMul) || mn.inputs[1] != Some(pt) || mn.inputs[0] == Some(pt) {
            return Err("Pᵀ is not multiplied by Vᵀ from the left".into());
        }
        (mn.inputs[0].ok_or("no Vᵀ")?, true, out0(mm))
    } else {
        return Err("probabilities are not multiplied by V".into());
    };
    // Optional additive mask.
    let (scores, mask) = match binary(g, s.node, BinaryOp::Add) {
        Some((a, b)) => {
            let scored = |x: ValueRef| product(g, cx, x, 3).leaves.iter().any(|&l| is_matmul(g, l));
            let (sc, m) = if scored(a) { (a, b) } else { (b, a) };
            (sc, Some(m))
        }
        None => (s, None),
    };
    let p = product(g, cx, scores, 3);
    let [mm] = p.leaves.as_slice() else {
        return Err("scores are not a scaled MatMul".into());
    };
    if !is_matmul(g, *mm) {
        return Err("scores are not a scaled MatMul".into());
    }
    let mmn = g.node(mm.node);
    let (qq, kk) = (mmn.inputs[0].ok_or("no Q")?, mmn.inputs[1].ok_or("no Kᵀ")?);
    let pq = product(g, cx, qq, 3);
    let pk = product(g, cx, kk, 3);
    // A non-scalar factor on Q (e.g. a per-head scale) stays inside Q.
    let (q, q_coeff) = match pq.leaves.as_slice() {
        [q] => (*q, pq.coeff),
        _ => (qq, 1.0),
    };
    let q = &q;
    let [kt] = pk.leaves.as_slice() else {
        return Err("Kᵀ is a product of tensors".into());
    };
    let (k, ks) = match find_k(g, *kt, rank) {
        Some(k) => (KSrc::Found(k), shape(g, k).ok_or("K shape")?),
        None if transposed => {
            let kts = shape(g, *kt).ok_or("Kᵀ shape")?;
            if kts.len() != rank {
                return Err(format!("Kᵀ {kts:?} is not {rank}-D"));
            }
            let ks: Vec<usize> = swap_last(rank).iter().map(|&p| kts[p]).collect();
            (KSrc::FromKt(*kt), ks)
        }
        None => return Err("Kᵀ is not K with its last two axes swapped".into()),
    };
    let (qs, vs) = (
        shape(g, *q).ok_or("Q shape")?,
        shape(g, v).ok_or("V shape")?,
    );
    // Every shape must be static, the result's too.
    let ys = shape(g, top).ok_or("output shape")?;
    let vs: Vec<usize> = if transposed {
        if vs.len() != rank {
            return Err(format!("Vᵀ {vs:?} is not {rank}-D"));
        }
        swap_last(rank).iter().map(|&p| vs[p]).collect()
    } else {
        vs
    };
    let lead = rank - 2;
    let mut want_y = qs.clone();
    if let Some(d) = want_y.last_mut() {
        *d = vs.last().copied().unwrap_or(0);
    }
    if transposed {
        want_y = swap_last(rank).iter().map(|&p| want_y[p]).collect();
    }
    if qs.len() != rank
        || ks.len() != rank
        || vs.len() != rank
        || qs[..lead] != ks[..lead]
        || vs[..lead] != ks[..lead]
        || qs[rank - 1] != ks[rank - 1]
        || vs[rank - 2] != ks[rank - 2]
        || ys != want_y
    {
        return Err(format!(
            "Q {qs:?}, K {ks:?}, V {vs:?} do not fit one attention"
        ));
    }
    if let Some(m) = mask {
        let ms = shape(g, m).ok_or("mask shape")?;
        let dt = |x: ValueRef| g.value(x).ty.as_ref().map(|t| t.dtype);
        let lead_ones = ms.len() <= 2 || ms[..ms.len() - 2].iter().all(|&d| d == 1);
        if ms.len() > rank || dt(m) != dt(*q) || (rank == 3 && !lead_ones) {
            return Err(format!("mask {ms:?} cannot be an Attention mask here"));
        }
    }
    Ok(Match {
        q: *q,
        k,
        v,
        transposed,
        mask,
        scale: p.coeff * q_coeff * pk.coeff,
        rank,
        top,
    })
}

/// The tensor K (rank `rank`) that the layout chain ending at `kt` turns
/// into Kᵀ (last two axes swapped).
fn find_k(g: &Graph, kt: ValueRef, rank: usize) -> Option<ValueRef> {
    let mut cand = kt;
    for _ in 0..6 {
        let n = g.node(cand.node);
        if !super::matchers::is_layout(&n.op) {
            return None;
        }
        cand = n.inputs[0]?;
        let cs = shape(g, cand)?;
        if cs.len() != rank {
            continue;
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 1, rank - 2);
        let want_shape: Vec<usize> = perm.iter().map(|&p| cs[p]).collect();
        // The shapes first: the index maps cost a pass over every element.
        if shape(g, kt)? != want_shape {
            continue;
        }
        let iota: Vec<usize> = (0..cs.iter().product()).collect();
        if trace_layout(g, cand, kt)? == permute(&iota, &cs, &perm)? {
            return Some(cand);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::passes::testing::{kinds, run_one};

    #[test]
    fn sdpa_with_scale_and_mask_fuses() {
        let mut b = B::default();
        let q = b.input("q", "f32[1,2,5,4]");
        let k = b.input("k", "f32[1,2,6,4]");
        let v = b.input("v", "f32[1,2,6,3]");
        let mask = b.input("m", "f32[5,6]");
        let kt = b.op(
            Op::Transpose {
                perm: Some(vec![0, 1, 3, 2]),
            },
            &[k],
        );
        let s = b.op(Op::MatMul, &[q, kt]);
        let c = b.floats(&[2.0]);
        let s = b.op(Op::Binary(BinaryOp::Div), &[s, c]);
        let s = b.op(Op::Binary(BinaryOp::Add), &[s, mask]);
        let p = b.op(
            Op::Softmax {
                axis: -1,
                log: false,
                coerce_2d: false,
            },
            &[s],
        );
        let y = b.op(Op::MatMul, &[p, v]);
        b.g.outputs = vec![y];
        let rep = run_one(&mut b.g, Box::new(FuseAttention));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert!(rep.fired[0].what.contains("scale=0.5"), "{rep:?}");
        assert_eq!(kinds(&b.g), ["Attention"]);
    }

    /// `h = V·Pᵀ` (VQGAN AttnBlock) → Transpose(Attention(Q, Kᵀᵀ, Vᵀᵀ)).
    fn transposed_v(extra_user: bool) -> (B, PassReport) {
        let mut b = B::default();
        let qc = b.input("q", "f32[2,4,6]");
        let kc = b.input("k", "f32[2,4,6]");
        let vc = b.input("v", "f32[2,3,6]");
        let swap = || Op::Transpose {
            perm: Some(vec![0, 2, 1]),
        };
        let q = b.op(swap(), &[qc]);
        let s = b.op(Op::MatMul, &[q, kc]);
        let c = b.floats(&[0.5]);
        let s = b.op(Op::Binary(BinaryOp::Mul), &[s, c]);
        let p = b.op(
            Op::Softmax {
                axis: 2,
                log: false,
                coerce_2d: false,
            },
            &[s],
        );
        let pt = b.op(swap(), &[p]);
        let y = b.op(Op::MatMul, &[vc, pt]);
        b.g.outputs = vec![y];
        if extra_user {
            b.g.outputs.push(pt);
        }
        let rep = run_one(&mut b.g, Box::new(FuseAttention));
        (b, rep)
    }

    #[test]
    fn transposed_v_form_fuses() {
        let (b, rep) = transposed_v(false);
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert!(
            rep.fired[0]
                .what
                .contains("transposed 3-D Attention(scale=0.5)"),
            "{rep:?}"
        );
        assert_eq!(
            kinds(&b.g),
            [
                "Attention",
                "Transpose",
                "Transpose",
                "Transpose",
                "Transpose"
            ]
        );
        let y = b.g.outputs[0];
        let yn = b.g.node(y.node);
        assert!(matches!(yn.op, Op::Transpose { .. }));
        let an = b.g.node(yn.inputs[0].unwrap().node);
        assert!(matches!(an.op, Op::Attention(_)));
        assert_eq!(shape(&b.g, y), Some(vec![2, 3, 6]));
    }

    #[test]
    fn transposed_v_with_shared_pt_is_left() {
        let (_, rep) = transposed_v(true);
        assert!(rep.fired.is_empty(), "{rep:?}");
        assert!(
            rep.skipped[0].what.contains("Pᵀ has other users"),
            "{rep:?}"
        );
    }

    #[test]
    fn softmax_on_other_axis_is_left() {
        let mut b = B::default();
        let q = b.input("q", "f32[2,5,4]");
        let k = b.input("k", "f32[2,4,5]");
        let s = b.op(Op::MatMul, &[q, k]);
        let p = b.op(
            Op::Softmax {
                axis: 1,
                log: false,
                coerce_2d: false,
            },
            &[s],
        );
        b.g.outputs = vec![p];
        let rep = run_one(&mut b.g, Box::new(FuseAttention));
        assert!(rep.fired.is_empty() && rep.skipped.len() == 1, "{rep:?}");
    }
}
