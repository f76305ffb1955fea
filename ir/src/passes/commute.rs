//! Resample ⊗ projection commutation (var-flowar.md §6): a per-token
//! projection `X·W (+ b)` of tokens that a spatial resample `R` produced
//! (directly, through layout ops that only regroup the token axes, or as one
//! piece of a Concat along a token axis) equals `R` applied to the projected
//! coarse tokens. The rewrite runs the projection before the resample when
//! the cost model says it pays. Legal only for float types, no
//! `tf_crop_and_resize` fill, and, with a bias, rows of `R` summing to 1.
//!
//! **Cost model** (in GEMM-FLOP equivalents): projection `2·N·d_in·d_out`;
//! resample `node FLOPs · d_out / d_in ·` [`RESAMPLE_FLOP`] (tap-table
//! kernels gather and do not vectorise like the sgemm microkernels); and,
//! for the rewritten form, [`KERNEL`] per extra kernel (the piece's own
//! projection, bias, one per resampled axis, its copy into the concat) plus
//! [`BYTE`] per byte its extra memory passes move. The projection-FLOP
//! saving of every *legal* commutation is reported whether or not it pays.
//!
//! Why not merge Q/K/V first: one merged projection would feed one resample
//! chain of `3·d` channels instead of three of `d`, which saves kernels but
//! not resample work, and on the CPU the resample work alone outweighs the
//! projection FLOPs saved (minvar: 87·64·192·2 ≈ 2.1 MFLOP saved on the
//! last level against ≈ 0.36 M tap FLOPs at ~75× the cost of a GEMM FLOP).

use super::matchers::{
    add, add_const, binary, is_layout, konst, out0, permute, shape, sole_user, trace_layout,
};
use super::resample::maps;
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{BinaryOp, Op};
use crate::tensor::Tensor;

pub struct CommuteResampleProjection;

/// Cost of one resample tap FLOP in GEMM FLOPs. Measured on minvar (host
/// CPU, one thread): a 64×16×16 bicubic axis kernel, 65 k MACs, 0.15 ms;
/// a 679×64×64 sgemm, 2.8 M MACs, 0.085 ms: a ratio of about 75. We charge
/// a conservative 32.
pub const RESAMPLE_FLOP: u64 = 32;
/// Cost of one extra kernel (launch, loop set-up, a cold pass over its
/// operands) in GEMM FLOPs: about 0.3 µs at the sgemm's ~65 GFLOP/s.
pub const KERNEL: u64 = 20_000;
/// Cost of one byte written and read back by an extra memory pass, in
/// GEMM FLOPs (~16 GB/s against ~65 GFLOP/s).
pub const BYTE: u64 = 4;

struct Site {
    y: ValueRef,
    x: ValueRef,
    perm: Vec<usize>,
    axis: usize,
    /// Costs in GEMM-FLOP equivalents (see the module doc).
    before: u64,
    after: u64,
    proj_before: u64,
    proj_after: u64,
    n_in: u64,
}

struct Proj {
    w: ValueRef,
    bias: Option<ValueRef>,
    top: ValueRef,
    d_in: usize,
    d_out: usize,
}

