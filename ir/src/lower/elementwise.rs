//! Lowering of elementwise ops: one map kernel per op over the output's
//! shape, operands loaded with numpy broadcasting. Ops without a kernel
//! function of their own are written as expressions of the primitive
//! [`UnaryFn`]/[`BinaryFn`]s (Relu = max(x, 0), Sign and the activations by
//! selects, Softplus in a stable form, ...), exactly as ONNX defines them.

use super::{Cx, View, input, known_shape};
use crate::dtype::DType;
use crate::graph::TypeInfo;
use crate::kernel::activation::Activation;
use crate::kernel::{BinaryFn, Expr, UnaryFn};
use crate::op::{BinaryOp, GeluApprox, Op, UnaryOp, VariadicOp, binary_name, unary_name};

pub fn lower(
    cx: &mut Cx,
    op: &Op,
    ins: &[Option<View>],
    outs: &[TypeInfo],
) -> Result<Vec<View>, String> {
    let out_ty = outs.first().ok_or("the node has no output")?;
    let shape = known_shape(out_ty)?;
    let value = match op {
        Op::Unary(u) => {
            let x = input(ins, 0)?;
            let (dt, v) = widen(x, &shape);
            narrow(dt, out_ty.dtype, unary(*u, dt, v)?)
        }
        Op::Binary(b) => {
            let (a, c) = (input(ins, 0)?, input(ins, 1)?);
            binary(
                *b,
                a.dtype,
                c.dtype,
                a.load_broadcast(&shape),
                c.load_broadcast(&shape),
            )?
        }
        Op::Variadic(v) => {
            let xs = ins
                .iter()
                .enumerate()
                .map(|(i, x)| x.as_ref().ok_or_else(|| format!("missing input {i}")))
                .collect::<Result<Vec<&View>, String>>()?;
            let first = *xs.first().ok_or("needs at least one input")?;
            if xs.len() == 1 && first.shape == shape {
                return Ok(vec![first.clone()]);
            }
            variadic(*v, &xs, &shape)?
        }
        Op::Clip => clip(ins, &shape)?,
        Op::Where => {
            let (c, x, y) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
            if c.dtype != DType::Bool {
                return Err(format!("the condition must be bool, got {}", c.dtype));
            }
            same_dtype(x.dtype, y.dtype, "Where")?;
            Expr::select(
                c.load_broadcast(&shape),
                x.load_broadcast(&shape),
                y.load_broadcast(&shape),
            )
        }
        Op::Cast { .. } | Op::CastLike => {
            let x = input(ins, 0)?;
            let to = out_ty.dtype;
            if x.dtype == to {
                return Ok(vec![x.clone()]);
            }
            Expr::Cast(to, Box::new(x.load_broadcast(&shape)))
        }
        Op::Gelu { approximate } => {
            let x = input(ins, 0)?;
            require_float(x.dtype, "Gelu")?;
            let (dt, v) = widen(x, &shape);
            narrow(dt, out_ty.dtype, gelu(*approximate, dt, &v))
        }
        Op::LeakyRelu { alpha } => {
            let x = input(ins, 0)?;
            require_float(x.dtype, "LeakyRelu")?;
            let (dt, x) = widen(x, &shape);
            let v = || x.clone();
            // x < 0 ? alpha·x : x
            let y = Expr::select(lt(v(), c(dt, 0.0)), mul(c(dt, *alpha as f64), v()), v());
            narrow(dt, out_ty.dtype, y)
        }
        Op::HardSigmoid { alpha, beta } => {
            let x = input(ins, 0)?;
            require_float(x.dtype, "HardSigmoid")?;
            let (dt, x) = widen(x, &shape);
            // clamp(alpha·x + beta, 0, 1), NaN propagating.
            let y = add(mul(c(dt, *alpha as f64), x), c(dt, *beta as f64));
            let y = bin(BinaryFn::Max, c(dt, 0.0), bin(BinaryFn::Min, c(dt, 1.0), y));
            narrow(dt, out_ty.dtype, y)
        }
        other => return Err(format!("{} is not an elementwise op", other.kind())),
    };
    let out = cx.temp(out_ty.dtype, &shape);
    cx.emit(&out, value);
    Ok(vec![out])
}

/// The operand loaded for computing: f16/bf16 widened to f32, so that the
/// op's constants (1/√2, 0.044715, alpha, ...) and intermediate values keep
/// f32 precision; other types as they are.
fn widen(x: &View, shape: &[usize]) -> (DType, Expr) {
    let v = x.load_broadcast(shape);
    match x.dtype {
        DType::F16 | DType::BF16 => (DType::F32, Expr::Cast(DType::F32, Box::new(v))),
        dt => (dt, v),
    }
}

