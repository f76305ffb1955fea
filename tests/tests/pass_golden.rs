//! Golden text tests for the optimisation passes: small hand-built graphs
//! run through one pass (with the reference constant folder), printed with
//! `varc_ir::print::to_text` and compared with `tests/passes/<case>.txt`.
//! Each file starts with what the pass fired and left alone. The
//! reference interpreter must also give the same outputs before and after.
//!
//! `VARC_BLESS=1 cargo test -p varc-tests --test pass_golden` rewrites the
//! expected files from the current results (then review the diff).

use std::collections::HashMap;
use varc_ir::graph::TypeInfo;
use varc_ir::op::{
    AspectPolicy, BinaryOp, CoordMode, NearestMode, ReduceKind, ResizeAttrs, ResizeMode, UnaryOp,
    Window,
};
use varc_ir::passes::{
    CommuteResampleProjection, FoldResample, FuseAdaLn, FuseAttention, FuseRmsNorm, FuseSilu,
    MergeProjections, Pass, PipelineOptions, run_pipeline,
};
use varc_ir::{DType, Graph, Op, Shape, Tensor, Value, ValueRef};
use varc_runtime::random::{SplitMix64, random_tensor};

/// A tiny graph builder: named inputs, constants and one-output nodes.
struct B {
    g: Graph,
    inputs: Vec<(String, Vec<usize>)>,
    n: usize,
}

impl B {
    fn new(name: &str) -> B {
        B {
            g: Graph::new(name),
            inputs: vec![],
            n: 0,
        }
    }
    fn input(&mut self, name: &str, shape: &[usize]) -> ValueRef {
        let ty = TypeInfo {
            dtype: DType::F32,
            shape: Shape::known(shape),
        };
        self.inputs.push((name.into(), shape.to_vec()));
        ValueRef {
            node: self.g.add_input(name, ty),
            slot: 0,
        }
    }
    fn konst(&mut self, t: Tensor) -> ValueRef {
        self.n += 1;
        self.g.add_const(format!("c{}", self.n), t)
    }
    fn ints(&mut self, shape: &[usize], v: Vec<i64>) -> ValueRef {
        self.konst(Tensor::from_i64(shape.to_vec(), v).unwrap())
    }
    fn floats(&mut self, shape: &[usize], v: Vec<f32>) -> ValueRef {
        self.konst(Tensor::from_f32(shape.to_vec(), v).unwrap())
    }
    fn bools(&mut self, shape: &[usize], v: Vec<bool>) -> ValueRef {
        self.konst(Tensor::new(shape.to_vec(), varc_ir::TensorData::Bool(v)).unwrap())
    }
    fn op(&mut self, name: &str, op: Op, ins: &[Option<ValueRef>]) -> ValueRef {
        let id = self
            .g
            .add_node(name, op, ins.to_vec(), vec![Value::named(name)])
            .unwrap();
        ValueRef { node: id, slot: 0 }
    }
    fn all(&mut self, name: &str, op: Op, ins: &[ValueRef]) -> ValueRef {
        let ins: Vec<_> = ins.iter().copied().map(Some).collect();
        self.op(name, op, &ins)
    }
}

fn resize_attrs(mode: ResizeMode) -> ResizeAttrs {
    ResizeAttrs {
        mode,
        coord: CoordMode::HalfPixel,
        nearest_mode: NearestMode::Floor,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes: None,
        keep_aspect_ratio_policy: AspectPolicy::Stretch,
        scales_input_only: false,
    }
}

fn avg_pool(k: usize) -> Op {
    Op::AveragePool {
        window: Window {
            kernel_shape: Some(vec![k, k]),
            pads: vec![0; 4],
            strides: vec![k, k],
            dilations: vec![],
            auto_pad: None,
        },
        ceil_mode: false,
        count_include_pad: true,
    }
}

fn perm(p: &[usize]) -> Op {
    Op::Transpose {
        perm: Some(p.to_vec()),
    }
}

fn reduce(kind: ReduceKind, keepdims: bool) -> Op {
    Op::Reduce {
        kind,
        axes: None,
        keepdims,
        noop_with_empty_axes: false,
    }
}

