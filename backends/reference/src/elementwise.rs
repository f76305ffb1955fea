//! Element-wise ops: unary, binary and variadic arithmetic/logic, Where,
//! Clip, Cast/CastLike and the parameterised activations (Gelu, LeakyRelu,
//! HardSigmoid). Floats compute in f64, integers in i64 (wrapping), and the
//! result is stored in the output dtype.

use crate::broadcast::{broadcast_shapes, index_map};
use crate::common::{R, require_float, same_dtype, tensor};
use crate::special::{erf, erfc};
use crate::values::Vals;
use varc_ir::op::{BinaryOp, GeluApprox, UnaryOp, VariadicOp, unary_name};
use varc_ir::{DType, Tensor, TensorData};

/// Applies `f` to every f64 element of a float tensor; same dtype and shape.
pub fn map_float(x: &Tensor, what: &str, f: impl Fn(f64) -> f64) -> R<Tensor> {
    require_float(x, what)?;
    let v: Vec<f64> = x.to_f64_vec().into_iter().map(f).collect();
    tensor(x.shape().to_vec(), TensorData::from_f64(x.dtype(), &v))
}

fn float_unary(op: UnaryOp, x: f64) -> f64 {
    use UnaryOp::*;
    match op {
        Neg => -x,
        Abs => x.abs(),
        Sqrt => x.sqrt(),
        Reciprocal => 1.0 / x,
        Exp => x.exp(),
        Log => x.ln(),
        Erf => erf(x),
        Tanh => x.tanh(),
        Sigmoid => {
            if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                let e = x.exp();
                e / (1.0 + e)
            }
        }
        Cos => x.cos(),
        Sin => x.sin(),
        Tan => x.tan(),
        Atan => x.atan(),
        Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        Floor => x.floor(),
        Ceil => x.ceil(),
        Round => x.round_ties_even(),
        Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else if x.is_nan() {
                x
            } else {
                0.0
            }
        }
        // ln(1 + e^x), without overflow for large x.
        Softplus => {
            if x > 0.0 {
                x + (-x).exp().ln_1p()
            } else {
                x.exp().ln_1p()
            }
        }
        Silu => x * float_unary(Sigmoid, x),
        // Not, IsNaN and IsInf are handled before reaching here.
        Not | IsNaN | IsInf => f64::NAN,
    }
}

pub fn unary(op: UnaryOp, x: &Tensor) -> R<Tensor> {
    use UnaryOp::*;
    let name = unary_name(op);
    let shape = x.shape().to_vec();
    let dt = x.dtype();
    match op {
        Not => match x.data() {
            TensorData::Bool(v) => tensor(shape, TensorData::Bool(v.iter().map(|b| !b).collect())),
            _ => Err(format!("Not needs a bool tensor, got {dt}")),
        },
        IsNaN | IsInf => {
            require_float(x, name)?;
            let f = if op == IsNaN {
                f64::is_nan
            } else {
                f64::is_infinite
            };
            tensor(
                shape,
                TensorData::Bool(x.to_f64_vec().into_iter().map(f).collect()),
            )
        }
        _ if dt.is_float() => map_float(x, name, |v| float_unary(op, v)),
        Neg | Abs | Relu | Sign if dt.is_int() => {
            let v: Vec<i64> = x
                .to_i64_vec()
                .into_iter()
                .map(|v| match op {
                    Neg => v.wrapping_neg(),
                    Abs => v.wrapping_abs(),
                    Relu => v.max(0),
                    _ => v.signum(),
                })
                .collect();
            tensor(shape, TensorData::from_i64(dt, &v))
        }
        _ => Err(format!("{name} is not defined for {dt} tensors")),
    }
}

/// Gelu, exact (erf) or with the tanh approximation.
pub fn gelu(x: &Tensor, approx: GeluApprox) -> R<Tensor> {
    map_float(x, "Gelu", |v| match approx {
        // 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2), the latter exact in the
        // far negative tail.
        GeluApprox::None => 0.5 * v * erfc(-v / std::f64::consts::SQRT_2),
        GeluApprox::Tanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
    })
}

