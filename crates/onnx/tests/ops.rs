//! The op table: every supported op type, its spec defaults, and the forms
//! that depend on the opset.

mod common;

use common::*;
use varc_ir::op::*;
use varc_ir::{DType, Op, Tensor};
use varc_onnx::proto::AttributeProto;
use varc_onnx::{import_model, supported_op_types};

/// Imports one node with `n_in` graph inputs and `n_out` outputs at `opset`.
fn one(
    opset: i64,
    op: &str,
    n_in: usize,
    n_out: usize,
    attrs: Vec<AttributeProto>,
) -> Result<Op, String> {
    let ins: Vec<String> = (0..n_in).map(|i| format!("i{i}")).collect();
    let outs: Vec<String> = (0..n_out).map(|i| format!("o{i}")).collect();
    let ins_ref: Vec<&str> = ins.iter().map(String::as_str).collect();
    let outs_ref: Vec<&str> = outs.iter().map(String::as_str).collect();
    let m = model(
        opset,
        graph(
            vec![node(op, "n", &ins_ref, &outs_ref, attrs)],
            vec![],
            ins.iter().map(|i| vi(i, FLOAT, &["2", "4"])).collect(),
            outs.iter().map(|o| out(o)).collect(),
        ),
    );
    let g = import_model(&encode(&m), None)
        .map_err(|e| e.to_string())?
        .graph;
    let (_, n) = g
        .nodes()
        .find(|(_, n)| n.name == "n")
        .ok_or("node not found")?;
    assert_eq!(n.outputs.len(), n_out);
    Ok(n.op.clone())
}

fn op(opset: i64, op_type: &str, n_in: usize, attrs: Vec<AttributeProto>) -> Op {
    one(opset, op_type, n_in, 1, attrs).unwrap_or_else(|e| panic!("{op_type}: {e}"))
}

