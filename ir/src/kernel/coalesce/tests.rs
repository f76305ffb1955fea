//! Which reductions coalesce, and that `eval` gives bit-identical outputs
//! before and after.

use super::coalesce_reductions;
use crate::dtype::DType;
use crate::kernel::eval::run_program;
use crate::kernel::{
    Access, Affine, BinaryFn, BufId, BufKind, Buffer, Expr, Guard, Kernel, Program, ReduceFn, Var,
};
use crate::tensor::Tensor;

fn aff(offset: i64, terms: &[(Var, i64)]) -> Affine {
    Affine {
        offset,
        terms: terms.to_vec(),
    }
}

/// `out[i] = Σ body` over `vars` with an `[8, 2, 64]` input `x` and an
/// output of 8.
fn program(vars: &[(usize, usize)], body: Expr) -> Program {
    let mut p = Program::default();
    let x = p.add_buffer(Buffer {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![8, 2, 64],
        kind: BufKind::Input(0),
    });
    let out = p.add_buffer(Buffer {
        name: "out".into(),
        dtype: DType::F32,
        shape: vec![8],
        kind: BufKind::Output(0),
    });
    assert_eq!((x, out), (BufId(0), BufId(1)));
    p.inputs.push(x);
    p.outputs.push(out);
    p.kernels.push(Kernel {
        name: "k".into(),
        domain: vec![8],
        store: Access {
            buf: out,
            index: Affine::row_major(&[8]),
            gathers: vec![],
        },
        value: Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vars.to_vec(),
            body: Box::new(body),
        },
        library: None,
    });
    p
}

fn load(index: Affine) -> Expr {
    Expr::load(BufId(0), index)
}

fn vars_of(p: &Program) -> Vec<(usize, usize)> {
    match &p.kernels[0].value {
        Expr::Reduce { vars, .. } => vars.clone(),
        e => panic!("not a reduction: {e:?}"),
    }
}

/// Outputs before and after agree bit for bit.
fn same(before: &Program, after: &Program) {
    let n = 8 * 2 * 64;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 7.0 - 7.0)
        .collect();
    let x = Tensor::from_f32(vec![8, 2, 64], v).unwrap();
    let a = run_program(before, std::slice::from_ref(&x)).unwrap();
    let b = run_program(after, &[x]).unwrap();
    let bits = |t: &Tensor| -> Vec<u64> { t.to_f64_vec().iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&a[0]), bits(&b[0]));
}

const I: Var = Var::Out(0);
const R0: Var = Var::Red(0);
const R1: Var = Var::Red(1);
const R2: Var = Var::Red(2);

/// GroupNorm's statistics: `Σ x[128·i + 64·r0 + r1]` and a squared
/// deviation reading x twice become one reduction of 128.
#[test]
fn contiguous_variables_merge() {
    let x = || load(aff(0, &[(I, 128), (R0, 64), (R1, 1)]));
    for body in [x(), Expr::binary(BinaryFn::Mul, x(), x())] {
        let p = program(&[(0, 2), (1, 64)], body);
        let q = coalesce_reductions(p.clone());
        assert_eq!(vars_of(&q), vec![(0, 128)]);
        same(&p, &q);
    }
}

/// Three variables (the middle of extent 1 dropped) merge into one;
/// guards on the merged index keep their value.
#[test]
fn extent_one_drops_and_three_merge() {
    let idx = aff(0, &[(I, 128), (R0, 64), (R1, 5), (R2, 1)]);
    let guard = Guard {
        index: aff(0, &[(R0, 64), (R2, 1)]),
        lo: 3,
        hi: 100,
    };
    let body = Expr::Load {
        access: Box::new(Access {
            buf: BufId(0),
            index: idx,
            gathers: vec![],
        }),
        guards: vec![guard],
        fill: 0.0,
    };
    let p = program(&[(0, 2), (1, 1), (2, 64)], body);
    let q = coalesce_reductions(p.clone());
    assert_eq!(vars_of(&q), vec![(0, 128)]);
    same(&p, &q);
}

/// Transposed addresses, and variables used as values, stay.
#[test]
fn other_reductions_stay() {
    let transposed = load(aff(0, &[(I, 128), (R0, 1), (R1, 2)]));
    let p = program(&[(0, 2), (1, 64)], transposed);
    assert_eq!(coalesce_reductions(p.clone()), p);
    let mixed = Expr::binary(
        BinaryFn::Mul,
        load(aff(0, &[(I, 128), (R0, 64), (R1, 1)])),
        load(aff(0, &[(R0, 1), (R1, 2)])),
    );
    let p = program(&[(0, 2), (1, 64)], mixed);
    assert_eq!(coalesce_reductions(p.clone()), p);
    let indexed = Expr::binary(
        BinaryFn::Add,
        load(aff(0, &[(I, 128), (R0, 64), (R1, 1)])),
        Expr::Cast(DType::F32, Box::new(Expr::Index(R0))),
    );
    let p = program(&[(0, 2), (1, 64)], indexed);
    assert_eq!(coalesce_reductions(p.clone()), p);
}
