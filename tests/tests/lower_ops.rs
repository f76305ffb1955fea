//! Op lowering tests: each op is built as a small graph, typed by shape
//! inference, lowered to kernel IR and run by the kernel IR interpreter;
//! the result must match the reference interpreter on the same seeded
//! random inputs.
//!
//! Tolerances: the kernel interpreter evaluates each kernel's expression in
//! f64 and rounds at every store, as the reference rounds once per op, so
//! single-kernel float ops agree to the last bit or nearly (rtol 1e-6);
//! where an op is several kernels (Softmax, norms, LogSumExp) intermediate
//! statistics are stored in f32 and the bound is looser, stated per test.
//! Data movement and integer ops must be exact.

use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use varc_backend_ref::RefFolder;
use varc_ir::kernel::Program;
use varc_ir::kernel::eval::run_program;
use varc_ir::op::{BinaryOp, GeluApprox, PadMode, ReduceKind, UnaryOp, VariadicOp};
use varc_ir::{DType, Graph, Op, Shape, Tensor, TensorData, TypeInfo, Value, ValueRef};
use varc_runtime::compare;
use varc_runtime::random::{SplitMix64, random_tensor};

// ---------------------------------------------------------------- harness

thread_local! {
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64::new(0x5eed));
}

/// Random tensor: floats in [-1, 1), ints in [0, 10), fair bools.
fn rnd(dt: DType, shape: &[usize]) -> Tensor {
    RNG.with(|r| random_tensor(&mut r.borrow_mut(), dt, shape, 10))
}

fn f32s(shape: &[usize]) -> Tensor {
    rnd(DType::F32, shape)
}

/// Floats in [0.05, 1.05).
fn pos(shape: &[usize]) -> Tensor {
    let v: Vec<f32> = f32s(shape)
        .as_f32()
        .unwrap()
        .iter()
        .map(|x| x.abs() + 0.05)
        .collect();
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}

/// Integers in [lo, hi).
fn ints(dt: DType, shape: &[usize], lo: i64, hi: i64) -> Tensor {
    let n: usize = shape.iter().product();
    let span = (hi - lo) as u64;
    let v: Vec<i64> = (0..n)
        .map(|_| lo + (RNG.with(|r| r.borrow_mut().next_u64()) % span) as i64)
        .collect();
    Tensor::new(shape.to_vec(), TensorData::from_i64(dt, &v)).unwrap()
}

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
}

fn i64t(v: &[i64]) -> Tensor {
    Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap()
}

fn i64s(v: i64) -> Tensor {
    Tensor::from_i64(vec![], vec![v]).unwrap()
}

/// An operand of the node under test.
enum A {
    /// A graph input (a run-time value).
    In(Tensor),
    /// A constant (initializer).
    C(Tensor),
    /// An omitted optional operand.
    No,
}

use A::{C, In, No};

/// A graph of one node (plus its operands) ready to check.
struct Case {
    graph: Graph,
    feeds: Vec<(String, Tensor)>,
}

fn case(op: Op, args: Vec<A>, n_out: usize) -> Case {
    let mut graph = Graph::new("t");
    let mut feeds = Vec::new();
    let mut ins = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        ins.push(match a {
            In(t) => {
                let name = format!("x{i}");
                let ty = TypeInfo {
                    dtype: t.dtype(),
                    shape: Shape::known(t.shape()),
                };
                let id = graph.add_input(name.clone(), ty);
                feeds.push((name, t));
                Some(ValueRef { node: id, slot: 0 })
            }
            C(t) => Some(graph.add_const(format!("c{i}"), t)),
            No => None,
        });
    }
    let outs = (0..n_out).map(|j| Value::named(format!("y{j}"))).collect();
    let id = graph.add_node("n", op, ins, outs).unwrap();
    graph.outputs = (0..n_out).map(|slot| ValueRef { node: id, slot }).collect();
    Case { graph, feeds }
}

impl Case {
    /// Infers types and lowers (with the folded constants unless `unfolded`).
    fn lower_with(&mut self, unfolded: bool) -> Result<Program, String> {
        let inferred = varc_ir::infer::infer_types(&mut self.graph, &BTreeMap::new(), &RefFolder)
            .map_err(|e| format!("inference: {e}"))?;
        let consts = if unfolded {
            HashMap::new()
        } else {
            inferred.consts
        };
        varc_ir::lower::lower(&self.graph, &consts).map_err(|e| e.to_string())
    }

    fn lower(&mut self) -> Result<Program, String> {
        self.lower_with(false)
    }

    /// Lowers, runs both ways and compares; returns the program.
    fn check_with(mut self, rtol: f64, atol: f64, unfolded: bool) -> Program {
        let program = self
            .lower_with(unfolded)
            .unwrap_or_else(|e| panic!("lowering failed: {e}"));
        let inputs: Vec<Tensor> = self.feeds.iter().map(|(_, t)| t.clone()).collect();
        let got = run_program(&program, &inputs).unwrap_or_else(|e| {
            panic!(
                "kernel IR run failed: {e}\n{}",
                varc_ir::kernel::program_to_text(&program)
            )
        });
        let feeds: HashMap<String, Tensor> = self.feeds.iter().cloned().collect();
        let want = varc_backend_ref::run(&self.graph, &feeds).expect("reference run");
        assert_eq!(got.len(), want.len());
        // The same program compiled by Cranelift must agree with the
        // reference too (where the CPU backend supports the dtypes).
        let compiled = varc_tests::run_compiled(&program, &inputs)
            .unwrap_or_else(|e| panic!("compiled run failed: {e}"));
        for (c, (name, w)) in compiled.iter().flatten().zip(&want) {
            let (rtol, atol) = varc_tests::compiled_tolerance(w, rtol, atol);
            let a =
                compare(c, w, rtol, atol).unwrap_or_else(|e| panic!("compiled output {name}: {e}"));
            assert!(a.passed(), "compiled output {name}: {a:?}");
        }
        for (g, (name, w)) in got.iter().zip(&want) {
            let a = compare(g, w, rtol, atol).unwrap_or_else(|e| panic!("output {name}: {e}"));
            assert!(
                a.passed(),
                "output {name}: {a:?}\n got {:?}\nwant {:?}\n{}",
                short(g),
                short(w),
                varc_ir::kernel::program_to_text(&program)
            );
        }
        program
    }

    fn check(self, rtol: f64, atol: f64) -> Program {
        self.check_with(rtol, atol, false)
    }

    /// Exact agreement (data movement, integers, bools).
    fn exact(self) -> Program {
        self.check(0.0, 0.0)
    }

