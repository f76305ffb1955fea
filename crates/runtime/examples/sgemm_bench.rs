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
//! * `--quick`: the square sizes only.
//! * `MxNxK ...`: these shapes instead of the default list.
//!
//! Each figure is the best of 3 timings of enough repetitions to take
//! about 0.1 s: thread CPU time on one thread (the machine may be shared),
//! wall time on more.

use std::sync::Arc;
use std::time::Instant;
use varc_runtime::pool::ThreadPool;
use varc_runtime::ukernel::{
    Blocking, Isa, MatMut, MatRef, PackedB, sgemm_blocked, varc_sgemm, varc_sgemm_packed,
};

struct Opts {
    threads: usize,
    numpy: Option<String>,
    blocking: Option<Blocking>,
    shapes: Vec<(usize, usize, usize)>,
}

fn parse() -> Opts {
    let mut o = Opts {
        threads: 1,
        numpy: None,
        blocking: None,
        shapes: vec![],
    };
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => o.threads = args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            "--numpy" => o.numpy = args.next(),
            "--quick" => quick = true,
            "--blocking" => {
                let v: Vec<usize> = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if let [mc, kc, nc] = v[..] {
                    o.blocking = Some(Blocking { mc, kc, nc });
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

/// Best time of 3 of `f`, repeated to take about 0.1 s each: thread CPU
/// time when `cpu` (one thread), else wall time.
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

fn main() {
    let o = parse();
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
