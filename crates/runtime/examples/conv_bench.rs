//! 2-D convolution throughput: the implicit-GEMM microkernel
//! (`varc_conv2d`, weights packed ahead and a per-channel bias, as compiled
//! models call it) against the im2col path it replaces (the im2col matrix
//! materialised, then `sgemm`, then the bias):
//!
//! `cargo run --release -p varc-runtime --example conv_bench -- [--threads N] [CxMxHxW[kK] ...]`
//!
//! Shapes are batch 1, stride 1, `K×K` kernel (3 unless `kK`), pad `K/2`
//! (`C→M` channels on an `H×W` image); the default list is every
//! convolution shape of the VQVAE decoder (`models/vqvae_dec_dyn18.onnx`,
//! with how many times it occurs there) and then some larger ones. The
//! columns after the im2col+sgemm time split it into its two parts.
//! `--threads N` runs `varc_conv2d` with a pool of N threads installed
//! (the reference stays on one thread). `--conv-only` times `varc_conv2d`
//! alone (for profiling). Each figure is the best of 9 rounds of enough
//! repetitions to take about 20 ms, in thread CPU time on one thread and
//! wall time with a pool; a round runs the variants in turn, so that all
//! see the same load (the machine may be shared).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;
use varc_runtime::pool::ThreadPool;
use varc_runtime::ukernel::conv::{ConvArgs, ConvShape, Tensor};
use varc_runtime::ukernel::{MatMut, MatRef, PackedB, sgemm, varc_conv2d};

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

