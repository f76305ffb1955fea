//! The nn lowerings (MatMul, Gemm, Conv, pooling, Resize, Attention) run by
//! the kernel IR interpreter against the reference interpreter, on seeded
//! random inputs in [-1, 1).
//!
//! Tolerances. The kernel interpreter accumulates reductions in f64, like
//! the reference, so the two differ only where a lowering stores an f32
//! intermediate the reference keeps in f64:
//! - MatMul, Gemm, Conv, pools: one kernel, one rounding of the result:
//!   agreement to ~1 ulp; we allow rtol 1e-5 (what an f32-accumulating
//!   backend needs for K ≤ 1000 at these magnitudes) with atol 1e-6 for
//!   results that cancel to near zero.
//! - Resize: each resized axis stores an f32 intermediate; weights are f32.
//!   Two roundings of values ≤ ~1.3 in magnitude: rtol 1e-5, atol 1e-6.
//! - Attention: scores, exponentials and row sums are f32 buffers; an f32
//!   score error of |s|·6e-8 becomes a relative error of the same size in
//!   the probabilities: rtol 1e-5, atol 1e-6.

use std::collections::HashMap;
use varc_ir::graph::TypeInfo;
use varc_ir::op::{
    AspectPolicy, AttentionAttrs, AutoPad, CoordMode, NearestMode, ResizeAttrs, ResizeMode, Window,
};
use varc_ir::{DType, Graph, Op, Shape, Tensor, TensorData, Value, ValueRef};
use varc_runtime::random::{SplitMix64, random_tensor};

struct Case {
    g: Graph,
    feeds: Vec<(String, Tensor)>,
    rng: SplitMix64,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("t"),
            feeds: vec![],
            rng: SplitMix64::new(seed),
        }
    }

    /// A graph input fed with `t`.
    fn feed(&mut self, t: Tensor) -> ValueRef {
        let name = format!("in{}", self.feeds.len());
        let ty = TypeInfo {
            dtype: t.dtype(),
            shape: Shape::known(t.shape()),
        };
        let id = self.g.add_input(&name, ty);
        self.feeds.push((name, t));
        ValueRef { node: id, slot: 0 }
    }

    /// A random graph input.
    fn x(&mut self, dtype: DType, shape: &[usize]) -> ValueRef {
        let t = random_tensor(&mut self.rng, dtype, shape, 100);
        self.feed(t)
    }

    fn f(&mut self, shape: &[usize]) -> ValueRef {
        self.x(DType::F32, shape)
    }

    fn konst(&mut self, t: Tensor) -> ValueRef {
        let name = format!("c{}", self.g.node_count());
        self.g.add_const(name, t)
    }

    fn node(&mut self, op: Op, ins: Vec<Option<ValueRef>>, n_out: usize) -> Vec<ValueRef> {
        let outs = (0..n_out).map(|i| Value::named(format!("y{i}"))).collect();
        let id = self.g.add_node("n", op, ins, outs).expect("node");
        (0..n_out).map(|slot| ValueRef { node: id, slot }).collect()
    }

    /// Lowers the graph, runs it, and compares every output with the
    /// reference interpreter.
    fn check(mut self, outs: Vec<ValueRef>, rtol: f64, atol: f64, what: &str) {
        self.g.outputs = outs;
        let inferred = varc_ir::infer::infer_types(
            &mut self.g,
            &Default::default(),
            &varc_backend_ref::RefFolder,
        )
        .unwrap_or_else(|e| panic!("{what}: infer: {e}"));
        let program = varc_ir::lower::lower(&self.g, &inferred.consts)
            .unwrap_or_else(|e| panic!("{what}: lower: {e}"));
        let inputs: Vec<Tensor> = self.feeds.iter().map(|(_, t)| t.clone()).collect();
        let got = varc_ir::kernel::eval::run_program(&program, &inputs).unwrap_or_else(|e| {
            panic!(
                "{what}: run: {e}\n{}",
                varc_ir::kernel::program_to_text(&program)
            )
        });
        let feeds: HashMap<String, Tensor> = self.feeds.into_iter().collect();
        let want = varc_backend_ref::run(&self.g, &feeds)
            .unwrap_or_else(|e| panic!("{what}: reference: {e}"));
        assert_eq!(got.len(), want.len(), "{what}: output count");
        // The same program compiled by Cranelift must agree with the
        // reference too (where the CPU backend supports the dtypes).
        let compiled = varc_tests::run_compiled(&program, &inputs)
            .unwrap_or_else(|e| panic!("{what}: compiled run failed: {e}"));
        for (i, (c, (name, w))) in compiled.iter().flatten().zip(&want).enumerate() {
            let (rtol, atol) = varc_tests::compiled_tolerance(w, rtol, atol);
            let a = varc_runtime::compare(c, w, rtol, atol)
                .unwrap_or_else(|e| panic!("{what}: compiled output {i}: {e}"));
            assert!(a.passed(), "{what}: compiled output {i} ({name}): {a:?}");
        }
        for (i, (g, (name, w))) in got.iter().zip(&want).enumerate() {
            let a = varc_runtime::compare(g, w, rtol, atol)
                .unwrap_or_else(|e| panic!("{what}: output {i}: {e}"));
            assert!(
                a.passed(),
                "{what}: output {i} ({name}): {} of {} mismatches, max abs {:e}, max rel {:e}, worst {:?}",
                a.mismatches,
                a.count,
                a.max_abs,
                a.max_rel,
                a.worst
            );
        }
    }
}

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

