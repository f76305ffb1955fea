//! GELU and SiLU as kernel-IR expressions: the one definition lowering
//! writes ([`Activation::build`]) and code generators recognise
//! ([`split`]) to run the activation through a runtime routine after
//! computing its argument.
//!
//! Recognition rebuilds the expression from the candidate argument and
//! compares, so it accepts exactly what lowering produces (whatever kernel
//! fusion substituted for the argument) and nothing that merely looks alike.

use super::{BinaryFn, Expr, UnaryFn};
use crate::dtype::DType;

/// An activation with a runtime routine (`varc_runtime::ukernel::activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    GeluTanh,
    /// `0.5·x·(1 + erf(x/√2))`
    GeluErf,
    /// `x·sigmoid(x)`
    Silu,
}

impl Activation {
    pub const ALL: [Activation; 3] = [Activation::GeluTanh, Activation::GeluErf, Activation::Silu];

    /// The number the runtime routine takes for this activation.
    pub fn code(self) -> u32 {
        match self {
            Activation::GeluTanh => 0,
            Activation::GeluErf => 1,
            Activation::Silu => 2,
        }
    }

    /// The inverse of [`Activation::code`].
    pub fn from_code(code: u32) -> Option<Activation> {
        Activation::ALL.into_iter().find(|a| a.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::GeluTanh => "gelu(tanh)",
            Activation::GeluErf => "gelu(erf)",
            Activation::Silu => "silu",
        }
    }

    /// The activation of `x`, computed in `dt` (its constants' type).
    pub fn build(self, dt: DType, x: &Expr) -> Expr {
        let c = |value: f64| Expr::Const { value, dtype: dt };
        let mul = |a, b| Expr::binary(BinaryFn::Mul, a, b);
        let add = |a, b| Expr::binary(BinaryFn::Add, a, b);
        let v = || x.clone();
        match self {
            Activation::Silu => mul(v(), Expr::unary(UnaryFn::Sigmoid, v())),
            Activation::GeluErf => mul(
                mul(c(0.5), v()),
                add(
                    c(1.0),
                    Expr::unary(UnaryFn::Erf, mul(v(), c(std::f64::consts::FRAC_1_SQRT_2))),
                ),
            ),
            Activation::GeluTanh => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                let cube = mul(mul(v(), v()), v());
                let inner = mul(c(k), add(v(), mul(c(0.044715), cube)));
                mul(
                    mul(c(0.5), v()),
                    add(c(1.0), Expr::unary(UnaryFn::Tanh, inner)),
                )
            }
        }
    }
}

