//! Maximum error of the inline f32 approximations (exp, log, tanh, sigmoid,
//! erf) against f64 references over dense sweeps. The measured figures are
//! documented in `src/math.rs`; the bounds asserted here are about twice
//! those, so a regression in a polynomial or its range reduction fails.

mod common;

use common::*;
use varc_backend_cpu::compile_jit;
use varc_ir::DType;
use varc_ir::Tensor;
use varc_ir::kernel::{Program, UnaryFn};

/// erf to ~1e-15: Taylor series for |x| ≤ 4 (terms shrink past n ≈ 16;
/// cancellation costs at most ~5 digits), 1 beyond (erfc(4) ≈ 1.5e-8 is
/// below half an f32 ulp of 1).
fn erf_ref(x: f64) -> f64 {
    let ax = x.abs();
    if ax > 4.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (ax, ax);
    for n in 1..200 {
        term *= -ax * ax / n as f64;
        let t = term / (2 * n + 1) as f64;
        sum += t;
        if t.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    (sum * std::f64::consts::FRAC_2_SQRT_PI).copysign(x)
}

fn reference(f: UnaryFn, x: f64) -> f64 {
    match f {
        UnaryFn::Exp => x.exp(),
        UnaryFn::Log => x.ln(),
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryFn::Erf => erf_ref(x),
        _ => unreachable!(),
    }
}

/// (max relative error where |ref| ≥ min_rel, max absolute error where
/// |ref| ≤ 1).
fn measure(f: UnaryFn, xs: Vec<f32>, min_rel: f64) -> (f64, f64) {
    let n = xs.len();
    let mut p = Program::default();
    let x = input(&mut p, "x", DType::F32, &[n]);
    let o = output(&mut p, "o", DType::F32, &[n]);
    emit(
        &mut p,
        "f",
        o,
        varc_ir::kernel::Expr::unary(f, load(x, bcast(&[n], &[n]))),
    );
    let jit = compile_jit(&p).unwrap();
    assert!(jit.plans()[0].vector);
    let out = jit
        .run(&[Tensor::from_f32(vec![n], xs.clone()).unwrap()])
        .unwrap();
    let got = out[0].as_f32().unwrap();
    let (mut rel, mut abs) = (0f64, 0f64);
    for (&x, &g) in xs.iter().zip(got) {
        let want = reference(f, x as f64);
        let g = g as f64;
        if want.is_nan() || want.is_infinite() {
            assert!(
                g.is_nan() == want.is_nan() && (want.is_nan() || g == want),
                "{f:?}({x}) = {g}, want {want}"
            );
            continue;
        }
        if (want as f32).is_infinite() {
            assert!(g.is_infinite(), "{f:?}({x}) = {g}, want overflow");
            continue;
        }
        let e = (g - want).abs();
        if want.abs() <= 1.0 {
            abs = abs.max(e);
        }
        if want.abs() >= min_rel {
            rel = rel.max(e / want.abs());
        }
    }
    (rel, abs)
}

fn linear(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect();
    v.extend([0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    v
}

/// Every representable f32 in [lo, hi] with a stride of `step` bit patterns.
fn bits(lo: f32, hi: f32, step: usize) -> Vec<f32> {
    (lo.to_bits()..=hi.to_bits())
        .step_by(step)
        .map(f32::from_bits)
        .collect()
}

fn report(name: &str, (rel, abs): (f64, f64), max_rel: f64, max_abs: f64) {
    println!("{name:8} max rel {rel:.2e}  max abs {abs:.2e}");
    assert!(
        rel <= max_rel,
        "{name}: relative error {rel:e} > {max_rel:e}"
    );
    assert!(
        abs <= max_abs,
        "{name}: absolute error {abs:e} > {max_abs:e}"
    );
}

#[test]
fn exp_error() {
    let mut xs = linear(-103.0, 88.7, 1 << 20);
    xs.extend(linear(-1.0, 1.0, 1 << 20));
    let (rel, _) = measure(UnaryFn::Exp, xs, f32::MIN_POSITIVE as f64);
    report("exp", (rel, 0.0), 3e-7, 0.0);
}

#[test]
fn log_error() {
    let mut xs = bits(1e-44, 3e38, 997);
    xs.extend(linear(0.0, 4.0, 1 << 20));
    xs.extend([-1.0, -1e-30]);
    report("log", measure(UnaryFn::Log, xs, 1e-3), 2e-7, 1e-7);
}

#[test]
fn tanh_error() {
    let mut xs = linear(-10.0, 10.0, 1 << 21);
    xs.extend(bits(1e-30, 1.0, 4001));
    report("tanh", measure(UnaryFn::Tanh, xs, 0.0), 5e-7, 5e-7);
}

#[test]
fn sigmoid_error() {
    let xs = linear(-85.0, 30.0, 1 << 21);
    report("sigmoid", measure(UnaryFn::Sigmoid, xs, 1e-37), 4e-7, 2e-7);
}

#[test]
fn erf_error() {
    let mut xs = linear(-6.0, 6.0, 1 << 21);
    xs.extend(bits(1e-30, 1.0, 4001));
    report("erf", measure(UnaryFn::Erf, xs, 0.0), 4e-7, 3e-7);
}
