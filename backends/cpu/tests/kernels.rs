//! Hand-built kernel programs: the JIT against the kernel IR interpreter.

mod common;

use common::*;
use varc_backend_cpu::{Target, compile_for, compile_jit};
use varc_ir::DType;
use varc_ir::kernel::{
    Access, Affine, BinaryFn, BufKind, Expr, GatherTerm, Guard, Program, ReduceFn, UnaryFn, Var,
};

const SIZES: [usize; 7] = [1, 3, 4, 5, 7, 17, 33];

fn f32c(v: f64) -> Expr {
    Expr::f32(v)
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::unary(f, a)
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}

#[test]
fn elementwise_broadcast_odd_sizes() {
    for &n in &SIZES {
        for &m in &[1usize, 3, 5] {
            let mut p = Program::default();
            let out_shape = [2, m, n];
            let a = input(&mut p, "a", DType::F32, &[2, m, n]);
            let b = input(&mut p, "b", DType::F32, &[n]);
            let c = input(&mut p, "c", DType::F32, &[m, 1]);
            let o = output(&mut p, "o", DType::F32, &out_shape);
            let v = bin(
                BinaryFn::Add,
                bin(
                    BinaryFn::Mul,
                    load(a, bcast(&[2, m, n], &out_shape)),
                    load(b, bcast(&[n], &out_shape)),
                ),
                load(c, bcast(&[m, 1], &out_shape)),
            );
            emit(&mut p, "fma", o, v);
            let mut r = Rng(7 + n as u64);
            let ins = [
                r.tensor(DType::F32, &[2, m, n], -2.0, 2.0),
                r.tensor(DType::F32, &[n], -2.0, 2.0),
                r.tensor(DType::F32, &[m, 1], -2.0, 2.0),
            ];
            let jit = check(&p, &ins, F32);
            assert_eq!(jit.plans()[0].vector, n >= 4, "n = {n}");
        }
    }
}

/// One kernel per unary function over `n` inputs in [lo, hi).
fn unary_case(f: UnaryFn, lo: f64, hi: f64, tol: Tol) {
    for &n in &[3usize, 33, 1000] {
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::F32, &[n]);
        let o = output(&mut p, "o", DType::F32, &[n]);
        emit(
            &mut p,
            &format!("{f:?}"),
            o,
            un(f, load(x, bcast(&[n], &[n]))),
        );
        let mut t = Rng(11).tensor(DType::F32, &[n], lo, hi);
        if n == 1000 {
            // Special values through both the vector body and the tail.
            let mut v = t.as_f32().unwrap().to_vec();
            let specials = [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                1.0,
                -1.0,
            ];
            v[..7].copy_from_slice(&specials);
            v[993..].copy_from_slice(&specials);
            t = varc_ir::Tensor::from_f32(vec![n], v).unwrap();
        }
        check(&p, &[t], tol);
    }
}

#[test]
fn unary_functions() {
    use UnaryFn::*;
    let poly = Tol {
        abs: 1e-6,
        rel: 1e-6,
    };
    for f in [Neg, Abs, Sqrt, Rsqrt, Recip, Floor, Ceil, Round] {
        unary_case(f, -10.0, 10.0, F32);
    }
    unary_case(Exp, -100.0, 90.0, poly);
    unary_case(Log, 0.0, 1e6, poly);
    unary_case(Log, -1.0, 3.0, poly);
    unary_case(Tanh, -10.0, 10.0, poly);
    unary_case(Sigmoid, -20.0, 20.0, poly);
    unary_case(Erf, -5.0, 5.0, poly);
    unary_case(Sin, -10.0, 10.0, F32);
    unary_case(Cos, -10.0, 10.0, F32);
    unary_case(Not, -2.0, 2.0, EXACT);
}

