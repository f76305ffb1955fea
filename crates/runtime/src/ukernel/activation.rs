//! GELU (tanh and erf forms) and SiLU in place over contiguous f32s
//! ([`varc_activation`]), for JIT kernels whose value is such an
//! activation of some argument: the kernel stores the argument, then calls
//! this over its share of the output. Cranelift emits 128-bit vectors
//! only, and these activations are instruction-bound there; here they run
//! 16 lanes wide (AVX-512F) or 8 (AVX2+FMA), or on a portable scalar path,
//! chosen by [`Isa::detect`].
//!
//! The approximations are the JIT's (`backends/cpu/src/math.rs`), built
//! from the coefficient tables below, which that code uses too: rational
//! tanh (`scripts/fit_tanh.py`), Cody–Waite exp, sigmoid through
//! `exp(−|x|)`, erf by Taylor series and Numerical Recipes' erfc. The
//! SIMD paths perform the same f32 operations in the same order as the
//! JIT's (fused multiply-adds where it fuses them on an FMA host), so the
//! two agree to the bit there; the portable path rounds products and sums
//! separately (a CPU without FMA would otherwise run a software fused
//! multiply-add), a few ulp away.
//!
//! Error against exact values (`activation/tests.rs`, dense sweeps and
//! special values), with `e = |y − gelu(x)| / max(|x|, 1e-30)` for GELU
//! (its `1 + tanh`/`1 + erf` cancels for negative x, so the error scales
//! with |x| rather than with the tiny result) and relative error above
//! 1e-35 for SiLU (below it |y| < 1e-35): GELU tanh 1.9e-7 (portable
//! 2.2e-7), GELU erf 1.2e-7, SiLU 2.3e-7 (measured on ~2.5·10⁶ points;
//! the tests assert about twice that).
//!
//! No threading inside: callers pass one share of an already split kernel.

use super::Isa;
use varc_ir::kernel::activation::Activation;

/// 1.5·2²³: adding it to an integral float below 2²² in magnitude leaves
/// the integer in the low mantissa bits.
pub const ROUND_MAGIC: f32 = 12_582_912.0;
/// `ln 2` split for Cody–Waite reduction: `r = x + n·LN2_HI_NEG + n·LN2_LO`.
pub const EXP_LN2_HI_NEG: f32 = -0.693_359_4;
pub const EXP_LN2_LO: f32 = 2.121_944_4e-4;
/// Cephes' `expf` polynomial P(r) (highest degree first): `exp(r) ≈ 1 + r
/// + r²·P(r)`.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];
/// `exp` clamps its argument to `[EXP_MIN, EXP_MAX]` (the result then
/// underflows to 0 or overflows to inf on its own) ...
pub const EXP_MIN: f32 = -104.0;
pub const EXP_MAX: f32 = 88.8;
/// ... and flushes results of arguments below this to +0 (under half the
/// smallest denormal).
pub const EXP_ZERO_BELOW: f32 = -103.98;
/// `exp` of non-positive arguments: +0 below this (where `2ⁿ` would not
/// be a normal float).
pub const EXP_NONPOSITIVE_MIN: f32 = -87.0;
/// tanh(x) ≈ x·P(x²)/Q(x²) (highest degree first) for |x| ≤ [`TANH_LIMIT`],
/// fitted by `scripts/fit_tanh.py`; ±1 beyond.
pub const TANH_P: [f32; 5] = [
    1.544_939e-8,
    2.203_531e-5,
    3.579_625_6e-3,
    1.345_113e-1,
    1.0,
];
pub const TANH_Q: [f32; 5] = [
    8.606_448_3e-7,
    3.424_749e-4,
    2.619_457_2e-2,
    4.678_445_8e-1,
    1.0,
];
pub const TANH_LIMIT: f32 = 7.9;
/// erf's Taylor series in x²: erf(x) ≈ x·Σ ERF_TAYLOR (highest degree
/// first), used for |x| < [`ERF_SMALL`].
pub const ERF_TAYLOR: [f32; 9] = erf_taylor();
pub const ERF_SMALL: f32 = 0.75;
/// Numerical Recipes' `erfcc`: erfc(a) ≈ t·exp(−a² + P(t)), t = 1/(1 + a/2).
pub const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];
/// GELU's constants as the kernel IR's f32 constants round them
/// (`varc_ir::kernel::activation`): √(2/π), 0.044715, 1/√2.
pub const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub const GELU_CUBIC: f32 = 0.044715;
pub const GELU_FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// Coefficient n of erf's Taylor series in x: 2/√π·(−1)ⁿ/(n!·(2n+1)),
/// highest n first.
const fn erf_taylor() -> [f32; 9] {
    let mut out = [0f32; 9];
    let mut n = 0;
    while n < 9 {
        let mut fact = 1.0f64;
        let mut k = 1;
        while k <= n {
            fact *= k as f64;
            k += 1;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        out[8 - n] = (std::f64::consts::FRAC_2_SQRT_PI * sign / (fact * (2 * n + 1) as f64)) as f32;
        n += 1;
    }
    out
}

/// Applies activation `kind` ([`Activation::code`]) in place to the `len`
/// f32s at `ptr`. An unknown `kind` leaves them unchanged.
///
/// # Safety
///
/// `ptr` must be valid for reads and writes of `len` f32s (any pointer
/// when `len` is 0), not accessed by anything else during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_activation(kind: u32, ptr: *mut f32, len: usize) {
    let Some(act) = Activation::from_code(kind) else {
        return;
    };
    if len == 0 || ptr.is_null() {
        return;
    }
    // SAFETY: the caller guarantees `ptr` addresses `len` f32s it may
    // read and write, exclusively for the call.
    let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    activation(act, data);
}

