//! Single-thread sgemm throughput: `cargo run --release -p varc-runtime
//! --example sgemm [N ...]` (default 512 2048), row-major square problems.

use std::time::Instant;
use varc_runtime::ukernel::{Isa, MatMut, MatRef, sgemm_with};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![512, 2048]
    } else {
        sizes
    };
    for isa in Isa::available() {
        for &n in &sizes {
            let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0f32; n * n];
            let r = |d| MatRef {
                data: d,
                offset: 0,
                rs: n as isize,
                cs: 1,
            };
            let run = |c: &mut [f32]| {
                let out = MatMut {
                    data: c,
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                };
                sgemm_with(isa, n, n, n, r(&a), r(&b), out, false)
            };
            run(&mut c);
            let reps = (2e9 / (2.0 * (n as f64).powi(3))).ceil().max(1.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                run(&mut c);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let gflops = 2.0 * (n as f64).powi(3) / s / 1e9;
            println!(
                "{:>16} {n:>5}³: {:8.3} ms  {gflops:6.1} GFLOP/s",
                isa.name(),
                s * 1e3
            );
        }
    }
}