    fn fails(mut self) -> String {
        match self.lower() {
            Ok(_) => panic!("lowering unexpectedly succeeded"),
            Err(e) => e,
        }
    }
}

fn short(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().into_iter().take(24).collect()
}

/// Kernels other than the final copies into the output buffers.
fn compute_kernels(p: &Program) -> usize {
    p.kernels
        .iter()
        .filter(|k| !k.name.starts_with("output:"))
        .count()
}

const F32_TOL: (f64, f64) = (1e-6, 1e-7);

fn check_f32(op: Op, args: Vec<A>) -> Program {
    case(op, args, 1).check(F32_TOL.0, F32_TOL.1)
}

fn specials() -> Tensor {
    f32t(
        &[2, 9],
        &[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            100.0,
            -100.0,
            1000.0,
            -1000.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            2.5,
            1e-30,
            -1e-30,
            3.0,
            -7.25,
        ],
    )
}

// ------------------------------------------------------------ elementwise

#[test]
fn unary_float_ops() {
    use UnaryOp::*;
    // Erf in the kernel IR is a 1.2e-7-accurate fit; Tan is sin/cos.
    let ops = [
        (Neg, 0.0),
        (Abs, 0.0),
        (Exp, 1e-6),
        (Erf, 1e-6),
        (Tanh, 1e-6),
        (Sigmoid, 1e-6),
        (Cos, 1e-6),
        (Sin, 1e-6),
        (Tan, 1e-6),
        (Relu, 0.0),
        (Floor, 0.0),
        (Ceil, 0.0),
        (Round, 0.0),
        (Sign, 0.0),
        (Softplus, 1e-6),
        (Silu, 1e-6),
        (IsNaN, 0.0),
        (IsInf, 0.0),
        (Reciprocal, 1e-6),
    ];
    for (u, tol) in ops {
        for shape in [&[3, 7][..], &[17], &[], &[1, 1, 3]] {
            case(Op::Unary(u), vec![In(f32s(shape))], 1).check(tol, 1e-7);
        }
        case(Op::Unary(u), vec![In(specials())], 1).check(tol, 1e-7);
    }
    for u in [Sqrt, Log] {
        case(Op::Unary(u), vec![In(pos(&[3, 7]))], 1).check(1e-6, 1e-7);
        case(Op::Unary(u), vec![In(specials())], 1).check(1e-6, 1e-7);
    }
}

#[test]
fn softplus_is_stable_at_both_ends() {
    let x = f32t(
        &[12],
        &[
            -200.0, -90.0, -40.0, -20.0, -17.0, -5.0, -1e-3, 0.0, 1e-3, 20.0, 90.0, 1e30,
        ],
    );
    case(Op::Unary(UnaryOp::Softplus), vec![In(x)], 1).check(1e-6, 0.0);
    let x = f32t(&[6], &[1e-8, -1e-8, 3e-5, -3e-5, 0.3, -0.3]);
    case(Op::Unary(UnaryOp::Softplus), vec![In(x)], 1).check(1e-6, 0.0);
}

#[test]
fn atan_polynomial_is_f32_accurate() {
    // Cephes atanf: accurate to about 2 f32 ulps.
    let v: Vec<f32> = (0..201)
        .map(|i| ((i as f32 - 100.0) / 7.0).powi(3))
        .collect();
    case(Op::Unary(UnaryOp::Atan), vec![In(f32t(&[201], &v))], 1).check(3e-7, 1e-9);
    case(Op::Unary(UnaryOp::Atan), vec![In(specials())], 1).check(3e-7, 1e-9);
    let x64 = Tensor::new(vec![1], TensorData::F64(vec![0.5])).unwrap();
    let e = case(Op::Unary(UnaryOp::Atan), vec![In(x64)], 1).fails();
    assert!(e.contains("Atan on f64"), "{e}");
}

#[test]
fn unary_int_and_bool_ops() {
    for u in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Relu, UnaryOp::Sign] {
        for dt in [DType::I64, DType::I32] {
            case(Op::Unary(u), vec![In(ints(dt, &[3, 7], -5, 5))], 1).exact();
        }
    }
    case(
        Op::Unary(UnaryOp::Not),
        vec![In(rnd(DType::Bool, &[17]))],
        1,
    )
    .exact();
}

/// Operand shape pairs covering the broadcasting corners.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[3, 7], &[3, 7]),
    (&[3, 7], &[7]),
    (&[7], &[3, 7]),
    (&[1], &[3, 1, 7]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
    (&[17, 1], &[1, 3]),
    (&[2, 1, 3], &[4, 1]),
    (&[1, 1], &[1]),
];

#[test]
fn binary_float_arithmetic() {
    use BinaryOp::*;
    for b in [Add, Sub, Mul, Div, PRelu] {
        for (sa, sb) in PAIRS {
            if b == PRelu && sb.len() > sa.len() {
                continue;
            }
            check_f32(Op::Binary(b), vec![In(f32s(sa)), In(f32s(sb))]);
        }
    }
    for (sa, sb) in PAIRS {
        check_f32(Op::Binary(Pow), vec![In(pos(sa)), In(f32s(sb))]);
    }
    // Specials through Div (x/0, 0/0, inf/inf) and Pow.
    check_f32(Op::Binary(Div), vec![In(specials()), In(specials())]);
    check_f32(
        Op::Binary(Pow),
        vec![In(specials()), In(f32t(&[1], &[2.0]))],
    );
}

#[test]
fn binary_compare_and_logic() {
    use BinaryOp::*;
    for b in [Equal, Less, LessOrEqual, Greater, GreaterOrEqual] {
        for (sa, sb) in PAIRS {
            case(Op::Binary(b), vec![In(f32s(sa)), In(f32s(sb))], 1).exact();
            let (x, y) = (ints(DType::I64, sa, -2, 2), ints(DType::I64, sb, -2, 2));
            case(Op::Binary(b), vec![In(x), In(y)], 1).exact();
        }
        case(Op::Binary(b), vec![In(specials()), In(specials())], 1).exact();
    }
    for b in [And, Or, Xor] {
        for (sa, sb) in PAIRS {
            let (x, y) = (rnd(DType::Bool, sa), rnd(DType::Bool, sb));
            case(Op::Binary(b), vec![In(x), In(y)], 1).exact();
        }
    }
    case(
        Op::Binary(Equal),
        vec![In(rnd(DType::Bool, &[5])), In(rnd(DType::Bool, &[5]))],
        1,
    )
    .exact();
}

