//! The kernel IR interpreter: the executable specification of kernel IR
//! semantics, against which the code generators are tested.
//!
//! Values are held as f64 (integers and bools exactly, up to 2^53); each
//! store rounds to the destination buffer's dtype, and so does each load of
//! a float buffer, so f32 programs see f32 values between kernels.

use super::{Access, BinaryFn, BufKind, Expr, Kernel, Program, ReduceFn, UnaryFn, Var};
use crate::dtype::DType;
use crate::tensor::{Tensor, TensorData};
use std::collections::HashMap;

/// Runs `program` on `inputs` (in program input order).
pub fn run_program(program: &Program, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    if inputs.len() != program.inputs.len() {
        return Err(format!(
            "expected {} inputs, got {}",
            program.inputs.len(),
            inputs.len()
        ));
    }
    let mut mem: Vec<Vec<f64>> = program
        .buffers
        .iter()
        .map(|b| match &b.kind {
            BufKind::Weight(t) => t.to_f64_vec(),
            _ => vec![0.0; b.len()],
        })
        .collect();
    for (&id, t) in program.inputs.iter().zip(inputs) {
        let b = program.buffer(id);
        if t.dtype() != b.dtype || t.numel() != b.len() {
            return Err(format!(
                "input '{}': expected {}{:?}, got {}{:?}",
                b.name,
                b.dtype,
                b.shape,
                t.dtype(),
                t.shape()
            ));
        }
        mem[id.0] = t.to_f64_vec();
    }
    for k in &program.kernels {
        run_kernel(program, k, &mut mem).map_err(|e| format!("kernel '{}': {e}", k.name))?;
    }
    program
        .outputs
        .iter()
        .map(|&id| {
            let b = program.buffer(id);
            Tensor::new(b.shape.clone(), TensorData::from_f64(b.dtype, &mem[id.0]))
        })
        .collect()
}

struct Ctx<'a> {
    program: &'a Program,
    mem: &'a [Vec<f64>],
    vars: HashMap<Var, i64>,
}

fn run_kernel(program: &Program, k: &Kernel, mem: &mut [Vec<f64>]) -> Result<(), String> {
    let mut point = vec![0usize; k.domain.len()];
    if k.domain.contains(&0) {
        return Ok(());
    }
    let dst = program.buffer(k.store.buf).dtype;
    loop {
        let vars: HashMap<Var, i64> = point
            .iter()
            .enumerate()
            .map(|(i, &v)| (Var::Out(i), v as i64))
            .collect();
        let mut ctx = Ctx { program, mem, vars };
        let v = eval(&mut ctx, &k.value)?;
        let addr = address(&mut ctx, &k.store)?;
        let slot = mem[k.store.buf.0]
            .get_mut(addr)
            .ok_or_else(|| format!("store index {addr} out of bounds"))?;
        *slot = round_to(dst, v);
        // Next point, odometer order (last axis fastest).
        let mut axis = k.domain.len();
        loop {
            if axis == 0 {
                return Ok(());
            }
            axis -= 1;
            point[axis] += 1;
            if point[axis] < k.domain[axis] {
                break;
            }
            point[axis] = 0;
        }
    }
}

/// Rounds an f64 value the way a store to `dtype` does.
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F64 => v,
        DType::F32 => v as f32 as f64,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        DType::Bool => (v != 0.0) as u8 as f64,
        DType::I64 => v as i64 as f64,
        DType::I32 => v as i64 as i32 as f64,
        DType::I8 => v as i64 as i8 as f64,
        DType::U8 => v as i64 as u8 as f64,
    }
}

fn address(ctx: &mut Ctx, a: &Access) -> Result<usize, String> {
    let mut idx = a.index.offset;
    for (v, c) in &a.index.terms {
        idx += c * ctx
            .vars
            .get(v)
            .copied()
            .ok_or_else(|| format!("loop variable {v:?} is not bound"))?;
    }
    for g in &a.gathers {
        let raw = eval(ctx, &g.index)? as i64;
        let dim = g.dim as i64;
        let i = if raw < 0 { raw + dim } else { raw };
        if !(0..dim).contains(&i) {
            return Err(format!(
                "gather index {raw} is out of range for a dimension of {dim}"
            ));
        }
        idx += i * g.stride;
    }
    usize::try_from(idx).map_err(|_| format!("negative address {idx}"))
}