impl Pass for CommuteResampleProjection {
    fn name(&self) -> &'static str {
        "commute-resample-projection"
    }
    fn about(&self) -> &'static str {
        "run per-token projections before spatial resamples when it saves FLOPs"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let (mut total_before, mut total_after) = (0u64, 0u64);
        let (mut moved_before, mut moved_after) = (0u64, 0u64);
        // Projection FLOPs if every legal commutation were applied.
        let (mut legal_before, mut legal_after, mut legal_pieces) = (0u64, 0u64, 0usize);
        let ids: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::MatMul))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let name = g.node(id).name.clone();
            let Some(p) = projection(g, cx, id) else {
                continue;
            };
            let a = g.node(id).inputs[0].expect("MatMul has A");
            let Some(shp) = shape(g, a) else { continue };
            let tokens = |s: &[usize]| {
                (s.iter().product::<usize>() / s.last().copied().unwrap_or(1).max(1)) as u64
            };
            let flops = |n: u64| 2 * n * (p.d_in * p.d_out) as u64;
            total_before += flops(tokens(&shp));
            let an = g.node(a.node);
            let pieces: Vec<ValueRef> = match an.op {
                Op::Concat { axis } if normalize(axis, shp.len()) != Some(shp.len() - 1) => {
                    an.inputs.iter().flatten().copied().collect()
                }
                _ => vec![a],
            };
            let mut sites = vec![];
            let mut legal = vec![];
            for (k, &piece) in pieces.iter().enumerate() {
                let at = format!("{name}[{k}]");
                let res = analyze(g, cx, piece, &p);
                legal.push(res.as_ref().ok().map(|s| s.n_in));
                match res {
                    Ok(s) if s.after < s.before => sites.push(Some(s)),
                    Ok(s) => {
                        rep.skip(
                            at,
                            format!(
                                "does not pay: {} → {} GEMM-FLOP equivalents (projection FLOPs {} → {})",
                                s.before,
                                s.after,
                                s.proj_before,
                                s.proj_after
                            ),
                        );
                        sites.push(None)
                    }
                    Err(why) => {
                        if pieces.len() == 1 || !why.starts_with("not fed") {
                            rep.skip(at, why);
                        }
                        sites.push(None)
                    }
                }
            }
            if legal.iter().any(Option::is_some) {
                legal_before += flops(tokens(&shp));
                legal_pieces += legal.iter().flatten().count();
                legal_after += pieces
                    .iter()
                    .zip(&legal)
                    .map(|(&v, l)| match l {
                        Some(n_in) => flops(*n_in),
                        None => shape(g, v).map_or(0, |s| flops(tokens(&s))),
                    })
                    .sum::<u64>();
            }
            let after: u64 = pieces
                .iter()
                .zip(&sites)
                .map(|(&v, s)| match s {
                    Some(s) => flops(s.n_in),
                    None => shape(g, v).map_or(0, |s| flops(tokens(&s))),
                })
                .sum();
            if sites.iter().all(Option::is_none) {
                total_after += flops(tokens(&shp));
                continue;
            }
            let n = sites.iter().flatten().count();
            let what = format!(
                "{n} of {} token pieces projected before their resample",
                pieces.len()
            );
            if !cx.allow(self.name(), &name, &what) {
                total_after += flops(tokens(&shp));
                continue;
            }
            total_after += after;
            moved_before += flops(tokens(&shp));
            moved_after += after;
            let mut outs = vec![];
            for (k, (&piece, s)) in pieces.iter().zip(&sites).enumerate() {
                let base = format!("{name}_p{k}");
                outs.push(match s {
                    Some(s) => {
                        rep.fire(
                            format!("{name}[{k}]"),
                            format!(
                                "resample '{}' now after the projection: {} → {} GEMM-FLOP equivalents",
                                g.node(s.y.node).name,
                                s.before,
                                s.after
                            ),
                        );
                        build(g, cx, &base, s, &p, piece)
                    }
                    None => project(g, &base, piece, &p),
                });
            }
            let new = match g.node(a.node).op {
                Op::Concat { axis } if outs.len() > 1 || pieces[0] != a => {
                    let ins: Vec<_> = outs.into_iter().map(Some).collect();
                    add(g, &format!("{name}_cat"), Op::Concat { axis }, &ins)
                }
                _ => outs[0],
            };
            super::matchers::replace(g, p.top, new);
        }
        if total_before > 0 {
            let saved = 100.0 * (1.0 - total_after as f64 / total_before as f64);
            rep.notes.push(format!(
                "projection FLOPs {total_before} → {total_after} ({saved:.1} % saved)"
            ));
        }
        if legal_before > 0 {
            let saved = 100.0 * (1.0 - legal_after as f64 / legal_before as f64);
            rep.notes.push(format!(
                "legal commutations ({legal_pieces} token pieces): projection FLOPs {legal_before} → {legal_after} ({saved:.1} % saved if all were applied; {} applied)",
                rep.fired.len()
            ));
        }
        if moved_before > 0 {
            let saved = 100.0 * (1.0 - moved_after as f64 / moved_before as f64);
            rep.notes.push(format!(
                "commuted projections: {moved_before} → {moved_after} FLOPs ({saved:.1} % saved)"
            ));
        }
        if rep.changed() {
            super::eliminate_dead(g);
        }
        Ok(rep)
    }
}

