//! The op table: ONNX (op_type, opset) → typed [`Op`], with each operator's
//! arity and attribute defaults from the ONNX spec (opsets 11–23).
//!
//! Element-wise families are plain data rows; ops with attributes have a
//! builder that takes them by name (see [`crate::attrs`]). Opset-dependent
//! forms (Softmax's axis default, Reduce/Split/Squeeze axes moving from
//! attribute to input, GroupNormalization's affine shape, Resize's modes) are
//! decided from the default-domain opset the model imports.

use crate::attrs::{Attrs, Issue, R, invalid, required, unsupported};
use crate::proto::NodeProto;
use crate::tensor::{convert, dtype_from_onnx, onnx_type_label};
use std::path::Path;
use varc_ir::op::*;
use varc_ir::{Tensor, TensorData};

/// What a builder sees besides the attributes.
pub(crate) struct Ctx<'a> {
    pub opset: i64,
    pub node: &'a NodeProto,
    /// The node's name for messages (generated when the model has none).
    pub label: &'a str,
    pub model_dir: Option<&'a Path>,
    /// Inputs after dropping trailing omitted ones.
    pub n_in: usize,
    pub n_out: usize,
}

type Build = fn(&mut Attrs<'_>, &Ctx<'_>) -> R<Op>;

#[derive(Clone, Copy)]
enum Kind {
    Unary(UnaryOp),
    Binary(BinaryOp),
    Variadic(VariadicOp),
    Reduce(ReduceKind),
    Custom(Build),
}

struct Entry {
    op_type: &'static str,
    /// First opset that defines the op.
    since: i64,
    /// Accepted input count (after trailing omitted inputs are dropped).
    ins: (usize, usize),
    /// Outputs varc supports (trailing unnamed ones beyond this are dropped).
    outs: usize,
    kind: Kind,
}

const MANY: usize = usize::MAX;

const fn un(op_type: &'static str, u: UnaryOp) -> Entry {
    Entry {
        op_type,
        since: 1,
        ins: (1, 1),
        outs: 1,
        kind: Kind::Unary(u),
    }
}
const fn bin(op_type: &'static str, b: BinaryOp) -> Entry {
    Entry {
        op_type,
        since: 1,
        ins: (2, 2),
        outs: 1,
        kind: Kind::Binary(b),
    }
}
const fn var(op_type: &'static str, v: VariadicOp) -> Entry {
    Entry {
        op_type,
        since: 1,
        ins: (1, MANY),
        outs: 1,
        kind: Kind::Variadic(v),
    }
}
const fn red(op_type: &'static str, r: ReduceKind) -> Entry {
    Entry {
        op_type,
        since: 1,
        ins: (1, 2),
        outs: 1,
        kind: Kind::Reduce(r),
    }
}
const fn op(
    op_type: &'static str,
    since: i64,
    ins: (usize, usize),
    outs: usize,
    b: Build,
) -> Entry {
    Entry {
        op_type,
        since,
        ins,
        outs,
        kind: Kind::Custom(b),
    }
}