fn eval(ctx: &mut Ctx, e: &Expr) -> Result<f64, String> {
    Ok(match e {
        Expr::Const { value, dtype } => round_to(*dtype, *value),
        Expr::Index(v) => {
            *ctx.vars
                .get(v)
                .ok_or_else(|| format!("loop variable {v:?} is not bound"))? as f64
        }
        Expr::Load {
            access,
            guards,
            fill,
        } => {
            for g in guards {
                let mut i = g.index.offset;
                for (v, c) in &g.index.terms {
                    i += c * ctx.vars.get(v).copied().unwrap_or(0);
                }
                if i < g.lo || i >= g.hi {
                    return Ok(*fill);
                }
            }
            let addr = address(ctx, access)?;
            let buf = &ctx.mem[access.buf.0];
            *buf.get(addr).ok_or_else(|| {
                format!(
                    "load index {addr} out of bounds of '{}' ({} elements)",
                    ctx.program.buffer(access.buf).name,
                    buf.len()
                )
            })?
        }
        Expr::Unary(f, a) => {
            let x = eval(ctx, a)?;
            unary(*f, x)
        }
        Expr::Binary(f, a, b) => {
            let is_int = a.dtype(&ctx.program.buffers).is_int();
            let x = eval(ctx, a)?;
            let y = eval(ctx, b)?;
            binary(*f, x, y, is_int)?
        }
        Expr::Select(c, a, b) => {
            if eval(ctx, c)? != 0.0 {
                eval(ctx, a)?
            } else {
                eval(ctx, b)?
            }
        }
        Expr::Cast(d, a) => {
            let x = eval(ctx, a)?;
            round_to(*d, x)
        }
        Expr::Reduce { op, vars, body } => {
            let dt = body.dtype(&ctx.program.buffers);
            let mut acc = if dt.is_float() {
                op.identity()
            } else {
                op.int_identity(dt) as f64
            };
            reduce(ctx, *op, vars, body, &mut acc)?;
            acc
        }
    })
}

fn reduce(
    ctx: &mut Ctx,
    op: ReduceFn,
    vars: &[(usize, usize)],
    body: &Expr,
    acc: &mut f64,
) -> Result<(), String> {
    let Some(&(id, extent)) = vars.first() else {
        let x = eval(ctx, body)?;
        *acc = match op {
            ReduceFn::Sum => *acc + x,
            ReduceFn::Prod => *acc * x,
            ReduceFn::Max => max_nan(*acc, x),
            ReduceFn::Min => min_nan(*acc, x),
        };
        return Ok(());
    };
    for i in 0..extent {
        ctx.vars.insert(Var::Red(id), i as i64);
        reduce(ctx, op, &vars[1..], body, acc)?;
    }
    Ok(())
}

/// max/min that propagate NaN (as ONNX Max/Min and ReduceMax do).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// The exact (f64) meaning of each unary function.
pub fn unary(f: UnaryFn, x: f64) -> f64 {
    match f {
        UnaryFn::Neg => -x,
        UnaryFn::Abs => x.abs(),
        UnaryFn::Sqrt => x.sqrt(),
        UnaryFn::Rsqrt => 1.0 / x.sqrt(),
        UnaryFn::Recip => 1.0 / x,
        UnaryFn::Exp => x.exp(),
        UnaryFn::Log => x.ln(),
        UnaryFn::Erf => erf(x),
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryFn::Cos => x.cos(),
        UnaryFn::Sin => x.sin(),
        UnaryFn::Floor => x.floor(),
        UnaryFn::Ceil => x.ceil(),
        UnaryFn::Round => x.round_ties_even(),
        UnaryFn::Not => (x == 0.0) as u8 as f64,
    }
}

/// The exact (f64) meaning of each binary function; integer Div truncates.
pub fn binary(f: BinaryFn, x: f64, y: f64, is_int: bool) -> Result<f64, String> {
    let b = |v: bool| v as u8 as f64;
    Ok(match f {
        BinaryFn::Add => x + y,
        BinaryFn::Sub => x - y,
        BinaryFn::Mul => x * y,
        BinaryFn::Div if is_int => {
            if y == 0.0 {
                return Err("integer division by zero".into());
            }
            (x / y).trunc()
        }
        BinaryFn::Div => x / y,
        BinaryFn::Pow => x.powf(y),
        BinaryFn::Min => min_nan(x, y),
        BinaryFn::Max => max_nan(x, y),
        BinaryFn::Eq => b(x == y),
        BinaryFn::Lt => b(x < y),
        BinaryFn::Le => b(x <= y),
        BinaryFn::And => b(x != 0.0 && y != 0.0),
        BinaryFn::Or => b(x != 0.0 || y != 0.0),
        BinaryFn::Xor => b((x != 0.0) != (y != 0.0)),
    })
}

/// erf to double precision (Abramowitz–Stegun 7.1.26 is too coarse for a
/// specification; this is the complementary-error-function series of
/// Numerical Recipes `erfc` via Chebyshev fit, relative error < 1.2e-7,
/// refined by one Newton step on erf' = 2/√π·e^(−x²)).
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    if x >= 0.0 { r } else { -r }
}
