//! The activations against f64 references on every instruction set this
//! machine has: dense sweeps, strided walks over f32 bit patterns, special
//! values, and tails of every length.

use super::*;

/// erf in f64 to ~1e-13 absolute: Taylor series below 3 (at most ~4
/// digits lost to cancellation), the continued fraction of erfc above.
fn erf_ref(x: f64) -> f64 {
    let ax = x.abs();
    if ax.is_nan() {
        return f64::NAN;
    }
    if ax < 3.0 {
        let (mut term, mut sum) = (ax, ax);
        for n in 1..200 {
            term *= -ax * ax / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return (sum * std::f64::consts::FRAC_2_SQRT_PI).copysign(x);
    }
    if ax > 30.0 {
        return x.signum();
    }
    // erfc(a) = exp(−a²)/√π · 1/(a + (1/2)/(a + (2/2)/(a + (3/2)/(a + …)))).
    let mut k = ax;
    for n in (1..120).rev() {
        k = ax + (n as f64 / 2.0) / k;
    }
    let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / k;
    (1.0 - erfc).copysign(x)
}

fn reference(act: Activation, x: f64) -> f64 {
    match act {
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluErf => 0.5 * x * (1.0 + erf_ref(x * std::f64::consts::FRAC_1_SQRT_2)),
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// The error measure the bounds are stated in (see the module docs):
/// GELU: |y − ref| / max(|x|, 1e-30); SiLU: relative where |ref| ≥ 1e-35,
/// and there |y| itself must be below 1e-35 (`None` when the value
/// is special and was checked exactly instead).
fn error(act: Activation, x: f32, y: f32) -> Option<f64> {
    let want = reference(act, x as f64);
    if want.is_nan() || want.is_infinite() || (want as f32).is_infinite() {
        let ok = if want.is_nan() {
            y.is_nan()
        } else {
            y as f64 == want || (y.is_infinite() && (want as f32).is_infinite())
        };
        assert!(ok, "{act:?}({x:e}) = {y:e}, want {want:e}");
        return None;
    }
    assert!(!y.is_nan(), "{act:?}({x:e}) = NaN, want {want:e}");
    if want == 0.0 && x == 0.0 {
        assert_eq!(
            y.to_bits(),
            (want as f32).to_bits(),
            "{act:?}({x:e}): signed zero"
        );
    }
    let e = (y as f64 - want).abs();
    Some(match act {
        Activation::Silu if want.abs() < 1e-35 => {
            assert!(y.abs() < 1e-35, "{act:?}({x:e}) = {y:e}, want {want:e}");
            0.0
        }
        Activation::Silu => e / want.abs(),
        _ => e / (x.abs() as f64).max(1e-30),
    })
}

/// The bound asserted for each activation: about twice the measured
/// maximum error (module docs).
fn bound(act: Activation) -> f64 {
    match act {
        Activation::GeluTanh => 4.5e-7,
        Activation::GeluErf => 2.5e-7,
        Activation::Silu => 4.7e-7,
    }
}

/// Dense sweeps, strided bit-pattern walks, and special values.
fn inputs() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=1_200_000)
        .map(|i| -12.0 + 24.0 * i as f32 / 1_200_000.0)
        .collect();
    xs.extend((0..=200_000).map(|i| -120.0 + 240.0 * i as f32 / 200_000.0));
    // Every 4099th bit pattern: all magnitudes, denormals, both signs.
    xs.extend(
        (0..u32::MAX / 4099)
            .map(|i| f32::from_bits(i * 4099))
            .filter(|x| !x.is_nan()),
    );
    xs.extend([
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        1e30,
        -1e30,
        87.0,
        -87.0,
        -87.5,
        -104.0,
        -150.0,
        TANH_LIMIT,
        -TANH_LIMIT,
        ERF_SMALL * std::f32::consts::SQRT_2,
        -ERF_SMALL * std::f32::consts::SQRT_2,
    ]);
    xs
}

#[test]
fn accuracy_on_every_isa() {
    let xs = inputs();
    for isa in Isa::available() {
        for act in Activation::ALL {
            let mut ys = xs.clone();
            activation_with(isa, act, &mut ys);
            let mut worst = (0f64, 0f32);
            for (&x, &y) in xs.iter().zip(&ys) {
                if let Some(e) = error(act, x, y)
                    && e > worst.0
                {
                    worst = (e, x);
                }
            }
            eprintln!(
                "{} {act:?}: max error {:.3e} at x = {:e}",
                isa.name(),
                worst.0,
                worst.1
            );
            assert!(
                worst.0 <= bound(act),
                "{} {act:?}: error {:.3e} at x = {:e}",
                isa.name(),
                worst.0,
                worst.1
            );
        }
    }
}

/// The two fused-multiply-add paths perform the same operations, so they
/// agree to the bit (they are the JIT's operations too).
#[test]
fn simd_paths_agree_bitwise() {
    let simd: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Portable)
        .collect();
    let xs = inputs();
    for act in Activation::ALL {
        let results: Vec<Vec<f32>> = simd
            .iter()
            .map(|&isa| {
                let mut ys = xs.clone();
                activation_with(isa, act, &mut ys);
                ys
            })
            .collect();
        for w in results.windows(2) {
            for ((&x, a), b) in xs.iter().zip(&w[0]).zip(&w[1]) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{act:?}({x:e}): {a:e} vs {b:e}"
                );
            }
        }
    }
}

