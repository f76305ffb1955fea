//! The fused attention microkernel against a scalar f64 reference, on every
//! instruction set of this machine: KV-cache shapes (S_q ≠ S_kv, S_q = 1),
//! head dims 1..130 (vector tails), GQA, strided and transposed layouts,
//! broadcast biases, fully masked rows, causal and block-causal masks; the C
//! entry on thread pools of several sizes must give bit-identical results.

use super::*;
use crate::pool::ThreadPool;
use std::sync::Arc;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Row-major strides of `shape` laid out in the axis order `order`
/// (outermost first): `order = [0, 2, 1, 3]` stores `[b, s, h, d]`.
fn layout(shape: [usize; 4], order: [usize; 4]) -> [isize; 4] {
    let mut st = [0isize; 4];
    let mut step = 1isize;
    for &ax in order.iter().rev() {
        st[ax] = step;
        step *= shape[ax] as isize;
    }
    st
}

/// A bias over `[b, hq, sq, skv]`.
#[derive(Clone)]
enum Bias {
    None,
    /// Random values, with the given strides (0 = broadcast) over a buffer
    /// of `len`.
    Random([isize; 4], usize),
    /// VAR's block-causal mask: queries of scale `s` see keys of scales
    /// `≤ s`, shared by every batch and head.
    BlockCausal(Vec<usize>),
    /// −∞ for every key of the listed query rows, random elsewhere.
    MaskRows(Vec<usize>),
    /// Broadcast over batch, different per head: head 0 block-causal
    /// (these scales), head 1 random, head 2 −∞ for keys ≥ 64 and 0 before,
    /// head 3 random with −∞ for every key of rows 0..5.
    PerHead(Vec<usize>),
}

#[derive(Clone)]
struct Case {
    z: Sizes,
    q_order: [usize; 4],
    k_order: [usize; 4],
    v_order: [usize; 4],
    out_order: [usize; 4],
    bias: Bias,
    causal: Option<isize>,
    scale: f32,
}

fn case(b: usize, hq: usize, hk: usize, sq: usize, skv: usize, d: usize, dv: usize) -> Case {
    Case {
        z: Sizes {
            batch: b,
            q_heads: hq,
            kv_heads: hk,
            s_q: sq,
            s_kv: skv,
            head_dim: d,
            v_head_dim: dv,
        },
        q_order: [0, 1, 2, 3],
        k_order: [0, 1, 2, 3],
        v_order: [0, 1, 2, 3],
        out_order: [0, 1, 2, 3],
        bias: Bias::None,
        causal: None,
        scale: 1.0 / (d as f32).sqrt(),
    }
}

/// The data of one case.
struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Option<(Vec<f32>, [isize; 4])>,
    st: [[isize; 4]; 4],
}