#[test]
fn every_table_entry_imports_with_defaults() {
    use BinaryOp as B;
    use UnaryOp as U;
    let win = |k: Option<Vec<usize>>| Window {
        kernel_shape: k,
        ..Window::default()
    };
    let cases: Vec<(&str, usize, Vec<AttributeProto>, Op)> = vec![
        ("Identity", 1, vec![], Op::Identity),
        ("Neg", 1, vec![], Op::Unary(U::Neg)),
        ("Abs", 1, vec![], Op::Unary(U::Abs)),
        ("Sqrt", 1, vec![], Op::Unary(U::Sqrt)),
        ("Reciprocal", 1, vec![], Op::Unary(U::Reciprocal)),
        ("Exp", 1, vec![], Op::Unary(U::Exp)),
        ("Log", 1, vec![], Op::Unary(U::Log)),
        ("Erf", 1, vec![], Op::Unary(U::Erf)),
        ("Tanh", 1, vec![], Op::Unary(U::Tanh)),
        ("Sigmoid", 1, vec![], Op::Unary(U::Sigmoid)),
        ("Cos", 1, vec![], Op::Unary(U::Cos)),
        ("Sin", 1, vec![], Op::Unary(U::Sin)),
        ("Tan", 1, vec![], Op::Unary(U::Tan)),
        ("Atan", 1, vec![], Op::Unary(U::Atan)),
        ("Relu", 1, vec![], Op::Unary(U::Relu)),
        ("Floor", 1, vec![], Op::Unary(U::Floor)),
        ("Ceil", 1, vec![], Op::Unary(U::Ceil)),
        ("Round", 1, vec![], Op::Unary(U::Round)),
        ("Sign", 1, vec![], Op::Unary(U::Sign)),
        ("Softplus", 1, vec![], Op::Unary(U::Softplus)),
        ("Not", 1, vec![], Op::Unary(U::Not)),
        ("IsNaN", 1, vec![], Op::Unary(U::IsNaN)),
        ("IsInf", 1, vec![], Op::Unary(U::IsInf)),
        ("Add", 2, vec![], Op::Binary(B::Add)),
        ("Sub", 2, vec![], Op::Binary(B::Sub)),
        ("Mul", 2, vec![], Op::Binary(B::Mul)),
        ("Div", 2, vec![], Op::Binary(B::Div)),
        ("Pow", 2, vec![], Op::Binary(B::Pow)),
        ("Mod", 2, vec![], Op::Binary(B::Mod)),
        ("Equal", 2, vec![], Op::Binary(B::Equal)),
        ("Less", 2, vec![], Op::Binary(B::Less)),
        ("LessOrEqual", 2, vec![], Op::Binary(B::LessOrEqual)),
        ("Greater", 2, vec![], Op::Binary(B::Greater)),
        ("GreaterOrEqual", 2, vec![], Op::Binary(B::GreaterOrEqual)),
        ("And", 2, vec![], Op::Binary(B::And)),
        ("Or", 2, vec![], Op::Binary(B::Or)),
        ("Xor", 2, vec![], Op::Binary(B::Xor)),
        ("PRelu", 2, vec![], Op::Binary(B::PRelu)),
        ("Min", 3, vec![], Op::Variadic(VariadicOp::Min)),
        ("Max", 1, vec![], Op::Variadic(VariadicOp::Max)),
        ("Sum", 2, vec![], Op::Variadic(VariadicOp::Sum)),
        ("Mean", 2, vec![], Op::Variadic(VariadicOp::Mean)),
        ("Clip", 3, vec![], Op::Clip),
        ("Where", 3, vec![], Op::Where),
        ("Cast", 1, vec![a_int("to", 7)], Op::Cast { to: DType::I64 }),
        ("CastLike", 2, vec![a_int("saturate", 0)], Op::CastLike),
        (
            "Softmax",
            1,
            vec![],
            Op::Softmax {
                axis: -1,
                log: false,
                coerce_2d: false,
            },
        ),
        (
            "LogSoftmax",
            1,
            vec![],
            Op::Softmax {
                axis: -1,
                log: true,
                coerce_2d: false,
            },
        ),
        (
            "ArgMax",
            1,
            vec![],
            Op::ArgReduce {
                max: true,
                axis: 0,
                keepdims: true,
                select_last_index: false,
            },
        ),
        (
            "ArgMin",
            1,
            vec![a_int("keepdims", 0)],
            Op::ArgReduce {
                max: false,
                axis: 0,
                keepdims: false,
                select_last_index: false,
            },
        ),
        (
            "LayerNormalization",
            3,
            vec![],
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-5,
                stash_type: 1,
            },
        ),
        (
            "RMSNormalization",
            2,
            vec![],
            Op::RmsNorm {
                axis: -1,
                epsilon: 1e-5,
                stash_type: 1,
            },
        ),
        (
            "InstanceNormalization",
            3,
            vec![],
            Op::InstanceNorm { epsilon: 1e-5 },
        ),
        (
            "GroupNormalization",
            3,
            vec![a_int("num_groups", 2)],
            Op::GroupNorm {
                num_groups: 2,
                epsilon: 1e-5,
                stash_type: 1,
                per_group_affine: false,
            },
        ),
        (
            "Gelu",
            1,
            vec![],
            Op::Gelu {
                approximate: GeluApprox::None,
            },
        ),
        ("LeakyRelu", 1, vec![], Op::LeakyRelu { alpha: 0.01 }),
        (
            "HardSigmoid",
            1,
            vec![],
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        ("MatMul", 2, vec![], Op::MatMul),
        (
            "Gemm",
            3,
            vec![],
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
        ),
        (
            "Attention",
            3,
            vec![],
            Op::Attention(AttentionAttrs {
                is_causal: false,
                q_num_heads: None,
                kv_num_heads: None,
                scale: None,
                softcap: 0.0,
                qk_matmul_output_mode: 0,
                softmax_precision: 0,
            }),
        ),
        (
            "Conv",
            2,
            vec![],
            Op::Conv {
                window: win(None),
                group: 1,
            },
        ),
        (
            "AveragePool",
            1,
            vec![a_ints("kernel_shape", &[2])],
            Op::AveragePool {
                window: win(Some(vec![2])),
                ceil_mode: false,
                count_include_pad: false,
            },
        ),
        (
            "MaxPool",
            1,
            vec![a_ints("kernel_shape", &[3])],
            Op::MaxPool {
                window: win(Some(vec![3])),
                ceil_mode: false,
            },
        ),
        ("GlobalAveragePool", 1, vec![], Op::GlobalAveragePool),
        ("GlobalMaxPool", 1, vec![], Op::GlobalMaxPool),
        (
            "Resize",
            3,
            vec![],
            Op::Resize(ResizeAttrs {
                mode: ResizeMode::Nearest,
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
        ),
        ("Reshape", 2, vec![], Op::Reshape { allowzero: false }),
        ("Transpose", 1, vec![], Op::Transpose { perm: None }),
        ("Concat", 2, vec![a_int("axis", 1)], Op::Concat { axis: 1 }),
        (
            "Split",
            2,
            vec![],
            Op::Split {
                axis: 0,
                split: None,
                num_outputs: 1,
            },
        ),
        ("Slice", 3, vec![], Op::Slice),
        ("Squeeze", 1, vec![], Op::Squeeze { axes: None }),
        ("Unsqueeze", 2, vec![], Op::Unsqueeze { axes: None }),
        ("Flatten", 1, vec![], Op::Flatten { axis: 1 }),
        ("Expand", 2, vec![], Op::Expand),
        ("Tile", 2, vec![], Op::Tile),
        (
            "Pad",
            2,
            vec![],
            Op::Pad {
                mode: PadMode::Constant,
            },
        ),
        (
            "Shape",
            1,
            vec![],
            Op::Shape {
                start: 0,
                end: None,
            },
        ),
        ("Size", 1, vec![], Op::Size),
        (
            "ConstantOfShape",
            1,
            vec![],
            Op::ConstantOfShape {
                value: Tensor::from_f32(vec![1], vec![0.0]).unwrap(),
            },
        ),
        ("Range", 3, vec![], Op::Range),
        ("Gather", 2, vec![], Op::Gather { axis: 0 }),
        ("GatherElements", 2, vec![], Op::GatherElements { axis: 0 }),
        ("GatherND", 2, vec![], Op::GatherND { batch_dims: 0 }),
        ("Trilu", 1, vec![], Op::Trilu { upper: true }),
        (
            "CumSum",
            2,
            vec![],
            Op::CumSum {
                exclusive: false,
                reverse: false,
            },
        ),
        (
            "ReduceSum",
            2,
            vec![],
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceMean",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceMax",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::Max,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceMin",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::Min,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceProd",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::Prod,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceL1",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::L1,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceL2",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::L2,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceSumSquare",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::SumSquare,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceLogSum",
            1,
            vec![],
            Op::Reduce {
                kind: ReduceKind::LogSum,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
        ),
        (
            "ReduceLogSumExp",
            2,
            vec![a_int("noop_with_empty_axes", 1)],
            Op::Reduce {
                kind: ReduceKind::LogSumExp,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: true,
            },
        ),
    ];
    let mut seen: Vec<&str> = vec!["Constant"];
    for (op_type, n_in, attrs, want) in cases {
        let got = op(23, op_type, n_in, attrs);
        assert_eq!(got, want, "{op_type}");
        if !matches!(op_type, "Mod" | "IsInf") {
            assert_eq!(got.kind(), op_type);
        }
        seen.push(op_type);
    }
    let mut missing: Vec<&str> = supported_op_types().filter(|t| !seen.contains(t)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "table entries without a test: {missing:?}"
    );
}

#[test]
fn attributes_are_read() {
    assert_eq!(
        op(17, "Mod", 2, vec![a_int("fmod", 1)]),
        Op::Binary(BinaryOp::Fmod)
    );
    assert_eq!(
        op(
            17,
            "Gemm",
            2,
            vec![
                a_float("alpha", 2.0),
                a_float("beta", 0.5),
                a_int("transA", 1),
                a_int("transB", 1)
            ]
        ),
        Op::Gemm {
            alpha: 2.0,
            beta: 0.5,
            trans_a: true,
            trans_b: true
        }
    );
    assert_eq!(
        op(
            17,
            "LayerNormalization",
            2,
            vec![
                a_int("axis", 1),
                a_float("epsilon", 1e-6),
                a_int("stash_type", 1)
            ]
        ),
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-6,
            stash_type: 1
        }
    );
    assert_eq!(
        op(20, "Gelu", 1, vec![a_str("approximate", "tanh")]),
        Op::Gelu {
            approximate: GeluApprox::Tanh
        }
    );
    assert_eq!(
        op(
            17,
            "Conv",
            3,
            vec![
                a_ints("kernel_shape", &[3, 3]),
                a_ints("pads", &[1, 1, 1, 1]),
                a_ints("strides", &[2, 2]),
                a_ints("dilations", &[1, 1]),
                a_int("group", 4),
                a_str("auto_pad", "NOTSET"),
            ]
        ),
        Op::Conv {
            window: Window {
                kernel_shape: Some(vec![3, 3]),
                pads: vec![1, 1, 1, 1],
                strides: vec![2, 2],
                dilations: vec![1, 1],
                auto_pad: Some(AutoPad::NotSet),
            },
            group: 4
        }
    );
    assert_eq!(
        op(
            17,
            "MaxPool",
            1,
            vec![
                a_ints("kernel_shape", &[2, 2]),
                a_str("auto_pad", "SAME_UPPER"),
                a_int("storage_order", 1),
                a_int("ceil_mode", 1)
            ]
        ),
        Op::MaxPool {
            window: Window {
                kernel_shape: Some(vec![2, 2]),
                auto_pad: Some(AutoPad::SameUpper),
                ..Window::default()
            },
            ceil_mode: true
        }
    );
    assert_eq!(
        op(17, "Transpose", 1, vec![a_ints("perm", &[1, 0])]),
        Op::Transpose {
            perm: Some(vec![1, 0])
        }
    );
    assert_eq!(
        op(17, "Shape", 1, vec![a_int("start", 1), a_int("end", -1)]),
        Op::Shape {
            start: 1,
            end: Some(-1)
        }
    );
    assert_eq!(
        op(17, "Pad", 2, vec![a_str("mode", "reflect")]),
        Op::Pad {
            mode: PadMode::Reflect
        }
    );
    assert_eq!(
        op(17, "Trilu", 2, vec![a_int("upper", 0)]),
        Op::Trilu { upper: false }
    );
    assert_eq!(
        op(17, "Cast", 1, vec![a_int("to", 10), a_int("saturate", 1)]),
        Op::Cast { to: DType::F16 }
    );
    let value = i64_data("", &[1], &[7]);
    assert_eq!(
        op(17, "ConstantOfShape", 1, vec![a_tensor("value", value)]),
        Op::ConstantOfShape {
            value: Tensor::from_i64(vec![1], vec![7]).unwrap()
        }
    );
    assert_eq!(
        op(
            23,
            "Attention",
            4,
            vec![
                a_int("is_causal", 1),
                a_int("q_num_heads", 8),
                a_int("kv_num_heads", 2),
                a_float("scale", 0.125),
                a_float("softcap", 30.0)
            ]
        ),
        Op::Attention(AttentionAttrs {
            is_causal: true,
            q_num_heads: Some(8),
            kv_num_heads: Some(2),
            scale: Some(0.125),
            softcap: 30.0,
            qk_matmul_output_mode: 0,
            softmax_precision: 0,
        })
    );
    // Attention may return present key/value and the qk product.
    assert!(
        one(
            23,
            "Attention",
            3,
            4,
            vec![a_int("qk_matmul_output_mode", 1)]
        )
        .is_ok()
    );
}

#[test]
fn opset_dependent_forms() {
    // Softmax: axis 1 with 2-D coercion before 13, -1 from 13.
    assert_eq!(
        op(11, "Softmax", 1, vec![]),
        Op::Softmax {
            axis: 1,
            log: false,
            coerce_2d: true
        }
    );
    assert_eq!(
        op(12, "LogSoftmax", 1, vec![]),
        Op::Softmax {
            axis: 1,
            log: true,
            coerce_2d: true
        }
    );
    assert_eq!(
        op(13, "Softmax", 1, vec![]),
        Op::Softmax {
            axis: -1,
            log: false,
            coerce_2d: false
        }
    );

    // Reduce axes: attribute before 18 (ReduceSum: before 13), input after.
    let r = |kind, axes, noop| Op::Reduce {
        kind,
        axes,
        keepdims: true,
        noop_with_empty_axes: noop,
    };
    assert_eq!(
        op(17, "ReduceMean", 1, vec![a_ints("axes", &[-1])]),
        r(ReduceKind::Mean, Some(vec![-1]), false)
    );
    assert_eq!(
        op(18, "ReduceMean", 2, vec![]),
        r(ReduceKind::Mean, None, false)
    );
    assert_eq!(
        op(12, "ReduceSum", 1, vec![a_ints("axes", &[0])]),
        r(ReduceKind::Sum, Some(vec![0]), false)
    );
    assert_eq!(
        op(13, "ReduceSum", 2, vec![a_int("noop_with_empty_axes", 1)]),
        r(ReduceKind::Sum, None, true)
    );
    let e = one(18, "ReduceMean", 1, 1, vec![a_ints("axes", &[0])]).unwrap_err();
    assert!(e.contains("unknown attribute 'axes'"), "{e}");
    let e = one(17, "ReduceMean", 2, 1, vec![]).unwrap_err();
    assert!(e.contains("before opset 18"), "{e}");

    // Split: attribute before 13, input after, num_outputs from 18.
    assert_eq!(
        one(
            11,
            "Split",
            1,
            2,
            vec![a_ints("split", &[1, 3]), a_int("axis", 1)]
        )
        .unwrap(),
        Op::Split {
            axis: 1,
            split: Some(vec![1, 3]),
            num_outputs: 2
        }
    );
    assert_eq!(
        one(13, "Split", 2, 3, vec![]).unwrap(),
        Op::Split {
            axis: 0,
            split: None,
            num_outputs: 3
        }
    );
    assert_eq!(
        one(18, "Split", 1, 2, vec![a_int("num_outputs", 2)]).unwrap(),
        Op::Split {
            axis: 0,
            split: None,
            num_outputs: 2
        }
    );
    assert!(
        one(18, "Split", 1, 2, vec![a_int("num_outputs", 3)])
            .unwrap_err()
            .contains("num_outputs")
    );
    assert!(
        one(11, "Split", 1, 2, vec![a_ints("split", &[4])])
            .unwrap_err()
            .contains("'split' has 1 sizes")
    );
    assert!(
        one(13, "Split", 1, 2, vec![a_ints("split", &[1, 3])])
            .unwrap_err()
            .contains("unknown attribute 'split'")
    );

    // Squeeze / Unsqueeze: axes attribute before 13.
    assert_eq!(
        op(11, "Squeeze", 1, vec![a_ints("axes", &[0])]),
        Op::Squeeze {
            axes: Some(vec![0])
        }
    );
    assert_eq!(op(11, "Squeeze", 1, vec![]), Op::Squeeze { axes: None });
    assert_eq!(
        op(11, "Unsqueeze", 1, vec![a_ints("axes", &[0, 2])]),
        Op::Unsqueeze {
            axes: Some(vec![0, 2])
        }
    );
    assert!(
        one(11, "Unsqueeze", 1, 1, vec![])
            .unwrap_err()
            .contains("'axes'")
    );
    assert!(
        one(13, "Unsqueeze", 1, 1, vec![])
            .unwrap_err()
            .contains("axes input")
    );

    // GroupNormalization: per-group affine at 18, per-channel at 21.
    let gn = |opset| op(opset, "GroupNormalization", 3, vec![a_int("num_groups", 4)]);
    assert!(matches!(
        gn(18),
        Op::GroupNorm {
            per_group_affine: true,
            ..
        }
    ));
    assert!(matches!(
        gn(21),
        Op::GroupNorm {
            per_group_affine: false,
            ..
        }
    ));

    // Resize attributes across opsets.
    let Op::Resize(r) = op(
        19,
        "Resize",
        4,
        vec![
            a_str("mode", "cubic"),
            a_str("coordinate_transformation_mode", "half_pixel_symmetric"),
            a_str("nearest_mode", "floor"),
            a_float("cubic_coeff_a", -0.5),
            a_int("exclude_outside", 1),
            a_float("extrapolation_value", 1.0),
            a_int("antialias", 1),
            a_ints("axes", &[2, 3]),
            a_str("keep_aspect_ratio_policy", "not_larger"),
        ],
    ) else {
        panic!()
    };
    assert_eq!(
        r,
        ResizeAttrs {
            mode: ResizeMode::Cubic,
            coord: CoordMode::HalfPixelSymmetric,
            nearest_mode: NearestMode::Floor,
            cubic_coeff_a: -0.5,
            exclude_outside: true,
            extrapolation_value: 1.0,
            antialias: true,
            axes: Some(vec![2, 3]),
            keep_aspect_ratio_policy: AspectPolicy::NotLarger,
            scales_input_only: false,
        }
    );
    let Op::Resize(r) = op(
        11,
        "Resize",
        3,
        vec![
            a_str("mode", "linear"),
            a_str("coordinate_transformation_mode", "align_corners"),
        ],
    ) else {
        panic!()
    };
    assert_eq!(
        (r.mode, r.coord, r.nearest_mode),
        (
            ResizeMode::Linear,
            CoordMode::AlignCorners,
            NearestMode::RoundPreferFloor
        )
    );

    // Ops newer than the model's opset.
    let e = one(17, "Gelu", 1, 1, vec![]).unwrap_err();
    assert!(
        e.contains("Gelu is defined from opset 20") && e.contains("opset 17"),
        "{e}"
    );
    assert!(
        one(22, "RMSNormalization", 2, 1, vec![])
            .unwrap_err()
            .contains("opset 23")
    );
}

#[test]
fn bad_attribute_values() {
    let e = one(17, "Cast", 1, 1, vec![a_int("to", 8)]).unwrap_err();
    assert!(e.contains("Cast to STRING"), "{e}");
    assert!(
        one(17, "Cast", 1, 1, vec![])
            .unwrap_err()
            .contains("required attribute 'to'")
    );
    assert!(
        one(17, "Concat", 2, 1, vec![])
            .unwrap_err()
            .contains("required attribute 'axis'")
    );
    assert!(
        one(17, "MaxPool", 1, 1, vec![])
            .unwrap_err()
            .contains("kernel_shape")
    );
    assert!(
        one(
            17,
            "Conv",
            2,
            1,
            vec![a_ints("kernel_shape", &[3, 3]), a_ints("strides", &[1])]
        )
        .unwrap_err()
        .contains("'strides'")
    );
    assert!(
        one(17, "Conv", 2, 1, vec![a_ints("pads", &[1, 1, 1])])
            .unwrap_err()
            .contains("even")
    );
    assert!(
        one(17, "Conv", 2, 1, vec![a_ints("strides", &[0, 1])])
            .unwrap_err()
            .contains("positive")
    );
    assert!(
        one(17, "Conv", 2, 1, vec![a_str("auto_pad", "SAME")])
            .unwrap_err()
            .contains("auto_pad='SAME'")
    );
    assert!(
        one(17, "Transpose", 1, 1, vec![a_ints("perm", &[-1, 0])])
            .unwrap_err()
            .contains("negative")
    );
    assert!(
        one(17, "Gemm", 2, 1, vec![a_int("transA", 2)])
            .unwrap_err()
            .contains("0 or 1")
    );
    assert!(
        one(17, "IsInf", 1, 1, vec![a_int("detect_negative", 0)])
            .unwrap_err()
            .contains("detect_negative")
    );
    assert!(
        one(17, "Pad", 2, 1, vec![a_str("mode", "mirror")])
            .unwrap_err()
            .contains("mode='mirror'")
    );
    let two = i64_data("", &[2], &[1, 2]);
    assert!(
        one(17, "ConstantOfShape", 1, 1, vec![a_tensor("value", two)])
            .unwrap_err()
            .contains("one element")
    );
    assert!(
        one(18, "GroupNormalization", 3, 1, vec![])
            .unwrap_err()
            .contains("num_groups")
    );
    // LayerNormalization has at most 3 outputs (Y, Mean, InvStdDev).
    let e = one(17, "LayerNormalization", 2, 4, vec![]).unwrap_err();
    assert!(e.contains("output"), "{e}");
}