/// `act` applied in place to every element of `data`.
pub fn activation(act: Activation, data: &mut [f32]) {
    activation_with(Isa::detect(), act, data);
}

/// [`activation`] on instruction set `isa` (the portable path when this
/// machine lacks it).
pub fn activation_with(isa: Isa, act: Activation, data: &mut [f32]) {
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(t) = x86::Avx512::new() {
                // SAFETY: the token exists only when the CPU has AVX-512F.
                unsafe { x86::run_avx512(t, act, data) }
                return;
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            if let Some(t) = x86::Avx2::new() {
                // SAFETY: the token exists only when the CPU has AVX2 and FMA.
                unsafe { x86::run_avx2(t, act, data) }
                return;
            }
        }
        _ => {}
    }
    run(Scalar, act, data);
}

/// The operations the activations are written in, on vectors of `N`
/// lanes. Implemented by ISA tokens: a token value exists only on a CPU
/// with the instruction set, which is what makes its methods sound.
trait Simd: Copy {
    type V: Copy;
    type M: Copy;
    const N: usize;
    fn splat(self, x: f32) -> Self::V;
    /// The first `N` elements of `s` (`s` must have that many).
    fn load(self, s: &[f32]) -> Self::V;
    fn store(self, v: Self::V, s: &mut [f32]);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, fused where the ISA has FMA.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    fn neg(self, a: Self::V) -> Self::V;
    /// |mag| with the sign bit of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// `a < b`, false when either is NaN.
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `m ? a : b`, lane by lane.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    fn nearest(self, a: Self::V) -> Self::V;
    fn floor(self, a: Self::V) -> Self::V;
    /// 2ⁿ for integral `n` in [−126, 127] (other lanes: garbage).
    fn pow2(self, n: Self::V) -> Self::V;
}

/// The portable path: one lane, products and sums rounded separately.
#[derive(Clone, Copy)]
struct Scalar;