#[rustfmt::skip]
static TABLE: &[Entry] = &[
    un("Neg", UnaryOp::Neg), un("Abs", UnaryOp::Abs), un("Sqrt", UnaryOp::Sqrt),
    un("Reciprocal", UnaryOp::Reciprocal), un("Exp", UnaryOp::Exp), un("Log", UnaryOp::Log),
    un("Erf", UnaryOp::Erf), un("Tanh", UnaryOp::Tanh), un("Sigmoid", UnaryOp::Sigmoid),
    un("Cos", UnaryOp::Cos), un("Sin", UnaryOp::Sin), un("Tan", UnaryOp::Tan),
    un("Atan", UnaryOp::Atan), un("Relu", UnaryOp::Relu), un("Floor", UnaryOp::Floor),
    un("Ceil", UnaryOp::Ceil), un("Round", UnaryOp::Round), un("Sign", UnaryOp::Sign),
    un("Softplus", UnaryOp::Softplus), un("Not", UnaryOp::Not), un("IsNaN", UnaryOp::IsNaN),
    op("IsInf", 10, (1, 1), 1, is_inf),
    bin("Add", BinaryOp::Add), bin("Sub", BinaryOp::Sub), bin("Mul", BinaryOp::Mul),
    bin("Div", BinaryOp::Div), bin("Pow", BinaryOp::Pow), bin("Equal", BinaryOp::Equal),
    bin("Less", BinaryOp::Less), bin("LessOrEqual", BinaryOp::LessOrEqual),
    bin("Greater", BinaryOp::Greater), bin("GreaterOrEqual", BinaryOp::GreaterOrEqual),
    bin("And", BinaryOp::And), bin("Or", BinaryOp::Or), bin("Xor", BinaryOp::Xor),
    bin("PRelu", BinaryOp::PRelu),
    op("Mod", 10, (2, 2), 1, modulo),
    var("Min", VariadicOp::Min), var("Max", VariadicOp::Max),
    var("Sum", VariadicOp::Sum), var("Mean", VariadicOp::Mean),
    red("ReduceSum", ReduceKind::Sum), red("ReduceMean", ReduceKind::Mean),
    red("ReduceMax", ReduceKind::Max), red("ReduceMin", ReduceKind::Min),
    red("ReduceProd", ReduceKind::Prod), red("ReduceL1", ReduceKind::L1),
    red("ReduceL2", ReduceKind::L2), red("ReduceSumSquare", ReduceKind::SumSquare),
    red("ReduceLogSum", ReduceKind::LogSum), red("ReduceLogSumExp", ReduceKind::LogSumExp),
    op("Constant", 1, (0, 0), 1, constant),
    op("Identity", 1, (1, 1), 1, |_, _| Ok(Op::Identity)),
    op("Clip", 11, (1, 3), 1, |_, _| Ok(Op::Clip)),
    op("Where", 9, (3, 3), 1, |_, _| Ok(Op::Where)),
    op("Cast", 1, (1, 1), 1, cast),
    op("CastLike", 15, (2, 2), 1, |a, _| { a.ignore("saturate"); Ok(Op::CastLike) }),
    op("Softmax", 1, (1, 1), 1, |a, c| softmax(a, c, false)),
    op("LogSoftmax", 1, (1, 1), 1, |a, c| softmax(a, c, true)),
    op("ArgMax", 1, (1, 1), 1, |a, _| arg_reduce(a, true)),
    op("ArgMin", 1, (1, 1), 1, |a, _| arg_reduce(a, false)),
    op("LayerNormalization", 17, (2, 3), 3, layer_norm),
    op("RMSNormalization", 23, (2, 2), 1, rms_norm),
    op("InstanceNormalization", 1, (3, 3), 1, |a, _| Ok(Op::InstanceNorm { epsilon: a.float_or("epsilon", 1e-5)? })),
    op("GroupNormalization", 18, (3, 3), 1, group_norm),
    op("Gelu", 20, (1, 1), 1, gelu),
    op("LeakyRelu", 1, (1, 1), 1, |a, _| Ok(Op::LeakyRelu { alpha: a.float_or("alpha", 0.01)? })),
    op("HardSigmoid", 1, (1, 1), 1, |a, _| Ok(Op::HardSigmoid { alpha: a.float_or("alpha", 0.2)?, beta: a.float_or("beta", 0.5)? })),
    op("MatMul", 1, (2, 2), 1, |_, _| Ok(Op::MatMul)),
    op("Gemm", 1, (2, 3), 1, gemm),
    op("Attention", 23, (3, 7), 4, attention),
    op("Conv", 1, (2, 3), 1, conv),
    op("AveragePool", 1, (1, 1), 1, average_pool),
    op("MaxPool", 1, (1, 1), 1, max_pool),
    op("GlobalAveragePool", 1, (1, 1), 1, |_, _| Ok(Op::GlobalAveragePool)),
    op("GlobalMaxPool", 1, (1, 1), 1, |_, _| Ok(Op::GlobalMaxPool)),
    op("Resize", 10, (1, 4), 1, resize),
    op("Reshape", 5, (2, 2), 1, |a, _| Ok(Op::Reshape { allowzero: a.flag("allowzero", false)? })),
    op("Transpose", 1, (1, 1), 1, |a, _| Ok(Op::Transpose { perm: a.usizes("perm")? })),
    op("Concat", 1, (1, MANY), 1, |a, _| Ok(Op::Concat { axis: required(a.int("axis")?, "axis")? })),
    op("Split", 1, (1, 2), MANY, split),
    op("Slice", 10, (3, 5), 1, |_, _| Ok(Op::Slice)),
    op("Squeeze", 1, (1, 2), 1, squeeze),
    op("Unsqueeze", 1, (1, 2), 1, unsqueeze),
    op("Flatten", 1, (1, 1), 1, |a, _| Ok(Op::Flatten { axis: a.int_or("axis", 1)? })),
    op("Expand", 8, (2, 2), 1, |_, _| Ok(Op::Expand)),
    op("Tile", 6, (2, 2), 1, |_, _| Ok(Op::Tile)),
    op("Pad", 11, (2, 4), 1, pad),
    op("Shape", 1, (1, 1), 1, |a, _| Ok(Op::Shape { start: a.int_or("start", 0)?, end: a.int("end")? })),
    op("Size", 1, (1, 1), 1, |_, _| Ok(Op::Size)),
    op("ConstantOfShape", 9, (1, 1), 1, constant_of_shape),
    op("Range", 11, (3, 3), 1, |_, _| Ok(Op::Range)),
    op("Gather", 1, (2, 2), 1, |a, _| Ok(Op::Gather { axis: a.int_or("axis", 0)? })),
    op("GatherElements", 11, (2, 2), 1, |a, _| Ok(Op::GatherElements { axis: a.int_or("axis", 0)? })),
    op("GatherND", 11, (2, 2), 1, |a, _| Ok(Op::GatherND { batch_dims: a.usize("batch_dims")?.unwrap_or(0) })),
    op("Trilu", 14, (1, 2), 1, |a, _| Ok(Op::Trilu { upper: a.flag("upper", true)? })),
    op("CumSum", 11, (2, 2), 1, |a, _| Ok(Op::CumSum { exclusive: a.flag("exclusive", false)?, reverse: a.flag("reverse", false)? })),
];