/// The exporter's NHWC index table for windows `(start, len)` per output of
/// an n×n map, each window padded to `l` taps by clamping.
fn window_index(win: &[(usize, usize)], l: usize, n: usize) -> Vec<i64> {
    let mut v = vec![];
    for &(sa, _) in win {
        for k in 0..l {
            for &(sb, _) in win {
                for j in 0..l {
                    v.push((sa + k).min(n - 1) as i64);
                    v.push((sb + j).min(n - 1) as i64);
                }
            }
        }
    }
    v
}

/// Resize (linear, 2×2 → 4×4 per channel) becomes one Resample.
fn resize_linear() -> B {
    let mut b = B::new("resize_linear");
    let x = b.input("x", &[1, 2, 2, 2]);
    let sizes = b.ints(&[4], vec![1, 2, 4, 4]);
    let y = b.op(
        "up",
        Op::Resize(resize_attrs(ResizeMode::Linear)),
        &[Some(x), None, None, Some(sizes)],
    );
    b.g.outputs = vec![y];
    b
}

/// AveragePool k = s = 2 becomes an area Resample; k = 1 disappears.
fn avg_pool_k_eq_s() -> B {
    let mut b = B::new("avg_pool_k_eq_s");
    let x = b.input("x", &[1, 1, 4, 4]);
    let p = b.all("pool", avg_pool(2), &[x]);
    let q = b.all("pool1", avg_pool(1), &[p]);
    b.g.outputs = vec![q];
    b
}

/// FlowAR's area(bicubic(2 → 8) → 4): two maps compose into one 2 → 4.
fn bicubic_then_area() -> B {
    let mut b = B::new("bicubic_then_area");
    let x = b.input("x", &[1, 3, 2, 2]);
    let sizes = b.ints(&[4], vec![1, 3, 8, 8]);
    let up = b.op(
        "up",
        Op::Resize(resize_attrs(ResizeMode::Cubic)),
        &[Some(x), None, None, Some(sizes)],
    );
    let y = b.all("area", avg_pool(2), &[up]);
    b.g.outputs = vec![y];
    b
}

/// The dynamo exporter's uniform-window area (6 → 4, windows of 2):
/// Transpose → GatherND(const) → Transpose → ReduceMean.
fn gathernd_area() -> B {
    let mut b = B::new("gathernd_area");
    let x = b.input("x", &[1, 2, 6, 6]);
    let win = [(0, 2), (1, 2), (3, 2), (4, 2)];
    let t = b.all("nhwc", perm(&[2, 3, 0, 1]), &[x]);
    let idx = b.ints(&[4, 2, 4, 2, 2], window_index(&win, 2, 6));
    let gnd = b.all("gather", Op::GatherND { batch_dims: 0 }, &[t, idx]);
    let back = b.all("index", perm(&[4, 5, 0, 1, 2, 3]), &[gnd]);
    let axes = b.ints(&[2], vec![-3, -1]);
    let y = b.all("mean", reduce(ReduceKind::Mean, false), &[back, axes]);
    b.g.outputs = vec![y];
    b
}

