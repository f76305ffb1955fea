//! Every tile against a scalar f64 reference, on every tile size and tail
//! (m, n, k over 1..67 and across the block sizes), with transposed and
//! strided views and accumulation.

use super::*;

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

fn view(rows: usize, cols: usize, l: Lay) -> (usize, isize, isize) {
    if l.trans {
        let ld = rows + l.pad;
        (ld * cols, 1, ld as isize)
    } else {
        let ld = cols + l.pad;
        (ld * rows, ld as isize, 1)
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
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
    sgemm_with(
        isa,
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
                "{isa:?} m={m} n={n} k={k} acc={acc} at ({i},{j}): {got} vs {want}"
            );
        }
    }
    for (i, t) in touched.iter().enumerate() {
        if !t {
            assert_eq!(c[i], c0[i], "{isa:?}: element {i} outside C was written");
        }
    }
}

const ROW: Lay = Lay {
    trans: false,
    pad: 0,
};

#[test]
fn every_size_up_to_67() {
    let mut rng = Lcg(1);
    for isa in Isa::available() {
        for m in 1..=67 {
            for n in [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 64, 67] {
                let k = (m * 7 + n * 3) % 67 + 1;
                check(isa, m, n, k, ROW, ROW, ROW, false, &mut rng);
            }
        }
        for k in 1..=67 {
            check(isa, 13, 33, k, ROW, ROW, ROW, true, &mut rng);
        }
    }
}

#[test]
fn strided_transposed_and_accumulating() {
    let mut rng = Lcg(2);
    let lays = [
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
    for isa in Isa::available() {
        for (&la, &lb) in lays.iter().zip(lays.iter().rev()) {
            for lc in lays {
                for acc in [false, true] {
                    for (m, n, k) in [(25, 67, 19), (12, 32, 1), (1, 1, 300), (37, 5, 70)] {
                        check(isa, m, n, k, la, lb, lc, acc, &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn crosses_block_edges() {
    // k beyond KC, m beyond MC, n beyond one sliver row.
    let mut rng = Lcg(3);
    for isa in Isa::available() {
        check(isa, MC + 13, 70, KC + 37, ROW, ROW, ROW, false, &mut rng);
        check(
            isa,
            30,
            NC + 9,
            20,
            ROW,
            Lay {
                trans: true,
                pad: 1,
            },
            ROW,
            true,
            &mut rng,
        );
    }
}

#[test]
fn empty_and_zero_depth() {
    let a = [1.0f32; 4];
    let mut c = [5.0f32; 4];
    let r = |d| MatRef {
        data: d,
        offset: 0,
        rs: 2,
        cs: 1,
    };
    sgemm(
        2,
        2,
        0,
        r(&a),
        r(&a),
        MatMut {
            data: &mut c,
            offset: 0,
            rs: 2,
            cs: 1,
        },
        true,
    );
    assert_eq!(c, [5.0; 4]);
    sgemm(
        2,
        2,
        0,
        r(&a),
        r(&a),
        MatMut {
            data: &mut c,
            offset: 0,
            rs: 2,
            cs: 1,
        },
        false,
    );
    assert_eq!(c, [0.0; 4]);
    sgemm(
        0,
        2,
        2,
        r(&a),
        r(&a),
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
fn c_abi_entry_with_negative_strides() {
    // A read bottom-up (rs = -3), B transposed, C row-major.
    let a: Vec<f32> = (0..6).map(|x| x as f32).collect(); // 2 × 3
    let b: Vec<f32> = (0..6).map(|x| (x * x) as f32).collect(); // stored 2 × 3: B = that ᵀ (3 × 2)
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
    let want =
        |i: usize, j: usize| -> f32 { (0..3).map(|p| a[(1 - i) * 3 + p] * b[p + 3 * j]).sum() };
    assert_eq!(c, vec![want(0, 0), want(0, 1), want(1, 0), want(1, 1)]);
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
