//! Fused attention microkernel throughput on the shapes of VAR / FlowAR:
//!
//! `cargo run --release -p varc-runtime --example attention_bench -- [options]`
//!
//! * `--isa avx512|avx2|neon|portable`: that instruction set instead of the
//!   best one.
//! * `--only TEXT`: the shapes whose name contains `TEXT`.
//!
//! Each figure is the best of 3 timings of enough repetitions to take about
//! 0.1 s of this thread's CPU time (the machine may be shared). GFLOP/s
//! counts `4·B·H·S_q·S_kv·d` for the whole problem, masked blocks included,
//! so that figures with and without masks compare as time.

use std::time::Instant;
use varc_runtime::ukernel::Isa;
use varc_runtime::ukernel::attention::{Operand, OutMut, Problem, Sizes, attention_with};

/// Seconds of CPU time this thread has used.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two C longs on 64-bit
    // Linux, checked below).
    let r = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0 && cfg!(target_pointer_width = "64")).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<f64> {
    None
}

thread_local! {
    static START: Instant = Instant::now();
}

/// Best of 3 timings of `f` (seconds per call).
fn time(mut f: impl FnMut()) -> f64 {
    let now = || thread_cpu().unwrap_or_else(|| START.with(|s| s.elapsed().as_secs_f64()));
    f();
    let t = now();
    f();
    let once = (now() - t).max(1e-7);
    let reps = (0.1 / once).ceil().clamp(1.0, 100_000.0) as usize;
    (0..3)
        .map(|_| {
            let t = now();
            for _ in 0..reps {
                f();
            }
            (now() - t) / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// VAR's block-causal mask `[s, s]`: token `i` of scale `k` sees every
/// token of scales `≤ k`.
fn block_causal(sides: &[usize]) -> Vec<f32> {
    let mut limit = vec![];
    let mut end = 0;
    for &p in sides {
        end += p * p;
        limit.extend(std::iter::repeat_n(end, p * p));
    }
    let n = end;
    (0..n * n)
        .map(|x| {
            if x % n < limit[x / n] {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect()
}

struct Shape {
    name: &'static str,
    batch: usize,
    heads: usize,
    s_q: usize,
    s_kv: usize,
    d: usize,
    block_causal: bool,
}

fn bench(isa: Isa, sh: &Shape) {
    const SIDES: [usize; 10] = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16];
    let (b, h, sq, skv, d) = (sh.batch, sh.heads, sh.s_q, sh.s_kv, sh.d);
    let q = values(b * h * sq * d, 1);
    let k = values(b * h * skv * d, 2);
    let v = values(b * h * skv * d, 3);
    let mask = sh.block_causal.then(|| block_causal(&SIDES));
    if let Some(m) = &mask {
        assert_eq!(m.len(), sq * skv, "{}: the mask is 680 × 680", sh.name);
    }
    let dense = |s: [usize; 4]| {
        [
            (s[1] * s[2] * s[3]) as isize,
            (s[2] * s[3]) as isize,
            s[3] as isize,
            1,
        ]
    };
    let op = |data, shape| Operand {
        data,
        offset: 0,
        strides: dense(shape),
    };
    let p = Problem {
        q: op(&q, [b, h, sq, d]),
        k: op(&k, [b, h, skv, d]),
        v: op(&v, [b, h, skv, d]),
        bias: mask.as_ref().map(|m| Operand {
            data: m,
            offset: 0,
            strides: [0, 0, skv as isize, 1],
        }),
        sizes: Sizes {
            batch: b,
            q_heads: h,
            kv_heads: h,
            s_q: sq,
            s_kv: skv,
            head_dim: d,
            v_head_dim: d,
        },
        scale: 1.0 / (d as f32).sqrt(),
        causal_offset: None,
    };
    let mut out = vec![0f32; b * h * sq * d];
    let strides = dense([b, h, sq, d]);
    let t = time(|| {
        attention_with(
            isa,
            &p,
            OutMut {
                data: &mut out,
                offset: 0,
                strides,
            },
        )
    });
    let flop = 4.0 * (b * h * sq * skv * d) as f64;
    println!(
        "{:<44} {:>9.3} ms {:>8.1} GFLOP/s",
        sh.name,
        t * 1e3,
        flop / t * 1e-9
    );
    std::hint::black_box(&out);
}

fn main() {
    let mut isa = Isa::detect();
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--only" {
            only = args.next();
        } else if a == "--isa" {
            isa = match args.next().as_deref() {
                Some("avx512") => Isa::Avx512,
                Some("avx2") => Isa::Avx2Fma,
                Some("neon") => Isa::Neon,
                _ => Isa::Portable,
            };
        }
    }
    println!("attention_with on {isa:?}, one thread");
    let shape = |name, batch, heads, s_q, s_kv, d, block_causal| Shape {
        name,
        batch,
        heads,
        s_q,
        s_kv,
        d,
        block_causal,
    };
    for sh in [
        shape(
            "var_tf B2 H2 S680 d32 block-causal",
            2,
            2,
            680,
            680,
            32,
            true,
        ),
        shape("var_tf B2 H2 S680 d32 no bias", 2, 2, 680, 680, 32, false),
        shape(
            "VAR-d16 B1 H16 S680 d64 block-causal",
            1,
            16,
            680,
            680,
            64,
            true,
        ),
        shape("var_step B1 H1 1 x 680 d64", 1, 1, 1, 680, 64, false),
        shape("S256 d64 no bias (B1 H1)", 1, 1, 256, 256, 64, false),
    ] {
        if only.as_ref().is_none_or(|o| sh.name.contains(o.as_str())) {
            bench(isa, &sh);
        }
    }
}
