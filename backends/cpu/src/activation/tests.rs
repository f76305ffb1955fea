//! Kernels `act(x)` through the runtime routine against the kernel IR
//! interpreter, with the routine on and off. Bound: |y − ref| ≤ 1e-6 ·
//! max(|ref|, |x|) — relative where the result is not much smaller than
//! its argument, scaled by |x| where GELU's `1 + tanh`/`1 + erf` cancels
//! (the inline code has the same f32 cancellation). On an FMA host the
//! routine performs the inline code's operations, so on and off agree to
//! the bit there; pool runs are bit-identical to serial runs.

use crate::{JitOptions, JitProgram, compile_jit_with};
use std::sync::Arc;
use varc_ir::kernel::activation::Activation;
use varc_ir::kernel::{
    Access, Affine, BinaryFn, BufId, BufKind, Buffer, Expr, Kernel, Program, ReduceFn, Var, eval,
};
use varc_ir::{DType, Tensor};
use varc_runtime::pool::ThreadPool;
use varc_runtime::ukernel::Isa;

fn buffer(p: &mut Program, name: &str, shape: &[usize], kind: BufKind) -> BufId {
    let id = p.add_buffer(Buffer {
        name: name.into(),
        dtype: DType::F32,
        shape: shape.to_vec(),
        kind: kind.clone(),
    });
    match kind {
        BufKind::Input(_) => p.inputs.push(id),
        BufKind::Output(_) => p.outputs.push(id),
        _ => {}
    }
    id
}

/// Values spread over [−7, 7] (both GELU tails, SiLU's curve).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 14_003) as f32 / 1000.0 - 7.0)
        .collect()
}

/// `act(a + bias)` over `domain`, bias broadcast along the last axis;
/// the inputs, and the argument `x` at every point.
fn elementwise(act: Activation, domain: &[usize]) -> (Program, Vec<Tensor>, Vec<f32>) {
    let mut p = Program::default();
    let last = *domain.last().unwrap();
    let a = buffer(&mut p, "a", domain, BufKind::Input(0));
    let bias = buffer(&mut p, "bias", &[last], BufKind::Input(1));
    let o = buffer(&mut p, "o", domain, BufKind::Output(0));
    let d = domain.len();
    let x = Expr::binary(
        BinaryFn::Add,
        Expr::load(a, Affine::row_major(domain)),
        Expr::load(
            bias,
            Affine {
                offset: 0,
                terms: vec![(Var::Out(d - 1), 1)],
            },
        ),
    );
    p.kernels.push(Kernel {
        name: "act".into(),
        domain: domain.to_vec(),
        store: Access {
            buf: o,
            index: Affine::row_major(domain),
            gathers: vec![],
        },
        value: act.build(DType::F32, &x),
        library: None,
    });
    let n: usize = domain.iter().product();
    let (av, bv) = (values(n, 1), values(last, 2));
    let xs = av
        .iter()
        .enumerate()
        .map(|(i, &v)| v + bv[i % last])
        .collect();
    let inputs = vec![
        Tensor::from_f32(domain.to_vec(), av).unwrap(),
        Tensor::from_f32(vec![last], bv).unwrap(),
    ];
    (p, inputs, xs)
}

/// `act(Σ_r a[i, r]·w[r, j])`: an sgemm kernel whose epilogue is the
/// activation of the product alone.
fn matmul(act: Activation, m: usize, k: usize, n: usize) -> (Program, Vec<Tensor>) {
    let mut p = Program::default();
    let a = buffer(&mut p, "a", &[m, k], BufKind::Input(0));
    let w = buffer(&mut p, "w", &[k, n], BufKind::Input(1));
    let o = buffer(&mut p, "o", &[m, n], BufKind::Output(0));
    let (i, j, r) = (Var::Out(0), Var::Out(1), Var::Red(0));
    let at = |terms: Vec<(Var, i64)>| Affine { offset: 0, terms };
    let sum = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(0, k)],
        body: Box::new(Expr::binary(
            BinaryFn::Mul,
            Expr::load(a, at(vec![(i, k as i64), (r, 1)])),
            Expr::load(w, at(vec![(r, n as i64), (j, 1)])),
        )),
    };
    p.kernels.push(Kernel {
        name: "mm".into(),
        domain: vec![m, n],
        store: Access {
            buf: o,
            index: Affine::row_major(&[m, n]),
            gathers: vec![],
        },
        value: act.build(DType::F32, &sum),
        library: None,
    });
    let inputs = vec![
        Tensor::from_f32(
            vec![m, k],
            values(m * k, 3).iter().map(|v| v / 8.0).collect(),
        )
        .unwrap(),
        Tensor::from_f32(
            vec![k, n],
            values(k * n, 4).iter().map(|v| v / 8.0).collect(),
        )
        .unwrap(),
    ];
    (p, inputs)
}