/// `e` as `activation(x)`: the candidate `x` is read off the outer shape
/// (`Mul(Mul(0.5, x), …)` for GELU, `Mul(x, Sigmoid(…))` for SiLU) and
/// accepted only if [`Activation::build`] of it gives `e` back exactly.
pub fn split(e: &Expr) -> Option<(Activation, Expr)> {
    let Expr::Binary(BinaryFn::Mul, a, b) = e else {
        return None;
    };
    let accept =
        |act: Activation, dt: DType, x: &Expr| (act.build(dt, x) == *e).then(|| (act, x.clone()));
    if let Expr::Binary(BinaryFn::Mul, half, x) = &**a
        && let Expr::Const { value, dtype } = **half
        && value == 0.5
    {
        let gelu = match &**b {
            Expr::Binary(BinaryFn::Add, _, t) => match &**t {
                Expr::Unary(UnaryFn::Tanh, _) => Some(Activation::GeluTanh),
                Expr::Unary(UnaryFn::Erf, _) => Some(Activation::GeluErf),
                _ => None,
            },
            _ => None,
        };
        if let Some(r) = gelu.and_then(|act| accept(act, dtype, x)) {
            return Some(r);
        }
    }
    if let Expr::Unary(UnaryFn::Sigmoid, _) = &**b {
        // SiLU's builder uses no constant, so any dtype rebuilds it.
        return accept(Activation::Silu, DType::F32, a);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, TypeInfo, Value, ValueRef};
    use crate::infer::{NoFold, infer_types};
    use crate::kernel::{Affine, BufId, fuse};
    use crate::lower::lower;
    use crate::op::{BinaryOp, GeluApprox, Op, UnaryOp};
    use crate::shape::Shape;

    /// `Add(x, bias)` then `op`, lowered and fused: the last kernel's value.
    fn lowered(op: Op) -> Expr {
        let mut g = Graph::default();
        let f32_ty = |dims: &[usize]| TypeInfo {
            dtype: DType::F32,
            shape: Shape::known(dims),
        };
        let x = g.add_input("x", f32_ty(&[3, 5]));
        let b = g.add_input("b", f32_ty(&[5]));
        let (x, b) = (ValueRef { node: x, slot: 0 }, ValueRef { node: b, slot: 0 });
        let s = g
            .add_node(
                "add",
                Op::Binary(BinaryOp::Add),
                vec![Some(x), Some(b)],
                vec![Value::named("s")],
            )
            .unwrap();
        let s = ValueRef { node: s, slot: 0 };
        let y = g
            .add_node("act", op, vec![Some(s)], vec![Value::named("y")])
            .unwrap();
        g.outputs = vec![ValueRef { node: y, slot: 0 }];
        let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
        let p = fuse::fuse(lower(&g, &inferred.consts).unwrap());
        assert_eq!(p.kernels.len(), 1, "Add fuses into the activation");
        p.kernels[0].value.clone()
    }

    fn is_compound_add(x: &Expr) -> bool {
        matches!(x, Expr::Binary(BinaryFn::Add, a, b)
            if matches!(**a, Expr::Load { .. }) && matches!(**b, Expr::Load { .. }))
    }

    #[test]
    fn matches_what_lowering_produces() {
        let cases = [
            (
                Op::Gelu {
                    approximate: GeluApprox::Tanh,
                },
                Activation::GeluTanh,
            ),
            (
                Op::Gelu {
                    approximate: GeluApprox::None,
                },
                Activation::GeluErf,
            ),
            (Op::Unary(UnaryOp::Silu), Activation::Silu),
        ];
        for (op, want) in cases {
            let e = lowered(op);
            let (act, x) = split(&e).unwrap_or_else(|| panic!("{want:?} not recognised: {e:?}"));
            assert_eq!(act, want);
            assert!(is_compound_add(&x), "{want:?}: x = {x:?}");
            assert_eq!(act.build(DType::F32, &x), e);
        }
    }

    fn arg() -> Expr {
        Expr::binary(
            BinaryFn::Add,
            Expr::load(BufId(0), Affine::row_major(&[3, 5])),
            Expr::load(BufId(1), Affine::constant(2)),
        )
    }

    /// Rewrites the first constant equal to `from` into `to`.
    fn replace_const(e: &Expr, from: f64, to: f64, done: &mut bool) -> Expr {
        match e {
            Expr::Const { value, dtype } if *value == from && !*done => {
                *done = true;
                Expr::Const {
                    value: to,
                    dtype: *dtype,
                }
            }
            Expr::Unary(f, a) => Expr::unary(*f, replace_const(a, from, to, done)),
            Expr::Binary(f, a, b) => {
                let a = replace_const(a, from, to, done);
                Expr::binary(*f, a, replace_const(b, from, to, done))
            }
            _ => e.clone(),
        }
    }

    #[test]
    fn rejects_near_misses() {
        let x = arg();
        for act in Activation::ALL {
            assert_eq!(split(&act.build(DType::F32, &x)), Some((act, x.clone())));
        }
        // A different constant.
        for (act, from, to) in [
            (Activation::GeluTanh, 0.044715, 0.05),
            (Activation::GeluTanh, 0.5, 0.25),
            (Activation::GeluErf, std::f64::consts::FRAC_1_SQRT_2, 0.7),
            (Activation::GeluErf, 1.0, 2.0),
        ] {
            let mut done = false;
            let e = replace_const(&act.build(DType::F32, &x), from, to, &mut done);
            assert!(done, "{act:?} has a constant {from}");
            assert_eq!(split(&e), None, "{act:?} with {from} → {to}");
        }
        // A different x in one place.
        let y = Expr::load(BufId(2), Affine::row_major(&[3, 5]));
        let silu = Expr::binary(
            BinaryFn::Mul,
            x.clone(),
            Expr::unary(UnaryFn::Sigmoid, y.clone()),
        );
        assert_eq!(split(&silu), None);
        let Expr::Binary(BinaryFn::Mul, half_x, rest) = Activation::GeluTanh.build(DType::F32, &x)
        else {
            unreachable!()
        };
        let Expr::Binary(BinaryFn::Mul, half, _) = *half_x else {
            unreachable!()
        };
        let mixed = Expr::binary(BinaryFn::Mul, Expr::binary(BinaryFn::Mul, *half, y), *rest);
        assert_eq!(split(&mixed), None);
        // Constants of another dtype than the rebuild's: still one
        // definition, so they match with their own dtype.
        let f64_gelu = Activation::GeluErf.build(DType::F64, &x);
        assert_eq!(split(&f64_gelu), Some((Activation::GeluErf, x.clone())));
        // Plain sigmoid, tanh, and a product that is not SiLU.
        assert_eq!(split(&Expr::unary(UnaryFn::Sigmoid, x.clone())), None);
        assert_eq!(
            split(&Expr::binary(BinaryFn::Mul, x.clone(), x.clone())),
            None
        );
    }

    #[test]
    fn codes_round_trip() {
        for a in Activation::ALL {
            assert_eq!(Activation::from_code(a.code()), Some(a));
        }
        assert_eq!(Activation::from_code(3), None);
    }
}
