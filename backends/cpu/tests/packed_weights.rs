//! Weight B operands packed at compile time (`varc_sgemm_packed`): the JIT
//! against the kernel IR interpreter on single-row (GEMV-like), small and
//! batched products, plain and transposed weight views, with epilogues;
//! weight data dropped from the JIT's program only when nothing else reads
//! it; bit-identical results on any thread count.

mod common;

use common::*;
use std::sync::Arc;
use varc_backend_cpu::{JitOptions, compile_jit, compile_jit_owned, compile_jit_with};
use varc_ir::DType;
use varc_ir::kernel::{Affine, BinaryFn, BufId, BufKind, Expr, Program, ReduceFn, Var, eval};
use varc_runtime::pool::ThreadPool;

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}

fn dot(a: Expr, b: Expr, k: usize) -> Expr {
    Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(0, k)],
        body: Box::new(bin(BinaryFn::Mul, a, b)),
    }
}

/// `o[b, i, j] = Σ_p x[b, i, p]·W[p, j] (+ bias[j])` with `W` stored
/// `[k, n]` or, `transposed`, `[n, k]` (read as its transpose).
struct Linear {
    program: Program,
    w: BufId,
    bias: Option<BufId>,
}

fn linear(batch: usize, m: usize, k: usize, n: usize, transposed: bool, bias: bool) -> Linear {
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::F32, &[batch, m, k]);
    let wshape = if transposed { [n, k] } else { [k, n] };
    let wt = Rng(11).tensor(DType::F32, &wshape, -1.0, 1.0);
    let w = buffer(&mut p, "w", DType::F32, &wshape, BufKind::Weight(wt));
    let o = output(&mut p, "o", DType::F32, &[batch, m, n]);
    let xv = load(
        x,
        Affine {
            offset: 0,
            terms: vec![
                (Var::Out(0), (m * k) as i64),
                (Var::Out(1), k as i64),
                (Var::Red(0), 1),
            ],
        },
    );
    let (rs, cs) = if transposed {
        (1, k as i64)
    } else {
        (n as i64, 1)
    };
    let wv = load(
        w,
        Affine {
            offset: 0,
            terms: vec![(Var::Red(0), rs), (Var::Out(2), cs)],
        },
    );
    let mut v = dot(xv, wv, k);
    let mut bias_buf = None;
    if bias {
        let bt = Rng(12).tensor(DType::F32, &[n], -1.0, 1.0);
        let bb = buffer(&mut p, "bias", DType::F32, &[n], BufKind::Weight(bt));
        v = bin(BinaryFn::Add, v, load(bb, bcast(&[n], &[batch, m, n])));
        bias_buf = Some(bb);
    }
    emit(&mut p, "linear", o, v);
    Linear {
        program: p,
        w,
        bias: bias_buf,
    }
}

fn tol(k: usize) -> Tol {
    Tol {
        abs: 1e-5 * k as f64,
        rel: 1e-5,
    }
}

#[test]
fn packed_weights_match_the_interpreter() {
    // One row (a token), a few rows (the small tile), tile tails, a batch
    // axis broadcasting the weight; depths across several depth blocks.
    for &(batch, m, k, n) in &[
        (1, 1, 64, 64),
        (1, 1, 600, 130),
        (2, 1, 100, 96),
        (1, 3, 300, 67),
        (3, 4, 40, 200),
        (1, 5, 77, 33),
        (2, 13, 257, 70),
    ] {
        for transposed in [false, true] {
            for bias in [false, true] {
                let lin = linear(batch, m, k, n, transposed, bias);
                let x = Rng(13).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
                let jit = check(&lin.program, std::slice::from_ref(&x), tol(k));
                let plan = jit.plans()[0];
                let what = format!("{batch}x{m}x{k}x{n} t={transposed} bias={bias}");
                // A bias rides in the microkernel call: no epilogue loop.
                assert!(plan.sgemm && !plan.epilogue, "{what}: {plan}");
                assert!(jit.packed_bytes() >= 4 * k * n, "{what}: B not packed");
                // The pure-Cranelift loops agree.
                let plain = compile_jit_with(&lin.program, JitOptions { ukernels: false })
                    .unwrap()
                    .run(std::slice::from_ref(&x))
                    .unwrap();
                compare(&what, &jit.run(&[x]).unwrap()[0], &plain[0], tol(k));
            }
        }
    }
}