/// The variable-window form (5 → 3, windows [0,2) [1,4) [3,5)): padded
/// windows, Where masks, a Gather/Add chain over one axis, a ReduceSum over
/// the other, then a Div by the window areas.
fn where_area() -> B {
    let mut b = B::new("where_area");
    let x = b.input("x", &[1, 2, 5, 5]);
    let win = [(0usize, 2usize), (1, 3), (3, 2)];
    let t = b.all("nhwc", perm(&[2, 3, 0, 1]), &[x]);
    let idx = b.ints(&[3, 3, 3, 3, 2], window_index(&win, 3, 5));
    let gnd = b.all("gather", Op::GatherND { batch_dims: 0 }, &[t, idx]);
    let back = b.all("index", perm(&[4, 5, 0, 1, 2, 3]), &[gnd]);
    let pad = |(_, l): (usize, usize)| (0..3).map(move |k| k >= l);
    let mh: Vec<bool> = win.iter().flat_map(|&w| pad(w)).collect();
    let mask_h = b.bools(&[3, 3, 1, 1], mh.clone());
    let mask_w = b.bools(&[3, 3], mh);
    let zero = b.floats(&[], vec![0.0]);
    let m1 = b.all("masked", Op::Where, &[mask_h, zero, back]);
    let m2 = b.all("masked_1", Op::Where, &[mask_w, zero, m1]);
    let mut acc = None;
    for k in 0..3 {
        let i = b.ints(&[], vec![k]);
        let s = b.all(&format!("select_{k}"), Op::Gather { axis: 3 }, &[m2, i]);
        acc = Some(match acc {
            None => s,
            Some(a) => b.all(
                &format!("add_{k}"),
                Op::Binary(varc_ir::op::BinaryOp::Add),
                &[a, s],
            ),
        });
    }
    let axes = b.ints(&[1], vec![-1]);
    let sum = b.all("sum", reduce(ReduceKind::Sum, false), &[acc.unwrap(), axes]);
    let area: Vec<f32> = win
        .iter()
        .flat_map(|a| win.iter().map(move |c| (a.1 * c.1) as f32))
        .collect();
    let area = b.floats(&[3, 3], area);
    let y = b.all("div", Op::Binary(varc_ir::op::BinaryOp::Div), &[sum, area]);
    b.g.outputs = vec![y];
    b
}

/// A gather that swaps the spatial axes before averaging is linear but not
/// a per-axis map: left alone.
fn not_separable() -> B {
    let mut b = B::new("not_separable");
    let x = b.input("x", &[1, 1, 4, 4]);
    let t = b.all("nhwc", perm(&[2, 3, 0, 1]), &[x]);
    let mut v = vec![];
    for a in 0..2 {
        for k in 0..2 {
            for c in 0..2 {
                for l in 0..2 {
                    // (h, w) = (2c + l, 2a + k): the output's rows read columns.
                    v.push((2 * c + l) as i64);
                    v.push((2 * a + k) as i64);
                }
            }
        }
    }
    let idx = b.ints(&[2, 2, 2, 2, 2], v);
    let gnd = b.all("gather", Op::GatherND { batch_dims: 0 }, &[t, idx]);
    let back = b.all("index", perm(&[4, 5, 0, 1, 2, 3]), &[gnd]);
    let axes = b.ints(&[2], vec![-3, -1]);
    let y = b.all("mean", reduce(ReduceKind::Mean, false), &[back, axes]);
    b.g.outputs = vec![y];
    b
}

/// A 64-channel 2×2 map up-sampled to 16×16, then a per-token 64 → 2
/// projection: worth running before the resample.
fn commute_narrow_projection() -> B {
    let mut b = B::new("commute_narrow_projection");
    let x = b.input("x", &[1, 64, 2, 2]);
    let sizes = b.ints(&[4], vec![1, 64, 16, 16]);
    let up = b.op(
        "up",
        Op::Resize(resize_attrs(ResizeMode::Linear)),
        &[Some(x), None, None, Some(sizes)],
    );
    let s = b.ints(&[3], vec![1, 64, 256]);
    let r = b.all("flat", Op::Reshape { allowzero: false }, &[up, s]);
    let t = b.all("tokens", perm(&[0, 2, 1]), &[r]);
    let w: Vec<f32> = (0..128).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
    let w = b.floats(&[64, 2], w);
    let y = b.all("proj", Op::MatMul, &[t, w]);
    b.g.outputs = vec![y];
    b
}

/// The same with a 64 → 64 projection: the resample work it would add
/// outweighs the projection FLOPs saved, so the cost model declines.
fn commute_square_projection() -> B {
    let mut b = B::new("commute_square_projection");
    let x = b.input("x", &[1, 64, 13, 13]);
    let sizes = b.ints(&[4], vec![1, 64, 16, 16]);
    let up = b.op(
        "up",
        Op::Resize(resize_attrs(ResizeMode::Cubic)),
        &[Some(x), None, None, Some(sizes)],
    );
    let s = b.ints(&[3], vec![1, 64, 256]);
    let r = b.all("flat", Op::Reshape { allowzero: false }, &[up, s]);
    let t = b.all("tokens", perm(&[0, 2, 1]), &[r]);
    let w = b.floats(&[64, 64], vec![0.01; 4096]);
    let y = b.all("proj", Op::MatMul, &[t, w]);
    b.g.outputs = vec![y];
    b
}