/// A value computed in `dt` brought to the output type `out` (a no-op
/// unless the operands were widened and the result is a float).
fn narrow(dt: DType, out: DType, v: Expr) -> Expr {
    if dt == out || !out.is_float() {
        v
    } else {
        Expr::Cast(out, Box::new(v))
    }
}

fn c(dtype: DType, value: f64) -> Expr {
    Expr::Const { value, dtype }
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}

fn add(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Add, a, b)
}

fn sub(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Sub, a, b)
}

fn mul(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Mul, a, b)
}

fn div(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Div, a, b)
}

fn lt(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Lt, a, b)
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::unary(f, a)
}

fn require_float(dt: DType, what: &str) -> Result<(), String> {
    if dt.is_float() {
        Ok(())
    } else {
        Err(format!("{what} is not defined for {dt} tensors"))
    }
}

fn same_dtype(a: DType, b: DType, what: &str) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{what}: operand element types differ ({a} vs {b})"))
    }
}

/// `log(1 + t)` accurate for small `t` in any float precision (Goldberg's
/// trick: with `u = 1 + t` rounded, `log(u)·t/(u − 1)` cancels the rounding
/// of `u`; `u == 1` means `t` is below half an ulp of 1, where log1p(t) = t).
fn log1p(dt: DType, t: impl Fn() -> Expr) -> Expr {
    let u = || add(c(dt, 1.0), t());
    Expr::select(
        bin(BinaryFn::Eq, u(), c(dt, 1.0)),
        t(),
        div(mul(un(UnaryFn::Log, u()), t()), sub(u(), c(dt, 1.0))),
    )
}

/// Cephes `atanf`: range reduction to |x| ≤ tan(π/8), then a degree-9 odd
/// polynomial; relative error about 1e-7 (f32 precision) over the whole line.
fn atan(dt: DType, x: impl Fn() -> Expr) -> Expr {
    let ax = || un(UnaryFn::Abs, x());
    let big = || lt(c(dt, 2.414_213_562_373_095), ax());
    let mid = || lt(c(dt, 0.414_213_562_373_095_1), ax());
    // Reduced argument and offset.
    let r = || {
        Expr::select(
            big(),
            div(c(dt, -1.0), ax()),
            Expr::select(
                mid(),
                div(sub(ax(), c(dt, 1.0)), add(ax(), c(dt, 1.0))),
                ax(),
            ),
        )
    };
    let y0 = Expr::select(
        big(),
        c(dt, std::f64::consts::FRAC_PI_2),
        Expr::select(mid(), c(dt, std::f64::consts::FRAC_PI_4), c(dt, 0.0)),
    );
    let z = || mul(r(), r());
    let p = sub(
        mul(
            add(
                mul(
                    sub(
                        mul(c(dt, 8.053_744_495_38e-2), z()),
                        c(dt, 1.387_768_560_32e-1),
                    ),
                    z(),
                ),
                c(dt, 1.997_771_064_78e-1),
            ),
            z(),
        ),
        c(dt, 3.333_294_915_39e-1),
    );
    let y = add(add(mul(mul(p, z()), r()), r()), y0);
    // Restore the sign (atan is odd; NaN stays NaN through y).
    Expr::select(lt(x(), c(dt, 0.0)), un(UnaryFn::Neg, y.clone()), y)
}

