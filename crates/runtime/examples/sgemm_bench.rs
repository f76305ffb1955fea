//! sgemm throughput on square and VAR-shaped products, B packed per call
//! and packed ahead (as weights are):
//!
//! `cargo run --release -p varc-runtime --example sgemm_bench -- [options]`
//!
//! * `--threads T`: run through the C ABI entries on a pool of T threads
//!   (default 1: the calling thread only).
//! * `--numpy PYTHON`: also time `numpy.matmul` on each shape with that
//!   interpreter (one thread: OPENBLAS/OMP/MKL_NUM_THREADS=T).
//! * `--blocking MC,KC,NC`: block sizes for the per-call path (tuning).
//! * `--vs MC,KC,NC MC,KC,NC`: instead of the table, compare two block
//!   sizes on the packed-ahead path (one thread), alternating the two
//!   many times so that a shared machine's slow spells hit both alike.
//! * `--cold`: with `--vs`, cycle through copies of B larger together
//!   than the last-level cache, so B comes from memory as a model's
//!   weights do.
//! * `--quick`: the square sizes only.
//! * `MxNxK ...`: these shapes instead of the default list.
//!
//! Each figure is the least of many timings (about 0.3 s in all) of one
//! call, or of a batch of calls taking at least 1 ms: thread CPU time on
//! one thread (the machine may be shared), wall time on more.

use std::sync::Arc;
use std::time::Instant;
use varc_runtime::pool::ThreadPool;
use varc_runtime::ukernel::{
    Blocking, Isa, MatMut, MatRef, PackedB, sgemm_blocked, sgemm_packed_blocked, varc_sgemm,
    varc_sgemm_packed,
};

struct Opts {
    threads: usize,
    numpy: Option<String>,
    blocking: Option<Blocking>,
    vs: Vec<Blocking>,
    cold: bool,
    shapes: Vec<(usize, usize, usize)>,
}

fn parse_blocking(s: &str) -> Option<Blocking> {
    let v: Vec<usize> = s.split(',').filter_map(|s| s.parse().ok()).collect();
    match v[..] {
        [mc, kc, nc] => Some(Blocking { mc, kc, nc }),
        _ => None,
    }
}

fn parse() -> Opts {
    let mut o = Opts {
        threads: 1,
        numpy: None,
        blocking: None,
        vs: vec![],
        cold: false,
        shapes: vec![],
    };
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => o.threads = args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            "--numpy" => o.numpy = args.next(),
            "--quick" => quick = true,
            "--cold" => o.cold = true,
            "--blocking" => o.blocking = parse_blocking(&args.next().unwrap_or_default()),
            "--vs" => {
                for _ in 0..2 {
                    o.vs.extend(parse_blocking(&args.next().unwrap_or_default()));
                }
            }
            s => {
                let v: Vec<usize> = s.split('x').filter_map(|s| s.parse().ok()).collect();
                if let [m, n, k] = v[..] {
                    o.shapes.push((m, n, k));
                }
            }
        }
    }
    if o.shapes.is_empty() {
        o.shapes = vec![(512, 512, 512), (2048, 2048, 2048)];
        if !quick {
            for m in [1, 4, 16, 64, 256, 680] {
                for n in [1024, 3072, 4096] {
                    o.shapes.push((m, n, 1024));
                }
                o.shapes.push((m, 1024, 4096));
            }
        }
    }
    o
}

/// Seconds of CPU time this thread has used, so that time the thread
/// spends descheduled on a shared machine does not count.
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

