//! Every tile against a scalar f64 reference, on every tile size and tail
//! (m, n, k over 1..67 and across the block sizes), with transposed and
//! strided views and accumulation, through each path: B packed per call,
//! B packed ahead ([`PackedB`], which includes the small-product tile for
//! m ≤ [`SMALL_ROWS`]), and explicit small block sizes. The C ABI entries
//! are checked to give bit-identical results on any thread count.

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

/// Layout of one operand: transposed or not, padding between rows.
#[derive(Clone, Copy)]
struct Lay {
    trans: bool,
    pad: usize,
}

const ROW: Lay = Lay {
    trans: false,
    pad: 0,
};
const LAYS: [Lay; 4] = [
    ROW,
    Lay {
        trans: true,
        pad: 0,
    },
    Lay {
        trans: false,
        pad: 3,
    },
    Lay {
        trans: true,
        pad: 5,
    },
];

fn view(rows: usize, cols: usize, l: Lay) -> (usize, isize, isize) {
    if l.trans {
        let ld = rows + l.pad;
        (ld * cols, 1, ld as isize)
    } else {
        let ld = cols + l.pad;
        (ld * rows, ld as isize, 1)
    }
}

/// How the product is computed.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `sgemm_with`: B packed per call.
    Strided,
    /// `sgemm_packed` on a `PackedB`.
    Packed,
    /// `sgemm_blocked` with these block sizes.
    Blocked(Blocking),
    /// `sgemm_packed_blocked` with these block sizes.
    PackedBlocked(Blocking),
}

const PATHS: [Path; 2] = [Path::Strided, Path::Packed];