fn data(c: &Case, rng: &mut Lcg) -> Data {
    let z = c.z;
    let n = |s: [usize; 4]| s.iter().product::<usize>();
    let qs = [z.batch, z.q_heads, z.s_q, z.head_dim];
    let ks = [z.batch, z.kv_heads, z.s_kv, z.head_dim];
    let vs = [z.batch, z.kv_heads, z.s_kv, z.v_head_dim];
    let os = [z.batch, z.q_heads, z.s_q, z.v_head_dim];
    let bs = [z.batch, z.q_heads, z.s_q, z.s_kv];
    let bias = match &c.bias {
        Bias::None => None,
        Bias::Random(st, len) => Some((rng.vec(*len), *st)),
        Bias::BlockCausal(scales) => {
            // Each query sees the keys before the end of its own scale.
            let mut limit = vec![0; scales.iter().sum()];
            let mut acc = 0;
            for &s in scales {
                for l in limit.iter_mut().skip(acc).take(s) {
                    *l = acc + s;
                }
                acc += s;
            }
            let m: Vec<f32> = (0..z.s_q * z.s_kv)
                .map(|x| {
                    let (i, j) = (x / z.s_kv, x % z.s_kv);
                    if j < limit[i] { 0.0 } else { f32::NEG_INFINITY }
                })
                .collect();
            Some((m, [0, 0, z.s_kv as isize, 1]))
        }
        Bias::PerHead(scales) => {
            let plane = z.s_q * z.s_kv;
            let Some((causal, _)) = data(
                &Case {
                    bias: Bias::BlockCausal(scales.clone()),
                    ..c.clone()
                },
                &mut Lcg(1),
            )
            .bias
            else {
                unreachable!("a block-causal case has a bias")
            };
            let mut m = rng.vec(z.q_heads * plane);
            for (x, v) in m.iter_mut().enumerate() {
                let (h, i, j) = (x / plane, x / z.s_kv % z.s_q, x % z.s_kv);
                match h {
                    0 => *v = causal[x % plane],
                    2 => *v = if j >= 64 { f32::NEG_INFINITY } else { 0.0 },
                    3 if i < 5 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
            let st = [0, plane as isize, z.s_kv as isize, 1];
            Some((m, st))
        }
        Bias::MaskRows(rows) => {
            let st = layout(bs, [0, 1, 2, 3]);
            let mut m = rng.vec(n(bs));
            for (x, v) in m.iter_mut().enumerate() {
                if rows.contains(&(x / z.s_kv % z.s_q)) {
                    *v = f32::NEG_INFINITY;
                }
            }
            Some((m, st))
        }
    };
    Data {
        q: rng.vec(n(qs)),
        k: rng.vec(n(ks)),
        v: rng.vec(n(vs)),
        bias,
        st: [
            layout(qs, c.q_order),
            layout(ks, c.k_order),
            layout(vs, c.v_order),
            layout(os, c.out_order),
        ],
    }
}

fn problem_of<'a>(c: &Case, d: &'a Data) -> Problem<'a> {
    let op = |data: &'a [f32], strides| Operand {
        data,
        offset: 0,
        strides,
    };
    Problem {
        q: op(&d.q, d.st[0]),
        k: op(&d.k, d.st[1]),
        v: op(&d.v, d.st[2]),
        bias: d.bias.as_ref().map(|(b, st)| op(b, *st)),
        sizes: c.z,
        scale: c.scale,
        causal_offset: c.causal,
    }
}

/// Scalar f64 attention, output in `[b, h, i, c]` row-major order.
fn reference(p: &Problem) -> Vec<f64> {
    let z = p.sizes;
    let g = z.q_heads / z.kv_heads;
    let ld = |o: &Operand, idx: [usize; 4]| f64::from(o.data[o.at(idx)]);
    let mut out = vec![];
    for b in 0..z.batch {
        for h in 0..z.q_heads {
            for i in 0..z.s_q {
                let s: Vec<f64> = (0..z.s_kv)
                    .map(|j| {
                        if p.causal_offset.is_some_and(|o| j as isize > i as isize + o) {
                            return f64::NEG_INFINITY;
                        }
                        let dot: f64 = (0..z.head_dim)
                            .map(|e| ld(&p.q, [b, h, i, e]) * ld(&p.k, [b, h / g, j, e]))
                            .sum();
                        let bias = p.bias.as_ref().map_or(0.0, |o| ld(o, [b, h, i, j]));
                        f64::from(p.scale) * dot + bias
                    })
                    .collect();
                let m = s.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                for c in 0..z.v_head_dim {
                    if m == f64::NEG_INFINITY {
                        out.push(0.0);
                        continue;
                    }
                    let (mut num, mut den) = (0.0, 0.0);
                    for (j, &sj) in s.iter().enumerate() {
                        let e = (sj - m).exp();
                        num += e * ld(&p.v, [b, h / g, j, c]);
                        den += e;
                    }
                    out.push(num / den);
                }
            }
        }
    }
    out
}

/// The output of a `[b, h, i, c]` view in row-major order.
fn read_out(out: &[f32], st: [isize; 4], z: Sizes) -> Vec<f32> {
    let o = Operand {
        data: out,
        offset: 0,
        strides: st,
    };
    let mut got = vec![];
    for b in 0..z.batch {
        for h in 0..z.q_heads {
            for i in 0..z.s_q {
                for c in 0..z.v_head_dim {
                    got.push(o.data[o.at([b, h, i, c])]);
                }
            }
        }
    }
    got
}

