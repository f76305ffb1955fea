//! Convolutions tagged `Library::Conv` through the implicit-GEMM tile
//! entry, run by the PTX interpreter against `kernel::eval` on the same
//! graph lowered through im2col. Tolerance: 1e-5 × the largest expected
//! magnitude plus 1e-4 relative (3xTF32 products, sums in another order).

use crate::attention::tests::{compare, simulate};
use crate::plan::KernelMode;
use crate::{CudaTarget, Options, Precision, emit_module};
use varc_ir::graph::{TypeInfo, Value, ValueRef};
use varc_ir::infer::{NoFold, infer_types};
use varc_ir::kernel::{Library, Program, eval};
use varc_ir::lower::{LowerOptions, lower_with};
use varc_ir::op::Window;
use varc_ir::testing::values;
use varc_ir::{Graph, Op, Shape, Tensor};

/// `Relu(Conv(x, w, b))` lowered with and without the library tag.
fn lower(x: &[usize], w: &[usize], window: Window) -> ([Program; 2], Vec<Tensor>) {
    let mut g = Graph::new("t");
    let mut feeds = vec![];
    let mut input = |g: &mut Graph, shape: &[usize]| {
        let n = shape.iter().product();
        let t = Tensor::from_f32(shape.to_vec(), values(feeds.len() as u64 + 1, n)).unwrap();
        let ty = TypeInfo {
            dtype: t.dtype(),
            shape: Shape::known(t.shape()),
        };
        let id = g.add_input(format!("in{}", feeds.len()), ty);
        feeds.push(t);
        Some(ValueRef { node: id, slot: 0 })
    };
    let xv = input(&mut g, x);
    let wv = input(&mut g, w);
    let bv = input(&mut g, &[w[0]]);
    let conv = g
        .add_node(
            "conv",
            Op::Conv { window, group: 1 },
            vec![xv, wv, bv],
            vec![Value::named("c")],
        )
        .unwrap();
    let relu = g
        .add_node(
            "relu",
            Op::Unary(varc_ir::op::UnaryOp::Relu),
            vec![Some(ValueRef {
                node: conv,
                slot: 0,
            })],
            vec![Value::named("y")],
        )
        .unwrap();
    g.outputs = vec![ValueRef {
        node: relu,
        slot: 0,
    }];
    let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
    let progs = [true, false].map(|conv_library| {
        let opts = LowerOptions {
            conv_library,
            ..Default::default()
        };
        lower_with(&g, &inferred.consts, &opts).unwrap()
    });
    (progs, feeds)
}

fn window(pads: &[usize], strides: &[usize], dilations: &[usize]) -> Window {
    Window {
        kernel_shape: None,
        pads: pads.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        auto_pad: None,
    }
}

#[test]
fn tagged_convolutions_match_the_interpreter() {
    let cases = [
        // Two m tiles, two n tiles, 144-deep k.
        (
            vec![1, 16, 12, 20],
            vec![70, 16, 3, 3],
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        // Batch 2, strides, asymmetric pads, M and N below a tile.
        (
            vec![2, 5, 17, 14],
            vec![7, 5, 3, 2],
            window(&[1, 0, 2, 1], &[2, 3], &[]),
        ),
        // Dilation.
        (
            vec![1, 3, 20, 20],
            vec![3, 3, 5, 5],
            window(&[2, 2, 2, 2], &[], &[2, 2]),
        ),
        // 1×1.
        (vec![2, 32, 8, 8], vec![40, 32, 1, 1], window(&[], &[], &[])),
    ];
    for (x, w, win) in cases {
        let what = format!("x {x:?} w {w:?}");
        let ([tagged, plain], ins) = lower(&x, &w, win);
        let want = eval::run_program(&plain, &ins).unwrap();
        let (ptx, launches) = emit_module(&tagged, CudaTarget::SM_80, &Options::default()).unwrap();
        let convs: Vec<usize> = (0..tagged.kernels.len())
            .filter(|&i| matches!(tagged.kernels[i].library, Some(Library::Conv(_))))
            .collect();
        assert_eq!(convs.len(), 1, "{what}");
        assert_eq!(launches[convs[0]].mode, KernelMode::Conv, "{what}");
        crate::gpu_tests::ptxas_accepts(&ptx);
        let got = simulate(&tagged, &ptx, &launches, &ins);
        compare(&what, &got[0], &want[0]);
    }
}

#[test]
fn f32_precision_keeps_the_loop_nest() {
    let ([tagged, _], _) = lower(&[1, 2, 5, 5], &[3, 2, 3, 3], window(&[], &[], &[]));
    let opts = Options {
        precision: Precision::F32,
        ..Options::default()
    };
    let (_, launches) = emit_module(&tagged, CudaTarget::SM_80, &opts).unwrap();
    assert!(launches.iter().all(|l| l.mode != KernelMode::Conv));
}
