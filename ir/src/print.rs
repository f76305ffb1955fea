//! The text form of a graph and its Graphviz DOT export. Both are
//! deterministic: nodes in topological order, attributes in a fixed order.
//!
//! ```text
//! graph tiny(%x: f32[1,680,128]) {
//!   %w: f32[128,128] = Const <16384 elems>
//!   %y: f32[1,680,128] = MatMul(%x, %w)  # proj
//!   %z: f32[1,680,128] = LayerNormalization{axis=-1, eps=1e-6}(%y, %s)
//!   return %z
//! }
//! ```

use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{
    AspectPolicy, AutoPad, BinaryOp, CoordMode, GeluApprox, NearestMode, Op, PadMode, ResizeMode,
    Window,
};
use crate::tensor::{Tensor, TensorData};
use petgraph::Direction;
use petgraph::visit::EdgeRef;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write;

const CONST_STYLE: &str = ", style=filled, fillcolor=lightgrey, fontsize=8, height=0.2";

/// Constants with at most this many elements print their values.
const SMALL_CONST: usize = 8;

/// The text form: a header with the graph inputs, one line per node in
/// topological order, and a `return` line with the outputs.
pub fn to_text(graph: &Graph) -> String {
    let mut s = String::new();
    let (order, cyclic) = order(graph);
    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .filter(|&&id| graph.get(id).is_some())
        .map(|&id| typed(graph, ValueRef { node: id, slot: 0 }))
        .collect();
    let _ = writeln!(s, "graph {}({}) {{", ident(&graph.name), inputs.join(", "));
    if cyclic {
        s.push_str("  # the graph has a cycle: nodes are in insertion order\n");
    }
    for id in order {
        let node = graph.node(id);
        if let Op::Input = node.op {
            continue;
        }
        let outs: Vec<String> = (0..node.outputs.len())
            .map(|slot| typed(graph, ValueRef { node: id, slot }))
            .collect();
        let rhs = match &node.op {
            Op::Const(t) => format!("Const {}", const_text(t)),
            op => {
                let args: Vec<String> = node
                    .inputs
                    .iter()
                    .map(|v| v.map_or("_".into(), |v| name(graph, v)))
                    .collect();
                format!("{}({})", op_text(op), args.join(", "))
            }
        };
        let _ = write!(s, "  {} = {rhs}", outs.join(", "));
        if !node.name.is_empty() && node.outputs.first().is_none_or(|o| o.name != node.name) {
            let _ = write!(s, "  # {}", node.name.replace('\n', " "));
        }
        s.push('\n');
    }
    let outs: Vec<String> = graph.outputs.iter().map(|&v| name(graph, v)).collect();
    let _ = writeln!(s, "  return {}\n}}", outs.join(", "));
    s
}

/// Graphviz DOT: one vertex per node (op kind and name; constants as small
/// grey boxes), one edge per operand labelled with the value's type.
pub fn to_dot(graph: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", quote(&graph.name));
    s.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    s.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let (order, _) = order(graph);
    for &id in &order {
        let node = graph.node(id);
        let (label, style) = match &node.op {
            Op::Input => (["Input".into(), escape(&node.name)], ", shape=ellipse"),
            Op::Const(t) => ([escape(&node.name), escape(&t.shape_text())], CONST_STYLE),
            op => ([op.kind().into(), escape(&node.name)], ""),
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\"{style}];",
            id.index(),
            label.join("\\n")
        );
    }
    for &id in &order {
        for v in graph.node(id).inputs.iter().flatten() {
            let label = graph
                .get(v.node)
                .and_then(|n| n.outputs.get(v.slot))
                .and_then(|o| o.ty.as_ref());
            let label = label.map_or("?".into(), |t| t.to_string());
            let _ = writeln!(
                s,
                "  n{} -> n{} [label={}];",
                v.node.index(),
                id.index(),
                quote(&label)
            );
        }
    }
    for (i, v) in graph.outputs.iter().enumerate() {
        let label = graph
            .get(v.node)
            .and_then(|n| n.outputs.get(v.slot))
            .map_or("?", |o| o.name.as_str());
        let _ = writeln!(
            s,
            "  out{i} [label={}, shape=ellipse, style=dashed];",
            quote(label)
        );
        let _ = writeln!(s, "  n{} -> out{i};", v.node.index());
    }
    s.push_str("}\n");
    s
}