/// Every length 0..=33 (all tail sizes of 8 and 16 lanes, several whole
/// vectors): elements past the end untouched, and every element exactly
/// what the vector body gives for it.
#[test]
fn tails_of_every_length() {
    let vals: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
    for isa in Isa::available() {
        for act in Activation::ALL {
            let mut body = vals.clone();
            activation_with(isa, act, &mut body);
            for len in 0..=33 {
                for start in [0, 1, 5] {
                    let mut buf = vals.clone();
                    activation_with(isa, act, &mut buf[start..start + len]);
                    for (i, (&b, &v)) in buf.iter().zip(&vals).enumerate() {
                        let want = if (start..start + len).contains(&i) {
                            body[i]
                        } else {
                            v
                        };
                        assert_eq!(
                            b.to_bits(),
                            want.to_bits(),
                            "{} {act:?} len {len} start {start} element {i}",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn c_entry_and_unknown_kind() {
    let mut v = vec![1.0f32, -2.0, 0.5];
    let want: Vec<f32> = v
        .iter()
        .map(|&x| (x as f64 / (1.0 + (-x as f64).exp())) as f32)
        .collect();
    // SAFETY: `v` holds 3 f32s, exclusively borrowed for the call.
    unsafe { varc_activation(Activation::Silu.code(), v.as_mut_ptr(), v.len()) };
    for (g, w) in v.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6 * w.abs(), "{g} vs {w}");
    }
    let before = v.clone();
    // SAFETY: as above.
    unsafe { varc_activation(99, v.as_mut_ptr(), v.len()) };
    assert_eq!(v, before, "an unknown kind leaves the data alone");
    // SAFETY: length 0: the pointer is not dereferenced.
    unsafe { varc_activation(0, std::ptr::null_mut(), 0) };
}

/// The shared constants are the kernel IR's f64 constants rounded to f32,
/// as the JIT rounds them, and the Taylor table is the series.
#[test]
fn constants_match_their_definitions() {
    assert_eq!(
        GELU_SQRT_2_OVER_PI,
        (2.0 / std::f64::consts::PI).sqrt() as f32
    );
    assert_eq!(GELU_CUBIC, 0.044715f64 as f32);
    assert_eq!(GELU_FRAC_1_SQRT_2, std::f64::consts::FRAC_1_SQRT_2 as f32);
    // erf(x)/x = 2/√π·Σ (−1)ⁿ x²ⁿ/(n!(2n+1)): the constant term and the
    // next two, independently written.
    let c = std::f64::consts::FRAC_2_SQRT_PI;
    assert_eq!(ERF_TAYLOR[8], c as f32);
    assert_eq!(ERF_TAYLOR[7], (-c / 3.0) as f32);
    assert_eq!(ERF_TAYLOR[6], (c / 10.0) as f32);
}
