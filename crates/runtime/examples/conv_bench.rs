//! 2-D convolution throughput: the implicit-GEMM microkernel
//! (`varc_conv2d`) against the im2col path it replaces (the im2col matrix
//! materialised, then `sgemm`), both timed, on one thread:
//!
//! `cargo run --release -p varc-runtime --example conv_bench -- [CxMxHxW ...]`
//!
//! Shapes are batch 1, 3×3, stride 1, pad 1 (`C→M` channels on an `H×W`
//! image); the columns after the im2col+sgemm time split it into its two
//! parts. `--conv-only` times `varc_conv2d` alone (for profiling). Each
//! figure is the best of 9 rounds, in thread CPU time, of enough
//! repetitions to take about 20 ms; a round runs the variants in turn, so
//! that all see the same load (the machine may be shared).

use std::cell::RefCell;
use std::time::Instant;
use varc_runtime::ukernel::conv::{ConvArgs, ConvShape};
use varc_runtime::ukernel::{MatMut, MatRef, sgemm, varc_conv2d};

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

/// The best time of each of `fs` over 9 rounds, each round running every
/// function in turn, repeated to take about 20 ms (so that all see the
/// same load on a shared machine).
fn times(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let now = || thread_cpu().unwrap_or_else(|| START.with(|s| s.elapsed().as_secs_f64()));
    let reps: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            f();
            let t = now();
            f();
            let once = (now() - t).max(1e-7);
            (0.02 / once).ceil().clamp(1.0, 100_000.0) as usize
        })
        .collect();
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..9 {
        for ((f, &r), b) in fs.iter_mut().zip(&reps).zip(&mut best) {
            let t = now();
            for _ in 0..r {
                f();
            }
            *b = b.min((now() - t) / r as f64);
        }
    }
    best
}

fn shape(c: usize, m: usize, h: usize, w: usize) -> ConvShape {
    ConvShape {
        batch: 1,
        in_channels: c,
        out_channels: m,
        in_h: h,
        in_w: w,
        out_h: h,
        out_w: w,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        pad_h: 1,
        pad_w: 1,
    }
}

/// The im2col matrix (`C·KH·KW × OH·OW`, row-major) of a contiguous
/// image, stride 1: each row is zero borders around contiguous runs.
fn im2col(z: &ConvShape, x: &[f32], col: &mut [f32]) {
    let (h, w, oh, ow) = (z.in_h, z.in_w, z.out_h, z.out_w);
    let mut r = 0;
    for c in 0..z.in_channels {
        for kh in 0..z.kernel_h {
            for kw in 0..z.kernel_w {
                let row = &mut col[r * oh * ow..(r + 1) * oh * ow];
                let bx = (kw * z.dilation_w) as isize - z.pad_w as isize;
                let lo = (-bx).clamp(0, ow as isize) as usize;
                let hi = (w as isize - bx).clamp(lo as isize, ow as isize) as usize;
                for y in 0..oh {
                    let d = &mut row[y * ow..(y + 1) * ow];
                    let iy = (y + kh * z.dilation_h) as isize - z.pad_h as isize;
                    if iy < 0 || iy >= h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let s = (c * h + iy as usize) * w;
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    let from = (s as isize + lo as isize + bx) as usize;
                    d[lo..hi].copy_from_slice(&x[from..from + hi - lo]);
                }
                r += 1;
            }
        }
    }
}

fn main() {
    let conv_only = std::env::args().any(|a| a == "--conv-only");
    let mut shapes: Vec<(usize, usize, usize, usize)> = std::env::args()
        .skip(1)
        .filter_map(|s| {
            let v: Vec<usize> = s.split('x').filter_map(|t| t.parse().ok()).collect();
            match v[..] {
                [c, m, h, w] => Some((c, m, h, w)),
                _ => None,
            }
        })
        .collect();
    if shapes.is_empty() {
        shapes = vec![
            (64, 64, 32, 32),
            (64, 32, 32, 32),
            (32, 32, 32, 32),
            (192, 192, 16, 16),
            (128, 64, 32, 32),
            (64, 64, 64, 64),
            (3, 64, 32, 32),
        ];
    }
    println!(
        "isa {}; 1 thread; batch 1, 3x3 stride 1 pad 1",
        varc_runtime::ukernel::Isa::detect().name()
    );
    println!(
        "{:>18} {:>9} {:>8} | {:>9} {:>8} {:>9} {:>9} | {:>7}",
        "C->M @ HxW", "conv ms", "GFLOP/s", "i2c+mm ms", "GFLOP/s", "(im2col", "sgemm)", "speedup"
    );
    for (c, m, h, w) in shapes {
        let z = shape(c, m, h, w);
        let (k, n) = (z.k(), z.points());
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..c * h * w).map(|_| rnd()).collect();
        let wt: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let mut y = vec![0f32; m * n];
        let (hw, kk) = ((h * w) as i64, 9i64);
        let args = ConvArgs {
            x: x.as_ptr(),
            w: wt.as_ptr(),
            y: y.as_mut_ptr(),
            x_strides: [c as i64 * hw, hw, w as i64, 1],
            w_strides: [c as i64 * kk, kk, 3, 1],
            y_strides: [m as i64 * hw, hw, w as i64, 1],
            sizes: [1, c, m, h, w, h, w, 3, 3, 1, 1, 1, 1, 1, 1].map(|v| v as i64),
            packed_a: std::ptr::null(),
            bias: std::ptr::null(),
            bias_stride: 0,
        };
        let col = RefCell::new(vec![0f32; k * n]);
        let y2 = RefCell::new(vec![0f32; m * n]);
        let gemm = || {
            sgemm(
                m,
                n,
                k,
                MatRef {
                    data: &wt,
                    offset: 0,
                    rs: k as isize,
                    cs: 1,
                },
                MatRef {
                    data: &col.borrow(),
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                },
                MatMut {
                    data: &mut y2.borrow_mut(),
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                },
                false,
            )
        };
        let i2c = || im2col(&z, &x, &mut col.borrow_mut());
        let mut conv = || {
            // SAFETY: x, w and y are contiguous NCHW / MCKK / NMHW tensors
            // of exactly these extents in their own Vecs (y separate), and
            // `y` is not otherwise touched while `args` is in use.
            unsafe { varc_conv2d(&args) }
        };
        let t = if conv_only {
            times(&mut [&mut conv])
        } else {
            times(&mut [
                &mut conv,
                &mut || {
                    i2c();
                    gemm();
                },
                &mut || i2c(),
                &mut || gemm(),
            ])
        };
        if conv_only {
            println!("{c}->{m} @ {h}x{w}: conv {:.3} ms", t[0] * 1e3);
            continue;
        }
        let (t_conv, t_path, t_i2c, t_mm) = (t[0], t[1], t[2], t[3]);
        let y2 = y2.borrow();
        let same = y
            .iter()
            .zip(y2.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        let flop = 2.0 * (m * n * k) as f64;
        println!(
            "{:>18} {:>9.3} {:>8.1} | {:>9.3} {:>8.1} {:>9.3} {:>9.3} | {:>6.2}x{}",
            format!("{c}->{m} @ {h}x{w}"),
            t_conv * 1e3,
            flop / t_conv * 1e-9,
            t_path * 1e3,
            flop / t_path * 1e-9,
            t_i2c * 1e3,
            t_mm * 1e3,
            t_path / t_conv,
            if same { "" } else { "  (results differ!)" }
        );
    }
}