/// Nodes in topological order, ties broken by insertion order (so the text
/// follows the model's own node order); insertion order and `true` for a
/// cyclic graph.
fn order(graph: &Graph) -> (Vec<NodeId>, bool) {
    let g = graph.petgraph();
    let mut indeg: HashMap<NodeId, usize> = g
        .node_indices()
        .map(|n| (n, g.edges_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BinaryHeap<Reverse<NodeId>> = indeg
        .iter()
        .filter(|&(_, &d)| d == 0)
        .map(|(&n, _)| Reverse(n))
        .collect();
    let mut out = Vec::with_capacity(indeg.len());
    while let Some(Reverse(n)) = ready.pop() {
        out.push(n);
        for e in g.edges_directed(n, Direction::Outgoing) {
            let d = indeg.get_mut(&e.target()).expect("edge target exists");
            *d -= 1;
            if *d == 0 {
                ready.push(Reverse(e.target()));
            }
        }
    }
    if out.len() == g.node_count() {
        (out, false)
    } else {
        (graph.node_ids().collect(), true)
    }
}

/// `%name: type`.
fn typed(graph: &Graph, v: ValueRef) -> String {
    let ty = graph
        .get(v.node)
        .and_then(|n| n.outputs.get(v.slot))
        .and_then(|o| o.ty.as_ref());
    format!(
        "{}: {}",
        name(graph, v),
        ty.map_or("?".into(), |t| t.to_string())
    )
}

/// `%name`, quoted when the name is not a plain identifier; an unnamed value
/// is called after its node index and slot.
fn name(graph: &Graph, v: ValueRef) -> String {
    match graph.get(v.node).and_then(|n| n.outputs.get(v.slot)) {
        Some(o) if !o.name.is_empty() => format!("%{}", ident(&o.name)),
        _ => format!("%_n{}_{}", v.node.index(), v.slot),
    }
}

fn ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c));
    if plain { s.to_string() } else { quote(s) }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

trait ShapeText {
    fn shape_text(&self) -> String;
}

impl ShapeText for Tensor {
    fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape().iter().map(usize::to_string).collect();
        format!("{}[{}]", self.dtype(), dims.join(","))
    }
}

/// A float printed short: plain for ordinary magnitudes, scientific otherwise.
fn num(x: f64) -> String {
    if x != 0.0 && x.is_finite() && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn f32num(x: f32) -> String {
    // Through the shortest f32 text, so 1e-6f32 prints as 1e-6.
    num(x.to_string().parse().unwrap_or(x as f64))
}

/// `<N elems>` for big constants, the values for small ones.
fn const_text(t: &Tensor) -> String {
    if t.numel() > SMALL_CONST {
        return format!("<{} elems>", t.numel());
    }
    let vals: Vec<String> = match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f32num(x)).collect(),
        TensorData::F16(v) => v.iter().map(|x| f32num(x.to_f32())).collect(),
        TensorData::BF16(v) => v.iter().map(|x| f32num(x.to_f32())).collect(),
        TensorData::F64(v) => v.iter().map(|&x| num(x)).collect(),
        TensorData::Bool(v) => v.iter().map(bool::to_string).collect(),
        d => d.to_i64_vec().iter().map(i64::to_string).collect(),
    };
    if t.rank() == 0 {
        vals.join("")
    } else {
        format!("[{}]", vals.join(", "))
    }
}

/// Attribute list builder: `{a=1, b=[2,3]}`.
#[derive(Default)]
struct Attrs(Vec<String>);

impl Attrs {
    fn kv(mut self, k: &str, v: impl std::fmt::Display) -> Self {
        self.0.push(format!("{k}={v}"));
        self
    }

    fn when(self, cond: bool, k: &str, v: impl std::fmt::Display) -> Self {
        if cond { self.kv(k, v) } else { self }
    }

    fn opt(self, k: &str, v: Option<impl std::fmt::Display>) -> Self {
        match v {
            Some(v) => self.kv(k, v),
            None => self,
        }
    }

