//! The typed op set. Attributes are parsed once, at import, into the fields
//! here; an op's *inputs* (including ONNX's tensor-valued "attribute inputs"
//! such as Reshape's shape or Resize's sizes) stay graph edges.
//!
//! Input order and optional inputs follow the ONNX operator of the same name.

use crate::dtype::DType;
use crate::tensor::Tensor;

/// Element-wise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Erf,
    Tanh,
    Sigmoid,
    Cos,
    Sin,
    Tan,
    Atan,
    Relu,
    Floor,
    Ceil,
    Round,
    Sign,
    Softplus,
    Not,
    IsNaN,
    IsInf,
    /// SiLU, `x · sigmoid(x)`. Internal: no ONNX op maps here; the
    /// `fuse-silu` pass makes it from the exporters' decompositions.
    Silu,
}

/// Element-wise functions of two broadcast operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// ONNX Mod with `fmod = 0` (integer, sign of divisor).
    Mod,
    /// ONNX Mod with `fmod = 1` (C fmod, sign of dividend).
    Fmod,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    /// PRelu(x, slope).
    PRelu,
}

impl BinaryOp {
    /// Comparisons and logic produce bool whatever their operand type.
    pub fn yields_bool(self) -> bool {
        use BinaryOp::*;
        matches!(
            self,
            Equal | Less | LessOrEqual | Greater | GreaterOrEqual | And | Or | Xor
        )
    }
}

/// Element-wise folds over any number (≥ 1) of broadcast operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VariadicOp {
    Min,
    Max,
    Sum,
    Mean,
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    LogSumExp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    None,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// ONNX Resize `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Resize attributes (opsets 10–19 normalised to one form).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    pub nearest_mode: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    /// Axes that roi/scales/sizes refer to (opset 18+); `None` = all axes.
    pub axes: Option<Vec<i64>>,
    pub keep_aspect_ratio_policy: AspectPolicy,
    /// Opset 10 Resize takes (X, scales) only; later ones (X, roi, scales, sizes).
    pub scales_input_only: bool,
}

/// Convolution / pooling window geometry (spatial dims only).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Window {
    /// `None`: taken from the weight's shape (Conv only).
    pub kernel_shape: Option<Vec<usize>>,
    /// ONNX order: begins of every spatial axis, then ends. Empty = zeros.
    pub pads: Vec<usize>,
    /// Empty = ones.
    pub strides: Vec<usize>,
    /// Empty = ones.
    pub dilations: Vec<usize>,
    pub auto_pad: Option<AutoPad>,
}

/// Opset-23 Attention attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAttrs {
    pub is_causal: bool,
    /// Head counts, required when Q/K/V are 3-D.
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    /// `None`: 1/sqrt(head_size).
    pub scale: Option<f32>,
    /// 0 = no softcap.
    pub softcap: f32,
    /// Which intermediate the optional 4th output returns (0..=3).
    pub qk_matmul_output_mode: i64,
    /// Requested softmax precision as an ONNX dtype code (0 = input's).
    pub softmax_precision: i64,
}