#[test]
fn binary_integer_semantics() {
    use BinaryOp::*;
    for dt in [DType::I64, DType::I32] {
        for (sa, sb) in PAIRS {
            for b in [Add, Sub, Mul] {
                case(
                    Op::Binary(b),
                    vec![In(ints(dt, sa, -9, 9)), In(ints(dt, sb, -9, 9))],
                    1,
                )
                .exact();
            }
            // Divisors without zero, of both signs.
            let d: Vec<i64> = ints(DType::I64, sb, 1, 5).to_i64_vec();
            let s: Vec<i64> = ints(DType::I64, sb, 0, 2).to_i64_vec();
            let d: Vec<i64> = d
                .iter()
                .zip(&s)
                .map(|(d, s)| if *s == 0 { -d } else { *d })
                .collect();
            let div = Tensor::new(sb.to_vec(), TensorData::from_i64(dt, &d)).unwrap();
            for b in [Div, Mod, Fmod, PRelu] {
                if b == PRelu && sb.len() > sa.len() {
                    continue;
                }
                let x = ints(dt, sa, -20, 20);
                case(Op::Binary(b), vec![In(x), In(div.clone())], 1).exact();
            }
            // Integer powers (small, so no overflow), negative exponents truncate.
            case(
                Op::Binary(Pow),
                vec![In(ints(dt, sa, -3, 4)), In(ints(dt, sb, -2, 4))],
                1,
            )
            .exact();
        }
    }
    // Division by zero is a run-time error in both.
    let mut c = case(
        Op::Binary(Div),
        vec![In(i64t(&[1, 2])), In(i64t(&[1, 0]))],
        1,
    );
    let p = c.lower().unwrap();
    let e = run_program(&p, &[i64t(&[1, 2]), i64t(&[1, 0])]).unwrap_err();
    assert!(e.contains("division by zero"), "{e}");
}

#[test]
fn pow_with_mixed_types() {
    let base = f32t(&[4], &[-2.0, 2.0, 0.5, 3.0]);
    case(
        Op::Binary(BinaryOp::Pow),
        vec![In(base), In(i64t(&[3, -1, 2, 0]))],
        1,
    )
    .check(1e-6, 0.0);
    let ib = Tensor::from_i64(vec![3], vec![9, 4, 2]).unwrap();
    case(
        Op::Binary(BinaryOp::Pow),
        vec![In(ib), In(f32t(&[3], &[0.5, 1.5, 3.0]))],
        1,
    )
    .exact();
}

#[test]
fn float_mod_is_refused() {
    for b in [BinaryOp::Mod, BinaryOp::Fmod] {
        let e = case(Op::Binary(b), vec![In(f32s(&[3])), In(pos(&[3]))], 1).fails();
        assert!(e.contains("Mod on f32"), "{e}");
    }
}

#[test]
fn variadic_ops() {
    use VariadicOp::*;
    for v in [Sum, Mean, Min, Max] {
        check_f32(
            Op::Variadic(v),
            vec![
                In(f32s(&[3, 1, 7])),
                In(f32s(&[7])),
                In(f32s(&[2, 1, 1, 1])),
            ],
        );
        check_f32(Op::Variadic(v), vec![In(f32s(&[3, 7]))]);
        check_f32(Op::Variadic(v), vec![In(specials()), In(f32s(&[9]))]);
        let a = ints(DType::I64, &[2, 3], -9, 9);
        let b = ints(DType::I64, &[3], -9, 9);
        case(Op::Variadic(v), vec![In(a), In(b)], 1).exact();
    }
    // A single operand is the operand itself: no kernel.
    let p = check_f32(Op::Variadic(Sum), vec![In(f32s(&[5]))]);
    assert_eq!(compute_kernels(&p), 0);
}

#[test]
fn clip_bounds() {
    let x = || In(specials());
    let s = |v: f32| f32t(&[], &[v]);
    check_f32(Op::Clip, vec![x(), C(s(-0.5)), C(s(2.0))]);
    check_f32(Op::Clip, vec![x(), In(s(-0.5)), In(s(2.0))]);
    check_f32(Op::Clip, vec![x(), No, In(s(0.0))]);
    check_f32(Op::Clip, vec![x(), C(s(1.0)), No]);
    check_f32(Op::Clip, vec![x(), C(s(2.0)), C(s(-1.0))]);
    check_f32(Op::Clip, vec![x()]);
    check_f32(
        Op::Clip,
        vec![x(), C(f32t(&[0], &[])), C(f32t(&[1], &[0.25]))],
    );
    let xi = ints(DType::I64, &[17], -9, 9);
    case(Op::Clip, vec![In(xi), C(i64s(-3)), In(i64s(4))], 1).exact();
}

#[test]
fn where_broadcasts_three_ways() {
    let c = rnd(DType::Bool, &[3, 1, 7]);
    check_f32(
        Op::Where,
        vec![In(c.clone()), In(f32s(&[2, 1])), In(f32s(&[]))],
    );
    check_f32(
        Op::Where,
        vec![In(rnd(DType::Bool, &[])), In(f32s(&[4, 3])), In(f32s(&[3]))],
    );
    let (a, b) = (
        ints(DType::I64, &[7], -5, 5),
        ints(DType::I64, &[3, 1, 1], -5, 5),
    );
    case(Op::Where, vec![In(c), In(a), In(b)], 1).exact();
}

#[test]
fn casts() {
    let scaled: Vec<f32> = f32s(&[3, 7])
        .as_f32()
        .unwrap()
        .iter()
        .map(|v| v * 20.0)
        .collect();
    let x = f32t(&[3, 7], &scaled);
    for to in [
        DType::I64,
        DType::I32,
        DType::Bool,
        DType::F64,
        DType::F16,
        DType::F32,
    ] {
        case(Op::Cast { to }, vec![In(x.clone())], 1).exact();
    }
    case(
        Op::Cast { to: DType::F32 },
        vec![In(ints(DType::I64, &[5], -9, 9))],
        1,
    )
    .exact();
    case(
        Op::Cast { to: DType::F32 },
        vec![In(rnd(DType::Bool, &[5]))],
        1,
    )
    .exact();
    case(
        Op::Cast { to: DType::Bool },
        vec![In(ints(DType::I32, &[5], -2, 2))],
        1,
    )
    .exact();
    let like = Tensor::from_i64(vec![1], vec![0]).unwrap();
    case(Op::CastLike, vec![In(x), In(like)], 1).exact();
}