#[test]
fn binary_functions() {
    use BinaryFn::*;
    for f in [Add, Sub, Mul, Div, Pow, Min, Max, Eq, Lt, Le, And, Or, Xor] {
        for &n in &[5usize, 33] {
            let mut p = Program::default();
            let x = input(&mut p, "x", DType::F32, &[n]);
            let y = input(&mut p, "y", DType::F32, &[n]);
            let cmp = matches!(f, Eq | Lt | Le);
            let o = output(
                &mut p,
                "o",
                if cmp { DType::Bool } else { DType::F32 },
                &[n],
            );
            let idx = bcast(&[n], &[n]);
            emit(&mut p, "bin", o, bin(f, load(x, idx.clone()), load(y, idx)));
            let mut r = Rng(3);
            let (lo, hi) = if f == Pow { (0.1, 3.0) } else { (-3.0, 3.0) };
            let mut xs = r
                .tensor(DType::F32, &[n], lo, hi)
                .as_f32()
                .unwrap()
                .to_vec();
            let ys = r
                .tensor(DType::F32, &[n], lo, hi)
                .as_f32()
                .unwrap()
                .to_vec();
            xs[1] = ys[1]; // equal operands
            xs[2] = f32::NAN;
            let tx = varc_ir::Tensor::from_f32(vec![n], xs).unwrap();
            let ty = varc_ir::Tensor::from_f32(vec![n], ys).unwrap();
            check(&p, &[tx, ty], F32);
        }
    }
}

#[test]
fn pow_with_constant_exponents() {
    for e in [0.5, 1.0, 2.0, 3.0, -1.0, 1.5] {
        let n = 37;
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::F32, &[n]);
        let o = output(&mut p, "o", DType::F32, &[n]);
        emit(
            &mut p,
            "pow",
            o,
            bin(BinaryFn::Pow, load(x, bcast(&[n], &[n])), f32c(e)),
        );
        check(&p, &[Rng(5).tensor(DType::F32, &[n], 0.0, 4.0)], F32);
    }
}

#[test]
fn integer_arithmetic_and_comparisons() {
    use BinaryFn::*;
    for dt in [DType::I64, DType::I32, DType::I8, DType::U8] {
        for f in [Add, Sub, Mul, Div, Min, Max, Eq, Lt, Le, And, Or, Xor] {
            let n = 19;
            let mut p = Program::default();
            let x = input(&mut p, "x", dt, &[n]);
            let y = input(&mut p, "y", dt, &[n]);
            let cmp = matches!(f, Eq | Lt | Le);
            let o = output(&mut p, "o", if cmp { DType::Bool } else { dt }, &[n]);
            let idx = bcast(&[n], &[n]);
            emit(
                &mut p,
                "ibin",
                o,
                bin(f, load(x, idx.clone()), load(y, idx)),
            );
            let mut r = Rng(9);
            let (lo, hi) = if dt == DType::U8 {
                (0.0, 200.0)
            } else {
                (-100.0, 100.0)
            };
            let tx = r.tensor(dt, &[n], lo, hi);
            let mut ys = r.tensor(dt, &[n], lo, hi).to_f64_vec();
            if f == Div {
                ys.iter_mut().filter(|v| **v == 0.0).for_each(|v| *v = 3.0);
            }
            let ty = varc_ir::Tensor::new(vec![n], varc_ir::TensorData::from_f64(dt, &ys)).unwrap();
            check(&p, &[tx, ty], EXACT);
        }
    }
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::I64, &[4]);
    let o = output(&mut p, "o", DType::I64, &[4]);
    let v = bin(
        BinaryFn::Div,
        Expr::Const {
            value: 7.0,
            dtype: DType::I64,
        },
        load(x, bcast(&[4], &[4])),
    );
    emit(&mut p, "div", o, v);
    let t = varc_ir::Tensor::from_i64(vec![4], vec![1, 2, 0, 3]).unwrap();
    check_fails(&p, &[t], "division by zero");
}

