//! Property test: random elementwise / reduction kernels over random shapes
//! with numpy broadcasting, JIT against the interpreter (plus guard pages
//! and cross-compilation, through `common::check`).

mod common;

use common::*;
use proptest::prelude::*;
use varc_ir::DType;
use varc_ir::kernel::{Affine, BinaryFn, Expr, Program, ReduceFn, UnaryFn, Var};

#[derive(Clone, Debug)]
enum E {
    In(usize),
    C(f32),
    U(u8, Box<E>),
    B(u8, Box<E>, Box<E>),
    /// select(a < b, x, y)
    Sel(Box<[E; 4]>),
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![(0..2usize).prop_map(E::In), (-2.0f32..2.0).prop_map(E::C)];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            (0..6u8, inner.clone()).prop_map(|(f, a)| E::U(f, Box::new(a))),
            (0..5u8, inner.clone(), inner.clone()).prop_map(|(f, a, b)| E::B(
                f,
                Box::new(a),
                Box::new(b)
            )),
            [inner.clone(), inner.clone(), inner.clone(), inner].prop_map(|v| E::Sel(Box::new(v))),
        ]
    })
}

#[derive(Clone, Debug)]
struct Case {
    dims: Vec<usize>,
    /// Per input: which dims it keeps (others broadcast), leading dims dropped.
    keep: [(Vec<bool>, usize); 2],
    /// Reduce over this axis of `dims` (Sum or Max).
    reduce: Option<(usize, bool)>,
    value: E,
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(prop_oneof![1..=5usize, 6..=18usize], 1..=3)
        .prop_flat_map(|dims| {
            let r = dims.len();
            let keep = (prop::collection::vec(any::<bool>(), r), 0..r);
            (
                Just(dims),
                [keep.clone(), keep],
                prop::option::of((0..r, any::<bool>())),
                expr(),
            )
        })
        .prop_map(|(dims, keep, reduce, value)| Case {
            dims,
            keep,
            reduce,
            value,
        })
}

fn build(c: &Case, p: &mut Program, ins: &[(varc_ir::kernel::BufId, Vec<usize>)]) -> Expr {
    let axis_var = |d: usize| match c.reduce {
        Some((r, _)) if r == d => Var::Red(0),
        Some((r, _)) if d > r => Var::Out(d - 1),
        _ => Var::Out(d),
    };
    fn go(e: &E, ld: &dyn Fn(usize) -> Expr) -> Expr {
        let b = |x: &E| go(x, ld);
        match e {
            E::In(i) => ld(*i),
            E::C(v) => Expr::f32(*v as f64),
            E::U(f, a) => {
                let a = b(a);
                match f {
                    0 => Expr::unary(UnaryFn::Neg, a),
                    1 => Expr::unary(UnaryFn::Abs, a),
                    2 => Expr::unary(UnaryFn::Tanh, a),
                    3 => Expr::unary(UnaryFn::Sigmoid, a),
                    4 => Expr::unary(UnaryFn::Exp, Expr::unary(UnaryFn::Tanh, a)),
                    _ => Expr::unary(UnaryFn::Sqrt, Expr::unary(UnaryFn::Abs, a)),
                }
            }
            E::B(f, x, y) => {
                let f = [
                    BinaryFn::Add,
                    BinaryFn::Sub,
                    BinaryFn::Mul,
                    BinaryFn::Max,
                    BinaryFn::Min,
                ][*f as usize];
                Expr::binary(f, b(x), b(y))
            }
            E::Sel(v) => Expr::select(
                Expr::binary(BinaryFn::Lt, b(&v[0]), b(&v[1])),
                b(&v[2]),
                b(&v[3]),
            ),
        }
    }
    let ld = |i: usize| {
        let (buf, shape) = &ins[i];
        let lead = c.dims.len() - shape.len();
        let st = strides(shape);
        let terms = (0..shape.len())
            .filter(|&d| shape[d] != 1)
            .map(|d| (axis_var(lead + d), st[d]))
            .collect();
        load(*buf, Affine { offset: 0, terms })
    };
    let _ = p;
    let body = go(&c.value, &ld);
    match c.reduce {
        Some((r, max)) => Expr::Reduce {
            op: if max { ReduceFn::Max } else { ReduceFn::Sum },
            vars: vec![(0, c.dims[r])],
            body: Box::new(body),
        },
        None => body,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_kernels_match_the_interpreter(c in case(), seed in 1u64..1000) {
        let mut p = Program::default();
        let mut rng = Rng(seed);
        let mut ins = vec![];
        let mut tensors = vec![];
        for (i, (keep, drop)) in c.keep.iter().enumerate() {
            let shape: Vec<usize> = c.dims.iter().zip(keep).skip(*drop)
                .map(|(&d, &k)| if k { d } else { 1 }).collect();
            let b = input(&mut p, &format!("x{i}"), DType::F32, &shape);
            tensors.push(rng.tensor(DType::F32, &shape, -2.0, 2.0));
            ins.push((b, shape));
        }
        let mut out_dims = c.dims.clone();
        if let Some((r, _)) = c.reduce {
            out_dims.remove(r);
        }
        let o = output(&mut p, "o", DType::F32, &out_dims);
        let value = build(&c, &mut p, &ins);
        emit(&mut p, "random", o, value);
        check(&p, &tensors, Tol { abs: 1e-3, rel: 1e-4 });
    }
}