pub fn leaky_relu(x: &Tensor, alpha: f32) -> R<Tensor> {
    let a = alpha as f64;
    map_float(x, "LeakyRelu", |v| if v < 0.0 { a * v } else { v })
}

pub fn hard_sigmoid(x: &Tensor, alpha: f32, beta: f32) -> R<Tensor> {
    let (a, b) = (alpha as f64, beta as f64);
    map_float(x, "HardSigmoid", |v| (a * v + b).clamp(0.0, 1.0))
}

fn float_binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    use BinaryOp::*;
    match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div => a / b,
        Pow => a.powf(b),
        // Float Mod must have fmod = 1 per the spec; the ONNX reference
        // evaluator computes C fmod for fmod = 0 too, and so do we.
        Mod | Fmod => a % b,
        PRelu => {
            if a < 0.0 {
                a * b
            } else {
                a
            }
        }
        _ => f64::NAN,
    }
}

fn int_binary(op: BinaryOp, a: i64, b: i64) -> R<i64> {
    use BinaryOp::*;
    Ok(match op {
        Add => a.wrapping_add(b),
        Sub => a.wrapping_sub(b),
        Mul => a.wrapping_mul(b),
        Div | Mod | Fmod if b == 0 => return Err("integer division by zero".into()),
        Div => a.wrapping_div(b),
        Fmod => a.wrapping_rem(b),
        Mod => {
            let r = a.wrapping_rem(b);
            if r != 0 && ((r < 0) != (b < 0)) {
                r.wrapping_add(b)
            } else {
                r
            }
        }
        Pow => int_pow(a, b),
        PRelu => {
            if a < 0 {
                a.wrapping_mul(b)
            } else {
                a
            }
        }
        _ => return Err("internal: not an arithmetic op".into()),
    })
}