#[test]
fn casts_and_select() {
    let dts = [
        DType::F32,
        DType::I64,
        DType::I32,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];
    for &from in &dts {
        for &to in &dts {
            let n = 23;
            let mut p = Program::default();
            let x = input(&mut p, "x", from, &[n]);
            let o = output(&mut p, "o", to, &[n]);
            emit(
                &mut p,
                "cast",
                o,
                Expr::Cast(to, Box::new(load(x, bcast(&[n], &[n])))),
            );
            let mut vals: Vec<f64> = (0..n).map(|i| (i as f64 - 11.0) * 37.3).collect();
            vals[0] = 0.0;
            if from == DType::F32 {
                vals[1] = f64::NAN;
                vals[2] = 1e30;
                vals[3] = -1e30;
                vals[4] = -0.7;
            }
            let t =
                varc_ir::Tensor::new(vec![n], varc_ir::TensorData::from_f64(from, &vals)).unwrap();
            check(&p, &[t], EXACT);
        }
    }
    // select(x < y, x * 2, y) and a bool-mask chain, vectorised.
    for &n in &SIZES {
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::F32, &[n]);
        let y = input(&mut p, "y", DType::F32, &[n]);
        let o = output(&mut p, "o", DType::F32, &[n]);
        let (lx, ly) = (load(x, bcast(&[n], &[n])), load(y, bcast(&[n], &[n])));
        let c = bin(
            BinaryFn::Or,
            bin(BinaryFn::Lt, lx.clone(), ly.clone()),
            un(UnaryFn::Not, bin(BinaryFn::Le, lx.clone(), f32c(1.0))),
        );
        let v = bin(
            BinaryFn::Add,
            Expr::select(
                c.clone(),
                bin(BinaryFn::Mul, lx.clone(), f32c(2.0)),
                ly.clone(),
            ),
            Expr::Cast(DType::F32, Box::new(c)),
        );
        emit(&mut p, "sel", o, v);
        let mut r = Rng(2);
        let ins = [
            r.tensor(DType::F32, &[n], -3.0, 3.0),
            r.tensor(DType::F32, &[n], -3.0, 3.0),
        ];
        let jit = check(&p, &ins, F32);
        assert_eq!(jit.plans()[0].vector, n >= 4);
    }
}

fn reduce(op: ReduceFn, vars: Vec<(usize, usize)>, body: Expr) -> Expr {
    Expr::Reduce {
        op,
        vars,
        body: Box::new(body),
    }
}

#[test]
fn reductions_over_each_axis() {
    for op in [ReduceFn::Sum, ReduceFn::Max, ReduceFn::Min, ReduceFn::Prod] {
        for &(a, b, c) in &[(2usize, 3usize, 5usize), (3, 17, 7), (1, 5, 33)] {
            for axis in 0..3 {
                let shape = [a, b, c];
                let mut out_shape = shape.to_vec();
                out_shape.remove(axis);
                let mut p = Program::default();
                let x = input(&mut p, "x", DType::F32, &shape);
                let o = output(&mut p, "o", DType::F32, &out_shape);
                let st = strides(&shape);
                let mut terms = vec![(Var::Red(1), st[axis])];
                let mut d = 0;
                for (ax, &s) in st.iter().enumerate() {
                    if ax != axis {
                        terms.push((Var::Out(d), s));
                        d += 1;
                    }
                }
                let body = load(x, Affine { offset: 0, terms });
                emit(&mut p, "red", o, reduce(op, vec![(1, shape[axis])], body));
                let (lo, hi) = if op == ReduceFn::Prod {
                    (0.5, 1.5)
                } else {
                    (-3.0, 3.0)
                };
                let t = Rng(4).tensor(DType::F32, &shape, lo, hi);
                check(
                    &p,
                    &[t],
                    Tol {
                        abs: 1e-5,
                        rel: 1e-5,
                    },
                );
            }
        }
    }
}

#[test]
fn integer_reductions() {
    for op in [ReduceFn::Sum, ReduceFn::Max, ReduceFn::Min, ReduceFn::Prod] {
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::I32, &[3, 6]);
        let o = output(&mut p, "o", DType::I64, &[3]);
        let body = Expr::Cast(
            DType::I64,
            Box::new(load(
                x,
                Affine {
                    offset: 0,
                    terms: vec![(Var::Out(0), 6), (Var::Red(4), 1)],
                },
            )),
        );
        emit(&mut p, "ired", o, reduce(op, vec![(4, 6)], body));
        check(&p, &[Rng(8).tensor(DType::I32, &[3, 6], -9.0, 9.0)], EXACT);
    }
}