// ---------------------------------------------------------------- Resample

/// `Op::Resample` (made by the fold-resample pass): composed bicubic/area
/// maps, a gather map, untouched axes; f32 and f64.
#[test]
fn resample_maps() {
    use varc_ir::resample::{AxisMap, area_map, axis_map};
    let cubic = rattrs(ResizeMode::Cubic, CoordMode::HalfPixel);
    let up = axis_map(3, 16, 16.0 / 3.0, (0.0, 1.0), &cubic).unwrap();
    let folded = area_map(16, 6).compose(&up).unwrap();
    let pick = AxisMap {
        out_len: 4,
        in_len: 5,
        taps: vec![
            vec![(4, 1.0)],
            vec![(0, 1.0)],
            vec![(2, 1.0)],
            vec![(2, 1.0)],
        ],
        fill: vec![None; 4],
    };
    type Maps = Vec<Option<AxisMap>>;
    let cases: Vec<(u64, DType, Vec<usize>, Maps)> = vec![
        (
            900,
            DType::F32,
            vec![2, 4, 3, 3],
            vec![None, None, Some(folded.clone()), Some(folded)],
        ),
        (
            901,
            DType::F32,
            vec![2, 5, 7],
            vec![None, Some(pick.clone()), Some(area_map(7, 3))],
        ),
        (
            902,
            DType::F64,
            vec![5, 16],
            vec![Some(pick), Some(area_map(16, 5))],
        ),
        (903, DType::F32, vec![2, 3], vec![None, Some(up)]),
    ];
    for (seed, dtype, shape, maps) in cases {
        let mut c = Case::new(seed);
        let x = c.x(dtype, &shape);
        let y = c.node(Op::Resample { maps }, vec![Some(x)], 1);
        c.check(y, RTOL, ATOL, &format!("resample {shape:?}"));
    }
}

// ---------------------------------------------------------------- MatMul

#[test]
fn matmul_shapes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3], &[3]),
        (&[7], &[7, 5]),
        (&[17, 33], &[33]),
        (&[1, 1], &[1, 1]),
        (&[3, 7], &[7, 17]),
        (&[33, 17], &[17, 3]),
        (&[1, 33], &[33, 7]),
        (&[7, 1], &[1, 33]),
        (&[2, 3, 7], &[7, 5]),
        (&[3, 7], &[2, 7, 5]),
        (&[2, 1, 3, 7], &[4, 7, 17]),
        (&[4, 1, 17], &[1, 17, 3]),
        (&[17], &[2, 3, 17, 7]),
        (&[2, 3, 7, 17], &[17]),
        (&[5, 40, 300], &[300, 9]),
    ];
    for (i, (a, b)) in cases.iter().enumerate() {
        let mut c = Case::new(i as u64);
        let (x, y) = (c.f(a), c.f(b));
        let out = c.node(Op::MatMul, vec![Some(x), Some(y)], 1);
        c.check(out, RTOL, ATOL, &format!("MatMul {a:?} x {b:?}"));
    }
}

#[test]
fn matmul_integer_and_f64() {
    let mut c = Case::new(7);
    let (x, y) = (c.x(DType::I64, &[3, 5]), c.x(DType::I64, &[2, 5, 4]));
    let out = c.node(Op::MatMul, vec![Some(x), Some(y)], 1);
    c.check(out, 0.0, 0.0, "MatMul i64");
    let mut c = Case::new(8);
    let (x, y) = (c.x(DType::F64, &[3, 5]), c.x(DType::F64, &[5, 4]));
    let out = c.node(Op::MatMul, vec![Some(x), Some(y)], 1);
    c.check(out, 1e-12, 1e-14, "MatMul f64");
}

