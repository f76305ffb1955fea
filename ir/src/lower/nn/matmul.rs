//! MatMul (numpy semantics) and Gemm: one kernel each, the output shape as
//! the domain and `Σ_k A[.., m, k]·B[.., k, n]` as the value, so a code
//! generator can vectorise along `n` with `A` splat. Broadcast batch dims
//! need nothing: a view's size-1 dims take no part in its address.

use super::{acc_type, cast, konst, out, red, shape_of};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::{BinaryFn, Expr, ReduceFn};
use crate::lower::{Cx, View, input};

fn check_types(a: &View, b: &View, op: &str) -> Result<(), String> {
    if a.dtype != b.dtype {
        return Err(format!(
            "{op}: operand types differ ({} vs {})",
            a.dtype, b.dtype
        ));
    }
    if a.dtype == DType::Bool {
        return Err(format!("{op} is not defined for bool tensors"));
    }
    Ok(())
}

pub(super) fn matmul(cx: &mut Cx, ins: &[Option<View>], outs: &[TypeInfo]) -> Result<View, String> {
    let (a, b) = (input(ins, 0)?, input(ins, 1)?);
    check_types(a, b, "MatMul")?;
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra == 0 || rb == 0 {
        return Err("MatMul operands must have rank ≥ 1".into());
    }
    let (a_vec, b_vec) = (ra == 1, rb == 1);
    let k = a.shape[ra - 1];
    let kb = if b_vec { b.shape[0] } else { b.shape[rb - 2] };
    if k != kb {
        return Err(format!(
            "MatMul inner dims differ: {:?} × {:?}",
            a.shape, b.shape
        ));
    }
    let shape = shape_of(outs, 0)?;
    let r = shape.len();
    let nb = r - usize::from(!a_vec) - usize::from(!b_vec);
    let (a_batch, b_batch) = (ra.saturating_sub(2), rb.saturating_sub(2));
    if a_batch > nb || b_batch > nb {
        return Err(format!(
            "MatMul output shape {shape:?} does not fit {:?} × {:?}",
            a.shape, b.shape
        ));
    }
    let kv = cx.red();
    let m_var = (!a_vec).then(|| out(nb));
    let n_var = (!b_vec).then(|| out(r - 1));
    let mut ai: Vec<_> = (0..a_batch).map(|i| out(nb - a_batch + i)).collect();
    ai.extend(m_var);
    ai.push(red(kv));
    let mut bi: Vec<_> = (0..b_batch).map(|i| out(nb - b_batch + i)).collect();
    bi.push(red(kv));
    bi.extend(n_var);
    let (dt, acc) = (a.dtype, acc_type(a.dtype));
    let body = Expr::binary(
        BinaryFn::Mul,
        cast(a.load(&ai), dt, acc),
        cast(b.load(&bi), dt, acc),
    );
    let value = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(kv, k)],
        body: Box::new(body),
    };
    let y = cx.temp(dt, &shape);
    cx.emit(&y, cast(value, acc, dt));
    Ok(y)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<View, String> {
    let (a, b) = (input(ins, 0)?, input(ins, 1)?);
    check_types(a, b, "Gemm")?;
    let c = ins.get(2).and_then(Option::as_ref);
    if a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(format!(
            "Gemm operands must be 2-D, got {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let k = if trans_a { a.shape[0] } else { a.shape[1] };
    let kb = if trans_b { b.shape[1] } else { b.shape[0] };
    if k != kb {
        return Err(format!("Gemm inner dims differ ({k} vs {kb})"));
    }
    let shape = shape_of(outs, 0)?;
    let (dt, acc_t) = (a.dtype, acc_type(a.dtype));
    let kv = cx.red();
    let (m, n) = (out(0), out(1));
    let ai = if trans_a { [red(kv), m] } else { [m, red(kv)] };
    let bi = if trans_b { [n, red(kv)] } else { [red(kv), n] };
    let acc = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(kv, k)],
        body: Box::new(Expr::binary(
            BinaryFn::Mul,
            cast(a.load(&ai), dt, acc_t),
            cast(b.load(&bi), dt, acc_t),
        )),
    };
    let c_load = match c {
        Some(c) => {
            if c.dtype != dt {
                return Err(format!("Gemm: C has type {}, A has {dt}", c.dtype));
            }
            if c.shape.len() > 2 {
                return Err(format!(
                    "Gemm: C shape {:?} does not broadcast to {shape:?}",
                    c.shape
                ));
            }
            Some(cast(c.load_broadcast(&shape), dt, acc_t))
        }
        None => None,
    };
    let (alpha, beta) = (f64::from(alpha), f64::from(beta));
    let value = if dt.is_float() {
        let scaled = if alpha == 1.0 {
            acc
        } else {
            Expr::binary(BinaryFn::Mul, acc, konst(alpha, acc_t))
        };
        let v = match c_load {
            Some(cl) if beta != 0.0 => {
                let ct = if beta == 1.0 {
                    cl
                } else {
                    Expr::binary(BinaryFn::Mul, cl, konst(beta, acc_t))
                };
                Expr::binary(BinaryFn::Add, scaled, ct)
            }
            _ => scaled,
        };
        cast(v, acc_t, dt)
    } else if alpha == 1.0 && (beta == 1.0 || c_load.is_none()) {
        match c_load {
            Some(cl) => Expr::binary(BinaryFn::Add, acc, cl),
            None => acc,
        }
    } else {
        // Integer Gemm with float coefficients: computed in f64, truncated.
        let f = |e: Expr| Expr::Cast(DType::F64, Box::new(e));
        let mut v = Expr::binary(BinaryFn::Mul, f(acc), konst(alpha, DType::F64));
        if let Some(cl) = c_load {
            let ct = Expr::binary(BinaryFn::Mul, f(cl), konst(beta, DType::F64));
            v = Expr::binary(BinaryFn::Add, v, ct);
        }
        Expr::Cast(dt, Box::new(v))
    };
    let y = cx.temp(dt, &shape);
    cx.emit(&y, value);
    Ok(y)
}
