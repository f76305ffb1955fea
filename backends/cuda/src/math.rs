//! Transcendental functions as inline f32 PTX.
//!
//! The hardware approximations (`ex2.approx`, `lg2.approx`, `sin.approx`,
//! `cos.approx`) are used only on reduced arguments, where they are accurate
//! to a few ulp; the rest follows the CPU backend's algorithms (Cephes
//! polynomials, Numerical Recipes' erfc), so both backends agree closely.
//!
//! | function | method |
//! |---|---|
//! | exp     | Cody–Waite reduction by ln 2, `ex2.approx` of the remainder (|r·log₂e| ≤ ½), 2ⁿ applied as two exact factors (gradual underflow) |
//! | log     | mantissa in [√½, √2), Cephes degree-9 polynomial, denormals pre-scaled (as the CPU backend) |
//! | tanh    | odd Cephes polynomial for \|x\| < 0.625, else 1 − 2/(e²ˣ+1) (`tanh.approx` is only good to ~2⁻¹¹) |
//! | sigmoid | e = exp(−\|x\|): 1/(1+e) for x ≥ 0, e/(1+e) below |
//! | erf     | Taylor series (degree 17) for \|x\| < 0.75, else 1 − erfc (Numerical Recipes) |
//! | sin/cos | reduction by 2π in three parts, then `sin.approx` / `cos.approx` on [−π, π] |
//! | pow     | 2^(y·log₂\|x\|) with `lg2.approx`/`ex2.approx`; sign from odd integer y; NaN for x < 0 and non-integer y |
//!
//! Special values: NaN in gives NaN out; exp(±inf) = inf / 0, log(0) = −inf,
//! log(x<0) = NaN, tanh/sigmoid/erf saturate to their limits.

use crate::emit::{Em, f32_imm};