/// Every ONNX op type the table knows, in table order.
pub fn supported_op_types() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|e| e.op_type)
}

/// A node turned into an IR op.
pub(crate) struct Built {
    pub op: Op,
    /// Inputs to wire (trailing omitted ones dropped).
    pub n_in: usize,
    /// Outputs to create (trailing unnamed unsupported ones dropped).
    pub n_out: usize,
}

/// Builds the IR op of a default-domain node.
pub(crate) fn build(
    node: &NodeProto,
    opset: i64,
    label: &str,
    model_dir: Option<&Path>,
) -> R<Built> {
    let Some(e) = TABLE.iter().find(|e| e.op_type == node.op_type) else {
        return unsupported(format!("op type '{}' is not supported", node.op_type));
    };
    if opset < e.since {
        return unsupported(format!(
            "{} is defined from opset {}, but the model imports opset {opset}",
            e.op_type, e.since
        ));
    }
    let trailing = |names: &[String], keep: usize| {
        let mut n = names.len();
        while n > keep && names[n - 1].is_empty() {
            n -= 1;
        }
        n
    };
    let n_in = trailing(&node.input, 0);
    let (lo, hi) = e.ins;
    if n_in < lo || n_in > hi {
        let want = match (lo, hi) {
            (l, h) if l == h => format!("{l}"),
            (l, MANY) => format!("at least {l}"),
            (l, h) => format!("{l} to {h}"),
        };
        return invalid(format!("takes {want} inputs, got {n_in}"));
    }
    if let Some(i) = (0..lo).find(|&i| node.input[i].is_empty()) {
        return invalid(format!("required input {i} is empty"));
    }
    let n_out = trailing(&node.output, e.outs);
    if n_out == 0 {
        return invalid("has no outputs");
    }
    if n_out > e.outs {
        return unsupported(format!(
            "only {} output{} supported, but output {} ('{}') is used",
            e.outs,
            if e.outs == 1 { " is" } else { "s are" },
            n_out - 1,
            node.output[n_out - 1]
        ));
    }
    let ctx = Ctx {
        opset,
        node,
        label,
        model_dir,
        n_in,
        n_out,
    };
    let mut attrs = Attrs::new(node)?;
    let op = match e.kind {
        Kind::Unary(u) => Op::Unary(u),
        Kind::Binary(b) => Op::Binary(b),
        Kind::Variadic(v) => Op::Variadic(v),
        Kind::Reduce(r) => reduce(&mut attrs, &ctx, r)?,
        Kind::Custom(f) => f(&mut attrs, &ctx)?,
    };
    attrs.finish()?;
    Ok(Built { op, n_in, n_out })
}