/// A typed graph operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; its type lives on the node's output value.
    Input,
    /// An initializer or a Constant node.
    Const(Tensor),
    Identity,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Variadic(VariadicOp),
    /// Clip(x, min?, max?) (opset 11+ input form; attribute form normalised to inputs).
    Clip,
    /// Where(cond, x, y)
    Where,
    Cast {
        to: DType,
    },
    /// CastLike(x, like)
    CastLike,
    /// Softmax / LogSoftmax along one axis (opset 13+), or over the flattened
    /// trailing dims from `axis` (opset < 13: `coerce_2d`).
    Softmax {
        axis: i64,
        log: bool,
        coerce_2d: bool,
    },
    /// Reduce(x, axes?) — axes from the attribute (older opsets) or input 1.
    Reduce {
        kind: ReduceKind,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// ArgMax / ArgMin.
    ArgReduce {
        max: bool,
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// LayerNormalization(x, scale, bias?). Scale and bias may broadcast to
    /// x's full shape (a superset of ONNX, which wants the normalised
    /// shape): `fuse-adaln` puts per-batch adaLN modulation there.
    LayerNorm {
        axis: i64,
        epsilon: f32,
        stash_type: i64,
    },
    /// RMSNormalization(x, scale, bias?) (opset 23). `bias` is varc's
    /// extension (the `fuse-adaln` pass absorbs a following `+ shift` into
    /// it); ONNX's op has none. Scale and bias broadcast to x's full shape,
    /// as LayerNormalization's do here, so adaLN modulation fits in them.
    RmsNorm {
        axis: i64,
        epsilon: f32,
        stash_type: i64,
    },
    /// InstanceNormalization(x, scale, bias)
    InstanceNorm {
        epsilon: f32,
    },
    /// GroupNormalization(x, scale, bias). Opset 18 takes scale/bias per
    /// group (`per_group_affine`), opset 21 per channel.
    GroupNorm {
        num_groups: usize,
        epsilon: f32,
        stash_type: i64,
        per_group_affine: bool,
    },
    Gelu {
        approximate: GeluApprox,
    },
    /// LeakyRelu / Elu / HardSigmoid style activations with their constants.
    LeakyRelu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    MatMul,
    /// Gemm(A, B, C?)
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// Attention(Q, K, V, attn_mask?, past_key?, past_value?) (opset 23)
    Attention(AttentionAttrs),
    /// Conv(X, W, B?)
    Conv {
        window: Window,
        group: usize,
    },
    AveragePool {
        window: Window,
        ceil_mode: bool,
        count_include_pad: bool,
    },
    MaxPool {
        window: Window,
        ceil_mode: bool,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    /// Resize(X, roi?, scales?, sizes?)
    Resize(ResizeAttrs),
    /// Resample(X): a constant linear map per axis (`None`: the axis is
    /// untouched), applied separably. Internal: the importer never makes it;
    /// the `fold-resample` pass turns constant Resizes, AveragePool(k = s)
    /// and the exporters' area-downsampling subgraphs into it. Float only;
    /// the maps have no `fill` rows.
    Resample {
        maps: Vec<Option<crate::resample::AxisMap>>,
    },
    /// Reshape(data, shape)
    Reshape {
        allowzero: bool,
    },
    Transpose {
        /// `None` = reverse the axes.
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// Split(x, split?) — sizes from the attribute (opset < 13), input 1, or
    /// `num_outputs`/the node's output count (equal parts, last smaller).
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        num_outputs: usize,
    },
    /// Slice(data, starts, ends, axes?, steps?)
    Slice,
    /// Squeeze(data, axes?) — axes from the attribute (opset < 13) or input 1.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// Unsqueeze(data, axes?) — axes from the attribute (opset < 13) or input 1.
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Flatten {
        axis: i64,
    },
    /// Expand(input, shape)
    Expand,
    /// Tile(input, repeats)
    Tile,
    /// Pad(data, pads, constant_value?, axes?)
    Pad {
        mode: PadMode,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    /// ConstantOfShape(shape); `value` is a one-element tensor.
    ConstantOfShape {
        value: Tensor,
    },
    /// Range(start, limit, delta)
    Range,
    /// Gather(data, indices)
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    GatherND {
        batch_dims: usize,
    },
    /// Trilu(input, k?)
    Trilu {
        upper: bool,
    },
    /// CumSum(x, axis)
    CumSum {
        exclusive: bool,
        reverse: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl Op {
    /// The op's kind name as ONNX spells it (the name of the first ONNX op
    /// that maps here), for printing, histograms and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Const(_) => "Constant",
            Op::Identity => "Identity",
            Op::Unary(u) => unary_name(*u),
            Op::Binary(b) => binary_name(*b),
            Op::Variadic(v) => match v {
                VariadicOp::Min => "Min",
                VariadicOp::Max => "Max",
                VariadicOp::Sum => "Sum",
                VariadicOp::Mean => "Mean",
            },
            Op::Clip => "Clip",
            Op::Where => "Where",
            Op::Cast { .. } => "Cast",
            Op::CastLike => "CastLike",
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Sum => "ReduceSum",
                ReduceKind::Mean => "ReduceMean",
                ReduceKind::Max => "ReduceMax",
                ReduceKind::Min => "ReduceMin",
                ReduceKind::Prod => "ReduceProd",
                ReduceKind::L1 => "ReduceL1",
                ReduceKind::L2 => "ReduceL2",
                ReduceKind::SumSquare => "ReduceSumSquare",
                ReduceKind::LogSum => "ReduceLogSum",
                ReduceKind::LogSumExp => "ReduceLogSumExp",
            },
            Op::ArgReduce { max: true, .. } => "ArgMax",
            Op::ArgReduce { max: false, .. } => "ArgMin",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::RmsNorm { .. } => "RMSNormalization",
            Op::InstanceNorm { .. } => "InstanceNormalization",
            Op::GroupNorm { .. } => "GroupNormalization",
            Op::Gelu { .. } => "Gelu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Attention(_) => "Attention",
            Op::Conv { .. } => "Conv",
            Op::AveragePool { .. } => "AveragePool",
            Op::MaxPool { .. } => "MaxPool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Resize(_) => "Resize",
            Op::Resample { .. } => "Resample",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Flatten { .. } => "Flatten",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Pad { .. } => "Pad",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Range => "Range",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::GatherND { .. } => "GatherND",
            Op::Trilu { .. } => "Trilu",
            Op::CumSum { .. } => "CumSum",
        }
    }
}

pub fn unary_name(u: UnaryOp) -> &'static str {
    use UnaryOp::*;
    match u {
        Neg => "Neg",
        Abs => "Abs",
        Sqrt => "Sqrt",
        Reciprocal => "Reciprocal",
        Exp => "Exp",
        Log => "Log",
        Erf => "Erf",
        Tanh => "Tanh",
        Sigmoid => "Sigmoid",
        Cos => "Cos",
        Sin => "Sin",
        Tan => "Tan",
        Atan => "Atan",
        Relu => "Relu",
        Floor => "Floor",
        Ceil => "Ceil",
        Round => "Round",
        Sign => "Sign",
        Softplus => "Softplus",
        Not => "Not",
        IsNaN => "IsNaN",
        IsInf => "IsInf",
        Silu => "Silu",
    }
}

pub fn binary_name(b: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match b {
        Add => "Add",
        Sub => "Sub",
        Mul => "Mul",
        Div => "Div",
        Pow => "Pow",
        Mod | Fmod => "Mod",
        Equal => "Equal",
        Less => "Less",
        LessOrEqual => "LessOrEqual",
        Greater => "Greater",
        GreaterOrEqual => "GreaterOrEqual",
        And => "And",
        Or => "Or",
        Xor => "Xor",
        PRelu => "PRelu",
    }
}