fn normalize(axis: i64, rank: usize) -> Option<usize> {
    crate::shape::normalize_axis(axis, rank).ok()
}

/// A MatMul by a constant 2-D float W, with an optional constant bias Add.
fn projection(g: &Graph, cx: &PassCx, id: NodeId) -> Option<Proj> {
    let w = g.node(id).inputs[1]?;
    let wt = konst(g, cx, w)?;
    if wt.rank() != 2 || !wt.dtype().is_float() {
        return None;
    }
    let (d_in, d_out) = (wt.shape()[0], wt.shape()[1]);
    let mut p = Proj {
        w,
        bias: None,
        top: out0(id),
        d_in,
        d_out,
    };
    if let Some(user) = sole_user(g, out0(id))
        && let Some((l, r)) = binary(g, user, BinaryOp::Add)
    {
        let b = if l == out0(id) { r } else { l };
        if konst(g, cx, b).is_some_and(|t| t.numel() == d_out && t.shape().last() == Some(&d_out)) {
            p.bias = Some(b);
            p.top = out0(user);
        }
    }
    Some(p)
}

fn analyze(g: &Graph, cx: &PassCx, piece: ValueRef, p: &Proj) -> Result<Site, String> {
    let mut y = piece;
    for _ in 0..8 {
        if matches!(
            g.node(y.node).op,
            Op::Resize(_) | Op::AveragePool { .. } | Op::Resample { .. }
        ) {
            break;
        }
        if !is_layout(&g.node(y.node).op) {
            return Err("not fed by a resample through layout ops".into());
        }
        y = g.node(y.node).inputs[0].ok_or("no operand")?;
    }
    if !matches!(
        g.node(y.node).op,
        Op::Resize(_) | Op::AveragePool { .. } | Op::Resample { .. }
    ) {
        return Err("not fed by a resample through layout ops".into());
    }
    let yname = &g.node(y.node).name;
    let (x, m) = maps(g, cx, y.node).map_err(|e| format!("resample '{yname}': {e}"))?;
    if !g.value(y).ty.as_ref().is_some_and(|t| t.dtype.is_float()) {
        return Err(format!("resample '{yname}' is not on floats"));
    }
    if m.iter().any(|a| a.has_fill()) {
        return Err(format!(
            "resample '{yname}' has tf_crop_and_resize fill outputs"
        ));
    }
    let unit = m
        .iter()
        .all(|a| a.row_sums().iter().all(|s| (s - 1.0).abs() < 1e-6));
    if p.bias.is_some() && !unit {
        return Err(format!(
            "rows of resample '{yname}' do not all sum to 1: the bias cannot move"
        ));
    }
    let ys = shape(g, y).ok_or("no static shape")?;
    let xs = shape(g, x).ok_or("no static shape")?;
    let traced = trace_layout(g, y, piece).ok_or("layout chain is not static")?;
    let r = ys.len();
    let iota: Vec<usize> = (0..ys.iter().product()).collect();
    let axis = (0..r)
        .find(|&c| {
            let perm: Vec<usize> = (0..r).filter(|&d| d != c).chain([c]).collect();
            ys[c] == p.d_in
                && m[c].is_identity()
                && permute(&iota, &ys, &perm).as_ref() == Some(&traced)
        })
        .ok_or_else(|| format!("layout ops after '{yname}' do not only regroup the token axes"))?;
    let perm: Vec<usize> = (0..r).filter(|&d| d != axis).chain([axis]).collect();
    let (d_in, d_out) = (p.d_in as u64, p.d_out as u64);
    let n_out = (ys.iter().product::<usize>() / p.d_in) as u64;
    let n_in = (xs.iter().product::<usize>() / p.d_in) as u64;
    let ins: Vec<_> = g
        .node(y.node)
        .inputs
        .iter()
        .map(|v| v.and_then(|v| g.value(v).ty.as_ref()))
        .collect();
    let outs: Vec<_> = g
        .node(y.node)
        .outputs
        .iter()
        .filter_map(|o| o.ty.clone())
        .collect();
    let rs = crate::cost::node_flops(g.node(y.node), &ins, &outs) * RESAMPLE_FLOP;
    let dies = g.consumers(y).len() == 1 && sole_user(g, piece).is_some();
    let axes = m.iter().filter(|a| !a.is_identity()).count() as u64;
    let proj_before = 2 * n_out * d_in * d_out;
    let proj_after = 2 * n_in * d_in * d_out;
    // Extra kernels: the piece's projection, its bias, its resample axes and
    // its copy into the concat of projected pieces, less the resample's own
    // kernels when it dies. Extra bytes: the coarse projection and every
    // resampled intermediate, each written and read once.
    let elem = g.value(y).ty.as_ref().map_or(4, |t| t.dtype.size().max(1)) as u64;
    let kernels =
        (2 + u64::from(p.bias.is_some()) + axes).saturating_sub(if dies { axes } else { 0 });
    let bytes = 2 * elem * d_out * (n_in + axes * n_out);
    let before = proj_before + if dies { rs } else { 0 };
    let after = proj_after + rs * d_out / d_in.max(1) + KERNEL * kernels + BYTE * bytes;
    Ok(Site {
        y,
        x,
        perm,
        axis,
        before,
        after,
        proj_before,
        proj_after,
        n_in,
    })
}