/// Runs the case on `isa` and compares with the reference; returns the
/// output in `[b, h, i, c]` order.
fn check(what: &str, c: &Case, isa: Isa, seed: u64) -> Vec<f32> {
    let d = data(c, &mut Lcg(seed));
    let p = problem_of(c, &d);
    let want = reference(&p);
    let z = c.z;
    let os = [z.batch, z.q_heads, z.s_q, z.v_head_dim];
    let mut out = vec![f32::NAN; os.iter().product::<usize>().max(1)];
    attention_with(
        isa,
        &p,
        OutMut {
            data: &mut out,
            offset: 0,
            strides: d.st[3],
        },
    );
    let got = read_out(&out, d.st[3], z);
    assert_eq!(got.len(), want.len());
    for (n, (&g, &w)) in got.iter().zip(&want).enumerate() {
        // Inputs in [-1, 1): |scores| ≤ √d, outputs ≤ 1.
        let ok = (f64::from(g) - w).abs() <= 2e-6 + 2e-5 * w.abs();
        assert!(ok, "{what} on {isa:?}: element {n}: got {g}, want {w}");
    }
    got
}

fn each_isa(what: &str, c: &Case) {
    for isa in Isa::available() {
        check(what, c, isa, 7);
    }
}

#[test]
fn exp_is_accurate() {
    for fma in [false, true] {
        let f = |x: f32| {
            if fma {
                exp_nonpositive::<FMA>(x)
            } else {
                exp_nonpositive::<PLAIN>(x)
            }
        };
        let mut worst = 0.0f64;
        for k in 0..=200_000 {
            let x = -87.0 + 87.0 * k as f32 / 200_000.0;
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(f(x)) - want) / want).abs());
        }
        assert!(worst < 3e-7, "fma {fma}: worst relative error {worst:e}");
        assert_eq!(f(0.0), 1.0);
        assert_eq!(f(f32::NEG_INFINITY), 0.0);
        assert_eq!(f(-100.0), 0.0);
        assert!(f(f32::NAN).is_nan());
    }
}

/// The AVX-512 exponential of the online softmax (a shorter polynomial):
/// its worst relative error over `[-87, 0]`, measured against f64.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_exp_is_accurate() {
    use std::arch::x86_64::*;
    if !Isa::available().contains(&Isa::Avx512) {
        return;
    }
    let f = |x: f32| {
        // SAFETY: AVX-512F is available (checked above).
        unsafe { _mm512_cvtss_f32(super::x86::exp_avx512(_mm512_set1_ps(x))) }
    };
    let mut worst = 0.0f64;
    for k in 0..=400_000 {
        let x = -87.0 + 87.0 * k as f32 / 400_000.0;
        let want = f64::from(x).exp();
        worst = worst.max(((f64::from(f(x)) - want) / want).abs());
    }
    eprintln!("avx512 exp: worst relative error {worst:e}");
    // (Measured: 1.6e-7, against 3e-7 allowed for the portable one.)
    assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    assert_eq!(f(0.0), 1.0);
    assert_eq!(f(f32::NEG_INFINITY), 0.0);
    assert_eq!(f(-100.0), 0.0);
    assert!(f(f32::NAN).is_nan());
}