#[test]
fn activations() {
    for approximate in [GeluApprox::None, GeluApprox::Tanh] {
        // Erf is the kernel IR's 1.2e-7 fit.
        case(Op::Gelu { approximate }, vec![In(f32s(&[3, 17]))], 1).check(1e-6, 1e-7);
        let wide: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) * 0.5).collect();
        case(Op::Gelu { approximate }, vec![In(f32t(&[41], &wide))], 1).check(1e-6, 1e-7);
    }
    check_f32(Op::LeakyRelu { alpha: 0.1 }, vec![In(specials())]);
    check_f32(
        Op::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        vec![In(specials())],
    );
    check_f32(
        Op::HardSigmoid {
            alpha: 0.7,
            beta: 0.1,
        },
        vec![In(f32s(&[3, 7]))],
    );
}

/// f16/bf16 compute in f32 (constants kept at f32 precision) and round
/// once at the store, as the reference rounds its f64 result once: they
/// agree to one ulp of the narrow type (a double rounding may flip a
/// halfway case). f64 is computed in f64 throughout.
#[test]
fn half_and_double_precision() {
    use UnaryOp::*;
    for (dt, rtol) in [(DType::F16, 1e-3), (DType::BF16, 8e-3)] {
        let x = || In(rnd(dt, &[3, 17]));
        for u in [
            Exp, Tanh, Sigmoid, Silu, Softplus, Sign, Relu, Atan, Neg, IsNaN,
        ] {
            case(Op::Unary(u), vec![x()], 1).check(rtol, 1e-4);
        }
        for approximate in [GeluApprox::None, GeluApprox::Tanh] {
            case(Op::Gelu { approximate }, vec![x()], 1).check(rtol, 1e-4);
        }
        case(Op::LeakyRelu { alpha: 0.01 }, vec![x()], 1).check(rtol, 1e-4);
        case(
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            vec![x()],
            1,
        )
        .check(rtol, 1e-4);
        case(Op::Binary(BinaryOp::Mul), vec![x(), x()], 1).check(rtol, 1e-4);
        let op = Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
            stash_type: 1,
        };
        case(op, vec![x(), In(rnd(dt, &[17])), In(rnd(dt, &[17]))], 1).check(rtol, 1e-3);
    }
    let x = || In(rnd(DType::F64, &[3, 17]));
    for u in [Exp, Tanh, Sigmoid, Silu, Softplus, Sin, Tan, Sqrt, Log] {
        let t = if matches!(u, Sqrt | Log) {
            pos(&[3, 17]).cast(DType::F64)
        } else {
            rnd(DType::F64, &[3, 17])
        };
        case(Op::Unary(u), vec![In(t)], 1).check(1e-13, 1e-15);
    }
    case(Op::Binary(BinaryOp::Div), vec![x(), x()], 1).check(1e-15, 0.0);
    let op = Op::Softmax {
        axis: -1,
        log: false,
        coerce_2d: false,
    };
    case(op, vec![x()], 1).check(1e-13, 1e-15);
    let op = Op::LayerNorm {
        axis: -1,
        epsilon: 1e-5,
        stash_type: 1,
    };
    // f64 data keeps f64 statistics whatever the stash type.
    case(op, vec![x(), In(rnd(DType::F64, &[17])), No], 3).check(1e-12, 1e-13);
}

// ---------------------------------------------------------------- movement

#[test]
fn views_cost_no_kernel() {
    let x = || In(f32s(&[2, 3, 4]));
    let views = vec![
        case(Op::Identity, vec![x()], 1),
        case(
            Op::Reshape { allowzero: false },
            vec![x(), C(i64t(&[3, -1, 0]))],
            1,
        ),
        case(
            Op::Reshape { allowzero: false },
            vec![In(f32s(&[1, 1, 1])), C(i64t(&[]))],
            1,
        ),
        case(Op::Flatten { axis: 0 }, vec![x()], 1),
        case(Op::Flatten { axis: -1 }, vec![x()], 1),
        case(Op::Flatten { axis: 3 }, vec![x()], 1),
        case(Op::Transpose { perm: None }, vec![x()], 1),
        case(
            Op::Transpose {
                perm: Some(vec![1, 2, 0]),
            },
            vec![x()],
            1,
        ),
        case(
            Op::Unsqueeze { axes: None },
            vec![x(), C(i64t(&[0, -1]))],
            1,
        ),
        case(
            Op::Unsqueeze {
                axes: Some(vec![2]),
            },
            vec![x()],
            1,
        ),
        case(Op::Expand, vec![In(f32s(&[3, 1])), C(i64t(&[2, 1, 5]))], 1),
        case(Op::Expand, vec![In(f32s(&[3, 1])), C(i64t(&[1]))], 1),
        case(Op::Expand, vec![In(f32s(&[])), C(i64t(&[7]))], 1),
    ];
    for c in views {
        let p = c.exact();
        assert_eq!(compute_kernels(&p), 0);
    }
    // Squeeze needs a size-1 dim.
    let y = || In(f32s(&[1, 3, 1, 7]));
    for c in [
        case(Op::Squeeze { axes: None }, vec![y()], 1),
        case(Op::Squeeze { axes: None }, vec![y(), C(i64t(&[-2]))], 1),
        case(
            Op::Squeeze {
                axes: Some(vec![0, 2]),
            },
            vec![y()],
            1,
        ),
    ] {
        assert_eq!(compute_kernels(&c.exact()), 0);
    }
}

/// `second(first(x, first_args..), second_args..)`: a view op feeding
/// another op, so that ops see strided, offset and broadcast views.
fn chain(x: Tensor, first: Op, first_args: Vec<A>, second: Op, second_args: Vec<A>) -> Case {
    let mut c = case(first, std::iter::once(In(x)).chain(first_args).collect(), 1);
    let mid = c.graph.outputs[0];
    let mut ins = vec![Some(mid)];
    for (i, a) in second_args.into_iter().enumerate() {
        ins.push(match a {
            In(t) => {
                let name = format!("z{i}");
                let ty = TypeInfo {
                    dtype: t.dtype(),
                    shape: Shape::known(t.shape()),
                };
                let id = c.graph.add_input(name.clone(), ty);
                c.feeds.push((name, t));
                Some(ValueRef { node: id, slot: 0 })
            }
            C(t) => Some(c.graph.add_const(format!("d{i}"), t)),
            No => None,
        });
    }
    let id = c
        .graph
        .add_node("m", second, ins, vec![Value::named("out")])
        .unwrap();
    c.graph.outputs = vec![ValueRef { node: id, slot: 0 }];
    c
}