/// out[.., m, n] = Σ_k a[.., m, k] · b[k, n] + bias[n].
fn matmul(batch: usize, m: usize, k: usize, n: usize, bias: bool) -> Program {
    let mut p = Program::default();
    let a = input(&mut p, "a", DType::F32, &[batch, m, k]);
    let w = Rng(1).tensor(DType::F32, &[k, n], -1.0, 1.0);
    let b = buffer(&mut p, "w", DType::F32, &[k, n], BufKind::Weight(w));
    let o = output(&mut p, "o", DType::F32, &[batch, m, n]);
    let av = load(
        a,
        Affine {
            offset: 0,
            terms: vec![
                (Var::Out(0), (m * k) as i64),
                (Var::Out(1), k as i64),
                (Var::Red(0), 1),
            ],
        },
    );
    let bv = load(
        b,
        Affine {
            offset: 0,
            terms: vec![(Var::Red(0), n as i64), (Var::Out(2), 1)],
        },
    );
    let mut v = reduce(ReduceFn::Sum, vec![(0, k)], bin(BinaryFn::Mul, av, bv));
    if bias {
        let bt = Rng(2).tensor(DType::F32, &[n], -1.0, 1.0);
        let bb = buffer(&mut p, "bias", DType::F32, &[n], BufKind::Weight(bt));
        v = bin(BinaryFn::Add, v, load(bb, bcast(&[n], &[batch, m, n])));
    }
    emit(&mut p, "matmul", o, v);
    p
}

#[test]
fn matmul_odd_shapes() {
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (5, 17, 33),
        (7, 3, 16),
        (2, 33, 17),
        (9, 8, 40),
    ] {
        for bias in [false, true] {
            let p = matmul(2, m, k, n, bias);
            let t = Rng(5).tensor(DType::F32, &[2, m, k], -1.0, 1.0);
            let tol = Tol {
                abs: 1e-5 * k as f64,
                rel: 1e-5,
            };
            let jit = check(&p, &[t], tol);
            let plan = jit.plans()[0];
            assert_eq!(plan.vector, n >= 4);
            if n >= 16 {
                assert!(plan.cols == 4 && plan.rows >= 2, "{plan}");
            }
        }
    }
}

/// 1-D convolution with zero padding: out[c, x] = Σ_t in[c, x + t − pad]·w[t].
#[test]
fn guarded_loads_padding() {
    for &(len, taps, pad) in &[(1usize, 3usize, 1i64), (7, 3, 1), (17, 5, 2), (33, 3, 0)] {
        let out_len = len + 2 * pad as usize - taps + 1;
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::F32, &[2, len]);
        let wt = Rng(3).tensor(DType::F32, &[taps], -1.0, 1.0);
        let w = buffer(&mut p, "w", DType::F32, &[taps], BufKind::Weight(wt));
        let o = output(&mut p, "o", DType::F32, &[2, out_len]);
        let pos = Affine {
            offset: -pad,
            terms: vec![(Var::Out(1), 1), (Var::Red(0), 1)],
        };
        let mut xi = pos.clone();
        xi.terms.push((Var::Out(0), len as i64));
        let xv = Expr::Load {
            access: Box::new(Access {
                buf: x,
                index: xi,
                gathers: vec![],
            }),
            guards: vec![Guard {
                index: pos,
                lo: 0,
                hi: len as i64,
            }],
            fill: 0.0,
        };
        let wv = load(
            w,
            Affine {
                offset: 0,
                terms: vec![(Var::Red(0), 1)],
            },
        );
        emit(
            &mut p,
            "conv",
            o,
            reduce(ReduceFn::Sum, vec![(0, taps)], bin(BinaryFn::Mul, xv, wv)),
        );
        let t = Rng(6).tensor(DType::F32, &[2, len], -1.0, 1.0);
        check(
            &p,
            &[t],
            Tol {
                abs: 1e-5,
                rel: 1e-5,
            },
        );
    }
}