/// VQGAN's AttnBlock: w = softmax(qᵀk·c) over [B, HW, HW], h = v·wᵀ.
fn attention_transposed_v() -> B {
    let mut b = B::new("attention_transposed_v");
    let qc = b.input("q", &[2, 4, 6]);
    let kc = b.input("k", &[2, 4, 6]);
    let vc = b.input("v", &[2, 3, 6]);
    let q = b.all("q_t", perm(&[0, 2, 1]), &[qc]);
    let s = b.all("scores", Op::MatMul, &[q, kc]);
    let c = b.floats(&[], vec![0.5]);
    let s = b.all("scaled", Op::Binary(BinaryOp::Mul), &[s, c]);
    let p = b.all(
        "probs",
        Op::Softmax {
            axis: 2,
            log: false,
            coerce_2d: false,
        },
        &[s],
    );
    let pt = b.all("probs_t", perm(&[0, 2, 1]), &[p]);
    let y = b.all("h", Op::MatMul, &[vc, pt]);
    b.g.outputs = vec![y];
    b
}

/// The exporters' SiLU: `x · Sigmoid(x)` (here with the Sigmoid second,
/// as torch.onnx emits it) feeding a projection.
fn silu_sigmoid() -> B {
    let mut b = B::new("silu_sigmoid");
    let x = b.input("x", &[2, 8]);
    let s = b.all("sigmoid", Op::Unary(UnaryOp::Sigmoid), &[x]);
    let y = b.all("silu", Op::Binary(BinaryOp::Mul), &[x, s]);
    b.g.outputs = vec![y];
    b
}

/// A hand-written SiLU, `x / (1 + exp(−x))`, next to a Sigmoid that is
/// used twice (left alone: it is computed anyway).
fn silu_exp() -> B {
    let mut b = B::new("silu_exp");
    let x = b.input("x", &[3, 4]);
    let n = b.all("neg", Op::Unary(UnaryOp::Neg), &[x]);
    let e = b.all("exp", Op::Unary(UnaryOp::Exp), &[n]);
    let one = b.floats(&[], vec![1.0]);
    let d = b.all("denom", Op::Binary(BinaryOp::Add), &[one, e]);
    let y = b.all("silu", Op::Binary(BinaryOp::Div), &[x, d]);
    let s = b.all("gate", Op::Unary(UnaryOp::Sigmoid), &[y]);
    let z = b.all("gated", Op::Binary(BinaryOp::Mul), &[y, s]);
    b.g.outputs = vec![z, s];
    b
}

fn layer_norm() -> Op {
    Op::LayerNorm {
        axis: -1,
        epsilon: 1e-6,
        stash_type: 1,
    }
}

/// VAR's AdaLNSelfAttn at opset 17: `ln_wo_grad(x)` (explicit unit scale
/// and zero bias) · (1 + scale) + shift, with scale and shift chunks of a
/// per-batch adaLN projection.
fn adaln_layer_norm() -> B {
    let mut b = B::new("adaln_layer_norm");
    let x = b.input("x", &[2, 6, 4]);
    let cond = b.input("cond", &[2, 1, 8]);
    let split = Op::Split {
        axis: -1,
        split: Some(vec![4, 4]),
        num_outputs: 2,
    };
    let id =
        b.g.add_node(
            "chunk",
            split,
            vec![Some(cond)],
            vec![Value::named("scale"), Value::named("shift")],
        )
        .unwrap();
    let (scale, shift) = (
        ValueRef { node: id, slot: 0 },
        ValueRef { node: id, slot: 1 },
    );
    let ones = b.floats(&[4], vec![1.0; 4]);
    let zeros = b.floats(&[4], vec![0.0; 4]);
    let n = b.all("ln", layer_norm(), &[x, ones, zeros]);
    let one = b.floats(&[], vec![1.0]);
    let m = b.all("one_plus", Op::Binary(BinaryOp::Add), &[scale, one]);
    let y = b.all("modulated", Op::Binary(BinaryOp::Mul), &[n, m]);
    let y = b.all("shifted", Op::Binary(BinaryOp::Add), &[y, shift]);
    b.g.outputs = vec![y];
    b
}

