//! Hostile-input sweep: every op on many combinations of odd operands
//! (scalars, empty tensors, wrong dtypes, extreme indices) must return a
//! value or an error, never panic.

use crate::eval_node;
use varc_ir::op::*;
use varc_ir::{DType, Node, Op, Tensor, TensorData, Value};

fn pool() -> Vec<Tensor> {
    let t = |shape: &[usize], d: TensorData| Tensor::new(shape.to_vec(), d).unwrap();
    vec![
        Tensor::scalar_f32(1.5),
        t(&[0], TensorData::F32(vec![])),
        t(
            &[2, 3],
            TensorData::F32(vec![1.0, -2.0, f32::NAN, f32::INFINITY, 0.0, -0.5]),
        ),
        t(&[2, 0, 3], TensorData::F16(vec![])),
        t(&[3], TensorData::I64(vec![-1, 0, 2])),
        t(&[2], TensorData::I64(vec![i64::MIN, i64::MAX])),
        t(&[1], TensorData::I64(vec![100_000])),
        t(&[], TensorData::I64(vec![-3])),
        t(&[4], TensorData::I64(vec![1, 1, -1, 0])),
        t(&[2, 2], TensorData::I32(vec![0, 1, i32::MIN, 3])),
        t(&[2], TensorData::Bool(vec![true, false])),
        t(&[1, 2, 2, 2], TensorData::F64(vec![0.5; 8])),
        t(&[2], TensorData::U8(vec![0, 255])),
    ]
}

fn window() -> Window {
    Window {
        kernel_shape: Some(vec![2, 2]),
        pads: vec![],
        strides: vec![],
        dilations: vec![],
        auto_pad: None,
    }
}

fn ops() -> Vec<(Op, usize, usize)> {
    let mut v: Vec<(Op, usize, usize)> = vec![];
    use UnaryOp::*;
    for u in [
        Neg, Abs, Sqrt, Reciprocal, Exp, Log, Erf, Tanh, Sigmoid, Cos, Sin, Tan, Atan, Relu, Floor,
        Ceil, Round, Sign, Softplus, Not, IsNaN, IsInf,
    ] {
        v.push((Op::Unary(u), 1, 1));
    }
    use BinaryOp::*;
    for b in [
        Add,
        Sub,
        Mul,
        Div,
        Pow,
        Mod,
        Fmod,
        Equal,
        Less,
        LessOrEqual,
        Greater,
        GreaterOrEqual,
        And,
        Or,
        Xor,
        PRelu,
    ] {
        v.push((Op::Binary(b), 2, 1));
    }
    for o in [
        VariadicOp::Min,
        VariadicOp::Max,
        VariadicOp::Sum,
        VariadicOp::Mean,
    ] {
        v.push((Op::Variadic(o), 3, 1));
    }
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::SumSquare,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
    ] {
        v.push((
            Op::Reduce {
                kind,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
            2,
            1,
        ));
        v.push((
            Op::Reduce {
                kind,
                axes: Some(vec![-1, 7]),
                keepdims: false,
                noop_with_empty_axes: true,
            },
            1,
            1,
        ));
    }
    v.extend([
        (Op::Identity, 1, 1),
        (Op::Clip, 3, 1),
        (Op::Where, 3, 1),
        (Op::Cast { to: DType::U8 }, 1, 1),
        (Op::Cast { to: DType::F16 }, 1, 1),
        (Op::CastLike, 2, 1),
        (
            Op::Softmax {
                axis: -1,
                log: false,
                coerce_2d: false,
            },
            1,
            1,
        ),
        (
            Op::Softmax {
                axis: 5,
                log: true,
                coerce_2d: true,
            },
            1,
            1,
        ),
        (
            Op::ArgReduce {
                max: true,
                axis: 1,
                keepdims: false,
                select_last_index: true,
            },
            1,
            1,
        ),
        (
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-5,
                stash_type: 1,
            },
            3,
            3,
        ),
        (
            Op::LayerNorm {
                axis: 9,
                epsilon: 1e-5,
                stash_type: 99,
            },
            3,
            1,
        ),
        (
            Op::RmsNorm {
                axis: -1,
                epsilon: 1e-5,
                stash_type: 1,
            },
            2,
            1,
        ),
        (Op::InstanceNorm { epsilon: 1e-5 }, 3, 1),
        (
            Op::GroupNorm {
                num_groups: 2,
                epsilon: 1e-5,
                stash_type: 1,
                per_group_affine: false,
            },
            3,
            1,
        ),
        (
            Op::GroupNorm {
                num_groups: 0,
                epsilon: 1e-5,
                stash_type: 1,
                per_group_affine: true,
            },
            3,
            1,
        ),
        (
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            1,
            1,
        ),
        (Op::LeakyRelu { alpha: 0.1 }, 1, 1),
        (
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            1,
            1,
        ),
        (Op::MatMul, 2, 1),
        (
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: true,
                trans_b: false,
            },
            3,
            1,
        ),
        (Op::Reshape { allowzero: false }, 2, 1),
        (Op::Reshape { allowzero: true }, 2, 1),
        (Op::Transpose { perm: None }, 1, 1),
        (
            Op::Transpose {
                perm: Some(vec![1, 0, 5]),
            },
            1,
            1,
        ),
        (Op::Concat { axis: -1 }, 3, 1),
        (
            Op::Split {
                axis: 0,
                split: None,
                num_outputs: 0,
            },
            2,
            2,
        ),
        (
            Op::Split {
                axis: -1,
                split: Some(vec![-1, 4]),
                num_outputs: 2,
            },
            1,
            2,
        ),
        (Op::Slice, 5, 1),
        (Op::Squeeze { axes: None }, 2, 1),
        (Op::Unsqueeze { axes: None }, 2, 1),
        (Op::Flatten { axis: -1 }, 1, 1),
        (Op::Expand, 2, 1),
        (Op::Tile, 2, 1),
        (
            Op::Pad {
                mode: PadMode::Constant,
            },
            4,
            1,
        ),
        (
            Op::Pad {
                mode: PadMode::Reflect,
            },
            4,
            1,
        ),
        (
            Op::Pad {
                mode: PadMode::Edge,
            },
            2,
            1,
        ),
        (
            Op::Pad {
                mode: PadMode::Wrap,
            },
            2,
            1,
        ),
        (
            Op::Shape {
                start: -100,
                end: Some(i64::MAX),
            },
            1,
            1,
        ),
        (Op::Size, 1, 1),
        (
            Op::ConstantOfShape {
                value: Tensor::scalar_f32(1.0),
            },
            1,
            1,
        ),
        (Op::Range, 3, 1),
        (Op::Gather { axis: -1 }, 2, 1),
        (Op::GatherElements { axis: 0 }, 2, 1),
        (Op::GatherND { batch_dims: 1 }, 2, 1),
        (Op::GatherND { batch_dims: 0 }, 2, 1),
        (Op::Trilu { upper: false }, 2, 1),
        (
            Op::CumSum {
                exclusive: true,
                reverse: true,
            },
            2,
            1,
        ),
        (Op::Input, 0, 1),
    ]);
    v
}