/// Max pooling with -inf padding, guard independent of the vector axis.
#[test]
fn guarded_loads_vectorised() {
    let (h, w) = (5usize, 9usize);
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::F32, &[h, w]);
    let o = output(&mut p, "o", DType::F32, &[h, w]);
    let row = Affine {
        offset: -1,
        terms: vec![(Var::Out(0), 1), (Var::Red(0), 1)],
    };
    let mut idx = Affine {
        offset: -(w as i64),
        terms: vec![
            (Var::Out(0), w as i64),
            (Var::Red(0), w as i64),
            (Var::Out(1), 1),
        ],
    };
    idx.offset = -(w as i64);
    let v = Expr::Load {
        access: Box::new(Access {
            buf: x,
            index: idx,
            gathers: vec![],
        }),
        guards: vec![Guard {
            index: row,
            lo: 0,
            hi: h as i64,
        }],
        fill: f64::NEG_INFINITY,
    };
    emit(&mut p, "pool", o, reduce(ReduceFn::Max, vec![(0, 3)], v));
    let jit = check(&p, &[Rng(1).tensor(DType::F32, &[h, w], -5.0, 5.0)], EXACT);
    assert!(jit.plans()[0].vector);
}

fn gather_program(idx_dtype: DType, n_idx: usize, dim: usize, cols: usize) -> Program {
    let mut p = Program::default();
    let table = input(&mut p, "table", DType::F32, &[dim, cols]);
    let ids = input(&mut p, "ids", idx_dtype, &[n_idx]);
    let o = output(&mut p, "o", DType::F32, &[n_idx, cols]);
    let index = load(
        ids,
        Affine {
            offset: 0,
            terms: vec![(Var::Out(0), 1)],
        },
    );
    let v = Expr::Load {
        access: Box::new(Access {
            buf: table,
            index: Affine {
                offset: 0,
                terms: vec![(Var::Out(1), 1)],
            },
            gathers: vec![GatherTerm {
                index,
                dim,
                stride: cols as i64,
            }],
        }),
        guards: vec![],
        fill: 0.0,
    };
    emit(&mut p, "gather", o, v);
    p
}

#[test]
fn gathers_with_negative_indices() {
    for dt in [DType::I64, DType::I32] {
        for cols in [1usize, 6, 16] {
            let p = gather_program(dt, 5, 4, cols);
            let table = Rng(2).tensor(DType::F32, &[4, cols], -1.0, 1.0);
            let ids = varc_ir::Tensor::new(
                vec![5],
                varc_ir::TensorData::from_f64(dt, &[0.0, 3.0, -1.0, -4.0, 2.0]),
            )
            .unwrap();
            let jit = check(&p, &[table, ids], EXACT);
            assert_eq!(jit.plans()[0].vector, cols >= 4);
        }
    }
}

#[test]
fn gather_out_of_range_is_an_error() {
    for bad in [4.0, -5.0, 1e6, -1e6] {
        for cols in [3usize, 8] {
            let p = gather_program(DType::I64, 3, 4, cols);
            let table = Rng(2).tensor(DType::F32, &[4, cols], -1.0, 1.0);
            let ids = varc_ir::Tensor::from_i64(vec![3], vec![1, bad as i64, 0]).unwrap();
            check_fails(&p, &[table, ids], "gather index out of range");
        }
    }
}

#[test]
fn index_expressions_and_scalar_kernels() {
    // out[i, j] = (i * 10 + j) as f32, and a rank-0 kernel.
    let mut p = Program::default();
    let o = output(&mut p, "o", DType::F32, &[3, 6]);
    let v = Expr::Cast(
        DType::F32,
        Box::new(bin(
            BinaryFn::Add,
            bin(
                BinaryFn::Mul,
                Expr::Index(Var::Out(0)),
                Expr::Const {
                    value: 10.0,
                    dtype: DType::I64,
                },
            ),
            Expr::Index(Var::Out(1)),
        )),
    );
    emit(&mut p, "iota", o, v);
    let s = output(&mut p, "s", DType::F32, &[]);
    let all = reduce(
        ReduceFn::Sum,
        vec![(0, 18)],
        load(
            o,
            Affine {
                offset: 0,
                terms: vec![(Var::Red(0), 1)],
            },
        ),
    );
    emit(&mut p, "total", s, all);
    check(&p, &[], EXACT);
}