#[allow(clippy::too_many_arguments)]
fn multiply(
    isa: Isa,
    path: Path,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    acc: bool,
) {
    match path {
        Path::Strided => sgemm_with(isa, m, n, k, a, b, c, acc),
        Path::Packed => sgemm_packed(m, a, &PackedB::with_isa(isa, k, n, b), c, acc),
        Path::Blocked(bl) => sgemm_blocked(isa, &bl, m, n, k, a, b, c, acc),
        Path::PackedBlocked(bl) => {
            sgemm_packed_blocked(&bl, m, a, &PackedB::with_isa(isa, k, n, b), c, acc)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    isa: Isa,
    path: Path,
    (m, n, k): (usize, usize, usize),
    la: Lay,
    lb: Lay,
    lc: Lay,
    acc: bool,
    rng: &mut Lcg,
) {
    let (alen, rsa, csa) = view(m, k, la);
    let (blen, rsb, csb) = view(k, n, lb);
    let (clen, rsc, csc) = view(m, n, lc);
    let a = rng.vec(alen.max(1));
    let b = rng.vec(blen.max(1));
    let c0 = rng.vec(clen.max(1));
    let mut c = c0.clone();
    multiply(
        isa,
        path,
        m,
        n,
        k,
        MatRef {
            data: &a,
            offset: 0,
            rs: rsa,
            cs: csa,
        },
        MatRef {
            data: &b,
            offset: 0,
            rs: rsb,
            cs: csb,
        },
        MatMut {
            data: &mut c,
            offset: 0,
            rs: rsc,
            cs: csc,
        },
        acc,
    );
    let mut touched = vec![false; c.len()];
    for i in 0..m {
        for j in 0..n {
            let ci = (i as isize * rsc + j as isize * csc) as usize;
            touched[ci] = true;
            let mut want = if acc { f64::from(c0[ci]) } else { 0.0 };
            let mut mag = want.abs();
            for p in 0..k {
                let x = f64::from(a[(i as isize * rsa + p as isize * csa) as usize])
                    * f64::from(b[(p as isize * rsb + j as isize * csb) as usize]);
                want += x;
                mag += x.abs();
            }
            let got = f64::from(c[ci]);
            assert!(
                (got - want).abs() <= 1e-6 * mag + 1e-30,
                "{isa:?} {path:?} m={m} n={n} k={k} acc={acc} at ({i},{j}): {got} vs {want}"
            );
        }
    }
    for (i, t) in touched.iter().enumerate() {
        if !t {
            assert_eq!(
                c[i], c0[i],
                "{isa:?} {path:?}: element {i} outside C was written"
            );
        }
    }
}

#[test]
fn every_size_up_to_67() {
    let mut rng = Lcg(1);
    for isa in Isa::available() {
        for path in PATHS {
            for m in 1..=67 {
                for n in [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 64, 67] {
                    let k = (m * 7 + n * 3) % 67 + 1;
                    check(isa, path, (m, n, k), ROW, ROW, ROW, false, &mut rng);
                }
            }
            for k in 1..=67 {
                check(isa, path, (13, 33, k), ROW, ROW, ROW, true, &mut rng);
            }
        }
    }
}

#[test]
fn small_products_every_column_tail() {
    // m ≤ SMALL_ROWS takes the small tile (A in place, two slivers) where
    // the ISA has one: every row count, column tails around 32 and 64,
    // strided and transposed A and C.
    let mut rng = Lcg(4);
    for isa in Isa::available() {
        for path in PATHS {
            for m in 1..=SMALL_ROWS + 1 {
                for n in [1, 5, 16, 31, 32, 33, 63, 64, 65, 96, 127, 129] {
                    for (la, lc) in LAYS.iter().zip(LAYS.iter().rev()) {
                        let k = (m * 5 + n) % 41 + 1;
                        check(isa, path, (m, n, k), *la, ROW, *lc, n % 2 == 1, &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn strided_transposed_and_accumulating() {
    let mut rng = Lcg(2);
    for isa in Isa::available() {
        for path in PATHS {
            for (&la, &lb) in LAYS.iter().zip(LAYS.iter().rev()) {
                for lc in LAYS {
                    for acc in [false, true] {
                        for shape in [(25, 67, 19), (12, 32, 1), (1, 1, 300), (37, 5, 70)] {
                            check(isa, path, shape, la, lb, lc, acc, &mut rng);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn crosses_block_edges() {
    let mut rng = Lcg(3);
    let t_lay = Lay {
        trans: true,
        pad: 1,
    };
    for isa in Isa::available() {
        // Default blocks: k spans several depth blocks, m several row
        // blocks, n more than one panel.
        for path in PATHS {
            check(isa, path, (301, 70, 600), ROW, ROW, ROW, false, &mut rng);
            check(isa, path, (30, 2100, 20), ROW, t_lay, ROW, true, &mut rng);
            check(isa, path, (3, 2100, 300), ROW, ROW, ROW, true, &mut rng);
        }
        // Small blocks: many of each, with tails everywhere.
        for bl in [
            Blocking {
                mc: 1,
                kc: 1,
                nc: 1,
            },
            Blocking {
                mc: 24,
                kc: 16,
                nc: 64,
            },
            Blocking {
                mc: 13,
                kc: 7,
                nc: 100,
            },
        ] {
            for shape in [(50, 150, 40), (3, 150, 40), (29, 7, 33)] {
                check(
                    isa,
                    Path::Blocked(bl),
                    shape,
                    ROW,
                    t_lay,
                    ROW,
                    true,
                    &mut rng,
                );
            }
        }
    }
}

/// Packed B with explicit row and column blocks: several row blocks per
/// panel (so each B sliver's successor is prefetched across tiles, with
/// row tails of every height) and several panels, against the scalar
/// reference; and bit-identical to the default blocks, since the blocks
/// only reorder whole tiles.
#[test]
fn packed_with_explicit_blocks() {
    let mut rng = Lcg(11);
    for isa in Isa::available() {
        let group = isa.usable().tile().group();
        for (mc, nc) in [(1, 1), (24, 64), (13, 100), (700, 4096)] {
            let bl = Blocking { mc, kc: 0, nc };
            for shape in [(50, 150, 40), (3, 150, 40), (29, 7, 33), (100, 97, 300)] {
                check(
                    isa,
                    Path::PackedBlocked(bl),
                    shape,
                    ROW,
                    ROW,
                    ROW,
                    true,
                    &mut rng,
                );
            }
        }
        let (m, n, k) = (61, 3 * group + 5, 300);
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let pb = PackedB::with_isa(
            isa,
            k,
            n,
            MatRef {
                data: &b,
                offset: 0,
                rs: n as isize,
                cs: 1,
            },
        );
        let run = |bl: Option<Blocking>| {
            let mut c = vec![0f32; m * n];
            let cv = MatMut {
                data: &mut c,
                offset: 0,
                rs: n as isize,
                cs: 1,
            };
            let av = MatRef {
                data: &a,
                offset: 0,
                rs: k as isize,
                cs: 1,
            };
            match bl {
                Some(bl) => sgemm_packed_blocked(&bl, m, av, &pb, cv, false),
                None => sgemm_packed(m, av, &pb, cv, false),
            }
            c
        };
        let want = run(None);
        for (mc, nc) in [(1, 1), (24, 64), (13, 100)] {
            let got = run(Some(Blocking { mc, kc: 0, nc }));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{isa:?} mc={mc} nc={nc}: packed results depend on the blocks"
            );
        }
    }
}

#[test]
fn depth_blocks_are_even() {
    for k in 1..3000 {
        let kc = blocks::kc_for(k);
        let blocks = k.div_ceil(kc);
        assert!((1..=256).contains(&kc), "k={k}: kc={kc}");
        assert_eq!(blocks, k.div_ceil(256), "k={k}: kc={kc}");
        // The last block is at least half as deep as the others, unless
        // the whole depth is shallow.
        let last = k - (blocks - 1) * kc;
        assert!(
            blocks == 1 || 2 * last >= kc - 16,
            "k={k}: kc={kc} last={last}"
        );
    }
}

fn out(c: &mut [f32]) -> MatMut<'_> {
    MatMut {
        data: c,
        offset: 0,
        rs: 2,
        cs: 1,
    }
}

#[test]
fn empty_and_zero_depth() {
    let a = [1.0f32; 4];
    let r = |d| MatRef {
        data: d,
        offset: 0,
        rs: 2,
        cs: 1,
    };
    for path in PATHS {
        let mut c = [5.0f32; 4];
        let isa = Isa::detect();
        multiply(isa, path, 2, 2, 0, r(&a), r(&a), out(&mut c), true);
        assert_eq!(c, [5.0; 4]);
        multiply(isa, path, 2, 2, 0, r(&a), r(&a), out(&mut c), false);
        assert_eq!(c, [0.0; 4]);
        c = [5.0; 4];
        multiply(isa, path, 0, 2, 2, r(&a), r(&a), out(&mut c), false);
        multiply(isa, path, 2, 0, 2, r(&a), r(&a), out(&mut c), false);
        assert_eq!(c, [5.0; 4]);
    }
}

#[test]
fn c_abi_entry_with_negative_strides() {
    // A read bottom-up (rs = -3), B transposed, C row-major.
    let a: Vec<f32> = (0..6).map(|x| x as f32).collect(); // 2 × 3
    let b: Vec<f32> = (0..6).map(|x| (x * x) as f32).collect(); // stored 2 × 3: B = that ᵀ (3 × 2)
    let want =
        |i: usize, j: usize| -> f32 { (0..3).map(|p| a[(1 - i) * 3 + p] * b[p + 3 * j]).sum() };
    let want = vec![want(0, 0), want(0, 1), want(1, 0), want(1, 1)];
    let mut c = vec![0f32; 4];
    // SAFETY: every view lies inside its Vec: A rows start at a[3] and
    // a[0], B element (p, j) at b[p + 3j] ≤ b[5], C at c[0..4].
    unsafe {
        varc_sgemm(
            2,
            2,
            3,
            a.as_ptr().add(3),
            -3,
            1,
            b.as_ptr(),
            1,
            3,
            c.as_mut_ptr(),
            2,
            1,
            0,
        );
    }
    assert_eq!(c, want);
    let packed = PackedB::new(
        3,
        2,
        MatRef {
            data: &b,
            offset: 0,
            rs: 1,
            cs: 3,
        },
    );
    let mut c = vec![0f32; 4];
    // SAFETY: as above; `packed` is live for the call.
    unsafe {
        varc_sgemm_packed(
            2,
            a.as_ptr().add(3),
            -3,
            1,
            &packed,
            c.as_mut_ptr(),
            2,
            1,
            0,
            std::ptr::null(),
        );
    }
    assert_eq!(c, want);
}

/// Runs the C ABI entry for `m × n × k` (B packed ahead or not) on a pool
/// of `threads` and returns C.
fn abi_run(threads: usize, packed: bool, (m, n, k): (usize, usize, usize), lc: Lay) -> Vec<f32> {
    let mut rng = Lcg((m * 1000 + n * 10 + k) as u64);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    // The packed path adds a column bias (`varc_sgemm_packed`'s option).
    let bias = rng.vec(n);
    let (clen, rs_c, cs_c) = view(m, n, lc);
    let mut c = rng.vec(clen);
    let pb = PackedB::new(
        k,
        n,
        MatRef {
            data: &b,
            offset: 0,
            rs: n as isize,
            cs: 1,
        },
    );
    let pool = Arc::new(ThreadPool::new(threads));
    pool.install(|| {
        // SAFETY: A (m × k), B (k × n) and C (`view`) are row-major or
        // transposed views inside their Vecs; C's view is injective;
        // `pb` is live for the call.
        unsafe {
            if packed {
                varc_sgemm_packed(
                    m,
                    a.as_ptr(),
                    k as isize,
                    1,
                    &pb,
                    c.as_mut_ptr(),
                    rs_c,
                    cs_c,
                    1,
                    bias.as_ptr(),
                )
            } else {
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
                    rs_c,
                    cs_c,
                    1,
                )
            }
        }
    });
    c
}

#[test]
fn threads_give_bit_identical_results() {
    // Row splits (tall), column splits (wide, GEMV-like), both C layouts.
    let shapes = [(300, 70, 300), (1, 1000, 300), (3, 700, 600), (40, 200, 64)];
    for packed in [false, true] {
        for shape in shapes {
            for lc in [ROW, LAYS[1]] {
                let one = abi_run(1, packed, shape, lc);
                for threads in [2, 3] {
                    let many = abi_run(threads, packed, shape, lc);
                    assert!(
                        one.iter()
                            .zip(&many)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{shape:?} packed={packed} on {threads} threads differs"
                    );
                }
            }
        }
    }
}

#[test]
fn packed_bias_lands_once_after_the_product() {
    // `A·B + bias` through the tiles equals the product followed by a
    // separate bias pass, bit for bit: on the small-row path, across tile
    // tails, over several depth blocks (k > KC), accumulating or not.
    for (m, n, k) in [(3, 45, 20), (29, 70, 600), (12, 32, 1), (50, 33, 257)] {
        for accumulate in [false, true] {
            let mut rng = Lcg((m * 7 + n * 3 + k) as u64);
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let bias = rng.vec(n + 3);
            let c0 = rng.vec(m * n);
            let pb = PackedB::new(
                k,
                n,
                MatRef {
                    data: &b,
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                },
            );
            let ra = MatRef {
                data: &a,
                offset: 0,
                rs: k as isize,
                cs: 1,
            };
            fn cv(c: &mut [f32], n: usize) -> MatMut<'_> {
                MatMut {
                    data: c,
                    offset: 0,
                    rs: n as isize,
                    cs: 1,
                }
            }
            let mut want = c0.clone();
            sgemm_packed(m, ra, &pb, cv(&mut want, n), accumulate);
            for row in want.chunks_mut(n) {
                for (x, &y) in row.iter_mut().zip(&bias) {
                    *x += y;
                }
            }
            let mut got = c0.clone();
            sgemm_packed_bias(m, ra, &pb, Some(&bias), cv(&mut got, n), accumulate);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{n}x{k} accumulate={accumulate}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "bias shorter")]
fn short_bias_panics() {
    let b = vec![1f32; 6];
    let pb = PackedB::new(
        2,
        3,
        MatRef {
            data: &b,
            offset: 0,
            rs: 3,
            cs: 1,
        },
    );
    let a = vec![1f32; 2];
    let mut c = vec![0f32; 3];
    let ra = MatRef {
        data: &a,
        offset: 0,
        rs: 2,
        cs: 1,
    };
    let c = MatMut {
        data: &mut c,
        offset: 0,
        rs: 3,
        cs: 1,
    };
    sgemm_packed_bias(1, ra, &pb, Some(&[1.0, 2.0]), c, false);
}

#[test]
fn packed_and_per_call_packing_agree_bitwise() {
    // Same depth blocks, same chain per element: the paths are
    // interchangeable (a weight packed at compile time changes nothing).
    for shape in [(1, 100, 513), (4, 64, 300), (5, 64, 300), (50, 97, 1000)] {
        let (m, n, k) = shape;
        let mut rng = Lcg(9);
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let (ra, rb) = (
            MatRef {
                data: &a,
                offset: 0,
                rs: k as isize,
                cs: 1,
            },
            MatRef {
                data: &b,
                offset: 0,
                rs: n as isize,
                cs: 1,
            },
        );
        let run = |path| {
            let mut c = vec![0f32; m * n];
            let out = MatMut {
                data: &mut c,
                offset: 0,
                rs: n as isize,
                cs: 1,
            };
            multiply(Isa::detect(), path, m, n, k, ra, rb, out, false);
            c
        };
        assert_eq!(run(Path::Strided), run(Path::Packed), "{shape:?}");
    }
}

#[test]
#[should_panic(expected = "outside")]
fn views_outside_their_slices_panic() {
    let a = [0f32; 4];
    let mut c = [0f32; 4];
    let r = MatRef {
        data: &a,
        offset: 0,
        rs: 2,
        cs: 1,
    };
    sgemm(
        3,
        2,
        2,
        r,
        r,
        MatMut {
            data: &mut c,
            offset: 0,
            rs: 2,
            cs: 1,
        },
        false,
    );
}

#[test]
#[should_panic(expected = "not injective")]
fn overlapping_c_panics() {
    let a = [1f32; 4];
    let mut c = [0f32; 4];
    let r = MatRef {
        data: &a,
        offset: 0,
        rs: 2,
        cs: 1,
    };
    sgemm(
        2,
        2,
        2,
        r,
        r,
        MatMut {
            data: &mut c,
            offset: 0,
            rs: 1,
            cs: 1,
        },
        false,
    );
}