#[test]
fn half_precision() {
    // f16 in, f32 accumulation, one f16 rounding out (the reference rounds
    // its f64 result once): at most about one f16 ulp apart, 2e-3 relative.
    let mut c = Case::new(9);
    let (x, y) = (c.x(DType::F16, &[2, 5, 33]), c.x(DType::F16, &[33, 7]));
    let out = c.node(Op::MatMul, vec![Some(x), Some(y)], 1);
    c.check(out, 2e-3, 1e-3, "MatMul f16");
    let mut c = Case::new(10);
    let (x, w, b) = (
        c.x(DType::F16, &[1, 4, 6, 6]),
        c.x(DType::F16, &[4, 2, 3, 3]),
        c.x(DType::F16, &[4]),
    );
    let op = Op::Conv {
        window: window(None, &[1, 1, 1, 1], &[], &[], None),
        group: 2,
    };
    let out = c.node(op, vec![Some(x), Some(w), Some(b)], 1);
    c.check(out, 2e-3, 1e-3, "Conv f16");
    let a = rattrs(ResizeMode::Cubic, CoordMode::HalfPixel);
    resize_case(
        11,
        DType::F16,
        &[1, 2, 3, 5],
        Size::Sizes(&[1, 2, 16, 16]),
        None,
        a,
        "Resize f16",
    );
}

// ---------------------------------------------------------------- Gemm