/// Integer power with wrapping; a negative exponent truncates 1/aⁿ toward zero.
fn int_pow(base: i64, exp: i64) -> i64 {
    if exp < 0 {
        return match base {
            1 => 1,
            -1 => {
                if exp % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let (mut result, mut b, mut e) = (1i64, base, exp as u64);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(b);
        }
        b = b.wrapping_mul(b);
        e >>= 1;
    }
    result
}

fn compare<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    use BinaryOp::*;
    match op {
        Equal => a == b,
        Less => a < b,
        LessOrEqual => a <= b,
        Greater => a > b,
        _ => a >= b,
    }
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> R<Tensor> {
    use BinaryOp::*;
    let name = varc_ir::op::binary_name(op);
    if op != Pow {
        same_dtype(a, b, name)?;
    }
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    let ma = index_map(a.shape(), &shape)?;
    let mb = index_map(b.shape(), &shape)?;
    let dt = a.dtype();
    let pairs = ma.iter().zip(&mb);
    let data = match op {
        And | Or | Xor => {
            let (TensorData::Bool(x), TensorData::Bool(y)) = (a.data(), b.data()) else {
                return Err(format!("{name} needs bool tensors, got {dt}"));
            };
            TensorData::Bool(
                pairs
                    .map(|(&i, &j)| match op {
                        And => x[i] && y[j],
                        Or => x[i] || y[j],
                        _ => x[i] ^ y[j],
                    })
                    .collect(),
            )
        }
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual => {
            if dt == DType::Bool && op != Equal {
                return Err(format!("{name} is not defined for bool tensors"));
            }
            let out: Vec<bool> = if dt.is_float() {
                let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
                pairs.map(|(&i, &j)| compare(op, x[i], y[j])).collect()
            } else {
                let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
                pairs.map(|(&i, &j)| compare(op, x[i], y[j])).collect()
            };
            TensorData::Bool(out)
        }
        _ if dt == DType::Bool || b.dtype() == DType::Bool => {
            return Err(format!("{name} is not defined for bool tensors"));
        }
        _ if dt.is_float() => {
            let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
            let out: Vec<f64> = pairs.map(|(&i, &j)| float_binary(op, x[i], y[j])).collect();
            TensorData::from_f64(dt, &out)
        }
        // Integer base, float exponent: computed in f64, truncated back.
        Pow if b.dtype().is_float() => {
            let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
            let out: Vec<f64> = pairs.map(|(&i, &j)| x[i].powf(y[j])).collect();
            TensorData::from_f64(dt, &out)
        }
        _ => {
            let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
            let out = pairs
                .map(|(&i, &j)| int_binary(op, x[i], y[j]))
                .collect::<R<Vec<i64>>>()?;
            TensorData::from_i64(dt, &out)
        }
    };
    tensor(shape, data)
}

/// Min / Max / Sum / Mean over broadcast operands. Min and Max propagate NaN.
pub fn variadic(op: VariadicOp, xs: &[&Tensor]) -> R<Tensor> {
    let first = *xs.first().ok_or("needs at least one input")?;
    for x in xs {
        same_dtype(first, x, "variadic op")?;
    }
    let dt = first.dtype();
    if dt == DType::Bool {
        return Err("not defined for bool tensors".into());
    }
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let shape = broadcast_shapes(&shapes)?;
    let n = xs.len();
    let maps = xs
        .iter()
        .map(|x| index_map(x.shape(), &shape))
        .collect::<R<Vec<_>>>()?;
    let count = maps.first().map_or(0, |m| m.len());
    let data = if dt.is_float() {
        let vals: Vec<Vec<f64>> = xs.iter().map(|x| x.to_f64_vec()).collect();
        let mut out = Vec::with_capacity(count);
        for e in 0..count {
            let mut acc = vals[0][maps[0][e]];
            for k in 1..n {
                let v = vals[k][maps[k][e]];
                acc = match op {
                    VariadicOp::Sum | VariadicOp::Mean => acc + v,
                    _ if acc.is_nan() || v.is_nan() => f64::NAN,
                    VariadicOp::Min => acc.min(v),
                    VariadicOp::Max => acc.max(v),
                };
            }
            if op == VariadicOp::Mean {
                acc /= n as f64;
            }
            out.push(acc);
        }
        TensorData::from_f64(dt, &out)
    } else {
        let vals: Vec<Vec<i64>> = xs.iter().map(|x| x.to_i64_vec()).collect();
        let mut out = Vec::with_capacity(count);
        for e in 0..count {
            let mut acc = vals[0][maps[0][e]];
            for k in 1..n {
                let v = vals[k][maps[k][e]];
                acc = match op {
                    VariadicOp::Sum | VariadicOp::Mean => acc.wrapping_add(v),
                    VariadicOp::Min => acc.min(v),
                    VariadicOp::Max => acc.max(v),
                };
            }
            if op == VariadicOp::Mean {
                acc = acc.wrapping_div(n as i64);
            }
            out.push(acc);
        }
        TensorData::from_i64(dt, &out)
    };
    tensor(shape, data)
}

/// Clip(x, min?, max?): a missing (or empty) bound does not clip; NaN stays
/// NaN; when min > max every element becomes max.
pub fn clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> R<Tensor> {
    let bound = |t: Option<&Tensor>, what: &str| -> R<Option<Tensor>> {
        match t {
            None => Ok(None),
            Some(t) if t.numel() == 0 => Ok(None),
            Some(t) => {
                same_dtype(x, t, what)?;
                if t.numel() != 1 {
                    return Err(format!(
                        "{what} must be a scalar, got shape {:?}",
                        t.shape()
                    ));
                }
                Ok(Some(t.clone()))
            }
        }
    };
    let (lo, hi) = (bound(min, "min")?, bound(max, "max")?);
    let dt = x.dtype();
    let shape = x.shape().to_vec();
    if dt.is_float() {
        let lo = lo.map(|t| t.to_f64_vec()[0]);
        let hi = hi.map(|t| t.to_f64_vec()[0]);
        let v: Vec<f64> = x
            .to_f64_vec()
            .into_iter()
            .map(|mut v| {
                if let Some(l) = lo
                    && v < l
                {
                    v = l;
                }
                if let Some(h) = hi
                    && v > h
                {
                    v = h;
                }
                v
            })
            .collect();
        tensor(shape, TensorData::from_f64(dt, &v))
    } else if dt.is_int() {
        let lo = lo.map(|t| t.to_i64_vec()[0]);
        let hi = hi.map(|t| t.to_i64_vec()[0]);
        let v: Vec<i64> = x
            .to_i64_vec()
            .into_iter()
            .map(|mut v| {
                if let Some(l) = lo {
                    v = v.max(l);
                }
                if let Some(h) = hi {
                    v = v.min(h);
                }
                v
            })
            .collect();
        tensor(shape, TensorData::from_i64(dt, &v))
    } else {
        Err(format!("Clip is not defined for {dt} tensors"))
    }
}

/// Where(cond, x, y) with three-way broadcasting.
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> R<Tensor> {
    let TensorData::Bool(c) = cond.data() else {
        return Err(format!("condition must be bool, got {}", cond.dtype()));
    };
    same_dtype(x, y, "Where")?;
    let shape = broadcast_shapes(&[cond.shape(), x.shape(), y.shape()])?;
    let mc = index_map(cond.shape(), &shape)?;
    let mx = index_map(x.shape(), &shape)?;
    let my = index_map(y.shape(), &shape)?;
    fn pick<T: Copy>(
        c: &[bool],
        a: &[T],
        b: &[T],
        mc: &[usize],
        ma: &[usize],
        mb: &[usize],
    ) -> Vec<T> {
        (0..mc.len())
            .map(|e| if c[mc[e]] { a[ma[e]] } else { b[mb[e]] })
            .collect()
    }
    let vals = match (Vals::of(x), Vals::of(y)) {
        (Vals::F(a), Vals::F(b)) => Vals::F(pick(c, &a, &b, &mc, &mx, &my)),
        (Vals::I(a), Vals::I(b)) => Vals::I(pick(c, &a, &b, &mc, &mx, &my)),
        (Vals::B(a), Vals::B(b)) => Vals::B(pick(c, &a, &b, &mc, &mx, &my)),
        _ => return Err("internal: operand kinds differ".into()),
    };
    vals.into_tensor(x.dtype(), shape)
}

/// ONNX Cast (float→int truncates toward zero and saturates, →bool is x≠0).
pub fn cast(x: &Tensor, to: DType) -> Tensor {
    x.cast(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn boolt(shape: &[usize], v: &[bool]) -> Tensor {
        Tensor::new(shape.to_vec(), TensorData::Bool(v.to_vec())).unwrap()
    }

    #[test]
    fn broadcasting_add() {
        let a = f32t(&[2, 1], &[1.0, 2.0]);
        let b = f32t(&[3], &[10.0, 20.0, 30.0]);
        let c = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.as_f32().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        // scalar with empty
        let e = f32t(&[0, 3], &[]);
        let s = Tensor::scalar_f32(1.0);
        assert_eq!(binary(BinaryOp::Mul, &e, &s).unwrap().shape(), &[0, 3]);
        assert!(
            binary(
                BinaryOp::Add,
                &f32t(&[2], &[1.0, 2.0]),
                &f32t(&[3], &[1.0; 3])
            )
            .is_err()
        );
        assert!(binary(BinaryOp::Add, &f32t(&[1], &[1.0]), &i64t(&[1], &[1])).is_err());
    }

    #[test]
    fn integer_semantics() {
        let a = i64t(&[4], &[-7, 7, -7, 7]);
        let b = i64t(&[4], &[2, -2, -2, 2]);
        assert_eq!(
            binary(BinaryOp::Div, &a, &b).unwrap().to_i64_vec(),
            vec![-3, -3, 3, 3]
        );
        assert_eq!(
            binary(BinaryOp::Mod, &a, &b).unwrap().to_i64_vec(),
            vec![1, -1, -1, 1]
        );
        assert_eq!(
            binary(BinaryOp::Fmod, &a, &b).unwrap().to_i64_vec(),
            vec![-1, 1, -1, 1]
        );
        assert_eq!(
            binary(BinaryOp::Pow, &a, &b).unwrap().to_i64_vec(),
            vec![49, 0, 0, 49]
        );
        let z = i64t(&[1], &[0]);
        let e = binary(BinaryOp::Div, &a, &z).unwrap_err();
        assert!(e.contains("division by zero"), "{e}");
        // i32 wraps
        let big = Tensor::new(vec![1], TensorData::I32(vec![i32::MAX])).unwrap();
        let one = Tensor::new(vec![1], TensorData::I32(vec![1])).unwrap();
        assert_eq!(
            binary(BinaryOp::Add, &big, &one).unwrap().data(),
            &TensorData::I32(vec![i32::MIN])
        );
        // u8 wraps
        let a = Tensor::new(vec![1], TensorData::U8(vec![3])).unwrap();
        let b = Tensor::new(vec![1], TensorData::U8(vec![5])).unwrap();
        assert_eq!(
            binary(BinaryOp::Sub, &a, &b).unwrap().data(),
            &TensorData::U8(vec![254])
        );
    }

    #[test]
    fn float_mod_and_pow() {
        let a = f32t(&[2], &[-4.5, 4.5]);
        let b = f32t(&[2], &[2.0, -2.0]);
        assert_eq!(
            binary(BinaryOp::Fmod, &a, &b).unwrap().as_f32().unwrap(),
            &[-0.5, 0.5]
        );
        // float base, integer exponent
        let base = f32t(&[3], &[-2.0, 2.0, 0.5]);
        let ex = i64t(&[3], &[3, -1, 2]);
        assert_eq!(
            binary(BinaryOp::Pow, &base, &ex).unwrap().as_f32().unwrap(),
            &[-8.0, 0.5, 0.25]
        );
        // integer base, float exponent
        let r = binary(BinaryOp::Pow, &i64t(&[1], &[9]), &f32t(&[1], &[0.5])).unwrap();
        assert_eq!(r.to_i64_vec(), vec![3]);
    }

    #[test]
    fn comparisons_and_logic() {
        let a = f32t(&[3], &[1.0, f32::NAN, 3.0]);
        let b = f32t(&[1], &[1.0]);
        let eq = binary(BinaryOp::Equal, &a, &b).unwrap();
        assert_eq!(eq.data(), &TensorData::Bool(vec![true, false, false]));
        let ge = binary(BinaryOp::GreaterOrEqual, &a, &b).unwrap();
        assert_eq!(ge.data(), &TensorData::Bool(vec![true, false, true]));
        let x = boolt(&[2], &[true, false]);
        let y = boolt(&[2, 1], &[true, false]);
        assert_eq!(
            binary(BinaryOp::Xor, &x, &y).unwrap().data(),
            &TensorData::Bool(vec![false, true, true, false])
        );
        assert!(binary(BinaryOp::And, &a, &a).is_err());
        assert!(binary(BinaryOp::Add, &x, &x).is_err());
    }

    #[test]
    fn unaries() {
        let x = f32t(&[6], &[-1.5, -0.5, 0.5, 1.5, 2.5, f32::NAN]);
        let r = unary(UnaryOp::Round, &x).unwrap();
        let v = r.as_f32().unwrap();
        assert_eq!(&v[..5], &[-2.0, -0.0, 0.0, 2.0, 2.0]);
        assert!(v[5].is_nan());
        let s = unary(UnaryOp::Sign, &x).unwrap();
        assert_eq!(&s.as_f32().unwrap()[..5], &[-1.0, -1.0, 1.0, 1.0, 1.0]);
        assert_eq!(
            unary(UnaryOp::IsNaN, &x).unwrap().data(),
            &TensorData::Bool(vec![false, false, false, false, false, true])
        );
        let i = i64t(&[3], &[-3, 0, i64::MIN]);
        assert_eq!(
            unary(UnaryOp::Abs, &i).unwrap().to_i64_vec(),
            vec![3, 0, i64::MIN]
        );
        assert_eq!(
            unary(UnaryOp::Relu, &i).unwrap().to_i64_vec(),
            vec![0, 0, 0]
        );
        assert!(unary(UnaryOp::Exp, &i).is_err());
        assert!(unary(UnaryOp::Not, &x).is_err());
        let sp = unary(UnaryOp::Softplus, &f32t(&[2], &[1000.0, 0.0])).unwrap();
        assert_eq!(sp.as_f32().unwrap(), &[1000.0, std::f32::consts::LN_2]);
        let sg = unary(UnaryOp::Sigmoid, &f32t(&[3], &[-1000.0, 0.0, 1000.0])).unwrap();
        assert_eq!(sg.as_f32().unwrap(), &[0.0, 0.5, 1.0]);
        // SiLU saturates to 0 and to x without overflow.
        let si = unary(UnaryOp::Silu, &f32t(&[4], &[-1000.0, 0.0, 2.0, 1000.0])).unwrap();
        let want = 2.0 / (1.0 + (-2.0f64).exp());
        assert_eq!(si.as_f32().unwrap(), &[-0.0, 0.0, want as f32, 1000.0]);
    }

    #[test]
    fn activations() {
        let x = f32t(&[3], &[-1.0, 0.0, 2.0]);
        let g = gelu(&x, GeluApprox::None).unwrap();
        let want = [-0.15865525393145707f64, 0.0, 1.9544997361036416];
        for (a, b) in g.as_f32().unwrap().iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        let t = gelu(&x, GeluApprox::Tanh).unwrap();
        let want = [-0.15880800939172324f64, 0.0, 1.9545976940877752];
        for (a, b) in t.as_f32().unwrap().iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(
            leaky_relu(&x, 0.1).unwrap().as_f32().unwrap(),
            &[-0.1, 0.0, 2.0]
        );
        assert_eq!(
            hard_sigmoid(&x, 0.5, 0.5).unwrap().as_f32().unwrap(),
            &[0.0, 0.5, 1.0]
        );
    }

    #[test]
    fn clip_bounds() {
        let x = f32t(&[4], &[-2.0, 0.5, 3.0, f32::NAN]);
        let lo = Tensor::scalar_f32(0.0);
        let hi = Tensor::scalar_f32(1.0);
        let r = clip(&x, Some(&lo), Some(&hi)).unwrap();
        assert_eq!(&r.as_f32().unwrap()[..3], &[0.0, 0.5, 1.0]);
        assert!(r.as_f32().unwrap()[3].is_nan());
        let r = clip(&x, None, Some(&lo)).unwrap();
        assert_eq!(&r.as_f32().unwrap()[..3], &[-2.0, 0.0, 0.0]);
        // min > max: everything becomes max
        let r = clip(&x, Some(&hi), Some(&lo)).unwrap();
        assert_eq!(&r.as_f32().unwrap()[..3], &[0.0, 0.0, 0.0]);
        assert!(clip(&x, Some(&i64t(&[], &[0])), None).is_err());
        let xi = i64t(&[3], &[-5, 5, 50]);
        let r = clip(&xi, Some(&i64t(&[], &[0])), Some(&i64t(&[], &[10]))).unwrap();
        assert_eq!(r.to_i64_vec(), vec![0, 5, 10]);
    }

    #[test]
    fn where_and_variadic() {
        let c = boolt(&[2, 1], &[true, false]);
        let x = i64t(&[2], &[1, 2]);
        let y = i64t(&[], &[9]);
        let r = where_(&c, &x, &y).unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        assert_eq!(r.to_i64_vec(), vec![1, 2, 9, 9]);
        assert!(where_(&x, &x, &y).is_err());
        let a = f32t(&[2], &[1.0, f32::NAN]);
        let b = f32t(&[1], &[3.0]);
        let m = variadic(VariadicOp::Max, &[&a, &b]).unwrap();
        assert_eq!(m.as_f32().unwrap()[0], 3.0);
        assert!(m.as_f32().unwrap()[1].is_nan());
        let mean = variadic(VariadicOp::Mean, &[&f32t(&[1], &[1.0]), &b]).unwrap();
        assert_eq!(mean.as_f32().unwrap(), &[2.0]);
    }
}