fn compile(p: &Program, ukernels: bool) -> JitProgram {
    compile_jit_with(p, JitOptions { ukernels }).unwrap()
}

fn out(jit: &JitProgram, inputs: &[Tensor], threads: Option<usize>) -> Vec<f32> {
    let r = match threads {
        None => jit.run(inputs),
        Some(t) => jit.run_on(inputs, &Arc::new(ThreadPool::new(t))),
    };
    r.unwrap()[0].as_f32().unwrap().to_vec()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// On and off agree with the interpreter within the bound (`xs`: the
/// activation's arguments; `None`: a matrix product, whose f32 sums in
/// another order than the interpreter's get 1e-5 relative and absolute),
/// with each other bitwise on an FMA host (elementwise only), and pool
/// runs with serial runs.
fn check(name: &str, p: &Program, inputs: &[Tensor], xs: Option<&[f32]>, label: &str) {
    let want = eval::run_program(p, inputs).unwrap()[0]
        .as_f32()
        .unwrap()
        .to_vec();
    let on = compile(p, true);
    assert_eq!(on.library(0), Some(label), "{name}");
    let off = compile(p, false);
    assert_eq!(off.library(0), None, "{name}: routine off");
    let (y_on, y_off) = (out(&on, inputs, None), out(&off, inputs, None));
    for (i, (&w, (&a, &b))) in want.iter().zip(y_on.iter().zip(&y_off)).enumerate() {
        let tol = match xs {
            Some(xs) => 1e-6 * w.abs().max(xs[i].abs()),
            None => 1e-5 * (w.abs() + 1.0),
        };
        for (got, what) in [(a, "on"), (b, "off")] {
            assert!(
                (got - w).abs() <= tol,
                "{name} {what} [{i}]: {got:e} vs {w:e}"
            );
        }
    }
    if xs.is_some() && Isa::detect() != Isa::Portable {
        assert_eq!(bits(&y_on), bits(&y_off), "{name}: on vs off");
    }
    for threads in [1, 2] {
        assert_eq!(
            bits(&out(&on, inputs, Some(threads))),
            bits(&y_on),
            "{name}: {threads} threads"
        );
    }
}

#[test]
fn elementwise_kernels_match_the_interpreter() {
    // 5·67·101 points: above the parallel threshold, odd everywhere; the
    // second domain's split axis is not the first.
    for domain in [&[5, 67, 101][..], &[1, 67, 5, 101]] {
        for act in Activation::ALL {
            let (p, inputs, xs) = elementwise(act, domain);
            let name = format!("{act:?} {domain:?}");
            let label = super::label(None, act);
            check(&name, &p, &inputs, Some(&xs), label);
        }
    }
}

#[test]
fn sgemm_epilogue_matches_the_interpreter() {
    for act in Activation::ALL {
        let (p, inputs) = matmul(act, 67, 33, 129);
        let label = super::label(Some("sgemm"), act);
        check(&format!("matmul {act:?}"), &p, &inputs, None, label);
    }
}

#[test]
fn near_misses_compile_inline() {
    // A SiLU stored transposed: not the dense row-major index.
    let (mut p, inputs, _) = elementwise(Activation::Silu, &[7, 9]);
    p.kernels[0].store.index = Affine {
        offset: 0,
        terms: vec![(Var::Out(0), 1), (Var::Out(1), 7)],
    };
    let jit = compile(&p, true);
    assert_eq!(jit.library(0), None);
    let want = eval::run_program(&p, &inputs).unwrap();
    let got = jit.run(&inputs).unwrap();
    let (w, g) = (want[0].as_f32().unwrap(), got[0].as_f32().unwrap());
    for (a, b) in w.iter().zip(g) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0));
    }
}