fn unary(u: UnaryOp, dt: DType, x: Expr) -> Result<Expr, String> {
    use UnaryOp::*;
    let name = unary_name(u);
    let v = || x.clone();
    if u == Not {
        if dt != DType::Bool {
            return Err(format!("Not needs a bool tensor, got {dt}"));
        }
        return Ok(un(UnaryFn::Not, v()));
    }
    if dt.is_int() {
        let zero = || c(dt, 0.0);
        return Ok(match u {
            Neg => un(UnaryFn::Neg, v()),
            Abs => un(UnaryFn::Abs, v()),
            Relu => bin(BinaryFn::Max, v(), zero()),
            Sign => Expr::select(
                lt(zero(), v()),
                c(dt, 1.0),
                Expr::select(lt(v(), zero()), c(dt, -1.0), zero()),
            ),
            _ => return Err(format!("{name} is not defined for {dt} tensors")),
        });
    }
    require_float(dt, name)?;
    let f = |f: UnaryFn| Ok(un(f, v()));
    match u {
        Neg => f(UnaryFn::Neg),
        Abs => f(UnaryFn::Abs),
        Sqrt => f(UnaryFn::Sqrt),
        Reciprocal => f(UnaryFn::Recip),
        Exp => f(UnaryFn::Exp),
        Log => f(UnaryFn::Log),
        Erf => f(UnaryFn::Erf),
        Tanh => f(UnaryFn::Tanh),
        Sigmoid => f(UnaryFn::Sigmoid),
        Cos => f(UnaryFn::Cos),
        Sin => f(UnaryFn::Sin),
        Floor => f(UnaryFn::Floor),
        Ceil => f(UnaryFn::Ceil),
        Round => f(UnaryFn::Round),
        Tan => Ok(div(un(UnaryFn::Sin, v()), un(UnaryFn::Cos, v()))),
        Atan => {
            if dt == DType::F64 {
                return Err(
                    "Atan on f64 is not supported by the compiled backends: the kernel IR has no atan, and its \
                     polynomial form is accurate to f32 precision only"
                        .into(),
                );
            }
            Ok(atan(dt, v))
        }
        // max(x, 0) propagates NaN as ONNX Relu does.
        Relu => Ok(bin(BinaryFn::Max, v(), c(dt, 0.0))),
        // 1 for x > 0, -1 for x < 0, x itself for ±0 and NaN.
        Sign => Ok(Expr::select(
            lt(c(dt, 0.0), v()),
            c(dt, 1.0),
            Expr::select(lt(v(), c(dt, 0.0)), c(dt, -1.0), v()),
        )),
        // ln(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x,
        // full precision for very negative x.
        Softplus => {
            let t = || un(UnaryFn::Exp, un(UnaryFn::Neg, un(UnaryFn::Abs, v())));
            Ok(add(bin(BinaryFn::Max, v(), c(dt, 0.0)), log1p(dt, t)))
        }
        Silu => Ok(Activation::Silu.build(dt, &x)),
        // NaN is the one value unequal to itself.
        IsNaN => Ok(un(UnaryFn::Not, bin(BinaryFn::Eq, v(), v()))),
        IsInf => Ok(bin(
            BinaryFn::Eq,
            un(UnaryFn::Abs, v()),
            c(dt, f64::INFINITY),
        )),
        Not => unreachable!("handled above"),
    }
}

fn binary(b: BinaryOp, da: DType, db: DType, x: Expr, y: Expr) -> Result<Expr, String> {
    use BinaryOp::*;
    let name = binary_name(b);
    if b != Pow {
        same_dtype(da, db, name)?;
    }
    let (a, c2) = (|| x.clone(), || y.clone());
    match b {
        And | Or | Xor => {
            if da != DType::Bool {
                return Err(format!("{name} needs bool tensors, got {da}"));
            }
            let f = match b {
                And => BinaryFn::And,
                Or => BinaryFn::Or,
                _ => BinaryFn::Xor,
            };
            return Ok(bin(f, a(), c2()));
        }
        Equal => return Ok(bin(BinaryFn::Eq, a(), c2())),
        Less | LessOrEqual | Greater | GreaterOrEqual => {
            if da == DType::Bool {
                return Err(format!("{name} is not defined for bool tensors"));
            }
            return Ok(match b {
                Less => lt(a(), c2()),
                LessOrEqual => bin(BinaryFn::Le, a(), c2()),
                Greater => lt(c2(), a()),
                _ => bin(BinaryFn::Le, c2(), a()),
            });
        }
        _ => {}
    }
    if da == DType::Bool || db == DType::Bool {
        return Err(format!("{name} is not defined for bool tensors"));
    }
    Ok(match b {
        Add => add(a(), c2()),
        Sub => sub(a(), c2()),
        // Integer Div truncates toward zero in the kernel IR, as ONNX
        // (and C) integer division does.
        Mul => mul(a(), c2()),
        Div => div(a(), c2()),
        // Mixed types: the exponent is brought to the base's type (a float
        // base), or the power is taken in the exponent's float type and
        // truncated back (an integer base, as the reference does).
        Pow if da.is_float() && da == db => bin(BinaryFn::Pow, a(), c2()),
        Pow if da.is_float() => bin(BinaryFn::Pow, a(), Expr::Cast(da, Box::new(c2()))),
        Pow if db.is_float() => Expr::Cast(
            da,
            Box::new(bin(BinaryFn::Pow, Expr::Cast(db, Box::new(a())), c2())),
        ),
        // Integers: a negative exponent truncates 1/a^n toward zero (1 and
        // -1 stay ±1, anything else gives 0), as the reference does.
        Pow => {
            let e = || {
                if da == db {
                    c2()
                } else {
                    Expr::Cast(da, Box::new(c2()))
                }
            };
            let k = |v: f64| c(da, v);
            let even = bin(
                BinaryFn::Eq,
                sub(e(), mul(div(e(), k(2.0)), k(2.0))),
                k(0.0),
            );
            let negative = Expr::select(
                bin(BinaryFn::Eq, a(), k(1.0)),
                k(1.0),
                Expr::select(
                    bin(BinaryFn::Eq, a(), k(-1.0)),
                    Expr::select(even, k(1.0), k(-1.0)),
                    k(0.0),
                ),
            );
            Expr::select(lt(e(), k(0.0)), negative, bin(BinaryFn::Pow, a(), e()))
        }
        Mod | Fmod if da.is_float() => {
            return Err(format!(
                "{name} on {da} tensors is not supported by the compiled backends: the kernel IR has no \
                 remainder function, and a − trunc(a/b)·b is not exact in floating point"
            ));
        }
        // Integers: r = a − trunc(a/b)·b (the sign of the dividend, C fmod);
        // Mod (fmod = 0) moves a nonzero r to the divisor's sign by adding b.
        Fmod => sub(a(), mul(div(a(), c2()), c2())),
        Mod => {
            let r = || sub(a(), mul(div(a(), c2()), c2()));
            let zero = || c(da, 0.0);
            let fix = bin(
                BinaryFn::And,
                un(UnaryFn::Not, bin(BinaryFn::Eq, r(), zero())),
                bin(BinaryFn::Xor, lt(r(), zero()), lt(c2(), zero())),
            );
            Expr::select(fix, add(r(), c2()), r())
        }
        // x < 0 ? x·slope : x
        PRelu => Expr::select(lt(a(), c(da, 0.0)), mul(a(), c2()), a()),
        _ => unreachable!("comparisons and logic handled above"),
    })
}