#[test]
fn small_and_kv_cache_shapes() {
    each_isa("5x7", &case(1, 1, 1, 5, 7, 8, 6));
    each_isa("S_q < S_kv", &case(2, 2, 2, 16, 30, 32, 32));
    each_isa("S_q > S_kv", &case(1, 2, 2, 70, 9, 16, 16));
    each_isa("S_q = 1", &case(2, 3, 3, 1, 200, 64, 64));
    each_isa("S_kv = 1", &case(1, 1, 1, 3, 1, 4, 4));
    each_isa("many blocks", &case(1, 1, 1, 130, 260, 24, 40));
    let mut cache = case(1, 4, 1, 1, 100, 64, 64);
    cache.causal = Some(99);
    each_isa("decode step, causal past", &cache);
    let empty = case(1, 1, 1, 4, 0, 8, 8);
    for isa in Isa::available() {
        // No keys: every row is fully masked.
        let got = check("S_kv = 0", &empty, isa, 3);
        assert!(got.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn head_dim_tails() {
    for &(d, dv) in &[
        (1, 1),
        (2, 3),
        (15, 17),
        (16, 16),
        (17, 33),
        (33, 1),
        (64, 65),
        (80, 80),
        (127, 64),
        (130, 130),
    ] {
        let mut c = case(1, 2, 2, 67, 70, d, dv);
        c.scale = 0.3;
        each_isa(&format!("d {d} dv {dv}"), &c);
    }
}

#[test]
fn gqa_and_layouts() {
    each_isa("GQA 6/2", &case(2, 6, 2, 20, 33, 16, 8));
    each_isa("GQA 4/1", &case(1, 4, 1, 65, 65, 8, 8));
    let mut c = case(2, 3, 3, 40, 50, 24, 20);
    c.q_order = [0, 2, 1, 3];
    c.k_order = [2, 0, 1, 3];
    c.v_order = [0, 1, 3, 2];
    c.out_order = [0, 2, 1, 3];
    each_isa("interleaved heads, transposed V", &c);
    let mut t = case(1, 1, 1, 64, 64, 32, 32);
    t.q_order = [0, 1, 3, 2];
    t.k_order = [0, 1, 3, 2];
    each_isa("transposed Q and K", &t);
}

#[test]
fn biases_and_masks() {
    let (b, h, sq, skv) = (2, 2, 37, 75);
    let full = layout([b, h, sq, skv], [0, 1, 2, 3]);
    let mut c = case(b, h, h, sq, skv, 16, 16);
    c.bias = Bias::Random(full, b * h * sq * skv);
    each_isa("full bias", &c);
    c.bias = Bias::Random([0, 0, skv as isize, 1], sq * skv);
    each_isa("bias broadcast over batch and heads", &c);
    c.bias = Bias::Random([skv as isize, 0, 0, 1], b * skv);
    each_isa("key-padding bias broadcast over rows", &c);
    c.bias = Bias::Random([0, 1, 0, 0], h);
    each_isa("bias constant along keys", &c);
    c.bias = Bias::MaskRows(vec![0, 5, 36]);
    for isa in Isa::available() {
        let got = check("fully masked rows", &c, isa, 11);
        let dv = c.z.v_head_dim;
        for (n, x) in got.iter().enumerate() {
            if [0, 5, 36].contains(&(n / dv % sq)) {
                assert_eq!(*x, 0.0, "masked row element {n} on {isa:?}");
            }
        }
    }
}

/// A bias shared by the batch but not the heads: each head's blocks are
/// classified on their own (skip, add nothing, add).
#[test]
fn bias_per_head() {
    let scales = vec![1, 4, 9, 16, 25, 36, 64, 49];
    let n: usize = scales.iter().sum();
    let mut c = case(2, 4, 2, n, n, 16, 24);
    c.bias = Bias::PerHead(scales);
    for isa in Isa::available() {
        let got = check("per-head bias", &c, isa, 13);
        let dv = c.z.v_head_dim;
        for (x, y) in got.iter().enumerate() {
            if x / dv / n % 4 == 3 && x / dv % n < 5 {
                assert_eq!(*y, 0.0, "masked row of head 3, element {x} on {isa:?}");
            }
        }
    }
}

/// A few query rows (decoding with a KV cache) take the path that reads
/// K and V in place: biases, causal limits, strided and transposed
/// layouts, GQA, fully masked rows.
#[test]
fn few_query_rows_in_place() {
    let mut c = case(2, 4, 2, 3, 150, 40, 24);
    c.bias = Bias::Random(layout([2, 4, 3, 150], [0, 1, 2, 3]), 2 * 4 * 3 * 150);
    each_isa("3 rows, full bias", &c);
    c.k_order = [0, 1, 3, 2];
    c.v_order = [2, 0, 1, 3];
    c.q_order = [0, 2, 1, 3];
    c.out_order = [0, 2, 1, 3];
    each_isa("3 rows, transposed K, interleaved V", &c);
    c.bias = Bias::MaskRows(vec![1]);
    for isa in Isa::available() {
        let got = check("3 rows, row 1 masked", &c, isa, 17);
        for (x, y) in got.iter().enumerate() {
            if x / 24 % 3 == 1 {
                assert_eq!(*y, 0.0, "masked row element {x} on {isa:?}");
            }
        }
    }
    let mut k = case(1, 2, 2, 4, 130, 64, 64);
    k.causal = Some(-2);
    for isa in Isa::available() {
        // Rows 0 and 1 see no key.
        let got = check("4 rows, causal past -2", &k, isa, 19);
        for (x, y) in got.iter().enumerate() {
            if x / 64 % 4 < 2 {
                assert_eq!(*y, 0.0, "hidden row element {x} on {isa:?}");
            }
        }
    }
    k.causal = Some(126);
    k.bias = Bias::Random([0, 0, 0, 1], 130);
    each_isa("4 rows, causal past 126, key bias", &k);
}

#[test]
fn causal_and_block_causal() {
    let mut c = case(1, 2, 2, 150, 150, 32, 32);
    c.causal = Some(0);
    each_isa("causal", &c);
    c.causal = Some(-3);
    each_isa("causal, first rows fully masked", &c);
    let mut q = case(1, 1, 1, 40, 170, 16, 16);
    q.causal = Some(130);
    each_isa("causal with past", &q);
    // VAR's scales 1..16 (680 tokens) shrunk: 1, 4, 9, 16, 25, 36, 64, 100.
    let scales = vec![1, 4, 9, 16, 25, 36, 64, 100];
    let n: usize = scales.iter().sum();
    let mut v = case(2, 2, 2, n, n, 32, 32);
    v.bias = Bias::BlockCausal(scales);
    v.scale = 1.0;
    each_isa("block-causal", &v);
}

/// Scores that grow along the keys make the running max rise block after
/// block, so every rescaling path runs.
#[test]
fn rising_scores_rescale() {
    let c = case(1, 1, 1, 3, 300, 1, 4);
    let st = |s: [usize; 4]| layout(s, [0, 1, 2, 3]);
    let d = Data {
        q: vec![1.0f32; 3],
        k: (0..300).map(|j| j as f32 * 0.05).collect(),
        v: (0..300 * 4).map(|x| (x % 7) as f32 - 3.0).collect(),
        bias: None,
        st: [
            st([1, 1, 3, 1]),
            st([1, 1, 300, 1]),
            st([1, 1, 300, 4]),
            st([1, 1, 3, 4]),
        ],
    };
    let p = problem_of(&c, &d);
    let want = reference(&p);
    for isa in Isa::available() {
        let mut out = vec![0f32; 12];
        attention_with(
            isa,
            &p,
            OutMut {
                data: &mut out,
                offset: 0,
                strides: d.st[3],
            },
        );
        for (g, w) in out.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{isa:?}: {g} vs {w}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "outside its slice")]
fn operands_outside_their_slices_are_refused() {
    let c = case(1, 1, 1, 4, 4, 4, 4);
    let mut d = data(&c, &mut Lcg(1));
    d.k.truncate(10);
    let p = problem_of(&c, &d);
    let mut out = vec![0f32; 16];
    attention(
        &p,
        OutMut {
            data: &mut out,
            offset: 0,
            strides: d.st[3],
        },
    );
}

/// The C entry through an argument block on case `c`, serially and on
/// pools of 1..3 threads (which classify the bias and take units in cost
/// order, not output order): bit-identical to the safe serial path.
fn entry_bit_identical(what: &str, c: &Case, seed: u64) {
    let d = data(c, &mut Lcg(seed));
    let p = problem_of(c, &d);
    let z = c.z;
    let len = z.batch * z.q_heads * z.s_q * z.v_head_dim;
    let mut serial = vec![0f32; len];
    attention(
        &p,
        OutMut {
            data: &mut serial,
            offset: 0,
            strides: d.st[3],
        },
    );
    let run = |pool: Option<Arc<ThreadPool>>| {
        let mut out = vec![0f32; len];
        let (bias, bias_strides) = match &d.bias {
            Some((b, s)) => (b.as_ptr(), *s),
            None => (std::ptr::null(), [0; 4]),
        };
        let args = AttentionArgs {
            q: d.q.as_ptr(),
            k: d.k.as_ptr(),
            v: d.v.as_ptr(),
            bias,
            out: out.as_mut_ptr(),
            q_strides: d.st[0],
            k_strides: d.st[1],
            v_strides: d.st[2],
            bias_strides,
            out_strides: d.st[3],
            batch: z.batch,
            q_heads: z.q_heads,
            kv_heads: z.kv_heads,
            s_q: z.s_q,
            s_kv: z.s_kv,
            head_dim: z.head_dim,
            v_head_dim: z.v_head_dim,
            causal: usize::from(c.causal.is_some()),
            causal_offset: c.causal.unwrap_or(0),
            scale: f64::from(c.scale),
        };
        // SAFETY: every pointer addresses a live Vec holding the whole view
        // (the strides are the layouts the data was made for), and `out` is
        // a separate Vec.
        let call = || unsafe { varc_attention(&args) };
        match pool {
            Some(p) => p.install(call),
            None => call(),
        }
        out
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&run(None)), bits(&serial), "{what}: serial entry");
    for threads in [1, 2, 3] {
        let pool = Arc::new(ThreadPool::new(threads));
        for _ in 0..2 {
            assert_eq!(
                bits(&run(Some(pool.clone()))),
                bits(&serial),
                "{what}: {threads} threads"
            );
        }
    }
}

#[test]
fn c_entry_is_bit_identical_on_any_pool() {
    let scales = vec![1, 4, 9, 16, 25, 36, 64, 100, 169];
    let n: usize = scales.iter().sum();
    let mut c = case(2, 2, 2, n, n, 32, 32);
    c.bias = Bias::BlockCausal(scales.clone());
    c.q_order = [0, 2, 1, 3];
    c.out_order = [0, 2, 1, 3];
    entry_bit_identical("block-causal, interleaved heads", &c, 5);
    // One head: the units of a single K/V head spread over the threads.
    let mut one = case(1, 1, 1, n, n, 64, 64);
    one.bias = Bias::BlockCausal(scales);
    entry_bit_identical("block-causal, one head", &one, 6);
    // Bias planes per head (classified one by one), GQA, and a causal
    // limit on top.
    let per: Vec<usize> = vec![1, 4, 9, 16, 25, 36, 64, 49];
    let m: usize = per.iter().sum();
    let mut h = case(2, 4, 2, m, m, 16, 24);
    h.bias = Bias::PerHead(per);
    h.causal = Some(3);
    entry_bit_identical("per-head bias, causal", &h, 7);
    // A bias per batch and head, not broadcast.
    let mut r = case(2, 2, 1, 130, 200, 32, 16);
    let bs = [2, 2, 130, 200];
    r.bias = Bias::Random(layout(bs, [0, 1, 2, 3]), bs.iter().product());
    entry_bit_identical("random bias per batch and head", &r, 8);
    // No bias, causal: later tiles are heavier.
    let mut k = case(1, 3, 3, 300, 300, 32, 32);
    k.causal = Some(0);
    entry_bit_identical("causal, no bias", &k, 9);
}

/// The class table against a scalar scan of every `(group, block)`: −∞
/// throughout (or past the causal limit of every row) is skipped, ±0
/// throughout adds nothing, anything else (NaN, +∞, tiny values, a lone
/// −∞) is added. Both bias planes per head and odd key counts.
#[test]
fn classes_match_a_scalar_scan() {
    let (hq, sq, skv) = (2, 37, 150);
    let mut rng = Lcg(21);
    let plane = sq * skv;
    let mut bias = vec![0f32; hq * plane];
    for (x, v) in bias.iter_mut().enumerate() {
        let (i, j) = (x / skv % sq, x % skv);
        let (g, jb) = (i / RQ, j / NK);
        // Per (group, block) pattern: 0 mixed, 1 −∞, 2 ±0, 3 special.
        *v = match (g + jb + x / plane) % 4 {
            1 => f32::NEG_INFINITY,
            2 if j % 2 == 0 => -0.0,
            2 => 0.0,
            3 => match (i + j) % 97 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::MIN_POSITIVE,
                3 => 1e-40,
                _ => f32::NEG_INFINITY,
            },
            _ => rng.next(),
        };
    }
    for causal in [None, Some(0), Some(-5), Some(100)] {
        let mut c = case(1, hq, 1, sq, skv, 8, 8);
        c.causal = causal;
        let d = Data {
            bias: Some((bias.clone(), [0, plane as isize, skv as isize, 1])),
            ..data(&c, &mut Lcg(3))
        };
        let p = problem_of(&c, &d);
        let Some(classes) = Classes::new(&p) else {
            panic!("a bias makes a class table")
        };
        for isa in Isa::available() {
            classes.fill_all(isa, &p);
            for h in 0..hq {
                let cells = classes.plane(0, h);
                for g in 0..sq.div_ceil(RQ) {
                    for jb in 0..skv.div_ceil(NK) {
                        let (mut all_inf, mut all_zero) = (true, true);
                        for i in g * RQ..(g * RQ + RQ).min(sq) {
                            for j in jb * NK..(jb * NK + NK).min(skv) {
                                if causal.is_some_and(|o| j as isize > i as isize + o) {
                                    continue;
                                }
                                let x = bias[h * plane + i * skv + j];
                                all_inf &= x == f32::NEG_INFINITY;
                                all_zero &= x == 0.0;
                            }
                        }
                        let got = cells[g * skv.div_ceil(NK) + jb].load(Ordering::Relaxed);
                        let want = if all_inf {
                            SKIP
                        } else if all_zero {
                            ZERO
                        } else {
                            MIXED
                        };
                        // Keys past one row's limit but before another's
                        // are scanned for the whole group: a block the
                        // per-row scan calls −∞ or 0 may be called mixed
                        // (adding is always right), never the reverse.
                        assert!(
                            got == want || got == MIXED,
                            "{isa:?} causal {causal:?}: head {h} group {g} block {jb}: {got} vs {want}"
                        );
                        if causal.is_none() {
                            assert_eq!(got, want, "{isa:?}: head {h} group {g} block {jb}");
                        }
                    }
                }
            }
        }
    }
}

/// Units are handed out heaviest first within each `(batch, head)`: under
/// a block-causal mask the last tiles (which see every key) come first.
#[test]
fn schedule_puts_heavy_tiles_first() {
    let scales = vec![1, 4, 9, 16, 25, 36, 64, 100, 169];
    let n: usize = scales.iter().sum();
    let mut c = case(1, 2, 2, n, n, 8, 8);
    c.bias = Bias::BlockCausal(scales);
    let d = data(&c, &mut Lcg(4));
    let p = problem_of(&c, &d);
    let Some(classes) = Classes::new(&p) else {
        panic!("a bias makes a class table")
    };
    classes.fill_all(Isa::detect(), &p);
    let order = schedule(&p, Some(&classes));
    let tiles = n.div_ceil(MQ);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..2 * tiles).collect::<Vec<_>>(), "a permutation");
    // Tiles 4 and 5 (rows 256..384, all in the last scale, from 255) see
    // every key with 16 groups (ties: the later first); tile 6 (384..424)
    // with 10.
    assert_eq!(&order[..3], &[5, 4, 6], "{order:?}");
    assert_eq!(order[tiles - 1], 0, "the first tile sees the fewest keys");
    assert_eq!(order[tiles], tiles + 5, "head 1 after head 0");
    let cost = |u: usize| tile_cost(&p, Some(classes.plane(0, u / tiles)), u % tiles);
    for w in order[..tiles].windows(2) {
        assert!(cost(w[0]) >= cost(w[1]), "{order:?}");
    }
}