    fn list<T: std::fmt::Display>(self, k: &str, v: Option<&[T]>) -> Self {
        match v {
            Some(v) => {
                let items: Vec<String> = v.iter().map(T::to_string).collect();
                self.kv(k, format!("[{}]", items.join(",")))
            }
            None => self,
        }
    }

    fn nonempty<T: std::fmt::Display>(self, k: &str, v: &[T]) -> Self {
        self.list(k, (!v.is_empty()).then_some(v))
    }

    fn window(self, w: &Window) -> Self {
        let auto = match w.auto_pad {
            Some(AutoPad::SameUpper) => Some("SAME_UPPER"),
            Some(AutoPad::SameLower) => Some("SAME_LOWER"),
            Some(AutoPad::Valid) => Some("VALID"),
            Some(AutoPad::NotSet) | None => None,
        };
        self.list("kernel_shape", w.kernel_shape.as_deref())
            .nonempty("pads", &w.pads)
            .nonempty("strides", &w.strides)
            .nonempty("dilations", &w.dilations)
            .when(auto.is_some(), "auto_pad", auto.unwrap_or_default())
    }
}

/// An op with its attributes, e.g. `LayerNormalization{axis=-1, eps=1e-6}`.
pub fn op_text(op: &Op) -> String {
    let a = Attrs::default();
    let a = match op {
        Op::Binary(BinaryOp::Fmod) => a.kv("fmod", 1),
        Op::Cast { to } => a.kv("to", to),
        Op::Softmax {
            axis, coerce_2d, ..
        } => a.kv("axis", axis).when(*coerce_2d, "coerce_2d", 1),
        Op::Reduce {
            axes,
            keepdims,
            noop_with_empty_axes,
            ..
        } => a
            .list("axes", axes.as_deref())
            .when(!keepdims, "keepdims", 0)
            .when(*noop_with_empty_axes, "noop_with_empty_axes", 1),
        Op::ArgReduce {
            axis,
            keepdims,
            select_last_index,
            ..
        } => a.kv("axis", axis).when(!keepdims, "keepdims", 0).when(
            *select_last_index,
            "select_last_index",
            1,
        ),
        Op::LayerNorm {
            axis,
            epsilon,
            stash_type,
        }
        | Op::RmsNorm {
            axis,
            epsilon,
            stash_type,
        } => a.kv("axis", axis).kv("eps", f32num(*epsilon)).when(
            *stash_type != 1,
            "stash_type",
            stash_type,
        ),
        Op::InstanceNorm { epsilon } => a.kv("eps", f32num(*epsilon)),
        Op::GroupNorm {
            num_groups,
            epsilon,
            stash_type,
            per_group_affine,
        } => a
            .kv("num_groups", num_groups)
            .kv("eps", f32num(*epsilon))
            .when(*stash_type != 1, "stash_type", stash_type)
            .when(*per_group_affine, "per_group_affine", 1),
        Op::Gelu { approximate } => a.when(*approximate == GeluApprox::Tanh, "approximate", "tanh"),
        Op::LeakyRelu { alpha } => a.kv("alpha", f32num(*alpha)),
        Op::HardSigmoid { alpha, beta } => a.kv("alpha", f32num(*alpha)).kv("beta", f32num(*beta)),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => a
            .when(*alpha != 1.0, "alpha", f32num(*alpha))
            .when(*beta != 1.0, "beta", f32num(*beta))
            .when(*trans_a, "transA", 1)
            .when(*trans_b, "transB", 1),
        Op::Attention(t) => a
            .when(t.is_causal, "is_causal", 1)
            .opt("q_num_heads", t.q_num_heads)
            .opt("kv_num_heads", t.kv_num_heads)
            .opt("scale", t.scale.map(f32num))
            .when(t.softcap != 0.0, "softcap", f32num(t.softcap))
            .when(
                t.qk_matmul_output_mode != 0,
                "qk_matmul_output_mode",
                t.qk_matmul_output_mode,
            )
            .when(
                t.softmax_precision != 0,
                "softmax_precision",
                t.softmax_precision,
            ),
        Op::Conv { window, group } => a.window(window).when(*group != 1, "group", group),
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => a.window(window).when(*ceil_mode, "ceil_mode", 1).when(
            *count_include_pad,
            "count_include_pad",
            1,
        ),
        Op::MaxPool { window, ceil_mode } => a.window(window).when(*ceil_mode, "ceil_mode", 1),
        Op::Resize(r) => a
            .kv("mode", resize_mode(r.mode))
            .kv("coord", coord_mode(r.coord))
            .when(
                r.mode == ResizeMode::Nearest,
                "nearest_mode",
                nearest_mode(r.nearest_mode),
            )
            .when(
                r.mode == ResizeMode::Cubic,
                "cubic_coeff_a",
                f32num(r.cubic_coeff_a),
            )
            .when(r.exclude_outside, "exclude_outside", 1)
            .when(
                r.coord == CoordMode::TfCropAndResize,
                "extrapolation_value",
                f32num(r.extrapolation_value),
            )
            .when(r.antialias, "antialias", 1)
            .list("axes", r.axes.as_deref())
            .when(
                r.keep_aspect_ratio_policy != AspectPolicy::Stretch,
                "keep_aspect_ratio_policy",
                aspect(r.keep_aspect_ratio_policy),
            ),
        Op::Resample { maps } => maps.iter().enumerate().fold(a, |a, (d, m)| match m {
            Some(m) => a.kv(&format!("axis{d}"), axis_map_text(m)),
            None => a,
        }),
        Op::Reshape { allowzero } => a.when(*allowzero, "allowzero", 1),
        Op::Transpose { perm } => a.list("perm", perm.as_deref()),
        Op::Concat { axis }
        | Op::Flatten { axis }
        | Op::Gather { axis }
        | Op::GatherElements { axis } => a.kv("axis", axis),
        Op::Split {
            axis,
            split,
            num_outputs,
        } => a.kv("axis", axis).list("split", split.as_deref()).when(
            *num_outputs > 0,
            "num_outputs",
            num_outputs,
        ),
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => a.list("axes", axes.as_deref()),
        Op::Pad { mode } => a.when(
            *mode != PadMode::Constant,
            "mode",
            format!("{mode:?}").to_lowercase(),
        ),
        Op::Shape { start, end } => a.when(*start != 0, "start", start).opt("end", *end),
        Op::ConstantOfShape { value } => a.kv("value", const_text(value)),
        Op::GatherND { batch_dims } => a.when(*batch_dims != 0, "batch_dims", batch_dims),
        Op::Trilu { upper } => a.when(!upper, "upper", 0),
        Op::CumSum { exclusive, reverse } => a
            .when(*exclusive, "exclusive", 1)
            .when(*reverse, "reverse", 1),
        _ => a,
    };
    if a.0.is_empty() {
        op.kind().to_string()
    } else {
        format!("{}{{{}}}", op.kind(), a.0.join(", "))
    }
}