fn transpose(perm: &[usize]) -> Op {
    Op::Transpose {
        perm: Some(perm.to_vec()),
    }
}

const RESHAPE: Op = Op::Reshape { allowzero: false };

/// Reshape of strided views: the no-copy rule when it applies, a copy
/// otherwise.
#[test]
fn reshape_of_strided_views() {
    let run = |shape: &[usize], perm: &[usize], target: &[i64]| {
        let c = chain(
            f32s(shape),
            transpose(perm),
            vec![],
            RESHAPE,
            vec![C(i64t(target))],
        );
        compute_kernels(&c.exact())
    };
    // [2,3,4] → perm [1,0,2] → [3,2,4] → [3,8]: dims 2 and 4 cannot merge.
    assert_eq!(run(&[2, 3, 4], &[1, 0, 2], &[3, 8]), 1);
    // Splitting a permuted dim keeps the view: [3,2,4] → [3,2,2,2].
    assert_eq!(run(&[2, 3, 4], &[1, 0, 2], &[3, 2, 2, 2]), 0);
    // Merging dims that stay adjacent in memory: [2,3,4] perm [1,2,0] →
    // [3,4,2] (strides 4, 1, 12) → [12, 2].
    assert_eq!(run(&[2, 3, 4], &[1, 2, 0], &[12, 2]), 0);
    // Adding and removing 1s.
    assert_eq!(run(&[2, 1, 5], &[2, 1, 0], &[5, 2, 1]), 0);
    assert_eq!(run(&[2, 3, 4], &[2, 1, 0], &[24]), 1);
    // Broadcast (stride-0) dims: splitting them is a view, merging is not.
    let expand = |target: &[i64]| {
        let c = chain(
            f32s(&[3, 1]),
            Op::Expand,
            vec![C(i64t(&[3, 4]))],
            RESHAPE,
            vec![C(i64t(target))],
        );
        compute_kernels(&c.exact())
    };
    assert_eq!(expand(&[3, 2, 2]), 0);
    assert_eq!(expand(&[12]), 1);
    // An offset view (slice) reshaped.
    let c = chain(
        f32s(&[4, 6]),
        Op::Slice,
        vec![C(i64t(&[1, 2])), C(i64t(&[3, 6]))],
        RESHAPE,
        vec![C(i64t(&[2, 2, 2]))],
    );
    assert_eq!(compute_kernels(&c.exact()), 0);
    let c = chain(
        f32s(&[4, 6]),
        Op::Slice,
        vec![C(i64t(&[1, 2])), C(i64t(&[3, 6]))],
        RESHAPE,
        vec![C(i64t(&[8]))],
    );
    assert_eq!(compute_kernels(&c.exact()), 1);
}

/// Ops reading transposed, sliced (negative step) and broadcast views.
#[test]
fn ops_on_strided_views() {
    let tr = || transpose(&[2, 0, 1]);
    let x = || f32s(&[3, 4, 7]);
    let (rt, at) = (1e-6, 1e-6);
    chain(x(), tr(), vec![], Op::Unary(UnaryOp::Exp), vec![]).check(rt, at);
    chain(
        x(),
        tr(),
        vec![],
        Op::Binary(BinaryOp::Add),
        vec![In(f32s(&[4]))],
    )
    .check(rt, at);
    let sm = Op::Softmax {
        axis: 1,
        log: false,
        coerce_2d: false,
    };
    chain(x(), tr(), vec![], sm, vec![]).check(rt, at);
    let sm2 = Op::Softmax {
        axis: 1,
        log: true,
        coerce_2d: true,
    };
    chain(x(), tr(), vec![], sm2, vec![]).check(rt, at);
    let rs = reduce_op(ReduceKind::Mean, Some(vec![0, 2]), false, false);
    chain(x(), tr(), vec![], rs, vec![]).check(rt, at);
    let ln = Op::LayerNorm {
        axis: -1,
        epsilon: 1e-5,
        stash_type: 1,
    };
    chain(x(), tr(), vec![], ln, vec![In(f32s(&[4])), In(f32s(&[4]))]).check(1e-5, 1e-6);
    let gn = Op::GroupNorm {
        num_groups: 3,
        epsilon: 1e-5,
        stash_type: 1,
        per_group_affine: false,
    };
    chain(x(), tr(), vec![], gn, vec![In(f32s(&[3])), In(f32s(&[3]))]).check(1e-5, 1e-6);
    let rev = || {
        vec![
            C(i64t(&[-1, 5])),
            C(i64t(&[i64::MIN, 0])),
            C(i64t(&[1, 2])),
            C(i64t(&[-1, -2])),
        ]
    };
    chain(
        x(),
        Op::Slice,
        rev(),
        Op::Concat { axis: 1 },
        vec![In(f32s(&[3, 1, 3]))],
    )
    .exact();
    chain(
        x(),
        Op::Slice,
        rev(),
        Op::CumSum {
            exclusive: false,
            reverse: false,
        },
        vec![C(i64s(2))],
    )
    .check(rt, at);
    chain(
        x(),
        Op::Slice,
        rev(),
        Op::Gather { axis: 1 },
        vec![In(i64t(&[0, -1, 2, 1]))],
    )
    .exact();
    let pad = Op::Pad {
        mode: PadMode::Reflect,
    };
    chain(
        x(),
        Op::Slice,
        rev(),
        pad,
        vec![C(i64t(&[0, 2, 1, 0, 1, 2]))],
    )
    .exact();
    let bc = || vec![C(i64t(&[2, 3, 4]))];
    let y = || f32s(&[3, 1]);
    chain(y(), Op::Expand, bc(), Op::Tile, vec![C(i64t(&[1, 2, 1]))]).exact();
    chain(y(), Op::Expand, bc(), Op::Trilu { upper: true }, vec![]).exact();
    let am = Op::ArgReduce {
        max: true,
        axis: 2,
        keepdims: false,
        select_last_index: false,
    };
    chain(y(), Op::Expand, bc(), am, vec![]).exact();
}