#[test]
fn unsupported_dtypes_are_named() {
    for dt in [DType::F16, DType::BF16, DType::F64] {
        let mut p = Program::default();
        let x = input(&mut p, "x", dt, &[4]);
        let o = output(&mut p, "o", dt, &[4]);
        emit(&mut p, "blk0/attn:MatMul", o, load(x, bcast(&[4], &[4])));
        let err = compile_jit(&p).err().expect("must fail").to_string();
        assert_eq!(
            err,
            format!("kernel 'blk0/attn:MatMul': dtype {dt} is not supported by the CPU backend")
        );
        let t = Target::parse("aarch64-unknown-linux-gnu").unwrap();
        assert!(compile_for(&p, &t).is_err());
    }
}

#[test]
fn empty_domains_and_extents() {
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::F32, &[0, 5]);
    let o = output(&mut p, "o", DType::F32, &[0, 5]);
    emit(&mut p, "empty", o, load(x, bcast(&[0, 5], &[0, 5])));
    let s = output(&mut p, "s", DType::F32, &[5]);
    let v = reduce(ReduceFn::Max, vec![(0, 0)], f32c(1.0));
    emit(&mut p, "empty_reduce", s, v);
    // Integer Max/Min over nothing store the type's own extreme (the
    // interpreter's value), not a truncated i64 one.
    for (dt, op) in [
        (DType::I32, ReduceFn::Max),
        (DType::I32, ReduceFn::Min),
        (DType::I8, ReduceFn::Max),
        (DType::U8, ReduceFn::Min),
    ] {
        let o = output(&mut p, &format!("{op:?}_{dt}"), dt, &[3]);
        let one = Expr::Const {
            value: 1.0,
            dtype: dt,
        };
        emit(&mut p, "empty_int_reduce", o, reduce(op, vec![(0, 0)], one));
    }
    check(&p, &[Rng(1).tensor(DType::F32, &[0, 5], 0.0, 1.0)], EXACT);
}

#[test]
fn compile_for_reports_clif_and_disassembly() {
    let p = matmul(1, 4, 8, 32, true);
    for t in [
        "aarch64-unknown-linux-gnu",
        "x86_64-unknown-linux-gnu",
        "host",
    ] {
        let ks = compile_for(&p, &Target::parse(t).unwrap()).unwrap();
        assert!(ks[0].clif.contains("fma"), "{t}: {}", ks[0].clif);
        assert!(ks[0].disasm.as_deref().is_some_and(|d| !d.is_empty()));
        assert!(ks[0].plan.contains("register-blocked"), "{}", ks[0].plan);
    }
    assert!(
        Target::parse("riscv64gc-unknown-linux-gnu")
            .and_then(|t| compile_for(&p, &t))
            .is_err()
    );
}

/// Contractions big enough for the runtime's sgemm microkernel, with and
/// without an epilogue (bias), across tile tails and batch axes.
#[test]
fn matmul_through_sgemm() {
    for &(batch, m, k, n) in &[
        (1, 16, 16, 16),
        (2, 37, 67, 45),
        (3, 13, 300, 33),
        (1, 64, 5, 129),
    ] {
        for bias in [false, true] {
            let p = matmul(batch, m, k, n, bias);
            let t = Rng(6).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
            let tol = Tol {
                abs: 1e-5 * k as f64,
                rel: 1e-5,
            };
            let jit = check(&p, std::slice::from_ref(&t), tol);
            let plan = jit.plans()[0];
            // The bias of a weight B packed ahead is added by the
            // microkernel: no epilogue loop is left.
            assert!(plan.sgemm && !plan.epilogue, "{plan}");
            // The pure-Cranelift loops agree too.
            let opts = varc_backend_cpu::JitOptions { ukernels: false };
            let plain = varc_backend_cpu::compile_jit_with(&p, opts).unwrap();
            assert!(!plain.plans()[0].sgemm);
            let (a, b) = (
                jit.run(std::slice::from_ref(&t)).unwrap(),
                plain.run(&[t]).unwrap(),
            );
            compare("ukernels off", &a[0], &b[0], tol);
            // Objects for other targets never call into the runtime.
            let t = Target::parse("aarch64-unknown-linux-gnu").unwrap();
            assert!(!compile_for(&p, &t).unwrap()[0].plan.contains("sgemm"));
        }
    }
}