/// Parses a string attribute into one of a fixed set of values.
fn choose_opt<T: Copy>(a: &mut Attrs<'_>, name: &str, options: &[(&str, T)]) -> R<Option<T>> {
    let Some(s) = a.string(name)? else {
        return Ok(None);
    };
    match options.iter().find(|(k, _)| *k == s) {
        Some(&(_, v)) => Ok(Some(v)),
        None => {
            let known: Vec<_> = options.iter().map(|(k, _)| format!("'{k}'")).collect();
            unsupported(format!(
                "attribute {name}='{s}' is not supported (expected {})",
                known.join(", ")
            ))
        }
    }
}

fn choose<T: Copy>(a: &mut Attrs<'_>, name: &str, default: T, options: &[(&str, T)]) -> R<T> {
    Ok(choose_opt(a, name, options)?.unwrap_or(default))
}

fn is_inf(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    if !a.flag("detect_negative", true)? || !a.flag("detect_positive", true)? {
        return unsupported("IsInf with detect_negative=0 or detect_positive=0 is not supported");
    }
    Ok(Op::Unary(UnaryOp::IsInf))
}

fn modulo(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    Ok(Op::Binary(if a.flag("fmod", false)? {
        BinaryOp::Fmod
    } else {
        BinaryOp::Mod
    }))
}

fn cast(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    let to = required(a.int("to")?, "to")?;
    // `saturate` only affects float8 targets, which varc does not have.
    a.ignore("saturate");
    let code = i32::try_from(to)
        .map_err(|_| Issue::Invalid(format!("attribute 'to' = {to} is not a data type")))?;
    match dtype_from_onnx(code) {
        Some(to) => Ok(Op::Cast { to }),
        None => unsupported(format!(
            "Cast to {} is not supported",
            onnx_type_label(code)
        )),
    }
}

fn softmax(a: &mut Attrs<'_>, c: &Ctx<'_>, log: bool) -> R<Op> {
    // Before opset 13 the input is coerced to 2-D at `axis` (default 1).
    let coerce_2d = c.opset < 13;
    let axis = a.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(Op::Softmax {
        axis,
        log,
        coerce_2d,
    })
}

fn reduce(a: &mut Attrs<'_>, c: &Ctx<'_>, kind: ReduceKind) -> R<Op> {
    // Axes became an input at opset 13 for ReduceSum, 18 for the others.
    let input_axes_since = if kind == ReduceKind::Sum { 13 } else { 18 };
    let keepdims = a.flag("keepdims", true)?;
    if c.opset >= input_axes_since {
        let noop_with_empty_axes = a.flag("noop_with_empty_axes", false)?;
        return Ok(Op::Reduce {
            kind,
            axes: None,
            keepdims,
            noop_with_empty_axes,
        });
    }
    if c.n_in > 1 {
        return invalid(format!(
            "takes its axes as an attribute before opset {input_axes_since} (the model imports {}), not as input 1",
            c.opset
        ));
    }
    Ok(Op::Reduce {
        kind,
        axes: a.ints("axes")?,
        keepdims,
        noop_with_empty_axes: false,
    })
}

fn arg_reduce(a: &mut Attrs<'_>, max: bool) -> R<Op> {
    Ok(Op::ArgReduce {
        max,
        axis: a.int_or("axis", 0)?,
        keepdims: a.flag("keepdims", true)?,
        select_last_index: a.flag("select_last_index", false)?,
    })
}

fn layer_norm(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    Ok(Op::LayerNorm {
        axis: a.int_or("axis", -1)?,
        epsilon: a.float_or("epsilon", 1e-5)?,
        stash_type: a.int_or("stash_type", 1)?,
    })
}

fn rms_norm(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    Ok(Op::RmsNorm {
        axis: a.int_or("axis", -1)?,
        epsilon: a.float_or("epsilon", 1e-5)?,
        stash_type: a.int_or("stash_type", 1)?,
    })
}

fn group_norm(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    let num_groups = required(a.usize("num_groups")?, "num_groups")?;
    if num_groups == 0 {
        return invalid("attribute 'num_groups' must be positive");
    }
    Ok(Op::GroupNorm {
        num_groups,
        epsilon: a.float_or("epsilon", 1e-5)?,
        stash_type: a.int_or("stash_type", 1)?,
        // Opset 18 scales per group; opset 21 per channel.
        per_group_affine: c.opset < 21,
    })
}

