//! Fused attention microkernel throughput on the shapes of VAR / FlowAR:
//!
//! `cargo run --release -p varc-runtime --example attention_bench -- [options]`
//!
//! * `--isa avx512|avx2|neon|portable`: that instruction set instead of the
//!   best one.
//! * `--only TEXT`: the shapes whose name contains `TEXT`.
//! * `--threads N`: through the C entry `varc_attention` (as generated code
//!   calls it: classification and scheduling included) on a
//!   `ThreadPool` of `N` threads installed around the call, timed in wall
//!   time; `--isa` does not apply (the entry takes the best one). Without
//!   it, `attention_with` on this thread, timed in this thread's CPU time.
//!
//! * `--reps N`: `N` calls per timing instead of about 0.1 s worth (fixed
//!   work per run, for `perf stat` cycle counts on a noisy machine).
//!
//! Each figure is the best of 5 timings of enough repetitions to take about
//! 0.1 s (the machine may be shared; the median is printed too). GFLOP/s
//! counts `4·B·H·S_q·S_kv·d` for the whole problem, masked blocks included,
//! so that figures with and without masks compare as time.

use std::sync::Arc;
use std::time::Instant;
use varc_runtime::pool::ThreadPool;
use varc_runtime::ukernel::Isa;
use varc_runtime::ukernel::attention::{
    AttentionArgs, Operand, OutMut, Problem, Sizes, attention_with, varc_attention,
};

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

fn wall() -> f64 {
    START.with(|s| s.elapsed().as_secs_f64())
}