#[test]
fn gemm_variants() {
    let (m, k, n) = (7, 17, 3);
    let c_shapes: &[Option<&[usize]>] = &[
        None,
        Some(&[]),
        Some(&[1]),
        Some(&[n]),
        Some(&[m, 1]),
        Some(&[m, n]),
    ];
    let mut seed = 100;
    for trans_a in [false, true] {
        for trans_b in [false, true] {
            for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0), (1.0, 0.0)] {
                for cs in c_shapes {
                    seed += 1;
                    let mut c = Case::new(seed);
                    let (ash, bsh) = (
                        if trans_a { [k, m] } else { [m, k] },
                        if trans_b { [n, k] } else { [k, n] },
                    );
                    let a = c.f(&ash);
                    let b = c.f(&bsh);
                    let cc = cs.map(|s| c.f(s));
                    let op = Op::Gemm {
                        alpha,
                        beta,
                        trans_a,
                        trans_b,
                    };
                    let out = c.node(op, vec![Some(a), Some(b), cc], 1);
                    let what =
                        format!("Gemm ta {trans_a} tb {trans_b} a {alpha} b {beta} C {cs:?}");
                    c.check(out, RTOL, ATOL, &what);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- Conv

fn window(
    kernel: Option<&[usize]>,
    pads: &[usize],
    strides: &[usize],
    dil: &[usize],
    auto: Option<AutoPad>,
) -> Window {
    Window {
        kernel_shape: kernel.map(<[usize]>::to_vec),
        pads: pads.to_vec(),
        strides: strides.to_vec(),
        dilations: dil.to_vec(),
        auto_pad: auto,
    }
}

#[test]
fn conv_variants() {
    #[derive(Clone, Copy)]
    struct C<'a> {
        x: &'a [usize],
        w: &'a [usize],
        group: usize,
        pads: &'a [usize],
        strides: &'a [usize],
        dil: &'a [usize],
        auto: Option<AutoPad>,
        bias: bool,
    }
    let base = C {
        x: &[2, 3, 9, 8],
        w: &[4, 3, 3, 3],
        group: 1,
        pads: &[],
        strides: &[],
        dil: &[],
        auto: None,
        bias: false,
    };
    let cases = [
        C { ..base },
        C {
            bias: true,
            pads: &[1, 1, 1, 1],
            ..base
        },
        C {
            pads: &[0, 2, 1, 0],
            strides: &[2, 3],
            ..base
        },
        C {
            dil: &[2, 1],
            pads: &[2, 1, 2, 1],
            bias: true,
            ..base
        },
        C {
            strides: &[2, 2],
            dil: &[2, 2],
            pads: &[1, 2, 3, 0],
            ..base
        },
        C {
            x: &[1, 4, 7, 7],
            w: &[6, 2, 3, 3],
            group: 2,
            pads: &[1, 1, 1, 1],
            bias: true,
            ..base
        },
        C {
            x: &[1, 6, 7, 5],
            w: &[6, 1, 3, 3],
            group: 6,
            pads: &[1, 1, 1, 1],
            strides: &[2, 1],
            ..base
        },
        C {
            auto: Some(AutoPad::SameUpper),
            w: &[4, 3, 4, 4],
            strides: &[2, 3],
            ..base
        },
        C {
            auto: Some(AutoPad::SameLower),
            w: &[4, 3, 4, 2],
            ..base
        },
        C {
            auto: Some(AutoPad::Valid),
            strides: &[2, 2],
            ..base
        },
        C {
            w: &[5, 3, 1, 1],
            bias: true,
            ..base
        },
        C {
            x: &[2, 3, 11],
            w: &[4, 3, 3],
            pads: &[2, 1],
            strides: &[2],
            dil: &[2],
            bias: true,
            ..base
        },
        C {
            x: &[1, 2, 5, 4, 6],
            w: &[3, 2, 2, 3, 2],
            pads: &[1, 0, 1, 0, 1, 1],
            strides: &[1, 2, 2],
            bias: true,
            ..base
        },
        C {
            x: &[1, 32, 16, 16],
            w: &[16, 32, 3, 3],
            pads: &[1, 1, 1, 1],
            bias: true,
            ..base
        },
        // Large enough for the im2col form: groups, strides with dilation
        // and uneven pads, 1-D, 3-D, and (col over 2^20 elements) chunks.
        C {
            x: &[2, 8, 13, 17],
            w: &[12, 4, 3, 3],
            group: 2,
            pads: &[1, 1, 1, 1],
            bias: true,
            ..base
        },
        C {
            x: &[1, 6, 20, 23],
            w: &[8, 6, 3, 5],
            strides: &[2, 3],
            dil: &[2, 1],
            pads: &[0, 3, 2, 1],
            ..base
        },
        C {
            x: &[2, 8, 150],
            w: &[16, 8, 5],
            pads: &[2, 3],
            strides: &[2],
            bias: true,
            ..base
        },
        C {
            x: &[1, 4, 6, 7, 9],
            w: &[8, 4, 3, 3, 3],
            pads: &[1, 0, 1, 1, 2, 1],
            bias: true,
            ..base
        },
        C {
            x: &[1, 16, 96, 96],
            w: &[8, 16, 3, 3],
            pads: &[1, 1, 1, 1],
            bias: true,
            ..base
        },
    ];
    for (i, t) in cases.iter().enumerate() {
        let mut c = Case::new(200 + i as u64);
        let x = c.f(t.x);
        let w = c.f(t.w);
        let b = t.bias.then(|| c.f(&[t.w[0]]));
        let op = Op::Conv {
            window: window(None, t.pads, t.strides, t.dil, t.auto),
            group: t.group,
        };
        let out = c.node(op, vec![Some(x), Some(w), b], 1);
        c.check(
            out,
            RTOL,
            ATOL,
            &format!("Conv case {i}: x {:?} w {:?}", t.x, t.w),
        );
    }
}

// ---------------------------------------------------------------- pools

#[test]
fn pool_variants() {
    type P<'a> = (
        &'a [usize],
        &'a [usize],
        &'a [usize],
        &'a [usize],
        &'a [usize],
        Option<AutoPad>,
        bool,
    );
    // (x, kernel, pads, strides, dilations, auto_pad, ceil_mode)
    let cases: &[P] = &[
        (&[2, 3, 8, 9], &[2, 2], &[], &[2, 2], &[], None, false),
        (
            &[1, 2, 7, 7],
            &[3, 3],
            &[1, 1, 1, 1],
            &[2, 2],
            &[],
            None,
            false,
        ),
        (
            &[1, 2, 7, 8],
            &[3, 3],
            &[1, 0, 2, 1],
            &[2, 3],
            &[],
            None,
            true,
        ),
        (
            &[1, 2, 6, 6],
            &[3, 2],
            &[0, 0, 0, 0],
            &[2, 2],
            &[],
            None,
            true,
        ),
        (&[1, 2, 5, 5], &[5, 5], &[2, 2, 2, 2], &[], &[], None, false),
        (
            &[1, 2, 9, 9],
            &[3, 3],
            &[1, 1, 1, 1],
            &[2, 2],
            &[2, 2],
            None,
            true,
        ),
        (
            &[1, 2, 7, 6],
            &[3, 4],
            &[],
            &[2, 2],
            &[],
            Some(AutoPad::SameUpper),
            false,
        ),
        (
            &[1, 2, 7, 6],
            &[3, 4],
            &[],
            &[1, 1],
            &[],
            Some(AutoPad::SameLower),
            false,
        ),
        (
            &[1, 2, 7, 6],
            &[3, 2],
            &[],
            &[2, 1],
            &[],
            Some(AutoPad::Valid),
            false,
        ),
        (&[2, 3, 10], &[3], &[1, 2], &[3], &[], None, true),
        (
            &[1, 2, 5, 4, 6],
            &[2, 3, 2],
            &[1, 1, 0, 0, 1, 1],
            &[2, 1, 2],
            &[],
            None,
            false,
        ),
    ];
    for (i, &(xs, k, pads, strides, dil, auto, ceil_mode)) in cases.iter().enumerate() {
        let w = window(Some(k), pads, strides, dil, auto);
        for count_include_pad in [false, true] {
            let mut c = Case::new(300 + i as u64);
            let x = c.f(xs);
            let op = Op::AveragePool {
                window: w.clone(),
                ceil_mode,
                count_include_pad,
            };
            let out = c.node(op, vec![Some(x)], 1);
            c.check(
                out,
                RTOL,
                ATOL,
                &format!("AveragePool case {i} include_pad {count_include_pad}"),
            );
        }
        let mut c = Case::new(400 + i as u64);
        let x = c.f(xs);
        let out = c.node(
            Op::MaxPool {
                window: w,
                ceil_mode,
            },
            vec![Some(x)],
            1,
        );
        c.check(out, 0.0, 0.0, &format!("MaxPool case {i}"));
    }
}

#[test]
fn global_pools() {
    for (i, xs) in [&[2usize, 3, 5, 7][..], &[1, 4, 9], &[1, 2, 3, 4, 5]]
        .iter()
        .enumerate()
    {
        let mut c = Case::new(500 + i as u64);
        let x = c.f(xs);
        let out = c.node(Op::GlobalAveragePool, vec![Some(x)], 1);
        c.check(out, RTOL, ATOL, &format!("GlobalAveragePool {xs:?}"));
        let mut c = Case::new(550 + i as u64);
        let x = c.f(xs);
        let out = c.node(Op::GlobalMaxPool, vec![Some(x)], 1);
        c.check(out, 0.0, 0.0, &format!("GlobalMaxPool {xs:?}"));
    }
    let mut c = Case::new(560);
    let x = c.x(DType::I64, &[1, 2, 3, 3]);
    let op = Op::MaxPool {
        window: window(Some(&[2, 2]), &[1, 1, 1, 1], &[], &[], None),
        ceil_mode: false,
    };
    let out = c.node(op, vec![Some(x)], 1);
    c.check(out, 0.0, 0.0, "MaxPool i64");
}

// ---------------------------------------------------------------- Resize

fn rattrs(mode: ResizeMode, coord: CoordMode) -> ResizeAttrs {
    ResizeAttrs {
        mode,
        coord,
        nearest_mode: NearestMode::RoundPreferFloor,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes: None,
        keep_aspect_ratio_policy: AspectPolicy::Stretch,
        scales_input_only: false,
    }
}

enum Size<'a> {
    Scales(&'a [f32]),
    Sizes(&'a [i64]),
}

fn resize_case(
    seed: u64,
    dtype: DType,
    xs: &[usize],
    size: Size,
    roi: Option<&[f32]>,
    a: ResizeAttrs,
    what: &str,
) {
    let mut c = Case::new(seed);
    let x = c.x(dtype, xs);
    let roi = roi.map(|r| c.konst(Tensor::from_f32(vec![r.len()], r.to_vec()).unwrap()));
    let (scales, sizes) = match size {
        Size::Scales(s) => (
            Some(c.konst(Tensor::from_f32(vec![s.len()], s.to_vec()).unwrap())),
            None,
        ),
        Size::Sizes(s) => (
            None,
            Some(c.konst(Tensor::from_i64(vec![s.len()], s.to_vec()).unwrap())),
        ),
    };
    let out = c.node(Op::Resize(a), vec![Some(x), roi, scales, sizes], 1);
    let (rtol, atol) = if dtype.is_float() {
        (RTOL, ATOL)
    } else {
        (0.0, 0.0)
    };
    c.check(out, rtol, atol, what);
}

#[test]
fn resize_modes_and_coordinates() {
    use CoordMode::*;
    let coords = [
        HalfPixel,
        PytorchHalfPixel,
        AlignCorners,
        Asymmetric,
        HalfPixelSymmetric,
    ];
    let sizes: &[(&[usize], Size)] = &[
        (&[1, 2, 3, 4], Size::Scales(&[1.0, 1.0, 2.0, 1.5])),
        (&[1, 2, 8, 7], Size::Scales(&[1.0, 1.0, 0.5, 0.6])),
        (&[2, 1, 5, 4], Size::Sizes(&[2, 1, 9, 3])),
        (&[1, 1, 4, 6], Size::Sizes(&[1, 1, 1, 13])),
        (&[3, 4, 5], Size::Scales(&[1.0, 1.75, 0.8])),
    ];
    let mut seed = 600;
    for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
        for coord in coords {
            for (xs, size) in sizes {
                seed += 1;
                let size = match size {
                    Size::Scales(s) => Size::Scales(s),
                    Size::Sizes(s) => Size::Sizes(s),
                };
                let what = format!("Resize {mode:?} {coord:?} {xs:?}");
                resize_case(seed, DType::F32, xs, size, None, rattrs(mode, coord), &what);
            }
        }
    }
}

#[test]
fn resize_nearest_modes_and_integers() {
    for nm in [
        NearestMode::RoundPreferFloor,
        NearestMode::RoundPreferCeil,
        NearestMode::Floor,
        NearestMode::Ceil,
    ] {
        for (i, dtype) in [DType::F32, DType::I64, DType::U8].into_iter().enumerate() {
            let mut a = rattrs(ResizeMode::Nearest, CoordMode::Asymmetric);
            a.nearest_mode = nm;
            let what = format!("Resize nearest {nm:?} {dtype}");
            resize_case(
                700 + i as u64,
                dtype,
                &[1, 2, 3, 5],
                Size::Scales(&[1.0, 1.0, 2.0, 0.6]),
                None,
                a.clone(),
                &what,
            );
            resize_case(
                710 + i as u64,
                dtype,
                &[1, 1, 6, 4],
                Size::Sizes(&[1, 1, 3, 12]),
                None,
                a,
                &what,
            );
        }
    }
    // ×2 replication (the VQVAE decoder's upsample) and an affine decimation.
    let mut a = rattrs(ResizeMode::Nearest, CoordMode::Asymmetric);
    a.nearest_mode = NearestMode::Floor;
    resize_case(
        720,
        DType::F32,
        &[1, 3, 4, 5],
        Size::Scales(&[1.0, 1.0, 2.0, 2.0]),
        None,
        a.clone(),
        "nearest x2",
    );
    resize_case(
        721,
        DType::F32,
        &[1, 3, 8, 6],
        Size::Scales(&[1.0, 1.0, 0.5, 0.5]),
        None,
        a,
        "nearest /2",
    );
    // Integer linear/cubic: rounded half to even and saturated.
    for (i, dtype) in [DType::I64, DType::I32, DType::U8].into_iter().enumerate() {
        let a = rattrs(ResizeMode::Cubic, CoordMode::HalfPixel);
        resize_case(
            730 + i as u64,
            dtype,
            &[1, 1, 3, 4],
            Size::Sizes(&[1, 1, 7, 5]),
            None,
            a,
            "cubic int",
        );
    }
}

#[test]
fn resize_var_bicubic_to_16() {
    for (i, pn) in [1usize, 2, 3, 5, 10, 13, 16].into_iter().enumerate() {
        for coord in [CoordMode::HalfPixel, CoordMode::PytorchHalfPixel] {
            let a = rattrs(ResizeMode::Cubic, coord);
            let what = format!("VAR bicubic {pn} -> 16 {coord:?}");
            resize_case(
                800 + i as u64,
                DType::F32,
                &[2, 32, pn, pn],
                Size::Sizes(&[2, 32, 16, 16]),
                None,
                a,
                &what,
            );
        }
    }
}

#[test]
fn resize_options() {
    // exclude_outside, other cubic_coeff_a, antialias (down-sampling).
    let mut a = rattrs(ResizeMode::Cubic, CoordMode::HalfPixel);
    a.exclude_outside = true;
    a.cubic_coeff_a = -0.5;
    resize_case(
        900,
        DType::F32,
        &[1, 2, 5, 6],
        Size::Sizes(&[1, 2, 9, 4]),
        None,
        a.clone(),
        "exclude_outside",
    );
    a.antialias = true;
    resize_case(
        901,
        DType::F32,
        &[1, 2, 12, 9],
        Size::Sizes(&[1, 2, 5, 4]),
        None,
        a,
        "antialias cubic",
    );
    let mut a = rattrs(ResizeMode::Linear, CoordMode::HalfPixel);
    a.antialias = true;
    resize_case(
        902,
        DType::F32,
        &[1, 2, 12, 9],
        Size::Scales(&[1.0, 1.0, 0.4, 0.5]),
        None,
        a,
        "antialias linear",
    );
    // axes attribute and keep_aspect_ratio_policy.
    let mut a = rattrs(ResizeMode::Linear, CoordMode::AlignCorners);
    a.axes = Some(vec![-1, 2]);
    a.keep_aspect_ratio_policy = AspectPolicy::NotLarger;
    resize_case(
        903,
        DType::F32,
        &[1, 2, 4, 6],
        Size::Sizes(&[7, 9]),
        None,
        a,
        "axes, not_larger",
    );
    // tf_crop_and_resize with extrapolation on both axes.
    let mut a = rattrs(ResizeMode::Linear, CoordMode::TfCropAndResize);
    a.extrapolation_value = 10.0;
    let roi: &[f32] = &[0.0, 0.0, -0.2, 0.4, 1.0, 1.0, 0.9, 1.3];
    resize_case(
        904,
        DType::F32,
        &[1, 2, 5, 6],
        Size::Sizes(&[1, 2, 4, 5]),
        Some(roi),
        a.clone(),
        "tf_crop_and_resize",
    );
    a.mode = ResizeMode::Nearest;
    resize_case(
        905,
        DType::F32,
        &[1, 2, 5, 6],
        Size::Sizes(&[1, 2, 4, 5]),
        Some(roi),
        a,
        "tf_crop_and_resize nearest",
    );
    // Identity resize: no kernel but the output copy.
    let a = rattrs(ResizeMode::Cubic, CoordMode::HalfPixel);
    resize_case(
        906,
        DType::F32,
        &[1, 2, 4, 4],
        Size::Scales(&[1.0, 1.0, 1.0, 1.0]),
        None,
        a,
        "identity",
    );
}

// ---------------------------------------------------------------- Attention

fn aattrs() -> AttentionAttrs {
    AttentionAttrs {
        is_causal: false,
        q_num_heads: None,
        kv_num_heads: None,
        scale: None,
        softcap: 0.0,
        qk_matmul_output_mode: 0,
        softmax_precision: 0,
    }
}

#[derive(Clone)]
struct Att<'a> {
    q: &'a [usize],
    k: &'a [usize],
    v: &'a [usize],
    mask: Option<(DType, &'a [usize])>,
    past: Option<usize>,
    attrs: AttentionAttrs,
    n_out: usize,
}

fn attention_case(seed: u64, t: &Att, what: &str) {
    let mut c = Case::new(seed);
    let (q, k, v) = (c.f(t.q), c.f(t.k), c.f(t.v));
    let mask = t.mask.map(|(d, s)| c.x(d, s));
    let (pk, pv) = match t.past {
        Some(p) => {
            // Past is 4-D (B, kv_heads, past, head).
            let kvh = t
                .attrs
                .kv_num_heads
                .unwrap_or(t.k.get(1).copied().unwrap_or(1));
            let (hk, hv) = if t.k.len() == 4 {
                (t.k[3], t.v[3])
            } else {
                (t.k[2] / kvh, t.v[2] / kvh)
            };
            (
                Some(c.f(&[t.q[0], kvh, p, hk])),
                Some(c.f(&[t.q[0], kvh, p, hv])),
            )
        }
        None => (None, None),
    };
    let out = c.node(
        Op::Attention(t.attrs.clone()),
        vec![Some(q), Some(k), Some(v), mask, pk, pv],
        t.n_out,
    );
    c.check(out, RTOL, ATOL, what);
}

#[test]
fn attention_variants() {
    let a = aattrs();
    let heads = |q: usize, kv: usize| AttentionAttrs {
        q_num_heads: Some(q),
        kv_num_heads: Some(kv),
        ..aattrs()
    };
    let base = Att {
        q: &[2, 3, 5, 8],
        k: &[2, 3, 7, 8],
        v: &[2, 3, 7, 6],
        mask: None,
        past: None,
        attrs: a.clone(),
        n_out: 1,
    };
    let cases = vec![
        ("4-D", Att { ..base.clone() }),
        (
            "4-D present",
            Att {
                n_out: 3,
                ..base.clone()
            },
        ),
        (
            "3-D",
            Att {
                q: &[2, 5, 24],
                k: &[2, 7, 24],
                v: &[2, 7, 18],
                attrs: heads(3, 3),
                n_out: 3,
                ..base.clone()
            },
        ),
        (
            "GQA 4-D",
            Att {
                q: &[1, 6, 4, 8],
                k: &[1, 2, 5, 8],
                v: &[1, 2, 5, 8],
                ..base.clone()
            },
        ),
        (
            "GQA 3-D",
            Att {
                q: &[2, 3, 32],
                k: &[2, 4, 8],
                v: &[2, 4, 8],
                attrs: heads(4, 1),
                ..base.clone()
            },
        ),
        (
            "bool mask",
            Att {
                mask: Some((DType::Bool, &[2, 3, 5, 7])),
                ..base.clone()
            },
        ),
        (
            "bool mask broadcast",
            Att {
                mask: Some((DType::Bool, &[5, 7])),
                ..base.clone()
            },
        ),
        (
            "float mask",
            Att {
                mask: Some((DType::F32, &[2, 1, 5, 7])),
                ..base.clone()
            },
        ),
        (
            "float mask 1-D",
            Att {
                mask: Some((DType::F32, &[7])),
                ..base.clone()
            },
        ),
        // A last dim shorter than L is padded with −∞ (false), even when it
        // is 1 (the reference's rule). Shape inference accepts only 1 so far.
        (
            "short float mask",
            Att {
                mask: Some((DType::F32, &[1, 3, 1, 1])),
                ..base.clone()
            },
        ),
        (
            "short bool mask",
            Att {
                mask: Some((DType::Bool, &[5, 1])),
                ..base.clone()
            },
        ),
        (
            "causal",
            Att {
                k: &[2, 3, 5, 8],
                v: &[2, 3, 5, 6],
                attrs: AttentionAttrs {
                    is_causal: true,
                    ..a.clone()
                },
                ..base.clone()
            },
        ),
        (
            "causal q<kv",
            Att {
                attrs: AttentionAttrs {
                    is_causal: true,
                    ..a.clone()
                },
                ..base.clone()
            },
        ),
        (
            "past",
            Att {
                past: Some(4),
                n_out: 3,
                ..base.clone()
            },
        ),
        (
            "past causal GQA mask",
            Att {
                q: &[1, 4, 3, 8],
                k: &[1, 2, 3, 8],
                v: &[1, 2, 3, 5],
                mask: Some((DType::F32, &[3, 6])),
                past: Some(3),
                attrs: AttentionAttrs {
                    is_causal: true,
                    scale: Some(0.3),
                    ..a.clone()
                },
                n_out: 3,
            },
        ),
        (
            "past 3-D",
            Att {
                q: &[1, 2, 16],
                k: &[1, 3, 8],
                v: &[1, 3, 8],
                past: Some(2),
                attrs: heads(2, 1),
                n_out: 3,
                ..base.clone()
            },
        ),
        (
            "softcap scale",
            Att {
                mask: Some((DType::F32, &[5, 7])),
                attrs: AttentionAttrs {
                    softcap: 0.7,
                    scale: Some(2.0),
                    ..a.clone()
                },
                ..base.clone()
            },
        ),
    ];
    for (i, (what, t)) in cases.iter().enumerate() {
        attention_case(1000 + i as u64, t, what);
    }
    for mode in 0..4 {
        let t = Att {
            mask: Some((DType::Bool, &[5, 7])),
            attrs: AttentionAttrs {
                softcap: 0.5,
                qk_matmul_output_mode: mode,
                ..a.clone()
            },
            n_out: 4,
            q: &[1, 4, 5, 8],
            k: &[1, 2, 7, 8],
            v: &[1, 2, 7, 8],
            ..base.clone()
        };
        attention_case(1100 + mode as u64, &t, &format!("qk output mode {mode}"));
    }
}

#[test]
fn attention_fully_masked_rows_are_zero() {
    // An all-false bool mask row gives a zero output row (the spec's errata).
    let mut c = Case::new(1200);
    let (q, k, v) = (c.f(&[1, 1, 3, 4]), c.f(&[1, 1, 4, 4]), c.f(&[1, 1, 4, 4]));
    let mask = c.feed(
        Tensor::new(
            vec![3, 4],
            TensorData::Bool(vec![
                true, false, true, false, false, false, false, false, true, true, true, true,
            ]),
        )
        .unwrap(),
    );
    let out = c.node(
        Op::Attention(aattrs()),
        vec![Some(q), Some(k), Some(v), Some(mask)],
        1,
    );
    c.check(out, RTOL, ATOL, "fully masked row");
}

#[test]
fn attention_nonpad_kv_seqlen() {
    // Opset 24's 7th input: keys at or past nonpad[b] are masked; with
    // is_causal the diagonal is offset by nonpad[b] − S_q.
    for is_causal in [false, true] {
        let mut c = Case::new(1300);
        let (q, k, v) = (c.f(&[2, 2, 3, 4]), c.f(&[2, 2, 6, 4]), c.f(&[2, 2, 6, 4]));
        let nonpad = c.feed(Tensor::from_i64(vec![2], vec![4, 6]).unwrap());
        let attrs = AttentionAttrs {
            is_causal,
            ..aattrs()
        };
        let out = c.node(
            Op::Attention(attrs),
            vec![Some(q), Some(k), Some(v), None, None, None, Some(nonpad)],
            1,
        );
        c.check(
            out,
            RTOL,
            ATOL,
            &format!("nonpad_kv_seqlen causal {is_causal}"),
        );
    }
}