/// FlowAR's adaLN over a decomposed RMSNorm (per-token modulation, as in
/// its head): fuse-rmsnorm takes `· (1 + scale)` as the norm's scale, then
/// fuse-adaln takes `+ shift` as its bias. A second norm whose result is
/// also used elsewhere keeps its Add.
fn adaln_rms_norm() -> B {
    let mut b = B::new("adaln_rms_norm");
    let x = b.input("x", &[2, 3, 4]);
    let scale = b.input("scale", &[2, 3, 4]);
    let shift = b.input("shift", &[2, 3, 4]);
    let two = b.floats(&[], vec![2.0]);
    let sq = b.all("pow", Op::Binary(BinaryOp::Pow), &[x, two]);
    let axes = b.ints(&[1], vec![-1]);
    let mean = b.all("mean", reduce(ReduceKind::Mean, true), &[sq, axes]);
    let eps = b.floats(&[], vec![1e-6]);
    let v = b.all("var_eps", Op::Binary(BinaryOp::Add), &[mean, eps]);
    let r = b.all("sqrt", Op::Unary(UnaryOp::Sqrt), &[v]);
    let r = b.all("rsqrt", Op::Unary(UnaryOp::Reciprocal), &[r]);
    let n = b.all("normed", Op::Binary(BinaryOp::Mul), &[x, r]);
    let one = b.floats(&[], vec![1.0]);
    let m = b.all("one_plus", Op::Binary(BinaryOp::Add), &[scale, one]);
    let y = b.all("modulated", Op::Binary(BinaryOp::Mul), &[n, m]);
    let y = b.all("shifted", Op::Binary(BinaryOp::Add), &[y, shift]);
    let rms = Op::RmsNorm {
        axis: -1,
        epsilon: 1e-6,
        stash_type: 1,
    };
    let g = b.floats(&[4], vec![1.0; 4]);
    let n2 = b.all("rms2", rms, &[y, g]);
    let z = b.all("shifted2", Op::Binary(BinaryOp::Add), &[n2, shift]);
    b.g.outputs = vec![z, n2];
    b
}

fn ramp(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7) % 11) as f32 * 0.05 - seed)
        .collect()
}

/// minvar's attention input: separate Q, K and V Linears of one token
/// sequence (MatMul then bias Add, the bias first as the opset-17 exporter
/// writes it), plus an output projection of another value.
fn merge_qkv() -> B {
    let mut b = B::new("merge_qkv");
    let x = b.input("x", &[1, 5, 4]);
    let mut outs = vec![];
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let w = b.floats(&[4, 3], ramp(12, i as f32 * 0.1));
        let mm = b.all(&format!("{name}_mm"), Op::MatMul, &[x, w]);
        let bias = b.floats(&[3], vec![0.1 * i as f32; 3]);
        outs.push(b.all(name, Op::Binary(BinaryOp::Add), &[bias, mm]));
    }
    let w = b.floats(&[3, 4], ramp(12, 0.3));
    let o = b.all("o_proj", Op::MatMul, &[outs[2], w]);
    outs[2] = o;
    b.g.outputs = outs;
    b
}

/// Two per-block adaLN Linears of one conditioning vector, as Gemm with
/// transB and a bias (VAR's and FlowAR's ada_lin at every opset), and a third
/// whose weight is a graph input (not merged).
fn merge_gemm() -> B {
    let mut b = B::new("merge_gemm");
    let c = b.input("c", &[2, 4]);
    let dyn_w = b.input("w_in", &[6, 4]);
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let mut outs = vec![];
    for i in 0..2 {
        let w = b.floats(&[6, 4], ramp(24, i as f32 * 0.2));
        let bias = b.floats(&[6], ramp(6, 0.5 * i as f32));
        outs.push(b.all(&format!("ada_lin{i}"), gemm.clone(), &[c, w, bias]));
    }
    outs.push(b.all("dynamic", gemm, &[c, dyn_w]));
    b.g.outputs = outs;
    b
}