fn gelu(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    let approximate = choose(
        a,
        "approximate",
        GeluApprox::None,
        &[("none", GeluApprox::None), ("tanh", GeluApprox::Tanh)],
    )?;
    Ok(Op::Gelu { approximate })
}

fn gemm(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    Ok(Op::Gemm {
        alpha: a.float_or("alpha", 1.0)?,
        beta: a.float_or("beta", 1.0)?,
        trans_a: a.flag("transA", false)?,
        trans_b: a.flag("transB", false)?,
    })
}

fn attention(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    let mut heads = |name: &str| -> R<Option<usize>> {
        match a.usize(name)? {
            Some(0) => invalid(format!("attribute '{name}' must be positive")),
            h => Ok(h),
        }
    };
    let q_num_heads = heads("q_num_heads")?;
    let kv_num_heads = heads("kv_num_heads")?;
    let qk_matmul_output_mode = a.int_or("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&qk_matmul_output_mode) {
        return invalid(format!(
            "attribute 'qk_matmul_output_mode' must be 0 to 3, got {qk_matmul_output_mode}"
        ));
    }
    Ok(Op::Attention(AttentionAttrs {
        is_causal: a.flag("is_causal", false)?,
        q_num_heads,
        kv_num_heads,
        scale: a.float("scale")?,
        softcap: a.float_or("softcap", 0.0)?,
        qk_matmul_output_mode,
        softmax_precision: a.int_or("softmax_precision", 0)?,
    }))
}

/// Conv/pool geometry, with the list lengths checked against each other.
fn window(a: &mut Attrs<'_>, kernel_required: bool) -> R<Window> {
    let kernel_shape = a.usizes("kernel_shape")?;
    if kernel_required && kernel_shape.is_none() {
        return invalid("required attribute 'kernel_shape' is missing");
    }
    let pads = a.usizes("pads")?.unwrap_or_default();
    let strides = a.usizes("strides")?.unwrap_or_default();
    let dilations = a.usizes("dilations")?.unwrap_or_default();
    let pads_modes = [
        ("NOTSET", AutoPad::NotSet),
        ("SAME_UPPER", AutoPad::SameUpper),
        ("SAME_LOWER", AutoPad::SameLower),
        ("VALID", AutoPad::Valid),
    ];
    let auto_pad = choose_opt(a, "auto_pad", &pads_modes)?;
    if !pads.len().is_multiple_of(2) {
        return invalid(format!(
            "attribute 'pads' needs an even length, got {pads:?}"
        ));
    }
    let rank = kernel_shape
        .as_ref()
        .map(Vec::len)
        .or((!strides.is_empty()).then_some(strides.len()))
        .or((!dilations.is_empty()).then_some(dilations.len()))
        .unwrap_or(pads.len() / 2);
    let check = |name: &str, len: usize, want: usize| -> R<()> {
        if len != 0 && len != want {
            return invalid(format!(
                "attribute '{name}' has {len} values but the window has {rank} spatial dims"
            ));
        }
        Ok(())
    };
    check("strides", strides.len(), rank)?;
    check("dilations", dilations.len(), rank)?;
    check("pads", pads.len(), 2 * rank)?;
    for (name, v) in [
        ("kernel_shape", kernel_shape.as_deref().unwrap_or(&[])),
        ("strides", &strides),
        ("dilations", &dilations),
    ] {
        if v.contains(&0) {
            return invalid(format!("attribute '{name}' must be positive, got {v:?}"));
        }
    }
    Ok(Window {
        kernel_shape,
        pads,
        strides,
        dilations,
        auto_pad,
    })
}

fn conv(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    let window = window(a, false)?;
    let group = a.usize("group")?.unwrap_or(1);
    if group == 0 {
        return invalid("attribute 'group' must be positive");
    }
    Ok(Op::Conv { window, group })
}

fn average_pool(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    Ok(Op::AveragePool {
        window: window(a, true)?,
        ceil_mode: a.flag("ceil_mode", false)?,
        count_include_pad: a.flag("count_include_pad", false)?,
    })
}

fn max_pool(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    // storage_order only shapes the Indices output, which is not supported.
    a.flag("storage_order", false)?;
    Ok(Op::MaxPool {
        window: window(a, true)?,
        ceil_mode: a.flag("ceil_mode", false)?,
    })
}