#[test]
fn owned_compilation_releases_weights_read_only_packed() {
    let (batch, m, k, n) = (2, 3, 150, 90);
    let lin = linear(batch, m, k, n, false, true);
    let x = Rng(14).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
    let want = eval::run_program(&lin.program, std::slice::from_ref(&x)).unwrap();
    let shared = compile_jit(&lin.program).unwrap();
    let owned = compile_jit_owned(lin.program.clone(), JitOptions::default()).unwrap();
    // W is read only as the packed B; the bias by the microkernel call.
    for jit in [&shared, &owned] {
        assert_eq!(jit.released_weights(), &[lin.w]);
        let BufKind::Weight(t) = &jit.program().buffer(lin.w).kind else {
            panic!("w is a weight");
        };
        assert_eq!(t.numel(), 0, "released data is dropped");
        let BufKind::Weight(t) = &jit.program().buffer(lin.bias.unwrap()).kind else {
            panic!("bias is a weight");
        };
        assert_eq!(t.numel(), n, "the bias is kept");
    }
    let got = owned.run(std::slice::from_ref(&x)).unwrap();
    compare("owned", &got[0], &want[0], tol(k));
    assert_eq!(
        got[0].data().to_le_bytes(),
        shared.run(&[x]).unwrap()[0].data().to_le_bytes()
    );
}

#[test]
fn weights_read_elsewhere_are_kept() {
    // A second kernel reads W elementwise: W must stay.
    let (m, k, n) = (4, 64, 64);
    let mut lin = linear(1, m, k, n, false, false);
    let p = &mut lin.program;
    let o2 = output(p, "w_twice", DType::F32, &[k, n]);
    let wv = load(lin.w, Affine::row_major(&[k, n]));
    emit(p, "twice", o2, bin(BinaryFn::Add, wv.clone(), wv));
    let x = Rng(15).tensor(DType::F32, &[1, m, k], -1.0, 1.0);
    let want = eval::run_program(p, std::slice::from_ref(&x)).unwrap();
    let owned = compile_jit_owned(p.clone(), JitOptions::default()).unwrap();
    assert!(owned.packed_bytes() > 0);
    assert!(owned.released_weights().is_empty());
    let got = owned.run(&[x]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        compare("kept", g, w, tol(k));
    }
}

#[test]
fn packed_products_are_bit_identical_on_any_thread_count() {
    // One wide row (split by columns inside sgemm), a tall product (split
    // by rows), and a batch (split at the kernel).
    for &(batch, m, k, n) in &[(1, 1, 512, 1024), (1, 150, 200, 96), (3, 2, 300, 256)] {
        let lin = linear(batch, m, k, n, true, true);
        let x = Rng(16).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
        let jit = compile_jit(&lin.program).unwrap();
        let serial = jit.run(std::slice::from_ref(&x)).unwrap();
        for threads in [2, 3] {
            let pool = Arc::new(ThreadPool::new(threads));
            let par = jit.run_on(std::slice::from_ref(&x), &pool).unwrap();
            assert_eq!(
                serial[0].data().to_le_bytes(),
                par[0].data().to_le_bytes(),
                "{batch}x{m}x{k}x{n} on {threads} threads"
            );
        }
    }
}

#[test]
fn weights_that_vary_with_a_batch_axis_are_not_packed() {
    // o[b, i, j] = Σ_p x[b, i, p]·W[b, p, j]: one weight matrix per batch
    // point. With m = 1 the contraction stays in Cranelift loops; with
    // m = 4 it calls sgemm packing B per call.
    for m in [1, 4] {
        let (batch, k, n) = (3, 40, 128);
        let mut p = Program::default();
        let x = input(&mut p, "x", DType::F32, &[batch, m, k]);
        let wt = Rng(17).tensor(DType::F32, &[batch, k, n], -1.0, 1.0);
        let w = buffer(&mut p, "w", DType::F32, &[batch, k, n], BufKind::Weight(wt));
        let o = output(&mut p, "o", DType::F32, &[batch, m, n]);
        let xv = load(
            x,
            Affine {
                offset: 0,
                terms: vec![
                    (Var::Out(0), (m * k) as i64),
                    (Var::Out(1), k as i64),
                    (Var::Red(0), 1),
                ],
            },
        );
        let wv = load(
            w,
            Affine {
                offset: 0,
                terms: vec![
                    (Var::Out(0), (k * n) as i64),
                    (Var::Red(0), n as i64),
                    (Var::Out(2), 1),
                ],
            },
        );
        emit(&mut p, "bmm", o, dot(xv, wv, k));
        let xt = Rng(18).tensor(DType::F32, &[batch, m, k], -1.0, 1.0);
        let jit = check(&p, &[xt], tol(k));
        assert_eq!(jit.packed_bytes(), 0, "m={m}");
        assert_eq!(jit.plans()[0].sgemm, m > 1, "m={m}: {}", jit.plans()[0]);
    }
}