/// A golden file name and the graph it is made from.
type Case = (&'static str, fn() -> B);

fn run_case(name: &str, mut b: B, passes: Vec<Box<dyn Pass>>) {
    let mut rng = SplitMix64::new(11);
    let feeds: HashMap<String, Tensor> = b
        .inputs
        .iter()
        .map(|(n, s)| (n.clone(), random_tensor(&mut rng, DType::F32, s, 0)))
        .collect();
    let before = varc_backend_ref::run(&b.g, &feeds).unwrap_or_else(|e| panic!("{name}: {e}"));
    let opts = PipelineOptions {
        verify: true,
        ..PipelineOptions::default()
    };
    let (rep, _) = run_pipeline(&mut b.g, &passes, &opts, &varc_backend_ref::RefFolder)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut text = String::new();
    for run in &rep.passes {
        let r = &run.report;
        text.push_str(&format!("# pass {}\n", r.pass));
        for s in &r.fired {
            text.push_str(&format!("#   + {}: {}\n", s.node, s.what));
        }
        for s in &r.skipped {
            text.push_str(&format!("#   - {}: {}\n", s.node, s.what));
        }
    }
    text.push_str(&format!(
        "# FLOPs {} → {}\n",
        rep.flops_before, rep.flops_after
    ));
    text.push_str(&varc_ir::print::to_text(&b.g));
    let after = varc_backend_ref::run(&b.g, &feeds).unwrap_or_else(|e| panic!("{name}: {e}"));
    for ((o, want), (_, got)) in before.iter().zip(&after) {
        let a = varc_runtime::compare(got, want, 1e-5, 1e-6).unwrap();
        assert!(a.passed(), "{name}: output {o} changed: {a:?}");
    }
    let path = varc_tests::root()
        .join("tests/passes")
        .join(format!("{name}.txt"));
    if std::env::var_os("VARC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with VARC_BLESS=1 to create it)\n{text}",
            path.display()
        )
    });
    assert_eq!(
        want,
        text,
        "{name}: the IR after the pass differs from {} (VARC_BLESS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn fold_resample_goldens() {
    let cases: [Case; 6] = [
        ("fold_resample_resize_linear", resize_linear),
        ("fold_resample_avg_pool", avg_pool_k_eq_s),
        ("fold_resample_compose", bicubic_then_area),
        ("fold_resample_gathernd_area", gathernd_area),
        ("fold_resample_where_area", where_area),
        ("fold_resample_not_separable", not_separable),
    ];
    for (name, build) in cases {
        run_case(name, build(), vec![Box::new(FoldResample)]);
    }
}

#[test]
fn fuse_attention_goldens() {
    run_case(
        "fuse_attention_transposed_v",
        attention_transposed_v(),
        vec![Box::new(FuseAttention)],
    );
}

#[test]
fn commute_goldens() {
    let cases: [Case; 2] = [
        ("commute_narrow_projection", commute_narrow_projection),
        ("commute_square_projection", commute_square_projection),
    ];
    for (name, build) in cases {
        run_case(
            name,
            build(),
            vec![Box::new(FoldResample), Box::new(CommuteResampleProjection)],
        );
    }
}

#[test]
fn fuse_silu_goldens() {
    let cases: [Case; 2] = [
        ("fuse_silu_sigmoid", silu_sigmoid),
        ("fuse_silu_exp", silu_exp),
    ];
    for (name, build) in cases {
        run_case(name, build(), vec![Box::new(FuseSilu)]);
    }
}

#[test]
fn fuse_adaln_goldens() {
    run_case(
        "fuse_adaln_layer_norm",
        adaln_layer_norm(),
        vec![Box::new(FuseAdaLn)],
    );
    run_case(
        "fuse_adaln_rms_norm",
        adaln_rms_norm(),
        vec![Box::new(FuseRmsNorm), Box::new(FuseAdaLn)],
    );
}

#[test]
fn merge_projections_goldens() {
    let cases: [Case; 2] = [
        ("merge_projections_qkv", merge_qkv),
        ("merge_projections_gemm", merge_gemm),
    ];
    for (name, build) in cases {
        run_case(name, build(), vec![Box::new(MergeProjections)]);
    }
}