fn slice_case(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Program {
    let args = vec![
        In(f32s(shape)),
        C(i64t(starts)),
        C(i64t(ends)),
        axes.map_or(No, |a| C(i64t(a))),
        steps.map_or(No, |s| C(i64t(s))),
    ];
    case(Op::Slice, args, 1).exact()
}

#[test]
fn slices() {
    let p = slice_case(&[10], &[1], &[4], None, None);
    assert_eq!(compute_kernels(&p), 0);
    slice_case(&[10], &[-3], &[i64::MAX], None, None);
    slice_case(&[10], &[-1], &[i64::MIN], None, Some(&[-1]));
    slice_case(&[10], &[8], &[1], None, Some(&[-3]));
    slice_case(&[10], &[20], &[-20], None, Some(&[-4]));
    slice_case(&[10], &[5], &[2], None, Some(&[1]));
    slice_case(&[10], &[-100], &[2], None, None);
    slice_case(&[3, 4], &[1, -1], &[3, -4], Some(&[0, -1]), Some(&[1, -2]));
    slice_case(
        &[3, 7, 17],
        &[16, 0],
        &[0, 7],
        Some(&[-1, 1]),
        Some(&[-5, 3]),
    );
    slice_case(&[3, 7, 17], &[2], &[3], Some(&[0]), None);
    slice_case(&[1, 7], &[0], &[1], Some(&[0]), Some(&[-1]));
}

#[test]
fn concat_and_split() {
    let p = case(
        Op::Concat { axis: -1 },
        vec![In(f32s(&[2, 3])), In(f32s(&[2, 1])), In(f32s(&[2, 7]))],
        1,
    )
    .exact();
    assert_eq!(compute_kernels(&p), 3);
    case(
        Op::Concat { axis: 0 },
        vec![In(f32s(&[1, 3])), In(f32s(&[0, 3])), In(f32s(&[17, 3]))],
        1,
    )
    .exact();
    case(
        Op::Concat { axis: 1 },
        vec![
            In(ints(DType::I64, &[2, 2, 3], 0, 9)),
            In(ints(DType::I64, &[2, 5, 3], 0, 9)),
        ],
        1,
    )
    .exact();
    let split = |axis, split: Option<Vec<i64>>, shape: &[usize], n, extra: Vec<A>| {
        let mut args = vec![In(f32s(shape))];
        args.extend(extra);
        let p = case(
            Op::Split {
                axis,
                split,
                num_outputs: 0,
            },
            args,
            n,
        )
        .exact();
        assert_eq!(compute_kernels(&p), 0);
    };
    split(1, None, &[2, 7], 3, vec![]);
    split(-1, Some(vec![1, 6]), &[2, 7], 2, vec![]);
    split(0, None, &[17, 3], 1, vec![]);
    split(0, None, &[4], 3, vec![]);
    split(1, None, &[2, 7, 3], 2, vec![C(i64t(&[5, 2]))]);
}

#[test]
fn tile() {
    case(Op::Tile, vec![In(f32s(&[2, 3])), C(i64t(&[2, 3]))], 1).exact();
    case(Op::Tile, vec![In(f32s(&[7])), C(i64t(&[1]))], 1).exact();
    case(Op::Tile, vec![In(f32s(&[1, 3, 1])), C(i64t(&[3, 1, 4]))], 1).exact();
    case(Op::Tile, vec![In(f32s(&[2, 3])), C(i64t(&[0, 2]))], 1).exact();
}

#[test]
fn pads() {
    let x = || In(f32s(&[3, 4]));
    for mode in [
        PadMode::Constant,
        PadMode::Edge,
        PadMode::Reflect,
        PadMode::Wrap,
    ] {
        case(Op::Pad { mode }, vec![x(), C(i64t(&[1, 2, 2, 3]))], 1).exact();
        case(Op::Pad { mode }, vec![x(), C(i64t(&[0, 3, 0, 3]))], 1).exact();
        case(Op::Pad { mode }, vec![x(), C(i64t(&[-1, 1, 0, -2]))], 1).exact();
        case(
            Op::Pad { mode },
            vec![x(), C(i64t(&[7, 5])), No, C(i64t(&[-1]))],
            1,
        )
        .exact();
        case(
            Op::Pad { mode },
            vec![In(f32s(&[1, 5])), C(i64t(&[2, 0, 1, 0]))],
            1,
        )
        .exact();
        case(
            Op::Pad { mode },
            vec![In(ints(DType::I64, &[7], 0, 9)), C(i64t(&[9, 10]))],
            1,
        )
        .exact();
    }
    let v = f32t(&[], &[2.5]);
    let m = Op::Pad {
        mode: PadMode::Constant,
    };
    case(
        m.clone(),
        vec![x(), C(i64t(&[1, 2, 2, 3])), C(v.clone())],
        1,
    )
    .exact();
    case(m.clone(), vec![x(), C(i64t(&[1, 2, 2, 3])), In(v)], 1).exact();
    case(
        m.clone(),
        vec![
            In(f32s(&[0, 2])),
            C(i64t(&[1, 0, 1, 0])),
            In(f32t(&[1], &[-1.0])),
        ],
        1,
    )
    .exact();
    let b = Tensor::new(vec![2], TensorData::Bool(vec![true, true])).unwrap();
    case(m, vec![In(b), C(i64t(&[1, 0]))], 1).exact();
}

#[test]
fn shape_ops_when_not_folded() {
    let x = || In(f32s(&[2, 3, 4]));
    for (start, end) in [
        (0, None),
        (1, None),
        (-1, None),
        (0, Some(-1)),
        (2, Some(1)),
    ] {
        case(Op::Shape { start, end }, vec![x()], 1).check_with(0.0, 0.0, true);
    }
    case(Op::Size, vec![x()], 1).check_with(0.0, 0.0, true);
    for value in [
        f32t(&[1], &[1.5]),
        Tensor::from_i64(vec![1], vec![-3]).unwrap(),
    ] {
        case(Op::ConstantOfShape { value }, vec![C(i64t(&[2, 3]))], 1).check_with(0.0, 0.0, true);
    }
    case(Op::Range, vec![C(i64s(-3)), C(i64s(8)), C(i64s(2))], 1).check_with(0.0, 0.0, true);
    case(Op::Range, vec![C(i64s(5)), C(i64s(-8)), C(i64s(-3))], 1).check_with(0.0, 0.0, true);
    let s = |v: f32| f32t(&[], &[v]);
    case(Op::Range, vec![C(s(0.5)), C(s(3.0)), C(s(0.3))], 1).check_with(0.0, 0.0, true);
    // Folded, they are weights.
    let p = case(Op::Range, vec![C(i64s(0)), C(i64s(5)), C(i64s(1))], 1).exact();
    assert_eq!(compute_kernels(&p), 0);
}

#[test]
fn gathers() {
    let data = || In(f32s(&[5, 4, 3]));
    let idx = |shape: &[usize], n: i64| ints(DType::I64, shape, -n, n);
    for axis in [0i64, 1, -1, 2] {
        let n = [5, 4, 3][axis.rem_euclid(3) as usize];
        case(Op::Gather { axis }, vec![data(), In(idx(&[2, 3], n))], 1).exact();
        case(Op::Gather { axis }, vec![data(), In(idx(&[], n))], 1).exact();
        case(Op::Gather { axis }, vec![data(), C(idx(&[7], n))], 1).exact();
    }
    let i32idx = ints(DType::I32, &[4], -5, 5);
    case(
        Op::Gather { axis: 0 },
        vec![C(f32s(&[5, 2])), In(i32idx)],
        1,
    )
    .exact();
    // Out-of-range index: a run-time error, never an out-of-bounds read.
    let mut c = case(
        Op::Gather { axis: 0 },
        vec![In(f32s(&[3])), In(i64t(&[3]))],
        1,
    );
    let p = c.lower().unwrap();
    let e = run_program(&p, &[f32s(&[3]), i64t(&[3])]).unwrap_err();
    assert!(e.contains("out of range"), "{e}");

    for axis in [0i64, 1, -1] {
        let n = [5, 4, 3][axis.rem_euclid(3) as usize];
        case(
            Op::GatherElements { axis },
            vec![data(), In(idx(&[2, 3, 2], n))],
            1,
        )
        .exact();
    }
    case(
        Op::GatherND { batch_dims: 0 },
        vec![data(), In(idx(&[2, 2], 3))],
        1,
    )
    .exact();
    case(
        Op::GatherND { batch_dims: 0 },
        vec![data(), In(idx(&[7, 3], 3))],
        1,
    )
    .exact();
    case(
        Op::GatherND { batch_dims: 0 },
        vec![data(), In(idx(&[2, 3, 1], 5))],
        1,
    )
    .exact();
    case(
        Op::GatherND { batch_dims: 1 },
        vec![data(), In(idx(&[5, 2], 3))],
        1,
    )
    .exact();
    case(
        Op::GatherND { batch_dims: 1 },
        vec![data(), In(idx(&[5, 6, 1], 4))],
        1,
    )
    .exact();
    case(
        Op::GatherND { batch_dims: 2 },
        vec![data(), In(idx(&[5, 4, 1], 3))],
        1,
    )
    .exact();
}

#[test]
fn trilu() {
    for upper in [true, false] {
        for k in [None, Some(0), Some(1), Some(-2), Some(9)] {
            let kv = k.map_or(No, |k| C(i64s(k)));
            case(Op::Trilu { upper }, vec![In(f32s(&[2, 3, 7])), kv], 1).exact();
        }
        case(
            Op::Trilu { upper },
            vec![In(f32s(&[7, 3])), In(i64s(-1))],
            1,
        )
        .exact();
        case(Op::Trilu { upper }, vec![In(f32s(&[1, 1]))], 1).exact();
    }
}

// --------------------------------------------------------------- reduction

fn reduce_op(kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool, noop: bool) -> Op {
    Op::Reduce {
        kind,
        axes,
        keepdims,
        noop_with_empty_axes: noop,
    }
}

#[test]
fn reductions() {
    use ReduceKind::*;
    // LogSumExp is two kernels (the shift is stored, exactly).
    for kind in [
        Sum, Mean, Max, Min, Prod, L1, L2, SumSquare, LogSum, LogSumExp,
    ] {
        let input = || {
            if kind == LogSum {
                pos(&[3, 4, 5])
            } else {
                f32s(&[3, 4, 5])
            }
        };
        for keepdims in [true, false] {
            for axes in [
                None,
                Some(vec![1]),
                Some(vec![0, 2]),
                Some(vec![-1]),
                Some(vec![-3, -2, -1]),
            ] {
                let op = reduce_op(kind, axes.clone(), keepdims, false);
                case(op, vec![In(input())], 1).check(1e-6, 1e-7);
                // Opset 18: axes as an input.
                let op = reduce_op(kind, None, keepdims, false);
                let ax = axes.clone().map_or(No, |a| C(i64t(&a)));
                case(op, vec![In(input()), ax], 1).check(1e-6, 1e-7);
            }
            // Empty axes: everything, or nothing with noop_with_empty_axes.
            for noop in [false, true] {
                let op = reduce_op(kind, None, keepdims, noop);
                case(op, vec![In(input()), C(i64t(&[]))], 1).check(1e-6, 1e-7);
            }
        }
        let x1 = if kind == LogSum {
            pos(&[17])
        } else {
            f32s(&[17])
        };
        case(reduce_op(kind, None, false, false), vec![In(x1)], 1).check(1e-6, 1e-7);
        case(
            reduce_op(kind, Some(vec![0]), true, false),
            vec![In(specials())],
            1,
        )
        .check(1e-6, 1e-7);
    }
    for kind in [Sum, Max, Min, Prod, L1, SumSquare] {
        let x = ints(DType::I64, &[3, 7], -3, 4);
        case(reduce_op(kind, Some(vec![1]), false, false), vec![In(x)], 1).exact();
    }
    let b = rnd(DType::Bool, &[3, 7]);
    case(reduce_op(Max, Some(vec![1]), true, false), vec![In(b)], 1).exact();
    // All -inf groups: LogSumExp gives -inf, Max -inf.
    let ninf = f32t(
        &[2, 2],
        &[f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY],
    );
    case(
        reduce_op(LogSumExp, Some(vec![1]), true, false),
        vec![In(ninf)],
        1,
    )
    .check(1e-6, 0.0);
    // Run-time axes are refused.
    let e = case(
        reduce_op(Sum, None, true, false),
        vec![In(f32s(&[3])), In(i64t(&[0]))],
        1,
    )
    .lower();
    assert!(e.is_err());
}

#[test]
fn arg_reductions() {
    for max in [true, false] {
        for select_last_index in [false, true] {
            for keepdims in [true, false] {
                for axis in [0i64, 1, -1] {
                    let op = Op::ArgReduce {
                        max,
                        axis,
                        keepdims,
                        select_last_index,
                    };
                    // Few distinct values: many ties.
                    case(op.clone(), vec![In(ints(DType::I64, &[3, 4, 7], 0, 3))], 1).exact();
                    case(op.clone(), vec![In(f32s(&[3, 4, 7]))], 1).exact();
                }
                let op = Op::ArgReduce {
                    max,
                    axis: 1,
                    keepdims,
                    select_last_index,
                };
                case(op.clone(), vec![In(specials())], 1).exact();
                case(op, vec![In(f32s(&[5, 1]))], 1).exact();
            }
        }
    }
}

#[test]
fn cumsum() {
    for exclusive in [false, true] {
        for reverse in [false, true] {
            for axis in [0i64, 1, -1] {
                let op = Op::CumSum { exclusive, reverse };
                case(op.clone(), vec![In(f32s(&[3, 7, 4])), C(i64s(axis))], 1).check(1e-6, 1e-7);
                case(
                    op,
                    vec![In(ints(DType::I64, &[3, 7, 4], -9, 9)), C(i64t(&[axis]))],
                    1,
                )
                .exact();
            }
        }
    }
}

#[test]
fn softmaxes() {
    // Three kernels; the row max and sum are stored in f32 (the sum's
    // rounding is ≤ 6e-8 relative), and LogSoftmax subtracts log(sum), so
    // its absolute error is what is bounded.
    for log in [false, true] {
        for axis in [0i64, 1, -1, 2] {
            for coerce_2d in [false, true] {
                let op = Op::Softmax {
                    axis,
                    log,
                    coerce_2d,
                };
                case(op.clone(), vec![In(f32s(&[3, 4, 7]))], 1).check(1e-6, 1e-6);
            }
        }
        let op = Op::Softmax {
            axis: -1,
            log,
            coerce_2d: false,
        };
        case(op.clone(), vec![In(f32s(&[17]))], 1).check(1e-6, 1e-6);
        let rows = f32t(
            &[3, 3],
            &[
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                1.0,
                f32::NAN,
                2.0,
                f32::NEG_INFINITY,
                0.5,
                1e30,
            ],
        );
        case(op, vec![In(rows)], 1).check(1e-6, 1e-6);
    }
}

#[test]
fn layer_and_rms_norms() {
    // Mean and 1/σ are stored in f32 (three kernels): y = (x − mean)·inv has
    // an absolute error of a few f32 ulps of the normalised scale.
    for (shape, axis) in [
        (&[2, 3, 7][..], -1i64),
        (&[2, 3, 7], 1),
        (&[17], 0),
        (&[3, 1], -1),
    ] {
        let ax = if axis < 0 {
            axis + shape.len() as i64
        } else {
            axis
        } as usize;
        let ns = &shape[ax..];
        for bias in [true, false] {
            for n_out in [1, 3] {
                let op = Op::LayerNorm {
                    axis,
                    epsilon: 1e-5,
                    stash_type: 1,
                };
                let b = if bias { In(f32s(ns)) } else { No };
                case(op, vec![In(f32s(shape)), In(f32s(ns)), b], n_out).check(1e-5, 1e-6);
            }
        }
        let op = Op::RmsNorm {
            axis,
            epsilon: 1e-5,
            stash_type: 1,
        };
        case(op, vec![In(f32s(shape)), In(f32s(ns))], 1).check(1e-5, 1e-6);
    }
    // Scale broadcast from fewer dims.
    let op = Op::LayerNorm {
        axis: 1,
        epsilon: 1e-3,
        stash_type: 1,
    };
    case(
        op,
        vec![In(f32s(&[2, 3, 7])), In(f32s(&[7])), In(f32s(&[1, 7]))],
        1,
    )
    .check(1e-5, 1e-6);
    // adaLN (fuse-adaln): per-batch or per-token scale and shift over x's
    // full shape, and RMSNormalization's bias (varc's extension).
    for mod_shape in [&[2, 1, 7][..], &[2, 3, 7], &[7]] {
        for op in [
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-6,
                stash_type: 1,
            },
            Op::RmsNorm {
                axis: -1,
                epsilon: 1e-6,
                stash_type: 1,
            },
        ] {
            let ins = vec![
                In(f32s(&[2, 3, 7])),
                In(f32s(mod_shape)),
                In(f32s(mod_shape)),
            ];
            case(op, ins, 1).check(1e-5, 1e-6);
        }
    }
}

