//! Lowering of the contraction, window and resampling ops: MatMul, Gemm,
//! Conv, pooling, Resize and Attention. Each is one or a few kernels whose
//! reductions run over `Var::Red` loop variables; padding is a load guard,
//! groups and grouped-query heads split a domain axis in two so that every
//! address stays affine.

mod attention;
mod conv;
mod matmul;
mod pool;
mod resample;
mod resize;

use super::{Cx, View};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{Affine, Expr, Guard, Var};
use crate::op::Op;

pub fn lower(
    cx: &mut Cx,
    op: &Op,
    ins: &[Option<View>],
    outs: &[TypeInfo],
) -> Result<Vec<View>, String> {
    let one = |v: Result<View, String>| v.map(|v| vec![v]);
    match op {
        Op::MatMul => one(matmul::matmul(cx, ins, outs)),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(matmul::gemm(
            cx, ins, outs, *alpha, *beta, *trans_a, *trans_b,
        )),
        Op::Conv { window, group } => one(conv::conv(cx, ins, outs, window, *group)),
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => one(pool::pool(
            cx,
            ins,
            outs,
            window,
            *ceil_mode,
            Some(*count_include_pad),
        )),
        Op::MaxPool { window, ceil_mode } => {
            if outs.len() > 1 {
                return Err(
                    "MaxPool's Indices output is not supported by the compiled backends".into(),
                );
            }
            one(pool::pool(cx, ins, outs, window, *ceil_mode, None))
        }
        Op::GlobalAveragePool => one(pool::global(cx, ins, outs, false)),
        Op::GlobalMaxPool => one(pool::global(cx, ins, outs, true)),
        Op::Resize(attrs) => one(resize::resize(cx, ins, outs, attrs)),
        Op::Resample { maps } => one(resample::resample(cx, ins, outs, maps)),
        Op::Attention(attrs) => attention::attention(cx, ins, outs, attrs),
        _ => Err(format!("{} is not an nn op", op.kind())),
    }
}

/// `offset + Σ coeff·var`.
fn lin(terms: &[(Var, i64)], offset: i64) -> Affine {
    Affine {
        offset,
        terms: terms.iter().copied().filter(|&(_, c)| c != 0).collect(),
    }
}

fn out(d: usize) -> Affine {
    super::var(Var::Out(d))
}

fn red(id: usize) -> Affine {
    super::var(Var::Red(id))
}

/// `view` with axis `axis` (extent `outer·inner`) split into `[outer, inner]`.
fn split_axis(view: &View, axis: usize, outer: usize) -> View {
    let inner = view.shape[axis] / outer.max(1);
    let s = view.strides[axis];
    let mut v = view.clone();
    v.shape.splice(axis..=axis, [outer, inner]);
    v.strides.splice(axis..=axis, [s * inner as i64, s]);
    v
}

/// `view` with its axes reordered: new axis `i` is old axis `perm[i]`.
fn permute(view: &View, perm: &[usize]) -> View {
    View {
        shape: perm.iter().map(|&p| view.shape[p]).collect(),
        strides: perm.iter().map(|&p| view.strides[p]).collect(),
        ..view.clone()
    }
}

/// `view` restricted to `[start, start + len)` along `axis`.
fn narrow(view: &View, axis: usize, start: usize, len: usize) -> View {
    let mut v = view.clone();
    v.offset += start as i64 * v.strides[axis];
    v.shape[axis] = len;
    v
}

/// A constant of `dtype`.
fn konst(value: f64, dtype: DType) -> Expr {
    Expr::Const { value, dtype }
}

/// A load of `view` at `idx` that yields `fill` outside the guards.
fn guarded(view: &View, idx: &[Affine], guards: Vec<Guard>, fill: f64) -> Expr {
    match view.load(idx) {
        Expr::Load { access, .. } => Expr::Load {
            access,
            guards,
            fill,
        },
        e => e,
    }
}

/// `e` converted to `to` (no node when it already has that type).
fn cast(e: Expr, from: DType, to: DType) -> Expr {
    if from == to {
        e
    } else {
        Expr::Cast(to, Box::new(e))
    }
}

/// The type float arithmetic on `dtype` values runs in: f64 for f64 and
/// integers, f32 otherwise (f16 and bf16 widen).
fn compute_type(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        d if d.is_float() => DType::F32,
        _ => DType::F64,
    }
}

fn shape_of(outs: &[TypeInfo], i: usize) -> Result<Vec<usize>, String> {
    let t = outs
        .get(i)
        .ok_or_else(|| format!("missing output type {i}"))?;
    super::known_shape(t)
}

/// The type sums and products of `dtype` values accumulate in: f32 for f16
/// and bf16, the type itself otherwise.
fn acc_type(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}