/// The best time of each of `fs` over 9 rounds, each round running every
/// function in turn, repeated to take about 20 ms (so that all see the
/// same load on a shared machine). Thread CPU time, or wall time with
/// `wall_clock` (work on other threads counts).
fn times(wall_clock: bool, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let now = || {
        if wall_clock {
            wall()
        } else {
            thread_cpu().unwrap_or_else(wall)
        }
    };
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

fn shape(c: usize, m: usize, h: usize, w: usize, k: usize) -> ConvShape {
    ConvShape {
        batch: 1,
        in_channels: c,
        out_channels: m,
        in_h: h,
        in_w: w,
        out_h: h,
        out_w: w,
        kernel_h: k,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        pad_h: k / 2,
        pad_w: k / 2,
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

/// Every convolution of the VQVAE decoder: `(C, M, H, W, K, count)`.
const VQVAE: [(usize, usize, usize, usize, usize, usize); 10] = [
    (32, 32, 16, 16, 3, 1),
    (32, 64, 16, 16, 3, 1),
    (64, 64, 16, 16, 3, 8),
    (64, 192, 16, 16, 1, 3),
    (64, 64, 16, 16, 1, 3),
    (64, 64, 32, 32, 3, 1),
    (64, 32, 32, 32, 3, 1),
    (32, 32, 32, 32, 3, 3),
    (64, 32, 32, 32, 1, 1),
    (32, 3, 32, 32, 3, 1),
];

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let conv_only = argv.iter().any(|a| a == "--conv-only");
    let threads = argv
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| argv.get(i + 1))
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut shapes: Vec<(usize, usize, usize, usize, usize, usize)> = argv
        .iter()
        .filter_map(|s| {
            let (dims, k) = s.split_once('k').unwrap_or((s, "3"));
            let v: Vec<usize> = dims.split('x').filter_map(|t| t.parse().ok()).collect();
            match (&v[..], k.parse()) {
                (&[c, m, h, w], Ok(k)) => Some((c, m, h, w, k, 1)),
                _ => None,
            }
        })
        .collect();
    if shapes.is_empty() {
        shapes = VQVAE.to_vec();
        shapes.extend(
            [(192, 192, 16, 16), (128, 64, 32, 32), (64, 64, 64, 64)]
                .map(|(c, m, h, w)| (c, m, h, w, 3, 1)),
        );
    }
    let (pool, one) = (
        Arc::new(ThreadPool::new(threads)),
        Arc::new(ThreadPool::new(1)),
    );
    println!(
        "isa {}; {threads} thread(s) ({}); batch 1, KxK stride 1 pad K/2; weights packed, bias",
        varc_runtime::ukernel::Isa::detect().name(),
        if threads > 1 {
            "wall time"
        } else {
            "thread CPU time"
        },
    );
    let mut head = format!(
        "{:>22} {:>9} {:>8}",
        "C->M @ HxW kK (count)", "conv ms", "GFLOP/s"
    );
    if threads > 1 {
        head += &format!(" {:>9} {:>7}", "1 thr ms", "scale");
    }
    if !conv_only {
        head += &format!(
            " | {:>9} {:>8} {:>9} {:>9} | {:>7}",
            "i2c+mm ms", "GFLOP/s", "(im2col", "sgemm)", "speedup"
        );
    }
    println!("{head}");
    let mut total = [0f64; 3];
    for (c, m, h, w, kk, count) in shapes {
        let z = shape(c, m, h, w, kk);
        let (k, n) = (z.k(), z.points());
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..c * h * w).map(|_| rnd()).collect();
        let wt: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..m).map(|_| rnd()).collect();
        let mut y = vec![0f32; m * n];
        let (hw, kw) = ((h * w) as i64, (kk * kk) as i64);
        let w_strides = [c as i64 * kw, kw, kk as i64, 1];
        let packed = match PackedB::conv_weights(
            &z,
            Tensor {
                data: &wt,
                offset: 0,
                strides: w_strides.map(|s| s as isize),
            },
        ) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{c}->{m} @ {h}x{w} k{kk}: {e}");
                continue;
            }
        };
        let pad = (kk / 2) as i64;
        let args = ConvArgs {
            x: x.as_ptr(),
            w: wt.as_ptr(),
            y: y.as_mut_ptr(),
            x_strides: [c as i64 * hw, hw, w as i64, 1],
            w_strides,
            y_strides: [m as i64 * hw, hw, w as i64, 1],
            sizes: [
                1, c as i64, m as i64, h as i64, w as i64, h as i64, w as i64, kk as i64,
                kk as i64, 1, 1, 1, 1, pad, pad,
            ],
            packed_a: &packed,
            bias: bias.as_ptr(),
            bias_stride: 1,
        };
        let col = RefCell::new(vec![0f32; k * n]);
        let y2 = RefCell::new(vec![0f32; m * n]);
        let gemm = || {
            let mut y2 = y2.borrow_mut();
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
                    data: &mut y2,
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                },
                false,
            );
            for (row, b) in y2.chunks_mut(n).zip(&bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        };
        let i2c = || im2col(&z, &x, &mut col.borrow_mut());
        let run = |p: &Arc<ThreadPool>| {
            p.install(|| {
                // SAFETY: x, w and y are contiguous NCHW / MCKK / NMHW
                // tensors of exactly these extents in their own Vecs (y
                // separate), `packed` is w packed for this shape, the bias
                // has one float per output channel, and `y` is not
                // otherwise touched while `args` is in use.
                unsafe { varc_conv2d(&args) }
            })
        };
        let (mut conv, mut conv1) = (|| run(&pool), || run(&one));
        let (mut path, mut i2c_only, mut gemm_only) = (
            || {
                i2c();
                gemm();
            },
            || i2c(),
            || gemm(),
        );
        // With a pool, the one-thread figure is taken in the same rounds
        // (wall time too), so that the scaling is measured under one load.
        let mut fs: Vec<&mut dyn FnMut()> = vec![&mut conv];
        if threads > 1 {
            fs.push(&mut conv1);
        }
        if !conv_only {
            fs.extend([&mut path as &mut dyn FnMut(), &mut i2c_only, &mut gemm_only]);
        }
        let mut t = times(threads > 1, &mut fs).into_iter();
        let t_conv = t.next().unwrap_or(f64::NAN);
        let t_one = (threads > 1).then(|| t.next().unwrap_or(f64::NAN));
        let flop = 2.0 * (m * n * k) as f64;
        let label = format!("{c}->{m} @ {h}x{w} k{kk} ({count})");
        total[0] += t_conv * count as f64;
        let mut line = format!(
            "{label:>22} {:>9.3} {:>8.1}",
            t_conv * 1e3,
            flop / t_conv * 1e-9
        );
        if let Some(t1) = t_one {
            total[1] += t1 * count as f64;
            line += &format!(" {:>9.3} {:>6.2}x", t1 * 1e3, t1 / t_conv);
        }
        if let (Some(t_path), Some(t_i2c), Some(t_mm)) = (t.next(), t.next(), t.next()) {
            total[2] += t_path * count as f64;
            let y2 = y2.borrow();
            let same = y
                .iter()
                .zip(y2.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            line += &format!(
                " | {:>9.3} {:>8.1} {:>9.3} {:>9.3} | {:>6.2}x{}",
                t_path * 1e3,
                flop / t_path * 1e-9,
                t_i2c * 1e3,
                t_mm * 1e3,
                t_path / t_conv,
                if same { "" } else { "  (results differ!)" }
            );
        }
        println!("{line}");
    }
    let mut line = format!("{:>22} {:>9.3} {:>8}", "total x count", total[0] * 1e3, "");
    if threads > 1 {
        line += &format!(" {:>9.3} {:>6.2}x", total[1] * 1e3, total[1] / total[0]);
    }
    if !conv_only {
        line += &format!(" | {:>9.3}", total[2] * 1e3);
    }
    println!("{line}");
}