/// Maps with at most this many taps print them all.
const SMALL_MAP: usize = 16;

/// `in→out` and the taps (`[i:w i:w; …]`, one group per output) when the
/// map is small, `<T taps>` (the most of any output) otherwise.
fn axis_map_text(m: &crate::resample::AxisMap) -> String {
    let n: usize = m.taps.iter().map(Vec::len).sum();
    if n > SMALL_MAP {
        return format!("{}→{} <{} taps>", m.in_len, m.out_len, m.max_taps());
    }
    let rows: Vec<String> = m
        .taps
        .iter()
        .map(|t| {
            let t: Vec<String> = t
                .iter()
                .map(|&(i, w)| format!("{i}:{}", f32num(w as f32)))
                .collect();
            t.join(" ")
        })
        .collect();
    format!("{}→{} [{}]", m.in_len, m.out_len, rows.join("; "))
}

fn resize_mode(m: ResizeMode) -> &'static str {
    match m {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
        ResizeMode::Cubic => "cubic",
    }
}

fn coord_mode(c: CoordMode) -> &'static str {
    match c {
        CoordMode::HalfPixel => "half_pixel",
        CoordMode::HalfPixelSymmetric => "half_pixel_symmetric",
        CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
        CoordMode::AlignCorners => "align_corners",
        CoordMode::Asymmetric => "asymmetric",
        CoordMode::TfHalfPixelForNn => "tf_half_pixel_for_nn",
        CoordMode::TfCropAndResize => "tf_crop_and_resize",
    }
}