fn delegated_ops() -> Vec<(Op, usize, usize)> {
    vec![
        (
            Op::Conv {
                window: window(),
                group: 1,
            },
            3,
            1,
        ),
        (
            Op::AveragePool {
                window: window(),
                ceil_mode: true,
                count_include_pad: false,
            },
            1,
            1,
        ),
        (
            Op::MaxPool {
                window: window(),
                ceil_mode: false,
            },
            1,
            1,
        ),
        (
            Op::MaxPool {
                window: window(),
                ceil_mode: false,
            },
            1,
            2,
        ),
        (Op::GlobalAveragePool, 1, 1),
        (Op::GlobalMaxPool, 1, 1),
        (
            Op::Attention(AttentionAttrs {
                is_causal: true,
                q_num_heads: Some(2),
                kv_num_heads: Some(1),
                scale: None,
                softcap: 0.0,
                qk_matmul_output_mode: 0,
                softmax_precision: 0,
            }),
            3,
            1,
        ),
        (
            Op::Resize(ResizeAttrs {
                mode: ResizeMode::Linear,
                coord: CoordMode::HalfPixel,
                nearest_mode: NearestMode::RoundPreferFloor,
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
                antialias: false,
                axes: None,
                keep_aspect_ratio_policy: AspectPolicy::Stretch,
                scales_input_only: false,
            }),
            4,
            1,
        ),
    ]
}

/// Every operand tuple of length `n` drawn from the pool (with `None` in
/// optional slots past the first), run through `eval_node`.
fn sweep(list: Vec<(Op, usize, usize)>) -> (usize, usize) {
    let pool = pool();
    let mut choices: Vec<Option<&Tensor>> = pool.iter().map(Some).collect();
    choices.push(None);
    let (mut evaluated, mut succeeded) = (0, 0);
    for (op, n_in, n_out) in list {
        let node = Node {
            name: "fuzz".into(),
            op,
            inputs: vec![None; n_in],
            outputs: (0..n_out).map(|i| Value::named(format!("y{i}"))).collect(),
        };
        // Cap the combinations: the first two operands range over the whole
        // pool, later ones over a small subset.
        let tail: Vec<Option<&Tensor>> = vec![None, Some(&pool[4]), Some(&pool[7]), Some(&pool[0])];
        let mut args: Vec<Vec<Option<&Tensor>>> = vec![vec![]];
        for slot in 0..n_in {
            let opts = if slot < 2 { &choices } else { &tail };
            args = args
                .into_iter()
                .flat_map(|prefix| {
                    opts.iter().map(move |o| {
                        let mut p = prefix.clone();
                        p.push(*o);
                        p
                    })
                })
                .collect();
        }
        for a in &args {
            if let Ok(outs) = eval_node(&node, a) {
                assert_eq!(outs.len(), n_out, "{:?}", node.op);
                succeeded += 1;
            }
            evaluated += 1;
        }
    }
    (evaluated, succeeded)
}

#[test]
fn owned_ops_never_panic() {
    let (evaluated, succeeded) = sweep(ops());
    println!("{evaluated} evaluated, {succeeded} succeeded");
    assert!(evaluated > 10_000 && succeeded > 1_000);
}

#[test]
fn delegated_ops_never_panic() {
    let (evaluated, succeeded) = sweep(delegated_ops());
    println!("{evaluated} evaluated, {succeeded} succeeded");
    assert!(evaluated > 100);
}