/// Best and median of 5 timings of `f` (seconds per call) by the clock
/// `now`.
fn time(reps: Option<usize>, now: impl Fn() -> f64, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let t = now();
    f();
    let once = (now() - t).max(1e-7);
    let reps = reps.unwrap_or((0.1 / once).ceil().clamp(1.0, 100_000.0) as usize);
    let mut ts: Vec<f64> = (0..5)
        .map(|_| {
            let t = now();
            for _ in 0..reps {
                f();
            }
            (now() - t) / reps as f64
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    (ts[0], ts[2])
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
    /// Q, K and V as column slices of one `[batch, s, 3, heads, d]` matrix
    /// (an ONNX QKV projection split by `Slice`, as minvar's attention
    /// reads it: rows of `3·heads·d`), scale 1; else dense and `1/√d`.
    qkv: bool,
}

/// The 680 tokens of VAR's scales 1, 2, 3, 4, 5, 6, 8, 10, 13, 16.
const SIDES: [usize; 10] = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16];
const TOKENS: usize = 680;

fn bench(isa: Isa, threads: Option<&Arc<ThreadPool>>, reps: Option<usize>, sh: &Shape) {
    let (b, h, sq, skv, d) = (sh.batch, sh.heads, sh.s_q, sh.s_kv, sh.d);
    assert!(!sh.qkv || sq == skv, "{}: one QKV matrix", sh.name);
    let (q, k, v) = if sh.qkv {
        (values(b * sq * 3 * h * d, 1), vec![], vec![])
    } else {
        (
            values(b * h * sq * d, 1),
            values(b * h * skv * d, 2),
            values(b * h * skv * d, 3),
        )
    };
    // (Base offsets into `q`, `k`, `v` and their strides.)
    let (k, v) = if sh.qkv { (&q, &q) } else { (&k, &v) };
    let row = (3 * h * d) as isize;
    let qkv_st = [sq as isize * row, d as isize, row, 1];
    let base = |n: usize| if sh.qkv { n * h * d } else { 0 };
    // The mask of all 680 tokens; shorter sequences (minvar's 679: every
    // token but the last) take its top-left corner in place, as a slice of
    // the mask would.
    let mask = sh.block_causal.then(|| block_causal(&SIDES));
    assert!(
        !sh.block_causal || (sq <= TOKENS && skv <= TOKENS),
        "{}: the mask is 680 × 680",
        sh.name
    );
    let dense = |s: [usize; 4]| {
        [
            (s[1] * s[2] * s[3]) as isize,
            (s[2] * s[3]) as isize,
            s[3] as isize,
            1,
        ]
    };
    let st = |s: [usize; 4]| if sh.qkv { qkv_st } else { dense(s) };
    let op = |data, n, shape| Operand {
        data,
        offset: base(n),
        strides: st(shape),
    };
    let p = Problem {
        q: op(&q, 0, [b, h, sq, d]),
        k: op(k, 1, [b, h, skv, d]),
        v: op(v, 2, [b, h, skv, d]),
        bias: mask.as_ref().map(|m| Operand {
            data: m,
            offset: 0,
            strides: [0, 0, TOKENS as isize, 1],
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
        scale: if sh.qkv { 1.0 } else { 1.0 / (d as f32).sqrt() },
        causal_offset: None,
    };
    p.check().expect("the bench's operands fit their slices");
    let mut out = vec![0f32; b * h * sq * d];
    let strides = dense([b, h, sq, d]);
    let (best, median) = match threads {
        None => time(
            reps,
            || thread_cpu().unwrap_or_else(wall),
            || {
                attention_with(
                    isa,
                    &p,
                    OutMut {
                        data: &mut out,
                        offset: 0,
                        strides,
                    },
                )
            },
        ),
        Some(pool) => {
            let args = AttentionArgs {
                q: q[base(0)..].as_ptr(),
                k: k[base(1)..].as_ptr(),
                v: v[base(2)..].as_ptr(),
                bias: mask.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
                out: out.as_mut_ptr(),
                q_strides: st([b, h, sq, d]),
                k_strides: st([b, h, skv, d]),
                v_strides: st([b, h, skv, d]),
                bias_strides: [0, 0, TOKENS as isize, 1],
                out_strides: strides,
                batch: b,
                q_heads: h,
                kv_heads: h,
                s_q: sq,
                s_kv: skv,
                head_dim: d,
                v_head_dim: d,
                causal: 0,
                causal_offset: 0,
                scale: f64::from(p.scale),
            };
            time(reps, wall, || {
                // SAFETY: every pointer addresses a live Vec holding the
                // whole view (dense or QKV layouts of the sizes given, as
                // `p` checked; the mask is 680 × 680 and the sequences at
                // most 680), and `out`
                // is a separate Vec not otherwise touched during the call.
                pool.install(|| unsafe { varc_attention(&args) })
            })
        }
    };
    let flop = 4.0 * (b * h * sq * skv * d) as f64;
    println!(
        "{:<44} {:>9.3} ms (median {:>7.3}) {:>8.1} GFLOP/s",
        sh.name,
        best * 1e3,
        median * 1e3,
        flop / best * 1e-9
    );
    std::hint::black_box(&out);
}

fn main() {
    let mut isa = Isa::detect();
    let mut only = None;
    let mut threads = None;
    let mut reps = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--only" {
            only = args.next();
        } else if a == "--reps" {
            let n = args.next().and_then(|n| n.parse::<usize>().ok());
            reps = Some(n.expect("--reps takes a count").max(1));
        } else if a == "--threads" {
            let n = args.next().and_then(|n| n.parse::<usize>().ok());
            threads = Some(n.expect("--threads takes a thread count"));
        } else if a == "--isa" {
            isa = match args.next().as_deref() {
                Some("avx512") => Isa::Avx512,
                Some("avx2") => Isa::Avx2Fma,
                Some("neon") => Isa::Neon,
                _ => Isa::Portable,
            };
        }
    }
    let pool = threads.map(|n| Arc::new(ThreadPool::new(n)));
    match threads {
        Some(n) => println!("varc_attention on a pool of {n} threads (wall time)"),
        None => println!("attention_with on {isa:?}, one thread (thread CPU time)"),
    }
    let shape = |name, batch, heads, s_q, s_kv, d, block_causal| Shape {
        name,
        batch,
        heads,
        s_q,
        s_kv,
        d,
        block_causal,
        qkv: false,
    };
    for sh in [
        // As `models/minvar_dyn18.onnx` calls it: no bias, no causal limit,
        // Q/K/V interleaved in one [679, 192] matrix, scale 1.
        Shape {
            qkv: true,
            ..shape(
                "minvar B1 H1 S679 d64 QKV[679,192]",
                1,
                1,
                679,
                679,
                64,
                false,
            )
        },
        shape(
            "masked-minvar B1 H1 S679 d64 block-causal",
            1,
            1,
            679,
            679,
            64,
            true,
        ),
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
            bench(isa, pool.as_ref(), reps, &sh);
        }
    }
}