fn project(g: &mut Graph, base: &str, piece: ValueRef, p: &Proj) -> ValueRef {
    let mut v = add(
        g,
        &format!("{base}_mm"),
        Op::MatMul,
        &[Some(piece), Some(p.w)],
    );
    if let Some(b) = p.bias {
        v = add(
            g,
            &format!("{base}_bias"),
            Op::Binary(BinaryOp::Add),
            &[Some(v), Some(b)],
        );
    }
    v
}

fn build(g: &mut Graph, cx: &PassCx, base: &str, s: &Site, p: &Proj, piece: ValueRef) -> ValueRef {
    let r = s.perm.len();
    let mut inv = vec![0; r];
    for (i, &d) in s.perm.iter().enumerate() {
        inv[d] = i;
    }
    let xt = add(
        g,
        &format!("{base}_nhwc"),
        Op::Transpose {
            perm: Some(s.perm.clone()),
        },
        &[Some(s.x)],
    );
    let pr = project(g, base, xt, p);
    let pb = add(
        g,
        &format!("{base}_nchw"),
        Op::Transpose { perm: Some(inv) },
        &[Some(pr)],
    );
    let yn = g.node(s.y.node).clone();
    let mut ins = yn.inputs.clone();
    ins[0] = Some(pb);
    if let Op::Resize(a) = &yn.op
        && !a.scales_input_only
        && let Some(sz) = ins.get(3).copied().flatten()
        && let Some(t) = konst(g, cx, sz).filter(|t| t.numel() > 0)
    {
        let mut v = t.to_i64_vec();
        let slot = match &a.axes {
            None => Some(s.axis),
            Some(ax) => ax.iter().position(|&d| normalize(d, r) == Some(s.axis)),
        };
        if let Some(i) = slot {
            v[i] = p.d_out as i64;
        }
        let n = v.len();
        ins[3] = Some(add_const(
            g,
            &format!("{base}_sizes"),
            Tensor::from_i64(vec![n], v).expect("sizes"),
        ));
    }
    let z = add(g, &format!("{base}_resample"), yn.op.clone(), &ins);
    let zt = add(
        g,
        &format!("{base}_tokens"),
        Op::Transpose {
            perm: Some(s.perm.clone()),
        },
        &[Some(z)],
    );
    let mut out_shape: Vec<i64> = shape(g, piece)
        .expect("static")
        .iter()
        .map(|&d| d as i64)
        .collect();
    *out_shape.last_mut().expect("rank ≥ 1") = p.d_out as i64;
    let n = out_shape.len();
    let sh = add_const(
        g,
        &format!("{base}_shape"),
        Tensor::from_i64(vec![n], out_shape).expect("shape"),
    );
    add(
        g,
        &format!("{base}_out"),
        Op::Reshape { allowzero: false },
        &[Some(zt), Some(sh)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::op::{AspectPolicy, CoordMode, NearestMode, ResizeAttrs, ResizeMode};
    use crate::passes::testing::run_one;

    fn attrs(mode: ResizeMode) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord: CoordMode::HalfPixel,
            nearest_mode: NearestMode::Floor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::Stretch,
            scales_input_only: false,
        }
    }

    /// x[1,64,2,2] → Resize ×8 → flatten/transpose to tokens → ·W[64,2] + b.
    fn graph(mode: ResizeMode) -> B {
        let mut b = B::default();
        let x = b.input("x", "f32[1,64,2,2]");
        let sizes = b.ints(&[1, 64, 16, 16]);
        let y = b.node(
            Op::Resize(attrs(mode)),
            &[Some(x), None, None, Some(sizes)],
            1,
        )[0];
        let s = b.ints(&[1, 64, 256]);
        let r = b.op(Op::Reshape { allowzero: false }, &[y, s]);
        let t = b.op(
            Op::Transpose {
                perm: Some(vec![0, 2, 1]),
            },
            &[r],
        );
        let w =
            b.g.add_const("w", Tensor::from_f32(vec![64, 2], vec![0.5; 128]).unwrap());
        let m = b.op(Op::MatMul, &[t, w]);
        let bias = b.floats(&[1.0, 2.0]);
        let o = b.op(Op::Binary(BinaryOp::Add), &[m, bias]);
        b.g.outputs = vec![o];
        b
    }

    #[test]
    fn upsample_then_narrow_projection_commutes() {
        let mut b = graph(ResizeMode::Linear);
        let rep = run_one(&mut b.g, Box::new(CommuteResampleProjection));
        assert_eq!(rep.fired.len(), 1, "{rep:?}");
        assert!(rep.notes[0].contains("saved"), "{rep:?}");
    }

    #[test]
    fn transposed_tokens_are_not_a_projection_site() {
        // Transpose [0,1,2] keeps channels in the middle: not per-token.
        let mut b = B::default();
        let x = b.input("x", "f32[1,8,2,2]");
        let sizes = b.ints(&[1, 8, 8, 8]);
        let y = b.node(
            Op::Resize(attrs(ResizeMode::Nearest)),
            &[Some(x), None, None, Some(sizes)],
            1,
        )[0];
        let s = b.ints(&[1, 64, 8]);
        let r = b.op(Op::Reshape { allowzero: false }, &[y, s]);
        let w =
            b.g.add_const("w", Tensor::from_f32(vec![8, 2], vec![0.5; 16]).unwrap());
        let m = b.op(Op::MatMul, &[r, w]);
        b.g.outputs = vec![m];
        let rep = run_one(&mut b.g, Box::new(CommuteResampleProjection));
        assert!(rep.fired.is_empty(), "{rep:?}");
        assert!(rep.skipped[0].what.contains("regroup"), "{rep:?}");
    }
}