/// Epilogues around a column bias keep their loop over C with the bias
/// folded into the microkernel; a bias along the rows, or C read outside
/// the sum, keeps it in the loop. All agree with the interpreter.
#[test]
fn bias_folding_keeps_the_rest_of_the_epilogue() {
    let (batch, m, k, n) = (2, 21, 40, 35);
    let t = Rng(8).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
    let tol = Tol {
        abs: 1e-5 * k as f64,
        rel: 1e-5,
    };
    type Epilogue<'a> = &'a dyn Fn(&mut Program, Expr, Expr) -> Expr;
    let with = |f: Epilogue, rows: bool| {
        let mut p = matmul(batch, m, k, n, false);
        let bt = Rng(3).tensor(DType::F32, &[m.max(n)], -1.0, 1.0);
        let bb = buffer(
            &mut p,
            "bias2",
            DType::F32,
            &[m.max(n)],
            BufKind::Weight(bt),
        );
        let shape = if rows { [m, 1] } else { [1, n] };
        let bias = load(bb, bcast(&shape, &[batch, m, n]));
        let k0 = p.kernels.pop().unwrap();
        let v = f(&mut p, k0.value, bias);
        emit(&mut p, "matmul", k0.store.buf, v);
        p
    };
    let cases: [(Epilogue, bool, bool); 3] = [
        // 2·(C + b[j]): folded, the doubling stays.
        (
            &|_, c, b| bin(BinaryFn::Mul, f32c(2.0), bin(BinaryFn::Add, b, c)),
            false,
            true,
        ),
        // C + b[i]: a row bias is not the microkernel's.
        (&|_, c, b| bin(BinaryFn::Add, c, b), true, true),
        // (C + b[j]) · C: C also read outside the sum.
        (
            &|_, c, b| bin(BinaryFn::Mul, bin(BinaryFn::Add, c.clone(), b), c),
            false,
            true,
        ),
    ];
    for (f, rows, epilogue) in cases {
        let p = with(f, rows);
        let jit = check(&p, std::slice::from_ref(&t), tol);
        let plan = jit.plans()[0];
        assert!(plan.sgemm && plan.epilogue == epilogue, "{plan}");
    }
}

/// Attention scores: `s[b, i, j] = select(j ≤ i, 0.25·Σ_e q[b, i, e]·k[b, j, e], -inf)`
/// — B read transposed (column stride = head size), a masked epilogue.
#[test]
fn attention_scores_through_sgemm() {
    let (b, s, e) = (2usize, 29usize, 24usize);
    let mut p = Program::default();
    let q = input(&mut p, "q", DType::F32, &[b, s, e]);
    let kk = input(&mut p, "k", DType::F32, &[b, s, e]);
    let o = output(&mut p, "o", DType::F32, &[b, s, s]);
    let at = |buf, row: usize| {
        load(
            buf,
            Affine {
                offset: 0,
                terms: vec![
                    (Var::Out(0), (s * e) as i64),
                    (Var::Out(row), e as i64),
                    (Var::Red(0), 1),
                ],
            },
        )
    };
    let dot = reduce(
        ReduceFn::Sum,
        vec![(0, e)],
        bin(BinaryFn::Mul, at(q, 1), at(kk, 2)),
    );
    let scaled = bin(BinaryFn::Mul, dot, f32c(0.25));
    let ok = bin(
        BinaryFn::Le,
        Expr::Index(Var::Out(2)),
        Expr::Index(Var::Out(1)),
    );
    emit(
        &mut p,
        "scores",
        o,
        Expr::select(ok, scaled, f32c(f64::NEG_INFINITY)),
    );
    let mut r = Rng(9);
    let ins = [
        r.tensor(DType::F32, &[b, s, e], -1.0, 1.0),
        r.tensor(DType::F32, &[b, s, e], -1.0, 1.0),
    ];
    let jit = check(
        &p,
        &ins,
        Tol {
            abs: 1e-5,
            rel: 1e-5,
        },
    );
    assert!(jit.plans()[0].sgemm, "{}", jit.plans()[0]);
}