fn variadic(v: VariadicOp, xs: &[&View], shape: &[usize]) -> Result<Expr, String> {
    let dt = xs[0].dtype;
    for x in xs {
        same_dtype(dt, x.dtype, "variadic op")?;
    }
    if dt == DType::Bool {
        return Err("not defined for bool tensors".into());
    }
    let f = match v {
        VariadicOp::Sum | VariadicOp::Mean => BinaryFn::Add,
        VariadicOp::Min => BinaryFn::Min,
        VariadicOp::Max => BinaryFn::Max,
    };
    let mut acc = xs[0].load_broadcast(shape);
    for x in &xs[1..] {
        acc = bin(f, acc, x.load_broadcast(shape));
    }
    if v == VariadicOp::Mean {
        // Integer Mean truncates, as integer Div does.
        acc = div(acc, c(dt, xs.len() as f64));
    }
    Ok(acc)
}

/// Clip(x, min?, max?): a missing or empty bound does not clip; the bounds
/// may be run-time tensors (one element each). `v < lo ? lo : v`, then
/// `v > hi ? hi : v`: NaN stays NaN and min > max gives max, as ONNX says.
fn clip(ins: &[Option<View>], shape: &[usize]) -> Result<Expr, String> {
    let x = input(ins, 0)?;
    let dt = x.dtype;
    if dt == DType::Bool {
        return Err("Clip is not defined for bool tensors".into());
    }
    let bound = |slot: usize, what: &str| -> Result<Option<Expr>, String> {
        match ins.get(slot).and_then(|b| b.as_ref()) {
            None => Ok(None),
            Some(b) if b.numel() == 0 => Ok(None),
            Some(b) => {
                same_dtype(dt, b.dtype, what)?;
                if b.numel() != 1 {
                    return Err(format!("{what} must be a scalar, got shape {:?}", b.shape));
                }
                Ok(Some(b.load(&vec![Default::default(); b.shape.len()])))
            }
        }
    };
    let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
    let mut v = x.load_broadcast(shape);
    if let Some(lo) = lo {
        v = Expr::select(lt(v.clone(), lo.clone()), lo, v);
    }
    if let Some(hi) = hi {
        v = Expr::select(lt(hi.clone(), v.clone()), hi, v);
    }
    Ok(v)
}

/// GELU through its one definition (shared with the code generators'
/// recognition of it, see [`crate::kernel::activation`]).
fn gelu(approx: GeluApprox, dt: DType, x: &Expr) -> Expr {
    match approx {
        GeluApprox::None => Activation::GeluErf.build(dt, x),
        GeluApprox::Tanh => Activation::GeluTanh.build(dt, x),
    }
}
