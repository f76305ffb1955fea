//! The convolution against a direct scalar loop on every instruction set
//! (kernels 1×1 to 5×5, strides, dilation, pads, cropped outputs, channel
//! and point counts off the tile sizes, strided batches, the small-row
//! path); bit-identity with `sgemm_with` on an explicitly materialised
//! im2col matrix and across thread counts through the C ABI entry.

use super::*;
use crate::pool::ThreadPool;
use crate::ukernel::{MatMut, sgemm_with};
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

/// One test convolution and the layout of its operands.
#[derive(Clone, Copy, Debug)]
struct Case {
    z: ConvShape,
    /// Extra channels around x's (x is a channel slice of a bigger tensor).
    x_extra_c: usize,
    /// x's element stride along w (2: every other element of a row).
    x_ws: usize,
    /// Padding after each channel plane of y.
    y_pad: usize,
}

/// `[kh, kw]`, `[sh, sw]`, `[dh, dw]`, `[ph, pw]`; out sizes from the usual
/// formula minus `crop` (cropped outputs: fewer than the padding allows).
#[allow(clippy::too_many_arguments)]
fn shape(
    (n, c, m): (usize, usize, usize),
    (h, w): (usize, usize),
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: [usize; 2],
    crop: [usize; 2],
) -> ConvShape {
    let out = |i: usize, len: usize| (len + 2 * p[i] - d[i] * (k[i] - 1) - 1) / s[i] + 1 - crop[i];
    ConvShape {
        batch: n,
        in_channels: c,
        out_channels: m,
        in_h: h,
        in_w: w,
        out_h: out(0, h),
        out_w: out(1, w),
        kernel_h: k[0],
        kernel_w: k[1],
        stride_h: s[0],
        stride_w: s[1],
        dilation_h: d[0],
        dilation_w: d[1],
        pad_h: p[0],
        pad_w: p[1],
    }
}

fn plain(z: ConvShape) -> Case {
    Case {
        z,
        x_extra_c: 0,
        x_ws: 1,
        y_pad: 0,
    }
}