/// Row reductions over a contiguous reduction axis vectorise along it
/// (softmax's max and sum, norms' means), tails included.
#[test]
fn row_reductions_vectorise_along_the_reduction() {
    for &n in &[8usize, 13, 16, 35, 680] {
        for op in [ReduceFn::Sum, ReduceFn::Max, ReduceFn::Min] {
            let mut p = Program::default();
            let x = input(&mut p, "x", DType::F32, &[3, n]);
            let o = output(&mut p, "o", DType::F32, &[3, 1]);
            let body = load(
                x,
                Affine {
                    offset: 0,
                    terms: vec![(Var::Out(0), n as i64), (Var::Red(0), 1)],
                },
            );
            emit(&mut p, "rows", o, reduce(op, vec![(0, n)], body));
            let t = Rng(10).tensor(DType::F32, &[3, n], -3.0, 3.0);
            check(
                &p,
                &[t],
                Tol {
                    abs: 1e-5,
                    rel: 1e-5,
                },
            );
        }
    }
}

/// Runs on a thread pool split large kernels along their first long axis
/// (batch loops of sgemm kernels, outer loops of the others) and sgemm
/// calls into row blocks, with bit-identical results for any thread count.
#[test]
fn thread_pools_give_bit_identical_results() {
    use std::sync::Arc;
    use varc_runtime::pool::ThreadPool;
    // Batched (split at the kernel), one large product (split inside
    // sgemm), and the pure-Cranelift loops of both.
    for &(batch, m, k, n) in &[(3usize, 64usize, 300usize, 129usize), (1, 200, 96, 160)] {
        let p = matmul(batch, m, k, n, true);
        let t = Rng(7).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
        for ukernels in [true, false] {
            let opts = varc_backend_cpu::JitOptions { ukernels };
            let jit = varc_backend_cpu::compile_jit_with(&p, opts).unwrap();
            let serial = jit.run(std::slice::from_ref(&t)).unwrap();
            for threads in [1, 2, 3] {
                let pool = Arc::new(ThreadPool::new(threads));
                for _ in 0..2 {
                    let par = jit.run_on(std::slice::from_ref(&t), &pool).unwrap();
                    assert_eq!(
                        serial[0].data().to_le_bytes(),
                        par[0].data().to_le_bytes(),
                        "{batch}x{m}x{k}x{n}, ukernels {ukernels}, {threads} threads"
                    );
                }
            }
        }
    }
    // A guarded scalar kernel over a long outer axis, against the
    // interpreter (its errors stop every share).
    let (c, len, taps) = (64usize, 700usize, 5usize);
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::F32, &[c, len]);
    let o = output(&mut p, "o", DType::F32, &[c, len]);
    let pos = Affine {
        offset: -2,
        terms: vec![(Var::Out(1), 1), (Var::Red(0), 1)],
    };
    let mut xi = pos.clone();
    xi.terms.push((Var::Out(0), len as i64));
    let xv = Expr::Load {
        access: Box::new(Access {
            buf: x,
            index: xi,
            gathers: vec![],
        }),
        guards: vec![Guard {
            index: pos,
            lo: 0,
            hi: len as i64,
        }],
        fill: 0.0,
    };
    emit(&mut p, "sum", o, reduce(ReduceFn::Sum, vec![(0, taps)], xv));
    let t = Rng(8).tensor(DType::F32, &[c, len], -1.0, 1.0);
    let tol = Tol {
        abs: 1e-5,
        rel: 1e-5,
    };
    let jit = check(&p, std::slice::from_ref(&t), tol);
    let pool = Arc::new(ThreadPool::new(2));
    let par = jit.run_on(std::slice::from_ref(&t), &pool).unwrap();
    assert_eq!(
        jit.run(&[t]).unwrap()[0].data().to_le_bytes(),
        par[0].data().to_le_bytes()
    );
}
