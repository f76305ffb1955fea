//! Tagged convolution kernels through the JIT's microkernel call against
//! the kernel IR interpreter on the same graph lowered through im2col.
//! Tolerance: rtol 1e-4 and atol 1e-5 × the largest expected magnitude,
//! for f32 sums in another order than the interpreter's (f64 per product,
//! rounded to f32 per kernel). Pool runs must be bit-identical to serial.

use crate::{JitOptions, compile_jit_with};
use std::sync::Arc;
use varc_ir::graph::{TypeInfo, Value, ValueRef};
use varc_ir::infer::{NoFold, infer_types};
use varc_ir::kernel::{Program, eval};
use varc_ir::lower::{LowerOptions, lower_with};
use varc_ir::op::Window;
use varc_ir::testing::values;
use varc_ir::{Graph, Op, Shape, Tensor};
use varc_runtime::pool::ThreadPool;

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
        (
            vec![1, 16, 12, 20],
            vec![24, 16, 3, 3],
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        (
            vec![2, 5, 17, 14],
            vec![7, 5, 3, 2],
            window(&[1, 0, 2, 1], &[2, 3], &[]),
        ),
        (
            vec![1, 3, 20, 20],
            vec![3, 3, 5, 5],
            window(&[2, 2, 2, 2], &[], &[2, 2]),
        ),
        (vec![1, 32, 8, 8], vec![40, 32, 1, 1], window(&[], &[], &[])),
    ];
    for (x, w, win) in cases {
        let what = format!("x {x:?} w {w:?}");
        let ([tagged, plain], ins) = lower(&x, &w, win);
        let want = eval::run_program(&plain, &ins).unwrap();
        let jit = compile_jit_with(&tagged, JitOptions { ukernels: true }).unwrap();
        let calls = (0..tagged.kernels.len())
            .filter(|&i| jit.library(i) == Some("conv ukernel"))
            .count();
        assert_eq!(calls, 1, "{what}");
        let got = jit.run(&ins).unwrap();
        let (g, wv) = (got[0].to_f64_vec(), want[0].to_f64_vec());
        assert_eq!(got[0].shape(), want[0].shape(), "{what}");
        let max = wv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (n, (a, b)) in g.iter().zip(&wv).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * max + 1e-4 * b.abs(),
                "{what}: element {n}: got {a}, want {b}"
            );
        }
        let pool = Arc::new(ThreadPool::new(2));
        let par = jit.run_on(&ins, &pool).unwrap();
        assert_eq!(
            par[0].data().to_le_bytes(),
            got[0].data().to_le_bytes(),
            "{what}: 2 threads"
        );
        // Without microkernels the tagged loop nest itself runs.
        let nest = compile_jit_with(&tagged, JitOptions { ukernels: false }).unwrap();
        let direct = nest.run(&ins).unwrap();
        let d = direct[0].to_f64_vec();
        for (n, (a, b)) in d.iter().zip(&wv).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * max + 1e-4 * b.abs(),
                "{what} (loop nest): element {n}: got {a}, want {b}"
            );
        }
    }
}

/// `Conv(x, w, b)` with w and b constants: the call adds the bias itself
/// (no epilogue loop; `tagged` finds it) and reads w packed at compile
/// time; results match the interpreter on the im2col lowering and are
/// bit-identical on two threads. Shapes: VQVAE's 16×16 and 32×32 layers
/// (B read from the image in place), M = 3 (small-row path) and a strided
/// one (packed panels).
#[test]
fn conv_bias_and_packed_weights_in_the_call() {
    let cases = [
        (
            vec![1, 16, 16, 16],
            vec![24, 16, 3, 3],
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        (
            vec![1, 8, 32, 32],
            vec![16, 8, 3, 3],
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        (
            vec![1, 8, 32, 32],
            vec![3, 8, 3, 3],
            window(&[1, 1, 1, 1], &[], &[]),
        ),
        (
            vec![2, 5, 17, 14],
            vec![7, 5, 3, 2],
            window(&[1, 0, 2, 1], &[2, 3], &[]),
        ),
    ];
    for (x, w, win) in cases {
        let what = format!("x {x:?} w {w:?}");
        let mut g = Graph::new("t");
        let xt = Tensor::from_f32(x.clone(), values(1, x.iter().product())).unwrap();
        let xv = g.add_input(
            "x",
            TypeInfo {
                dtype: xt.dtype(),
                shape: Shape::known(xt.shape()),
            },
        );
        let wv = g.add_const(
            "w",
            Tensor::from_f32(w.clone(), values(2, w.iter().product())).unwrap(),
        );
        let bv = g.add_const("b", Tensor::from_f32(vec![w[0]], values(3, w[0])).unwrap());
        let conv = g
            .add_node(
                "conv",
                Op::Conv {
                    window: win,
                    group: 1,
                },
                vec![Some(ValueRef { node: xv, slot: 0 }), Some(wv), Some(bv)],
                vec![Value::named("y")],
            )
            .unwrap();
        g.outputs = vec![ValueRef {
            node: conv,
            slot: 0,
        }];
        let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
        let [tagged, plain] = [true, false].map(|conv_library| {
            let opts = LowerOptions {
                conv_library,
                ..Default::default()
            };
            lower_with(&g, &inferred.consts, &opts).unwrap()
        });
        let ins = vec![xt];
        let convs: Vec<_> = tagged
            .kernels
            .iter()
            .filter_map(|k| crate::conv::tagged(&tagged, k))
            .collect();
        assert_eq!(convs.len(), 1, "{what}");
        assert!(
            convs[0].bias.is_some() && convs[0].epilogue.is_none(),
            "{what}"
        );
        let want = eval::run_program(&plain, &ins).unwrap();
        let jit = compile_jit_with(&tagged, JitOptions { ukernels: true }).unwrap();
        if crate::gemm::packing_enabled() {
            assert!(
                jit.packed_bytes() >= 4 * w.iter().product::<usize>(),
                "{what}"
            );
        }
        let got = jit.run(&ins).unwrap();
        let (gv, wv) = (got[0].to_f64_vec(), want[0].to_f64_vec());
        let max = wv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (n, (a, b)) in gv.iter().zip(&wv).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * max + 1e-4 * b.abs(),
                "{what}: element {n}: got {a}, want {b}"
            );
        }
        let pool = Arc::new(ThreadPool::new(2));
        let par = jit.run_on(&ins, &pool).unwrap();
        assert_eq!(
            par[0].data().to_le_bytes(),
            got[0].data().to_le_bytes(),
            "{what}: 2 threads"
        );
    }
}