fn resize(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    let modes = [
        ("nearest", ResizeMode::Nearest),
        ("linear", ResizeMode::Linear),
        ("cubic", ResizeMode::Cubic),
    ];
    let mode = choose(a, "mode", ResizeMode::Nearest, &modes)?;
    if c.opset < 11 {
        // Resize-10: (X, scales), asymmetric coordinates, nearest rounds down.
        if c.n_in != 2 {
            return invalid(format!(
                "Resize-10 takes 2 inputs (X, scales), got {}",
                c.n_in
            ));
        }
        return Ok(Op::Resize(ResizeAttrs {
            mode,
            coord: CoordMode::Asymmetric,
            nearest_mode: NearestMode::Floor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::Stretch,
            scales_input_only: true,
        }));
    }
    let coords = [
        ("half_pixel", CoordMode::HalfPixel),
        ("half_pixel_symmetric", CoordMode::HalfPixelSymmetric),
        ("pytorch_half_pixel", CoordMode::PytorchHalfPixel),
        ("align_corners", CoordMode::AlignCorners),
        ("asymmetric", CoordMode::Asymmetric),
        ("tf_half_pixel_for_nn", CoordMode::TfHalfPixelForNn),
        ("tf_crop_and_resize", CoordMode::TfCropAndResize),
    ];
    let nearest = [
        ("round_prefer_floor", NearestMode::RoundPreferFloor),
        ("round_prefer_ceil", NearestMode::RoundPreferCeil),
        ("floor", NearestMode::Floor),
        ("ceil", NearestMode::Ceil),
    ];
    let policies = [
        ("stretch", AspectPolicy::Stretch),
        ("not_larger", AspectPolicy::NotLarger),
        ("not_smaller", AspectPolicy::NotSmaller),
    ];
    Ok(Op::Resize(ResizeAttrs {
        mode,
        coord: choose(
            a,
            "coordinate_transformation_mode",
            CoordMode::HalfPixel,
            &coords,
        )?,
        nearest_mode: choose(a, "nearest_mode", NearestMode::RoundPreferFloor, &nearest)?,
        cubic_coeff_a: a.float_or("cubic_coeff_a", -0.75)?,
        exclude_outside: a.flag("exclude_outside", false)?,
        extrapolation_value: a.float_or("extrapolation_value", 0.0)?,
        antialias: a.flag("antialias", false)?,
        axes: a.ints("axes")?,
        keep_aspect_ratio_policy: choose(
            a,
            "keep_aspect_ratio_policy",
            AspectPolicy::Stretch,
            &policies,
        )?,
        scales_input_only: false,
    }))
}

fn split(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    let axis = a.int_or("axis", 0)?;
    let n = c.n_out;
    let split = if c.opset < 13 {
        if c.n_in > 1 {
            return invalid(format!(
                "takes 'split' as an attribute before opset 13 (the model imports {})",
                c.opset
            ));
        }
        a.ints("split")?
    } else {
        None
    };
    if c.opset >= 18
        && let Some(k) = a.usize("num_outputs")?
        && k != n
    {
        return invalid(format!(
            "attribute 'num_outputs' is {k} but the node has {n} outputs"
        ));
    }
    if let Some(s) = &split {
        if s.len() != n {
            return invalid(format!(
                "attribute 'split' has {} sizes but the node has {n} outputs",
                s.len()
            ));
        }
        if s.iter().any(|&x| x < 0) {
            return invalid(format!("attribute 'split' has negative sizes: {s:?}"));
        }
    }
    Ok(Op::Split {
        axis,
        split,
        num_outputs: n,
    })
}

fn squeeze(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    if c.opset >= 13 {
        return Ok(Op::Squeeze { axes: None });
    }
    if c.n_in > 1 {
        return invalid(format!(
            "takes 'axes' as an attribute before opset 13 (the model imports {})",
            c.opset
        ));
    }
    Ok(Op::Squeeze {
        axes: a.ints("axes")?,
    })
}

fn unsqueeze(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    if c.opset >= 13 {
        if c.n_in < 2 {
            return invalid("needs the axes input (input 1) from opset 13");
        }
        return Ok(Op::Unsqueeze { axes: None });
    }
    if c.n_in > 1 {
        return invalid(format!(
            "takes 'axes' as an attribute before opset 13 (the model imports {})",
            c.opset
        ));
    }
    Ok(Op::Unsqueeze {
        axes: Some(required(a.ints("axes")?, "axes")?),
    })
}