impl Simd for Scalar {
    type V = f32;
    type M = bool;
    const N: usize = 1;
    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, v: f32, s: &mut [f32]) {
        s[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn abs(self, a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    fn neg(self, a: f32) -> f32 {
        -a
    }
    #[inline(always)]
    fn copysign(self, mag: f32, sign: f32) -> f32 {
        mag.copysign(sign)
    }
    #[inline(always)]
    fn lt(self, a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    fn select(self, m: bool, a: f32, b: f32) -> f32 {
        if m { a } else { b }
    }
    #[inline(always)]
    fn nearest(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn floor(self, a: f32) -> f32 {
        a.floor()
    }
    #[inline(always)]
    fn pow2(self, n: f32) -> f32 {
        f32::from_bits((n + ROUND_MAGIC).to_bits().wrapping_add(127) << 23)
    }
}

/// `act` over `data` (see [`each`]).
#[inline(always)]
fn run<S: Simd>(s: S, act: Activation, data: &mut [f32]) {
    match act {
        Activation::GeluTanh => each::<S, GELU_TANH>(s, data),
        Activation::GeluErf => each::<S, GELU_ERF>(s, data),
        Activation::Silu => each::<S, SILU>(s, data),
    }
}

const GELU_TANH: u8 = 0;
const GELU_ERF: u8 = 1;
const SILU: u8 = 2;

/// Activation `A` of one vector. Functions, not closures, all the way
/// down: a closure would be compiled on its own, without the caller's
/// target features, and its intrinsics would not inline.
#[inline(always)]
fn apply<S: Simd, const A: u8>(s: S, x: S::V) -> S::V {
    match A {
        GELU_TANH => gelu_tanh(s, x),
        GELU_ERF => gelu_erf(s, x),
        _ => silu(s, x),
    }
}

/// Activation `A` over `data`: whole vectors, then the tail through a
/// zero-padded vector (so tail elements get exactly the vector body's
/// arithmetic).
#[inline(always)]
fn each<S: Simd, const A: u8>(s: S, data: &mut [f32]) {
    let mut chunks = data.chunks_exact_mut(S::N);
    for c in &mut chunks {
        s.store(apply::<S, A>(s, s.load(c)), c);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut pad = [0f32; 16];
        let pad = &mut pad[..S::N];
        pad[..tail.len()].copy_from_slice(tail);
        s.store(apply::<S, A>(s, s.load(pad)), pad);
        let n = tail.len();
        tail.copy_from_slice(&pad[..n]);
    }
}

/// Σ c[i]·x^(n−1−i) by Horner's rule (highest degree first).
#[inline(always)]
fn horner<S: Simd>(s: S, x: S::V, c: &[f32]) -> S::V {
    let mut acc = s.splat(c[0]);
    for &k in &c[1..] {
        acc = s.mul_add(acc, x, s.splat(k));
    }
    acc
}

/// `exp(x) ≈ y·2ⁿ`: `n = round(x·log₂e)` (an integral float) and `y`.
#[inline(always)]
fn exp_parts<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    let n = s.nearest(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let r = s.mul_add(n, s.splat(EXP_LN2_HI_NEG), x);
    let r = s.mul_add(n, s.splat(EXP_LN2_LO), r);
    let p = horner(s, r, &EXP_POLY);
    let z = s.mul(r, r);
    let y = s.mul_add(p, z, s.add(r, s.splat(1.0)));
    (y, n)
}

/// `exp(x)` for any x (NaN stays NaN): 2ⁿ applied as 2ʰ·2ⁿ⁻ʰ so that
/// results down to the denormals come out.
#[inline(always)]
fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let lo = s.splat(EXP_MIN);
    let x = s.select(s.lt(x, lo), lo, x);
    let hi = s.splat(EXP_MAX);
    let x = s.select(s.lt(hi, x), hi, x);
    let (y, n) = exp_parts(s, x);
    let h = s.floor(s.mul(n, s.splat(0.5)));
    let s1 = s.pow2(h);
    let s2 = s.pow2(s.sub(n, h));
    let s2 = s.select(s.lt(x, s.splat(EXP_ZERO_BELOW)), s.splat(0.0), s2);
    s.mul(s.mul(y, s1), s2)
}

/// `exp(x)` for `x ≤ 0` or NaN, as [`exp`] computes it above
/// [`EXP_NONPOSITIVE_MIN`] (where 2ⁿ is one normal float), +0 below.
#[inline(always)]
fn exp_nonpositive<S: Simd>(s: S, x: S::V) -> S::V {
    let below = s.lt(x, s.splat(EXP_NONPOSITIVE_MIN));
    let (y, n) = exp_parts(s, x);
    let y = s.mul(y, s.pow2(n));
    s.select(below, s.splat(0.0), y)
}

#[inline(always)]
fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let z = s.mul(x, x);
    let p = horner(s, z, &TANH_P);
    let q = horner(s, z, &TANH_Q);
    let y = s.div(s.mul(x, p), q);
    let big = s.lt(s.splat(TANH_LIMIT), s.abs(x));
    s.select(big, s.copysign(s.splat(1.0), x), y)
}

#[inline(always)]
fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp_nonpositive(s, s.neg(s.abs(x)));
    let one = s.splat(1.0);
    let pos = s.div(one, s.add(one, e));
    let neg = s.mul(e, pos);
    s.select(s.lt(x, s.splat(0.0)), neg, pos)
}

#[inline(always)]
fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    let ax = s.abs(x);
    let z = s.mul(x, x);
    let small = s.mul(x, horner(s, z, &ERF_TAYLOR));
    let one = s.splat(1.0);
    let t = s.div(one, s.mul_add(ax, s.splat(0.5), one));
    let q = horner(s, t, &ERFC_POLY);
    let erfc = s.mul(t, exp(s, s.add(s.neg(z), q)));
    let big = s.copysign(s.sub(one, erfc), x);
    s.select(s.lt(ax, s.splat(ERF_SMALL)), small, big)
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·(x·x)·x)))`, each product and sum
/// rounded as the kernel IR's expression is.
#[inline(always)]
fn gelu_tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let half_x = s.mul(s.splat(0.5), x);
    let cube = s.mul(s.mul(x, x), x);
    let inner = s.add(x, s.mul(s.splat(GELU_CUBIC), cube));
    let inner = s.mul(s.splat(GELU_SQRT_2_OVER_PI), inner);
    s.mul(half_x, s.add(s.splat(1.0), tanh(s, inner)))
}

/// `0.5·x·(1 + erf(x·(1/√2)))`.
#[inline(always)]
fn gelu_erf<S: Simd>(s: S, x: S::V) -> S::V {
    let half_x = s.mul(s.splat(0.5), x);
    let e = erf(s, s.mul(x, s.splat(GELU_FRAC_1_SQRT_2)));
    s.mul(half_x, s.add(s.splat(1.0), e))
}

/// `x·sigmoid(x)`.
#[inline(always)]
fn silu<S: Simd>(s: S, x: S::V) -> S::V {
    s.mul(x, sigmoid(s, x))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Activation, ROUND_MAGIC, Simd, run};
    use std::arch::x86_64::*;

    /// Proof that the CPU has AVX-512F (see [`Avx512::new`]).
    #[derive(Clone, Copy)]
    pub struct Avx512(());

    impl Avx512 {
        pub fn new() -> Option<Avx512> {
            std::is_x86_feature_detected!("avx512f").then_some(Avx512(()))
        }
    }

    /// Proof that the CPU has AVX2 and FMA (see [`Avx2::new`]).
    #[derive(Clone, Copy)]
    pub struct Avx2(());

    impl Avx2 {
        pub fn new() -> Option<Avx2> {
            (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
                .then_some(Avx2(()))
        }
    }

    /// Compiled with AVX-512F so that the token's intrinsics inline here.
    #[target_feature(enable = "avx512f")]
    pub fn run_avx512(t: Avx512, act: Activation, data: &mut [f32]) {
        run(t, act, data)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn run_avx2(t: Avx2, act: Activation, data: &mut [f32]) {
        run(t, act, data)
    }

    // SAFETY (every `unsafe` block in this impl): an `Avx512` value exists
    // only when `Avx512::new` detected AVX-512F, so its intrinsics may run;
    // `load` and `store` index the slice first, so they touch 16 elements
    // the slice has.
    impl Simd for Avx512 {
        type V = __m512;
        type M = __mmask16;
        const N: usize = 16;
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m512 {
            let s = &s[..16];
            // SAFETY: see the impl.
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, v: __m512, s: &mut [f32]) {
            let s = &mut s[..16];
            // SAFETY: see the impl.
            unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn abs(self, a: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_abs_ps(a) }
        }
        #[inline(always)]
        fn neg(self, a: __m512) -> __m512 {
            // SAFETY: see the impl (AVX-512F has no float XOR; the integer
            // one flips the sign bit).
            unsafe {
                let m = _mm512_set1_epi32(i32::MIN);
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), m))
            }
        }
        #[inline(always)]
        fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe {
                let m = _mm512_set1_epi32(i32::MIN);
                let s = _mm512_and_si512(_mm512_castps_si512(sign), m);
                let a = _mm512_castps_si512(_mm512_abs_ps(mag));
                _mm512_castsi512_ps(_mm512_or_si512(a, s))
            }
        }
        #[inline(always)]
        fn lt(self, a: __m512, b: __m512) -> __mmask16 {
            // SAFETY: see the impl.
            unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl (blend takes its second operand where
            // the mask is set).
            unsafe { _mm512_mask_blend_ps(m, b, a) }
        }
        #[inline(always)]
        fn nearest(self, a: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn floor(self, a: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2(self, n: __m512) -> __m512 {
            // SAFETY: see the impl.
            unsafe {
                let t = _mm512_castps_si512(_mm512_add_ps(n, _mm512_set1_ps(ROUND_MAGIC)));
                let e = _mm512_add_epi32(t, _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
            }
        }
    }

    // SAFETY (every `unsafe` block in this impl): an `Avx2` value exists
    // only when `Avx2::new` detected AVX2 and FMA; `load` and `store` index
    // the slice first, so they touch 8 elements the slice has.
    impl Simd for Avx2 {
        type V = __m256;
        type M = __m256;
        const N: usize = 8;
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m256 {
            let s = &s[..8];
            // SAFETY: see the impl.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, v: __m256, s: &mut [f32]) {
            let s = &mut s[..8];
            // SAFETY: see the impl.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn abs(self, a: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
        }
        #[inline(always)]
        fn neg(self, a: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_xor_ps(a, _mm256_set1_ps(-0.0)) }
        }
        #[inline(always)]
        fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe {
                let m = _mm256_set1_ps(-0.0);
                _mm256_or_ps(_mm256_andnot_ps(m, mag), _mm256_and_ps(m, sign))
            }
        }
        #[inline(always)]
        fn lt(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(self, m: __m256, a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl (blendv takes its second operand where
            // the mask's sign bit is set).
            unsafe { _mm256_blendv_ps(b, a, m) }
        }
        #[inline(always)]
        fn nearest(self, a: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn floor(self, a: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2(self, n: __m256) -> __m256 {
            // SAFETY: see the impl.
            unsafe {
                let t = _mm256_castps_si256(_mm256_add_ps(n, _mm256_set1_ps(ROUND_MAGIC)));
                let e = _mm256_add_epi32(t, _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