fn nearest_mode(n: NearestMode) -> &'static str {
    match n {
        NearestMode::RoundPreferFloor => "round_prefer_floor",
        NearestMode::RoundPreferCeil => "round_prefer_ceil",
        NearestMode::Floor => "floor",
        NearestMode::Ceil => "ceil",
    }
}

fn aspect(p: AspectPolicy) -> &'static str {
    match p {
        AspectPolicy::Stretch => "stretch",
        AspectPolicy::NotLarger => "not_larger",
        AspectPolicy::NotSmaller => "not_smaller",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::graph::{TypeInfo, Value};
    use crate::shape::{Dim, Shape};

    fn sample() -> Graph {
        let mut g = Graph::new("tiny");
        let x = ValueRef {
            node: g.add_input(
                "x",
                TypeInfo {
                    dtype: DType::F32,
                    shape: Shape(vec![Dim::Known(1), Dim::Sym("S".into()), Dim::Known(128)]),
                },
            ),
            slot: 0,
        };
        let w = g.add_const("w", Tensor::zeros(DType::F32, vec![128, 128]).unwrap());
        let s = g.add_const("s", Tensor::from_f32(vec![2], vec![1.0, 0.5]).unwrap());
        let mm = g
            .add_node(
                "proj",
                Op::MatMul,
                vec![Some(x), Some(w)],
                vec![Value::named("y")],
            )
            .unwrap();
        let y = ValueRef { node: mm, slot: 0 };
        let ln = Op::LayerNorm {
            axis: -1,
            epsilon: 1e-6,
            stash_type: 1,
        };
        let n = g
            .add_node(
                "z",
                ln,
                vec![Some(y), Some(s), None],
                vec![Value::named("weird \"name\"")],
            )
            .unwrap();
        g.outputs.push(ValueRef { node: n, slot: 0 });
        g
    }

    #[test]
    fn text_form() {
        let g = sample();
        let t = to_text(&g);
        let want = "graph tiny(%x: f32[1,S,128]) {\n  \
                    %w: f32[128,128] = Const <16384 elems>\n  \
                    %s: f32[2] = Const [1, 0.5]\n  \
                    %y: ? = MatMul(%x, %w)  # proj\n  \
                    %\"weird \\\"name\\\"\": ? = LayerNormalization{axis=-1, eps=1e-6}(%y, %s, _)  # z\n  \
                    return %\"weird \\\"name\\\"\"\n}\n";
        assert_eq!(t, want);
        assert_eq!(to_text(&g), t, "deterministic");
    }

    #[test]
    fn attributes_print_compactly() {
        let w = Window {
            kernel_shape: Some(vec![3, 3]),
            pads: vec![1, 1, 1, 1],
            strides: vec![2, 2],
            dilations: vec![],
            auto_pad: None,
        };
        assert_eq!(
            op_text(&Op::Conv {
                window: w,
                group: 4
            }),
            "Conv{kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2], group=4}"
        );
        assert_eq!(op_text(&Op::Binary(BinaryOp::Add)), "Add");
        assert_eq!(
            op_text(&Op::Transpose {
                perm: Some(vec![0, 2, 1])
            }),
            "Transpose{perm=[0,2,1]}"
        );
        assert_eq!(
            op_text(&Op::ConstantOfShape {
                value: Tensor::from_i64(vec![1], vec![7]).unwrap()
            }),
            "ConstantOfShape{value=[7]}"
        );
    }

    #[test]
    fn dot_export() {
        let d = to_dot(&sample());
        assert!(d.starts_with("digraph \"tiny\" {\n"));
        assert!(d.contains("[label=\"Input\\nx\", shape=ellipse]"), "{d}");
        assert!(
            d.contains("[label=\"w\\nf32[128,128]\", style=filled"),
            "{d}"
        );
        assert!(d.contains("[label=\"MatMul\\nproj\"]"), "{d}");
        assert!(d.contains("-> n3 [label=\"f32[1,S,128]\"]"), "{d}");
        assert!(d.contains("out0 [label=\"weird \\\"name\\\"\""), "{d}");
        assert!(d.trim_end().ends_with('}'));
    }
}