#[test]
fn instance_and_group_norms() {
    let op = Op::InstanceNorm { epsilon: 1e-5 };
    case(
        op.clone(),
        vec![In(f32s(&[2, 3, 5, 7])), In(f32s(&[3])), In(f32s(&[3]))],
        1,
    )
    .check(1e-5, 1e-6);
    case(
        op,
        vec![In(f32s(&[1, 4, 17])), In(f32s(&[4])), In(f32s(&[4]))],
        1,
    )
    .check(1e-5, 1e-6);
    for (groups, per_group_affine) in [(3, true), (3, false), (1, false), (6, true), (2, false)] {
        let op = Op::GroupNorm {
            num_groups: groups,
            epsilon: 1e-5,
            stash_type: 1,
            per_group_affine,
        };
        let n = if per_group_affine { groups } else { 6 };
        case(
            op.clone(),
            vec![In(f32s(&[2, 6, 3, 5])), In(f32s(&[n])), In(f32s(&[n]))],
            1,
        )
        .check(1e-5, 1e-6);
        case(
            op,
            vec![In(f32s(&[2, 6])), In(f32s(&[n])), In(f32s(&[n]))],
            1,
        )
        .check(1e-5, 1e-6);
    }
}

// ---------------------------------------------------------------- proptest

/// Two operand shapes that broadcast: an output shape, then for each
/// operand a suffix of it with some dims set to 1.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(prop::sample::select(vec![1usize, 2, 3, 5, 7]), 0..5).prop_flat_map(
        |out| {
            let r = out.len();
            let operand = move |out: Vec<usize>| {
                (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(drop, ones)| {
                    (drop..r)
                        .map(|d| if ones[d] { 1 } else { out[d] })
                        .collect::<Vec<usize>>()
                })
            };
            (operand(out.clone()), operand(out))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn binary_ops_broadcast((sa, sb) in broadcast_pair(), pick in 0usize..9) {
        use BinaryOp::*;
        let op = [Add, Sub, Mul, Div, Pow, Equal, Less, GreaterOrEqual, PRelu][pick];
        if op == PRelu && sb.len() > sa.len() {
            return Ok(());
        }
        let a = if op == Pow { pos(&sa) } else { f32s(&sa) };
        case(Op::Binary(op), vec![In(a), In(f32s(&sb))], 1).check(1e-6, 1e-7);
    }

    #[test]
    fn variadic_ops_broadcast((sa, sb) in broadcast_pair(), pick in 0usize..4) {
        let op = [VariadicOp::Sum, VariadicOp::Mean, VariadicOp::Min, VariadicOp::Max][pick];
        case(Op::Variadic(op), vec![In(f32s(&sa)), In(f32s(&sb)), In(f32s(&sa))], 1).check(1e-6, 1e-7);
    }
}