/// Least time of one `f` over about 0.3 s of runs, `f` batched to at
/// least 1 ms per timing: thread CPU time when `cpu` (one thread), else
/// wall time. The least of many short timings is the figure least
/// disturbed by other processes on a shared machine (SMT siblings and
/// descheduling only ever add time).
fn time(cpu: bool, mut f: impl FnMut()) -> f64 {
    let now = || {
        cpu.then(thread_cpu)
            .flatten()
            .unwrap_or_else(|| START.with(|s| s.elapsed().as_secs_f64()))
    };
    f();
    let t = now();
    f();
    let once = (now() - t).max(1e-7);
    let reps = (1e-3 / once).ceil().clamp(1.0, 100_000.0) as usize;
    let trials = (0.3 / (once * reps as f64)).ceil().clamp(5.0, 1000.0) as usize;
    (0..trials)
        .map(|_| {
            let t = now();
            for _ in 0..reps {
                f();
            }
            (now() - t) / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

thread_local! {
    static START: Instant = Instant::now();
}

fn numpy(python: &str, threads: usize, (m, n, k): (usize, usize, usize)) -> Option<f64> {
    let script = format!(
        "import numpy as np, time\n\
         a=np.random.rand({m},{k}).astype(np.float32); b=np.random.rand({k},{n}).astype(np.float32)\n\
         c=a@b; t=time.perf_counter(); c=a@b; once=max(time.perf_counter()-t,1e-7)\n\
         reps=max(1,int(0.1/once)); best=1e9\n\
         for _ in range(3):\n\
         \x20   t=time.perf_counter()\n\
         \x20   for _ in range(reps): np.matmul(a,b,out=c)\n\
         \x20   best=min(best,(time.perf_counter()-t)/reps)\n\
         print(best)\n"
    );
    let t = threads.to_string();
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .env("OPENBLAS_NUM_THREADS", &t)
        .env("OMP_NUM_THREADS", &t)
        .env("MKL_NUM_THREADS", &t)
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// `--vs`: the least time of each blocking over 20 alternations.
fn compare(o: &Opts) {
    println!(
        "packed ahead, 1 thread: {:?} vs {:?}; GFLOP/s",
        o.vs[0], o.vs[1]
    );
    for &(m, n, k) in &o.shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let rb = MatRef {
            data: &b,
            offset: 0,
            rs: n as isize,
            cs: 1,
        };
        let copies = if o.cold {
            (320usize << 20).div_ceil(k * n * 4).max(2)
        } else {
            1
        };
        let pbs: Vec<PackedB> = (0..copies).map(|_| PackedB::new(k, n, rb)).collect();
        let mut best = [f64::INFINITY; 2];
        for trial in 0..20 {
            for (v, (bl, best)) in o.vs.iter().zip(best.iter_mut()).enumerate() {
                let pb = &pbs[(2 * trial + v) % copies];
                let t = time_once(|| {
                    sgemm_packed_blocked(
                        bl,
                        m,
                        MatRef {
                            data: &a,
                            offset: 0,
                            rs: k as isize,
                            cs: 1,
                        },
                        pb,
                        MatMut {
                            data: &mut c,
                            offset: 0,
                            rs: n as isize,
                            cs: 1,
                        },
                        false,
                    )
                });
                *best = best.min(t);
            }
        }
        let flop = 2.0 * (m * n * k) as f64;
        println!(
            "{:>18} {:7.1} {:7.1}",
            format!("{m}×{n}×{k}"),
            flop / best[0] / 1e9,
            flop / best[1] / 1e9
        );
    }
}

/// Thread CPU time of one batch of `f` lasting at least 1 ms, per call.
fn time_once(mut f: impl FnMut()) -> f64 {
    let now = || thread_cpu().unwrap_or_else(|| START.with(|s| s.elapsed().as_secs_f64()));
    let mut reps = 0usize;
    let t = now();
    loop {
        f();
        reps += 1;
        let dt = now() - t;
        if dt >= 1e-3 {
            return dt / reps as f64;
        }
    }
}

fn main() {
    let o = parse();
    if o.vs.len() == 2 {
        compare(&o);
        return;
    }
    let isa = Isa::detect();
    let pool = Arc::new(ThreadPool::new(o.threads));
    println!(
        "{} , {} thread(s); GFLOP/s (ms){}",
        isa.name(),
        o.threads,
        if o.blocking.is_some() {
            format!(", per-call blocking {:?}", o.blocking)
        } else {
            String::new()
        }
    );
    println!(
        "{:>18} {:>18} {:>18} {:>18}",
        "M×N×K", "B packed per call", "B packed ahead", "numpy"
    );
    for &(m, n, k) in &o.shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let rb = MatRef {
            data: &b,
            offset: 0,
            rs: n as isize,
            cs: 1,
        };
        let pb = PackedB::new(k, n, rb);
        let cpu = o.threads == 1;
        let per_call = time(cpu, || match (o.threads, o.blocking) {
            (1, Some(bl)) => sgemm_blocked(
                isa,
                &bl,
                m,
                n,
                k,
                MatRef {
                    data: &a,
                    offset: 0,
                    rs: k as isize,
                    cs: 1,
                },
                rb,
                MatMut {
                    data: &mut c,
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                },
                false,
            ),
            // SAFETY: row-major A (m × k), B (k × n), C (m × n) inside
            // their Vecs.
            _ => pool.install(|| unsafe {
                varc_sgemm(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                    0,
                )
            }),
        });
        // SAFETY: as above; `pb` is live.
        let ahead = time(cpu, || {
            pool.install(|| unsafe {
                varc_sgemm_packed(
                    m,
                    a.as_ptr(),
                    k as isize,
                    1,
                    &pb,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                    0,
                    std::ptr::null(),
                )
            })
        });
        let np = o
            .numpy
            .as_deref()
            .and_then(|py| numpy(py, o.threads, (m, n, k)));
        let fmt = |s: f64| format!("{:7.1} ({:7.3})", flop / s / 1e9, s * 1e3);
        println!(
            "{:>18} {:>18} {:>18} {:>18}",
            format!("{m}×{n}×{k}"),
            fmt(per_call),
            fmt(ahead),
            np.map_or("-".into(), fmt)
        );
    }
}