fn pad(a: &mut Attrs<'_>, _: &Ctx<'_>) -> R<Op> {
    let modes = [
        ("constant", PadMode::Constant),
        ("reflect", PadMode::Reflect),
        ("edge", PadMode::Edge),
        ("wrap", PadMode::Wrap),
    ];
    Ok(Op::Pad {
        mode: choose(a, "mode", PadMode::Constant, &modes)?,
    })
}

fn constant_of_shape(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    let value = match a.tensor("value")? {
        // The spec's default: a float32 zero.
        None => Tensor::new(vec![1], TensorData::F32(vec![0.0])).map_err(Issue::Invalid)?,
        Some(t) => convert(t, &format!("{}.value", c.label), c.model_dir).map_err(Issue::Error)?,
    };
    if value.numel() != 1 {
        return invalid(format!(
            "attribute 'value' must hold one element, got shape {:?}",
            value.shape()
        ));
    }
    Ok(Op::ConstantOfShape { value })
}

/// Constant: exactly one of value / value_float(s) / value_int(s).
fn constant(a: &mut Attrs<'_>, c: &Ctx<'_>) -> R<Op> {
    let present: Vec<&str> = a.names().collect();
    for unsupported_kind in ["value_string", "value_strings", "sparse_value"] {
        if present.contains(&unsupported_kind) {
            a.ignore(unsupported_kind);
            let what = if unsupported_kind == "sparse_value" {
                "sparse"
            } else {
                "string"
            };
            return unsupported(format!(
                "{what} constants ('{unsupported_kind}') are not supported"
            ));
        }
    }
    let kinds = [
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
    ];
    let given: Vec<&str> = kinds.into_iter().filter(|k| present.contains(k)).collect();
    if given.len() != 1 {
        return invalid(format!(
            "needs exactly one of 'value', 'value_float(s)', 'value_int(s)', got {}",
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(", ")
            }
        ));
    }
    let label = c.node.output.first().map_or(c.label, String::as_str);
    let t = match given[0] {
        "value" => {
            let t = required(a.tensor("value")?, "value")?;
            return convert(t, label, c.model_dir)
                .map(Op::Const)
                .map_err(Issue::Error);
        }
        "value_float" => Tensor::new(
            vec![],
            TensorData::F32(vec![required(a.float("value_float")?, "value_float")?]),
        ),
        "value_floats" => {
            let v = required(a.floats("value_floats")?, "value_floats")?;
            Tensor::new(vec![v.len()], TensorData::F32(v))
        }
        "value_int" => Tensor::new(
            vec![],
            TensorData::I64(vec![required(a.int("value_int")?, "value_int")?]),
        ),
        _ => {
            let v = required(a.ints("value_ints")?, "value_ints")?;
            Tensor::new(vec![v.len()], TensorData::I64(v))
        }
    };
    t.map(Op::Const).map_err(Issue::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttributeProto;
    use crate::proto::attribute_proto::AttributeType;

    fn node(op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            attribute,
            ..NodeProto::default()
        }
    }

    #[test]
    fn resize_10_takes_scales_only() {
        let mode = AttributeProto {
            name: "mode".into(),
            r#type: AttributeType::String as i32,
            s: Some(b"linear".to_vec()),
            ..AttributeProto::default()
        };
        let b = build(
            &node("Resize", &["x", "scales"], vec![mode.clone()]),
            10,
            "r",
            None,
        )
        .unwrap();
        let Op::Resize(r) = b.op else { panic!() };
        assert!(r.scales_input_only);
        assert_eq!(
            (r.mode, r.coord),
            (ResizeMode::Linear, CoordMode::Asymmetric)
        );
        assert!(matches!(
            build(&node("Resize", &["x", "", "s"], vec![]), 10, "r", None),
            Err(Issue::Invalid(_))
        ));
        let late = AttributeProto {
            name: "nearest_mode".into(),
            s: Some(b"floor".to_vec()),
            ..mode
        };
        let Err(Issue::Unsupported(why)) =
            build(&node("Resize", &["x", "s"], vec![late]), 10, "r", None)
        else {
            panic!()
        };
        assert!(why.contains("unknown attribute 'nearest_mode'"), "{why}");
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut names: Vec<_> = supported_op_types().collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