fn cases() -> Vec<Case> {
    let one = [1, 1];
    let mut v = vec![
        // 3×3 pad 1, out_w 5 (below every nr), odd channel counts.
        plain(shape((1, 3, 17), (5, 5), [3, 3], one, one, one, [0, 0])),
        // out_w 16, M a multiple of no tile height.
        plain(shape((1, 17, 64), (16, 16), [3, 3], one, one, one, [0, 0])),
        // 1×1, out_w 33 (above nr), M = 3 (small path).
        plain(shape((1, 64, 3), (9, 33), one, one, one, [0, 0], [0, 0])),
        // 1×3 with pad only along w.
        plain(shape(
            (1, 17, 17),
            (6, 33),
            [1, 3],
            one,
            one,
            [0, 1],
            [0, 0],
        )),
        // 5×5 stride 2 pad 2, odd image.
        plain(shape(
            (1, 3, 64),
            (21, 20),
            [5, 5],
            [2, 2],
            one,
            [2, 2],
            [0, 0],
        )),
        // Dilation 2.
        plain(shape(
            (1, 17, 17),
            (12, 16),
            [3, 3],
            one,
            [2, 2],
            [2, 2],
            [0, 0],
        )),
        // Cropped outputs (end pads smaller than the start pads).
        plain(shape((1, 17, 20), (10, 10), [3, 3], one, one, one, [1, 2])),
        // Stride 2 no pad, M = 4 (small path).
        plain(shape(
            (1, 17, 4),
            (11, 11),
            [3, 3],
            [2, 2],
            one,
            [0, 0],
            [0, 0],
        )),
        // Stride 2 pad 1, M = 1.
        plain(shape((1, 5, 1), (9, 12), [3, 3], [2, 2], one, one, [0, 0])),
        // Pads past the kernel's reach: border outputs read only zeros.
        plain(shape((1, 3, 8), (5, 6), one, one, one, [2, 2], [0, 0])),
        // 1×1 with padding, runs of 16 (zero-bordered fixed-size copies).
        plain(shape((1, 5, 6), (14, 14), one, one, one, one, [0, 0])),
        // No padding reached, stride 1 (packed as plain row copies).
        plain(shape(
            (1, 17, 9),
            (10, 37),
            [3, 3],
            one,
            one,
            [0, 0],
            [0, 0],
        )),
        // Mostly padding: too big to pad ahead, packed with zero borders.
        plain(shape(
            (1, 17, 5),
            (4, 4),
            [3, 3],
            one,
            [40, 40],
            [40, 40],
            [0, 0],
        )),
        // Mixed strides and dilations per axis.
        plain(shape(
            (1, 3, 7),
            (13, 17),
            [3, 5],
            [2, 1],
            [1, 2],
            [1, 2],
            [0, 0],
        )),
        // K = 576: several depth blocks.
        plain(shape((1, 64, 17), (8, 8), [3, 3], one, one, one, [0, 0])),
        // 2304 points: several column blocks.
        plain(shape((1, 3, 5), (48, 48), [3, 3], one, one, one, [0, 0])),
    ];
    // Output rows a multiple of 16 (B read from the image in place):
    // VQVAE's 32×32 and 16×16 convolutions (through the padded copy),
    // no padding (read from x itself), 80 points (a half-filled last
    // tile), stride 2 along h only.
    v.push(plain(shape(
        (1, 32, 64),
        (32, 32),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    v.push(plain(shape(
        (1, 64, 64),
        (16, 16),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    v.push(plain(shape(
        (1, 9, 13),
        (18, 34),
        [3, 3],
        one,
        one,
        [0, 0],
        [0, 0],
    )));
    v.push(plain(shape(
        (1, 7, 25),
        (5, 16),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    v.push(plain(shape(
        (1, 5, 30),
        (9, 16),
        [3, 3],
        [2, 1],
        one,
        one,
        [0, 0],
    )));
    // Small-row products read in place: VQVAE's last convolution (M = 3)
    // and 80 points (a last 64-column tile with one valid vector).
    v.push(plain(shape(
        (1, 32, 3),
        (32, 32),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    v.push(plain(shape(
        (1, 9, 4),
        (5, 16),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    // Batch 2, x a channel slice of a bigger tensor, y with padded planes.
    let b2 = shape((2, 17, 33), (9, 16), [3, 3], one, one, one, [0, 0]);
    v.push(Case {
        z: b2,
        x_extra_c: 5,
        x_ws: 1,
        y_pad: 3,
    });
    // ... and x's rows strided (the elementwise packing).
    v.push(Case {
        z: b2,
        x_extra_c: 2,
        x_ws: 2,
        y_pad: 0,
    });
    let b2s = shape((2, 3, 4), (10, 7), [3, 3], [2, 2], one, one, [0, 0]);
    v.push(Case {
        z: b2s,
        x_extra_c: 1,
        x_ws: 3,
        y_pad: 1,
    });
    v
}

/// The operands of a case: buffers, offsets and strides.
struct Data {
    x: Vec<f32>,
    x_off: usize,
    xs: [isize; 4],
    w: Vec<f32>,
    ws: [isize; 4],
    y_len: usize,
    ys: [isize; 4],
}

fn data(cs: &Case, seed: u64) -> Data {
    let z = &cs.z;
    let mut rng = Lcg(seed);
    let row = z.in_w * cs.x_ws + 1;
    let plane = z.in_h * row;
    let chans = z.in_channels + cs.x_extra_c;
    let xs = [
        (chans * plane) as isize,
        plane as isize,
        row as isize,
        cs.x_ws as isize,
    ];
    let x = rng.vec(z.batch * chans * plane);
    let x_off = cs.x_extra_c.div_ceil(2) * plane;
    let kk = z.kernel_h * z.kernel_w;
    let w = rng.vec(z.out_channels * z.in_channels * kk);
    let ws = [
        (z.in_channels * kk) as isize,
        kk as isize,
        z.kernel_w as isize,
        1,
    ];
    let yplane = z.points() + cs.y_pad;
    let ys = [
        (z.out_channels * yplane) as isize,
        yplane as isize,
        z.out_w as isize,
        1,
    ];
    Data {
        x,
        x_off,
        xs,
        w,
        ws,
        y_len: z.batch * z.out_channels * yplane,
        ys,
    }
}

fn at(off: usize, s: [isize; 4], i: [usize; 4]) -> usize {
    (off as isize + (0..4).map(|a| i[a] as isize * s[a]).sum::<isize>()) as usize
}

/// The direct loop in f64: `(y, Σ|terms|)` at `[n, m, oh, ow]`, row-major.
fn reference(z: &ConvShape, d: &Data) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![];
    let mut mag = vec![];
    for n in 0..z.batch {
        for m in 0..z.out_channels {
            for oh in 0..z.out_h {
                for ow in 0..z.out_w {
                    let (mut s, mut a) = (0f64, 0f64);
                    for c in 0..z.in_channels {
                        for kh in 0..z.kernel_h {
                            for kw in 0..z.kernel_w {
                                let iy = (oh * z.stride_h + kh * z.dilation_h) as isize
                                    - z.pad_h as isize;
                                let ix = (ow * z.stride_w + kw * z.dilation_w) as isize
                                    - z.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= z.in_h as isize
                                    || ix >= z.in_w as isize
                                {
                                    continue;
                                }
                                let xv =
                                    d.x[at(d.x_off, d.xs, [n, c, iy as usize, ix as usize])] as f64;
                                let wv = d.w[at(0, d.ws, [m, c, kh, kw])] as f64;
                                s += xv * wv;
                                a += (xv * wv).abs();
                            }
                        }
                    }
                    y.push(s);
                    mag.push(a);
                }
            }
        }
    }
    (y, mag)
}

fn run_safe(isa: Isa, cs: &Case, d: &Data) -> Vec<f32> {
    let mut y = vec![f32::NAN; d.y_len];
    conv2d(
        isa,
        Tensor {
            data: &d.x,
            offset: d.x_off,
            strides: d.xs,
        },
        Tensor {
            data: &d.w,
            offset: 0,
            strides: d.ws,
        },
        TensorMut {
            data: &mut y,
            offset: 0,
            strides: d.ys,
        },
        &cs.z,
    );
    y
}

/// The output elements of `y` in `[n, m, oh, ow]` order.
fn outputs(z: &ConvShape, d: &Data, y: &[f32]) -> Vec<f32> {
    let mut v = vec![];
    for n in 0..z.batch {
        for m in 0..z.out_channels {
            for oh in 0..z.out_h {
                for ow in 0..z.out_w {
                    v.push(y[at(0, d.ys, [n, m, oh, ow])]);
                }
            }
        }
    }
    v
}

fn check_against_reference(what: &str, cs: &Case, d: &Data, y: &[f32]) {
    let (want, mag) = reference(&cs.z, d);
    let got = outputs(&cs.z, d, y);
    for (i, ((&g, &w), &a)) in got.iter().zip(&want).zip(&mag).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * a,
            "{what} {:?}: output {i}: got {g}, want {w} (Σ|terms| {a})",
            cs.z
        );
    }
}

#[test]
fn conv_matches_direct_loop() {
    for (ci, cs) in cases().iter().enumerate() {
        let d = data(cs, 17 + ci as u64);
        for isa in Isa::available() {
            let y = run_safe(isa, cs, &d);
            check_against_reference(isa.name(), cs, &d, &y);
            // Padding between y's planes is never written.
            let written = outputs(&cs.z, &d, &y).len();
            assert_eq!(
                y.iter().filter(|v| v.is_nan()).count(),
                d.y_len - written,
                "{:?}",
                cs.z
            );
        }
    }
}

/// The im2col matrix of image `n`, `K × points` row-major, built plainly.
fn im2col(z: &ConvShape, d: &Data, n: usize) -> Vec<f32> {
    let mut col = vec![];
    for c in 0..z.in_channels {
        for kh in 0..z.kernel_h {
            for kw in 0..z.kernel_w {
                for oh in 0..z.out_h {
                    for ow in 0..z.out_w {
                        let iy = (oh * z.stride_h + kh * z.dilation_h) as isize - z.pad_h as isize;
                        let ix = (ow * z.stride_w + kw * z.dilation_w) as isize - z.pad_w as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && iy < z.in_h as isize && ix < z.in_w as isize;
                        col.push(if inside {
                            d.x[at(d.x_off, d.xs, [n, c, iy as usize, ix as usize])]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    col
}

#[test]
fn conv_bit_identical_to_sgemm_on_im2col() {
    for (ci, cs) in cases().iter().enumerate() {
        let z = &cs.z;
        let d = data(cs, 91 + ci as u64);
        let (m, n, k) = (z.out_channels, z.points(), z.k());
        for isa in Isa::available() {
            let got = run_safe(isa, cs, &d);
            let mut want = vec![f32::NAN; d.y_len];
            for img in 0..z.batch {
                let col = im2col(z, &d, img);
                sgemm_with(
                    isa,
                    m,
                    n,
                    k,
                    MatRef {
                        data: &d.w,
                        offset: 0,
                        rs: d.ws[0],
                        cs: 1,
                    },
                    MatRef {
                        data: &col,
                        offset: 0,
                        rs: n as isize,
                        cs: 1,
                    },
                    MatMut {
                        data: &mut want,
                        offset: img * d.ys[0] as usize,
                        rs: d.ys[1],
                        cs: 1,
                    },
                    false,
                );
            }
            let (g, w) = (outputs(z, &d, &got), outputs(z, &d, &want));
            assert!(
                g.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} {:?}: differs from sgemm on im2col",
                isa.name(),
                z
            );
        }
    }
}

fn args(z: &ConvShape, d: &Data, y: &mut [f32]) -> ConvArgs {
    let s = |v: [isize; 4]| v.map(|x| x as i64);
    ConvArgs {
        // SAFETY: `x_off` is inside `d.x` (a case's first channel).
        x: unsafe { d.x.as_ptr().add(d.x_off) },
        w: d.w.as_ptr(),
        y: y.as_mut_ptr(),
        x_strides: s(d.xs),
        w_strides: s(d.ws),
        y_strides: s(d.ys),
        sizes: [
            z.batch,
            z.in_channels,
            z.out_channels,
            z.in_h,
            z.in_w,
            z.out_h,
            z.out_w,
            z.kernel_h,
            z.kernel_w,
            z.stride_h,
            z.stride_w,
            z.dilation_h,
            z.dilation_w,
            z.pad_h,
            z.pad_w,
        ]
        .map(|v| v as i64),
        packed_a: std::ptr::null(),
        bias: std::ptr::null(),
        bias_stride: 0,
    }
}

/// Runs the C ABI entry, on a pool of `threads` when more than one.
fn run_abi(threads: usize, cs: &Case, d: &Data) -> Vec<f32> {
    let mut y = vec![f32::NAN; d.y_len];
    let a = args(&cs.z, d, &mut y);
    // SAFETY: the operands are the case's views inside their Vecs (checked
    // by `conv2d` in the other tests on the same layouts); y is a separate
    // Vec with an injective view.
    let call = || unsafe { varc_conv2d(&a) };
    if threads > 1 {
        Arc::new(ThreadPool::new(threads)).install(call);
    } else {
        call();
    }
    y
}

#[test]
fn conv_abi_threads_bit_identical() {
    let one = [1, 1];
    let big = [
        // Points split across tasks (more column groups than row tiles).
        Case {
            z: shape((2, 17, 24), (20, 20), [3, 3], one, one, one, [0, 0]),
            x_extra_c: 3,
            x_ws: 1,
            y_pad: 2,
        },
        // Channels split across tasks (more row tiles).
        plain(shape((1, 32, 200), (4, 4), [3, 3], one, one, one, [0, 0])),
        // Small-row path with a pool.
        plain(shape((1, 64, 3), (24, 24), [3, 3], one, one, one, [0, 0])),
    ];
    for (ci, cs) in big.iter().enumerate() {
        let d = data(cs, 5 + ci as u64);
        assert!(cs.z.out_channels * cs.z.points() * cs.z.k() * cs.z.batch >= 1 << 17);
        let serial = run_abi(1, cs, &d);
        check_against_reference("varc_conv2d", cs, &d, &serial);
        let safe = run_safe(Isa::detect(), cs, &d);
        for threads in [2, 3] {
            let par = run_abi(threads, cs, &d);
            assert!(
                par.iter()
                    .zip(&serial)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads {:?}",
                cs.z
            );
        }
        assert!(
            safe.iter()
                .zip(&serial)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "conv2d vs varc_conv2d {:?}",
            cs.z
        );
    }
}

#[test]
fn conv_abi_matches_direct_loop() {
    for (ci, cs) in cases().iter().enumerate() {
        let d = data(cs, 300 + ci as u64);
        let y = run_abi(1, cs, &d);
        check_against_reference("varc_conv2d", cs, &d, &y);
    }
}

#[test]
fn conv_abi_empty_does_nothing() {
    let z = ConvShape {
        batch: 0,
        ..shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0])
    };
    let a = ConvArgs {
        x: std::ptr::null(),
        w: std::ptr::null(),
        y: std::ptr::null_mut(),
        x_strides: [0; 4],
        w_strides: [0; 4],
        y_strides: [0; 4],
        sizes: [0; 15],
        packed_a: std::ptr::null(),
        bias: std::ptr::null(),
        bias_stride: 0,
    };
    let sizes = [
        z.batch,
        z.in_channels,
        z.out_channels,
        z.in_h,
        z.in_w,
        5,
        5,
        3,
        3,
        1,
        1,
        1,
        1,
        1,
        1,
    ];
    // SAFETY: with batch 0 the views have no elements: nothing is read or
    // written (the pointers are never dereferenced).
    unsafe {
        varc_conv2d(&ConvArgs {
            sizes: sizes.map(|v| v as i64),
            ..a
        })
    };
}

#[test]
fn conv_args_layout_matches() {
    assert_eq!(std::mem::offset_of!(ConvArgs, w), 8);
    assert_eq!(std::mem::offset_of!(ConvArgs, y), 16);
    assert_eq!(
        std::mem::offset_of!(ConvArgs, w_strides),
        conv_args_layout::STRIDES + 32
    );
    assert_eq!(
        std::mem::offset_of!(ConvArgs, y_strides),
        conv_args_layout::STRIDES + 64
    );
    assert_eq!(
        std::mem::offset_of!(ConvArgs, packed_a),
        conv_args_layout::PACKED_A
    );
    assert_eq!(conv_args_layout::TOTAL, 264);
}

#[test]
#[should_panic(expected = "negative size")]
fn conv_args_negative_size_refused() {
    let z = shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    let d = data(&plain(z), 1);
    let mut y = vec![0.0; d.y_len];
    let mut a = args(&z, &d, &mut y);
    a.sizes[13] = -1;
    a.shape();
}

#[test]
#[should_panic(expected = "zero stride")]
fn conv_args_zero_stride_refused() {
    let z = shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    let d = data(&plain(z), 1);
    let mut y = vec![0.0; d.y_len];
    let mut a = args(&z, &d, &mut y);
    a.sizes[10] = 0;
    a.shape();
}

#[test]
fn conv_flattening_checks() {
    let z = shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    // Contiguous, and any stride on axes of extent 1.
    assert_eq!(
        matrices(&z, [27, 9, 3, 1], [100, 25, 5, 1]),
        Ok([27, 1, 25, 1])
    );
    let z1 = ConvShape {
        kernel_h: 1,
        kernel_w: 1,
        out_w: 1,
        ..z
    };
    assert_eq!(
        matrices(&z1, [3, 1, 77, -5], [5, 5, 1, 99]),
        Ok([3, 1, 5, 1])
    );
    // (c, kh, kw) that do not flatten, (oh, ow) that do not.
    assert!(matrices(&z, [27, 10, 3, 1], [100, 25, 5, 1]).is_err());
    assert!(matrices(&z, [27, 9, 3, 1], [100, 25, 6, 1]).is_err());
}

#[test]
#[should_panic(expected = "do not flatten")]
fn conv2d_refuses_unflattened_weights() {
    let z = shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    let x = vec![0.0; 75];
    let w = vec![0.0; 200];
    let mut y = vec![0.0; 100];
    conv2d(
        Isa::Portable,
        Tensor {
            data: &x,
            offset: 0,
            strides: [75, 25, 5, 1],
        },
        Tensor {
            data: &w,
            offset: 0,
            strides: [40, 10, 3, 1],
        },
        TensorMut {
            data: &mut y,
            offset: 0,
            strides: [100, 25, 5, 1],
        },
        &z,
    );
}

#[test]
#[should_panic(expected = "outside its slice")]
fn conv2d_refuses_short_input() {
    let z = shape((1, 3, 4), (5, 5), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    let x = vec![0.0; 74];
    let w = vec![0.0; 108];
    let mut y = vec![0.0; 100];
    conv2d(
        Isa::Portable,
        Tensor {
            data: &x,
            offset: 0,
            strides: [75, 25, 5, 1],
        },
        Tensor {
            data: &w,
            offset: 0,
            strides: [27, 9, 3, 1],
        },
        TensorMut {
            data: &mut y,
            offset: 0,
            strides: [100, 25, 5, 1],
        },
        &z,
    );
}

/// Packing speed, im2col from the image against a strided pack of the
/// materialised matrix (`cargo test --release -p varc-runtime --lib
/// conv_pack_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn conv_pack_speed() {
    use crate::ukernel::pack::{pack_b, pack_b_im2col};
    let one = [1, 1];
    for (c, hw, p) in [
        (64, 32, 1),
        (64, 34, 0),
        (32, 32, 1),
        (32, 34, 0),
        (192, 16, 1),
        (192, 18, 0),
    ] {
        let cs = plain(shape(
            (1, c, 64),
            (hw, hw),
            [3, 3],
            one,
            one,
            [p, p],
            [0, 0],
        ));
        let z = cs.z;
        let d = data(&cs, 1);
        let col = im2col(&z, &d, 0);
        let (k, n) = (z.k(), z.points());
        let kc = crate::ukernel::blocks::kc_for(k);
        let nr = 32;
        let mut dst = vec![0f32; n.next_multiple_of(64) * kc];
        let src = Im2col {
            x: &d.x,
            offset: 0,
            strides: [d.xs[1], d.xs[2], d.xs[3]],
            shape: z,
        };
        let b = MatRef {
            data: &col,
            offset: 0,
            rs: n as isize,
            cs: 1,
        };
        let best = |f: &mut dyn FnMut()| {
            (0..7)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..20 {
                        f();
                    }
                    t.elapsed().as_secs_f64() / 20.0
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut dst2 = dst.clone();
        let ti = best(&mut || {
            src.with_padded(0, n, |src, j0| {
                for pc in (0..k).step_by(kc) {
                    let kcur = kc.min(k - pc);
                    let d = &mut dst[..n.next_multiple_of(64) * kcur];
                    pack_b_im2col(d, src, pc, kcur, j0, n, nr);
                }
            })
        });
        let tb = best(&mut || {
            for pc in (0..k).step_by(kc) {
                let kcur = kc.min(k - pc);
                pack_b(
                    &mut dst2[..n.next_multiple_of(64) * kcur],
                    &b,
                    pc,
                    kcur,
                    0,
                    n,
                    nr,
                );
            }
        });
        println!(
            "{c}ch {hw}x{hw}: {} floats, im2col pack {:.1} us, strided pack {:.1} us",
            k * n,
            ti * 1e6,
            tb * 1e6
        );
    }
}

/// The cases whose B the AVX-512 tiles read from the image in place (no
/// packed panel) are those with output rows a multiple of 16 and unit
/// steps along w; the shapes added for it above take that path.
#[test]
fn conv_direct_path_taken() {
    let direct = |cs: &Case| {
        let d = data(cs, 1);
        let src = Im2col {
            x: &d.x,
            offset: d.x_off,
            strides: [d.xs[1], d.xs[2], d.xs[3]],
            shape: cs.z,
        };
        src.with_padded(0, cs.z.points(), |src, j0| src.direct(j0))
    };
    let all = cases();
    let taken: Vec<_> = all.iter().filter(|cs| direct(cs)).map(|cs| cs.z).collect();
    // out_w 16, 32 or 48 with stride_w 1: the 16×16, dilated and 48×48
    // cases, the seven added ones and both batch-2 cases with out_w 16
    // (x's strided rows reach the tiles through the padded copy).
    assert_eq!(taken.len(), 12, "{taken:?}");
    assert_eq!(taken.iter().filter(|z| z.out_channels <= 4).count(), 2);
    assert!(taken.iter().all(|z| z.out_w % 16 == 0 && z.stride_w == 1));
    // out_w 5 is packed.
    assert!(!direct(&all[0]));
}

/// The taps' bounds: a run reaching past the image is refused, so a
/// direct tile never reads outside it.
#[test]
fn conv_taps_bounds() {
    use crate::ukernel::pack::{DIRECT_VEC, Taps};
    let z = shape((1, 2, 1), (4, 16), [3, 3], [1, 1], [1, 1], [0, 0], [0, 0]);
    let x = vec![0f32; 2 * 4 * 16];
    let src = Im2col {
        x: &x,
        offset: 0,
        strides: [64, 16, 1],
        shape: z,
    };
    let taps = Taps::new(&src, 0, z.k());
    // Tap (1, 2, 2) is the farthest: 64 + 32 + 2.
    assert_eq!(taps.offsets().iter().max(), Some(&98));
    assert_eq!(taps.offsets().iter().min(), Some(&0));
    // out_w = 14 here; a run of 16 from the last row's start overhangs.
    assert!(taps.fits(0, x.len()));
    assert!(taps.fits((x.len() - 98 - DIRECT_VEC) as isize, x.len()));
    assert!(!taps.fits((x.len() - 98 - DIRECT_VEC + 1) as isize, x.len()));
    assert!(!taps.fits(-1, x.len()));
    assert!(!taps.fits(isize::MAX, x.len()));
}

/// Weights packed ahead give the same bits as per-call packing, through
/// the C ABI entry at 1 to 3 threads (row splits start at sliver
/// boundaries of the packed A), and match the direct loop.
#[test]
fn conv_packed_weights_bit_identical() {
    let one = [1, 1];
    let mut all = cases();
    // Enough work for the pool to split: by points, then by channels.
    all.push(plain(shape(
        (2, 17, 24),
        (20, 20),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    all.push(plain(shape(
        (1, 32, 200),
        (4, 4),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    all.push(plain(shape(
        (1, 64, 64),
        (32, 32),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    for (ci, cs) in all.iter().enumerate() {
        let z = &cs.z;
        let d = data(cs, 700 + ci as u64);
        let plain_y = run_abi(1, cs, &d);
        let packed = PackedB::conv_weights(
            z,
            Tensor {
                data: &d.w,
                offset: 0,
                strides: d.ws,
            },
        )
        .unwrap();
        assert_eq!((packed.n(), packed.k()), (z.out_channels, z.k()));
        for threads in [1, 2, 3] {
            let mut y = vec![f32::NAN; d.y_len];
            let a = ConvArgs {
                packed_a: &packed,
                ..args(z, &d, &mut y)
            };
            // SAFETY: as in `run_abi`; `packed` is w packed for this shape
            // and outlives the call.
            let call = || unsafe { varc_conv2d(&a) };
            if threads > 1 {
                Arc::new(ThreadPool::new(threads)).install(call);
            } else {
                call();
            }
            if threads == 1 {
                check_against_reference("packed w", cs, &d, &y);
            }
            let (g, w) = (outputs(z, &d, &y), outputs(z, &d, &plain_y));
            assert!(
                g.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads {z:?}: packed w differs"
            );
        }
    }
}

#[test]
fn conv_weights_refuses_unflattened() {
    let z = shape((1, 2, 3), (4, 4), [3, 3], [1, 1], [1, 1], [1, 1], [0, 0]);
    let w = vec![0f32; 1000];
    // (c, kh, kw) strides that do not flatten: kh's stride is not 3·kw's.
    let r = PackedB::conv_weights(
        &z,
        Tensor {
            data: &w,
            offset: 0,
            strides: [40, 20, 4, 1],
        },
    );
    assert!(r.is_err());
    // Outside the slice.
    let r = PackedB::conv_weights(
        &z,
        Tensor {
            data: &w[..50],
            offset: 0,
            strides: [18, 9, 3, 1],
        },
    );
    assert!(r.is_err());
}

/// A bias given to the call is each channel's value added once to the
/// finished sum: bit-identical to adding it to the unbiased result
/// afterwards (what the generated epilogue did), at 1 to 3 threads, on
/// the packed, direct and small-row paths, with a strided bias.
#[test]
fn conv_bias_added_once() {
    let one = [1, 1];
    let mut all = cases();
    all.push(plain(shape(
        (2, 17, 24),
        (20, 20),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    all.push(plain(shape(
        (1, 32, 200),
        (4, 4),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    all.push(plain(shape(
        (1, 64, 3),
        (24, 24),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    for (ci, cs) in all.iter().enumerate() {
        let z = &cs.z;
        let d = data(cs, 900 + ci as u64);
        let plain_y = run_abi(1, cs, &d);
        // Every other element of a buffer: stride 2.
        let bias: Vec<f32> = (0..2 * z.out_channels)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let want: Vec<f32> = {
            let mut y = plain_y.clone();
            for n in 0..z.batch {
                for m in 0..z.out_channels {
                    for oh in 0..z.out_h {
                        for ow in 0..z.out_w {
                            y[at(0, d.ys, [n, m, oh, ow])] += bias[2 * m];
                        }
                    }
                }
            }
            outputs(z, &d, &y)
        };
        for threads in [1, 2, 3] {
            let mut y = vec![f32::NAN; d.y_len];
            let a = ConvArgs {
                bias: bias.as_ptr(),
                bias_stride: 2,
                ..args(z, &d, &mut y)
            };
            // SAFETY: as in `run_abi`; `bias` holds element `2·m` for every
            // output channel m.
            let call = || unsafe { varc_conv2d(&a) };
            if threads > 1 {
                Arc::new(ThreadPool::new(threads)).install(call);
            } else {
                call();
            }
            let got = outputs(z, &d, &y);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads {z:?}: bias not added once"
            );
        }
    }
}

/// `y` of case `cs` computed by `sgemm_with` on the materialised im2col
/// matrix of each image (the reference the implicit GEMM must equal bit
/// for bit), plus `bias[m]` added afterwards when given.
fn sgemm_on_im2col(isa: Isa, cs: &Case, d: &Data, bias: Option<&[f32]>) -> Vec<f32> {
    let z = &cs.z;
    let (m, n, k) = (z.out_channels, z.points(), z.k());
    let mut want = vec![f32::NAN; d.y_len];
    for img in 0..z.batch {
        let col = im2col(z, d, img);
        sgemm_with(
            isa,
            m,
            n,
            k,
            MatRef {
                data: &d.w,
                offset: 0,
                rs: d.ws[0],
                cs: 1,
            },
            MatRef {
                data: &col,
                offset: 0,
                rs: n as isize,
                cs: 1,
            },
            MatMut {
                data: &mut want,
                offset: img * d.ys[0] as usize,
                rs: d.ys[1],
                cs: 1,
            },
            false,
        );
    }
    if let Some(bias) = bias {
        for img in 0..z.batch {
            for (ch, b) in bias.iter().enumerate().take(m) {
                for p in 0..n {
                    want[at(0, d.ys, [img, ch, p / z.out_w, p % z.out_w])] += b;
                }
            }
        }
    }
    outputs(z, d, &want)
}

/// Every convolution shape of the VQVAE decoder (3×3 pad 1 and 1×1, as
/// the model calls them: weights packed ahead, a bias), through the C ABI
/// entry at 1 to 4 threads: bit-identical to `sgemm` on the im2col
/// matrix plus the bias, whichever way the pool cuts the work (points in
/// whole tiles, the small path's groups, or channels).
#[test]
fn conv_vqvae_shapes_threads_bit_identical() {
    let one = [1, 1];
    let conv = |c, m, hw, k: usize| {
        plain(shape(
            (1, c, m),
            (hw, hw),
            [k, k],
            one,
            one,
            [k / 2, k / 2],
            [0, 0],
        ))
    };
    let mut all = vec![
        conv(32, 32, 16, 3),
        conv(32, 64, 16, 3),
        conv(64, 64, 16, 3),
        conv(64, 192, 16, 1),
        conv(64, 64, 16, 1),
        conv(64, 64, 32, 3),
        conv(64, 32, 32, 3),
        conv(32, 32, 32, 3),
        conv(64, 32, 32, 1),
        conv(32, 3, 32, 3),
    ];
    // Off the tile sizes: rows of 20 points (tasks' first points inside
    // an output row) and a batch of two.
    all.push(plain(shape(
        (2, 24, 40),
        (20, 20),
        [3, 3],
        one,
        one,
        one,
        [0, 0],
    )));
    for (ci, cs) in all.iter().enumerate() {
        let z = &cs.z;
        let d = data(cs, 1100 + ci as u64);
        let bias: Vec<f32> = (0..z.out_channels)
            .map(|i| (i as f32 * 0.61).cos() * 2.0)
            .collect();
        let want = sgemm_on_im2col(Isa::detect(), cs, &d, Some(&bias));
        let packed = PackedB::conv_weights(
            z,
            Tensor {
                data: &d.w,
                offset: 0,
                strides: d.ws,
            },
        )
        .unwrap();
        for threads in [1, 2, 3, 4] {
            for packed_a in [std::ptr::null(), &packed as *const PackedB] {
                let mut y = vec![f32::NAN; d.y_len];
                let a = ConvArgs {
                    packed_a,
                    bias: bias.as_ptr(),
                    bias_stride: 1,
                    ..args(z, &d, &mut y)
                };
                // SAFETY: as in `run_abi`; `packed` is w packed for this
                // shape and outlives the call; `bias` has one element per
                // output channel.
                let call = || unsafe { varc_conv2d(&a) };
                Arc::new(ThreadPool::new(threads)).install(call);
                let got = outputs(z, &d, &y);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{threads} threads, packed {} {z:?}: differs from sgemm on im2col",
                    !packed_a.is_null()
                );
            }
        }
    }
}

/// The padded scratch keeps its zero borders between calls of one
/// layout and redraws them when the layout changes: a sequence of
/// convolutions on one thread whose padded copies have the same size but
/// other borders (pad 1 / pad 2 / none with a strided image), repeated,
/// each equal to `sgemm` on its im2col matrix.
#[test]
fn conv_padded_scratch_reused_across_layouts() {
    let one = [1, 1];
    // 2 channels of 8×8 padded rows each time.
    let pad1 = plain(shape((1, 2, 5), (6, 6), [3, 3], one, one, one, [0, 0]));
    let pad2 = plain(shape((1, 2, 5), (4, 4), [5, 5], one, one, [2, 2], [0, 0]));
    let strided = Case {
        x_ws: 2,
        ..plain(shape((1, 2, 5), (8, 8), [3, 3], one, one, [0, 0], [0, 0]))
    };
    // Top and bottom rows of zeros only (cropped output: fewer rows).
    let rows_only = plain(shape((1, 2, 5), (8, 6), [3, 1], one, one, [1, 0], [0, 0]));
    let seq = [
        pad1, pad2, pad1, strided, pad2, rows_only, pad1, pad1, strided,
    ];
    for (i, cs) in seq.iter().enumerate() {
        let d = data(cs, 1200 + i as u64);
        let got = outputs(&cs.z, &d, &run_safe(Isa::detect(), cs, &d));
        let want = sgemm_on_im2col(Isa::detect(), cs, &d, None);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "step {i} {:?}: differs from sgemm on im2col",
            cs.z
        );
        check_against_reference("padded scratch", cs, &d, &run_safe(Isa::detect(), cs, &d));
    }
}

/// Wall time of the pool's cuts on the VQVAE decoder's shapes (weights
/// packed, a bias), all in the same rounds: `cargo test --release -p
/// varc-runtime --lib conv_split_speed -- --ignored --nocapture`
/// (`VARC_THREADS` threads, default 2).
#[test]
#[ignore]
fn conv_split_speed() {
    use std::time::Instant;
    let threads = std::env::var("VARC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let pool = Arc::new(ThreadPool::new(threads));
    let one = [1, 1];
    println!("{threads} threads; best ms of 15 rounds: serial / rows / cols / auto");
    for (c, m, hw, k) in [
        (32, 32, 16, 3),
        (32, 64, 16, 3),
        (64, 64, 16, 3),
        (64, 192, 16, 1),
        (64, 64, 16, 1),
        (64, 64, 32, 3),
        (64, 32, 32, 3),
        (32, 32, 32, 3),
        (64, 32, 32, 1),
        (32, 3, 32, 3),
    ] {
        let cs = plain(shape(
            (1, c, m),
            (hw, hw),
            [k, k],
            one,
            one,
            [k / 2, k / 2],
            [0, 0],
        ));
        let z = &cs.z;
        let d = data(&cs, 1);
        let bias = vec![0.5f32; m];
        let packed = PackedB::conv_weights(
            z,
            Tensor {
                data: &d.w,
                offset: 0,
                strides: d.ws,
            },
        )
        .unwrap();
        let mut y = vec![0f32; d.y_len];
        let a = ConvArgs {
            packed_a: &packed,
            bias: bias.as_ptr(),
            bias_stride: 1,
            ..args(z, &d, &mut y)
        };
        let variants = [
            None,
            Some(Split::Rows),
            Some(Split::Cols),
            Some(Split::Auto),
        ];
        let run = |v: Option<Split>| match v {
            // SAFETY: as in `run_abi`; `packed` is w packed for this shape;
            // `bias` has one element per output channel.
            None => unsafe { conv_with(&a, Split::Auto) },
            // SAFETY: as above.
            Some(s) => pool.install(|| unsafe { conv_with(&a, s) }),
        };
        let reps: Vec<usize> = variants
            .iter()
            .map(|&v| {
                run(v);
                let t = Instant::now();
                run(v);
                (0.005 / t.elapsed().as_secs_f64().max(1e-7)).ceil() as usize
            })
            .collect();
        let mut best = [f64::INFINITY; 4];
        for _ in 0..15 {
            for (i, &v) in variants.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..reps[i] {
                    run(v);
                }
                best[i] = best[i].min(t.elapsed().as_secs_f64() / reps[i] as f64);
            }
        }
        println!(
            "{c:>3}->{m:<3} @ {hw}x{hw} k{k}: {:.4} / {:.4} / {:.4} / {:.4}",
            best[0] * 1e3,
            best[1] * 1e3,
            best[2] * 1e3,
            best[3] * 1e3
        );
    }
}