impl Em<'_> {
    fn op2(&mut self, op: &str, a: &str, b: &str) -> String {
        let d = self.rf();
        self.ins(format!("{op} {d}, {a}, {b}"));
        d
    }

    fn fma(&mut self, a: &str, b: &str, c: &str) -> String {
        let d = self.rf();
        self.ins(format!("fma.rn.f32 {d}, {a}, {b}, {c}"));
        d
    }

    /// `cond ? a : b`.
    fn sel(&mut self, p: &str, a: &str, b: &str) -> String {
        let d = self.rf();
        self.ins(format!("selp.f32 {d}, {a}, {b}, {p}"));
        d
    }

    fn cmp(&mut self, cc: &str, a: &str, b: &str) -> String {
        let p = self.pred();
        self.ins(format!("setp.{cc}.f32 {p}, {a}, {b}"));
        p
    }

    /// Σ coeffs[i]·x^(n-1-i) (highest degree first), Horner's rule.
    fn horner(&mut self, x: &str, coeffs: &[f32]) -> String {
        let mut acc = self.fconst(coeffs[0]);
        for &k in &coeffs[1..] {
            acc = self.fma(&acc, x, &f32_imm(k));
        }
        acc
    }

    /// |mag| with the sign of `sign`.
    fn copysign(&mut self, mag: &str, sign: &str) -> String {
        let d = self.rf();
        self.ins(format!("copysign.f32 {d}, {sign}, {mag}"));
        d
    }

    /// 2^n for an integer n in [-126, 127] (a .b32 register), as f32.
    fn pow2(&mut self, n: &str) -> String {
        let e = self.r32();
        self.ins(format!("add.s32 {e}, {n}, 127"));
        self.ins(format!("shl.b32 {e}, {e}, 23"));
        let d = self.rf();
        self.ins(format!("mov.b32 {d}, {e}"));
        d
    }

    pub fn exp(&mut self, x: &str) -> String {
        let lo = self.op2("max.NaN.f32", x, &f32_imm(-104.0));
        let x = self.op2("min.NaN.f32", &lo, &f32_imm(88.8));
        let log2e = f32_imm(std::f32::consts::LOG2_E);
        let t = self.op2("mul.rn.f32", &x, &log2e);
        let n = self.rf();
        self.ins(format!("cvt.rni.f32.f32 {n}, {t}"));
        let r = self.fma(&n, &f32_imm(-0.693_359_4), &x);
        let r = self.fma(&n, &f32_imm(2.121_944_4e-4), &r);
        let r2 = self.op2("mul.rn.f32", &r, &log2e);
        let y = self.rf();
        self.ins(format!("ex2.approx.ftz.f32 {y}, {r2}"));
        // y · 2^n with 2^n = 2^h · 2^(n-h) so that n in [-150, 128] works.
        let ni = self.r32();
        self.ins(format!("cvt.rzi.s32.f32 {ni}, {n}"));
        let h = self.r32();
        self.ins(format!("shr.s32 {h}, {ni}, 1"));
        let rest = self.r32();
        self.ins(format!("sub.s32 {rest}, {ni}, {h}"));
        let s1 = self.pow2(&h);
        let s2 = self.pow2(&rest);
        let y = self.op2("mul.rn.f32", &y, &s1);
        self.op2("mul.rn.f32", &y, &s2)
    }

    pub fn log(&mut self, x0: &str) -> String {
        // Denormals: scale into the normal range first.
        let small = self.cmp("lt", x0, &f32_imm(f32::MIN_POSITIVE));
        let scaled = self.op2("mul.rn.f32", x0, &f32_imm(8_388_608.0));
        let x = self.sel(&small, &scaled, x0);
        let bits = self.r32();
        self.ins(format!("mov.b32 {bits}, {x}"));
        let eb = self.r32();
        self.ins(format!("shr.u32 {eb}, {bits}, 23"));
        self.ins(format!("and.b32 {eb}, {eb}, 255"));
        let e = self.rf();
        self.ins(format!("cvt.rn.f32.s32 {e}, {eb}"));
        let adj = self.sel(&small, &f32_imm(149.0), &f32_imm(126.0));
        let e = self.op2("sub.rn.f32", &e, &adj);
        // Mantissa in [0.5, 1).
        let mb = self.r32();
        self.ins(format!("and.b32 {mb}, {bits}, {}", 0x807f_ffffu32 as i32));
        self.ins(format!("or.b32 {mb}, {mb}, {}", 0x3f00_0000));
        let m = self.rf();
        self.ins(format!("mov.b32 {m}, {mb}"));
        let lt = self.cmp("lt", &m, &f32_imm(std::f32::consts::FRAC_1_SQRT_2));
        let dec = self.sel(&lt, &f32_imm(1.0), &f32_imm(0.0));
        let e = self.op2("sub.rn.f32", &e, &dec);
        let m2 = self.op2("add.rn.f32", &m, &m);
        let m = self.sel(&lt, &m2, &m);
        let f = self.op2("sub.rn.f32", &m, &f32_imm(1.0));
        let z = self.op2("mul.rn.f32", &f, &f);
        let p = self.horner(
            &f,
            &[
                7.037_683_6e-2,
                -1.151_461e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_5e-1,
                -2.499_999_4e-1,
                3.333_333e-1,
            ],
        );
        let fz = self.op2("mul.rn.f32", &f, &z);
        let y = self.op2("mul.rn.f32", &p, &fz);
        let y = self.fma(&e, &f32_imm(-2.121_944_4e-4), &y);
        let y = self.fma(&z, &f32_imm(-0.5), &y);
        let r = self.op2("add.rn.f32", &f, &y);
        let r = self.fma(&e, &f32_imm(0.693_359_4), &r);
        // Special values: 0 → −inf, inf → inf, NaN or negative → NaN.
        let is0 = self.cmp("eq", x0, &f32_imm(0.0));
        let r = self.sel(&is0, &f32_imm(f32::NEG_INFINITY), &r);
        let isinf = self.cmp("eq", x0, &f32_imm(f32::INFINITY));
        let r = self.sel(&isinf, &f32_imm(f32::INFINITY), &r);
        let bad = self.cmp("ltu", x0, &f32_imm(0.0));
        self.sel(&bad, &f32_imm(f32::NAN), &r)
    }

    pub fn tanh(&mut self, x: &str) -> String {
        let ax = self.rf();
        self.ins(format!("abs.f32 {ax}, {x}"));
        // |x| < 0.625: x + x·z·P(z), z = x².
        let z = self.op2("mul.rn.f32", x, x);
        let p = self.horner(
            &z,
            &[
                -5.704_988_7e-3,
                2.063_909e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        let xz = self.op2("mul.rn.f32", x, &z);
        let small = self.fma(&xz, &p, x);
        // Otherwise 1 − 2/(e^(2|x|) + 1), with the sign of x.
        let ax2 = self.op2("add.rn.f32", &ax, &ax);
        let e = self.exp(&ax2);
        let d = self.op2("add.rn.f32", &e, &f32_imm(1.0));
        let q = self.op2("div.rn.f32", &f32_imm(2.0), &d);
        let big = self.op2("sub.rn.f32", &f32_imm(1.0), &q);
        let big = self.copysign(&big, x);
        // NaN fails `<` and takes the second branch, which keeps it NaN.
        let is_small = self.cmp("lt", &ax, &f32_imm(0.625));
        self.sel(&is_small, &small, &big)
    }

    pub fn sigmoid(&mut self, x: &str) -> String {
        let nax = self.rf();
        self.ins(format!("abs.f32 {nax}, {x}"));
        self.ins(format!("neg.f32 {nax}, {nax}"));
        let e = self.exp(&nax);
        let d = self.op2("add.rn.f32", &f32_imm(1.0), &e);
        let pos = self.op2("div.rn.f32", &f32_imm(1.0), &d);
        let neg = self.op2("div.rn.f32", &e, &d);
        let is_neg = self.cmp("lt", x, &f32_imm(0.0));
        self.sel(&is_neg, &neg, &pos)
    }

    pub fn erf(&mut self, x: &str) -> String {
        let ax = self.rf();
        self.ins(format!("abs.f32 {ax}, {x}"));
        // |x| < 0.75: the Taylor series x·Σ aₙ·x²ⁿ.
        let z = self.op2("mul.rn.f32", x, x);
        let taylor: Vec<f32> = (0..=8).rev().map(erf_taylor_coeff).collect();
        let p = self.horner(&z, &taylor);
        let small = self.op2("mul.rn.f32", x, &p);
        // Otherwise 1 − erfc(|x|), erfc from Numerical Recipes' `erfcc`.
        let d = self.fma(&ax, &f32_imm(0.5), &f32_imm(1.0));
        let t = self.op2("div.rn.f32", &f32_imm(1.0), &d);
        let q = self.horner(
            &t,
            &[
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
            ],
        );
        let arg = self.op2("sub.rn.f32", &q, &z);
        let e = self.exp(&arg);
        let erfc = self.op2("mul.rn.f32", &t, &e);
        let big = self.op2("sub.rn.f32", &f32_imm(1.0), &erfc);
        let big = self.copysign(&big, x);
        let is_small = self.cmp("lt", &ax, &f32_imm(0.75));
        self.sel(&is_small, &small, &big)
    }

    /// sin or cos: x reduced by k·2π (2π split in three parts, so k·part is
    /// exact for |k| < 2¹²), then the hardware approximation on [−π, π].
    pub fn sincos(&mut self, x: &str, sin: bool) -> String {
        let two_pi = std::f64::consts::TAU;
        let p1 = truncate_bits(two_pi, 12);
        let p2 = truncate_bits(two_pi - p1 as f64, 12);
        let p3 = (two_pi - p1 as f64 - p2 as f64) as f32;
        let t = self.op2("mul.rn.f32", x, &f32_imm((1.0 / two_pi) as f32));
        let k = self.rf();
        self.ins(format!("cvt.rni.f32.f32 {k}, {t}"));
        let r = self.fma(&k, &f32_imm(-p1), x);
        let r = self.fma(&k, &f32_imm(-p2), &r);
        let r = self.fma(&k, &f32_imm(-p3), &r);
        let d = self.rf();
        let f = if sin { "sin" } else { "cos" };
        self.ins(format!("{f}.approx.f32 {d}, {r}"));
        d
    }

    /// x^y for a float exponent (Rust `powf` semantics on the special
    /// cases that matter: y = 0 or x = 1 give 1, negative x needs an
    /// integer y).
    pub fn pow(&mut self, x: &str, y: &str) -> String {
        let ax = self.rf();
        self.ins(format!("abs.f32 {ax}, {x}"));
        let l = self.rf();
        self.ins(format!("lg2.approx.f32 {l}, {ax}"));
        let t = self.op2("mul.rn.f32", y, &l);
        let r = self.rf();
        self.ins(format!("ex2.approx.f32 {r}, {t}"));
        // Negative base: odd integer exponents negate, others give NaN.
        let yi = self.rf();
        self.ins(format!("cvt.rzi.f32.f32 {yi}, {y}"));
        let is_int = self.cmp("eq", &yi, y);
        let half = self.op2("mul.rn.f32", y, &f32_imm(0.5));
        let hi = self.rf();
        self.ins(format!("cvt.rzi.f32.f32 {hi}, {half}"));
        let even = self.cmp("eq", &hi, &half);
        let neg_r = self.rf();
        self.ins(format!("neg.f32 {neg_r}, {r}"));
        let signed = self.sel(&even, &r, &neg_r);
        let for_neg = self.sel(&is_int, &signed, &f32_imm(f32::NAN));
        let neg = self.cmp("lt", x, &f32_imm(0.0));
        let r = self.sel(&neg, &for_neg, &r);
        let y0 = self.cmp("eq", y, &f32_imm(0.0));
        let x1 = self.cmp("eq", x, &f32_imm(1.0));
        let one = self.pred();
        self.ins(format!("or.pred {one}, {y0}, {x1}"));
        self.sel(&one, &f32_imm(1.0), &r)
    }
}

/// `x` as f32 with only the top `bits` mantissa bits kept.
fn truncate_bits(x: f64, bits: u32) -> f32 {
    let b = (x as f32).to_bits();
    f32::from_bits(b & !((1u32 << (23 - bits)) - 1))
}

/// Coefficient n of erf's Taylor series in x: 2/√π · (−1)ⁿ / (n!·(2n+1)).
fn erf_taylor_coeff(n: usize) -> f32 {
    let fact: f64 = (1..=n).map(|k| k as f64).product();
    let sign = if n.is_multiple_of(2) { 1.0 } else { -1.0 };
    (std::f64::consts::FRAC_2_SQRT_PI * sign / (fact * (2 * n + 1) as f64)) as f32
}
