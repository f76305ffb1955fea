use super::*;
use crate::dtype::DType;
use crate::graph::Value;
use crate::op::*;

/// Parses `f32[1,B,3]`.
pub(crate) fn ty(s: &str) -> TypeInfo {
    let (d, rest) = s.split_once('[').expect("dtype[dims]");
    let dims = rest.trim_end_matches(']');
    let dims = dims
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse()
                .map_or_else(|_| Dim::Sym(x.to_string()), Dim::Known)
        })
        .collect();
    TypeInfo {
        dtype: DType::from_name(d).expect("dtype"),
        shape: Shape(dims),
    }
}

#[derive(Default)]
pub(crate) struct B {
    pub g: Graph,
    n: usize,
}

impl B {
    pub fn input(&mut self, name: &str, t: &str) -> ValueRef {
        ValueRef {
            node: self.g.add_input(name, ty(t)),
            slot: 0,
        }
    }

    pub fn ints(&mut self, v: &[i64]) -> ValueRef {
        self.n += 1;
        self.g.add_const(
            format!("c{}", self.n),
            Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap(),
        )
    }

    pub fn scalar(&mut self, v: i64) -> ValueRef {
        self.n += 1;
        self.g.add_const(
            format!("c{}", self.n),
            Tensor::from_i64(vec![], vec![v]).unwrap(),
        )
    }

    pub fn floats(&mut self, v: &[f32]) -> ValueRef {
        self.n += 1;
        self.g.add_const(
            format!("c{}", self.n),
            Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap(),
        )
    }

    pub fn node(&mut self, op: Op, ins: &[Option<ValueRef>], n_out: usize) -> Vec<ValueRef> {
        self.n += 1;
        let name = format!("n{}", self.n);
        let outs = (0..n_out)
            .map(|i| Value::named(format!("{name}_{i}")))
            .collect();
        let id = self.g.add_node(name, op, ins.to_vec(), outs).unwrap();
        (0..n_out).map(|slot| ValueRef { node: id, slot }).collect()
    }

    pub fn op(&mut self, op: Op, ins: &[ValueRef]) -> ValueRef {
        let ins: Vec<_> = ins.iter().copied().map(Some).collect();
        self.node(op, &ins, 1)[0]
    }
}

fn run(b: &mut B) -> Result<InferResult, IrError> {
    infer_types(&mut b.g, &BTreeMap::new(), &NoFold)
}

fn ty_of(b: &B, v: ValueRef) -> String {
    b.g.value(v)
        .ty
        .as_ref()
        .map_or("?".into(), |t| t.to_string())
}

/// Infers `op` over inputs of the given types; the output's type or the error.
fn one(op: Op, ins: &[&str]) -> String {
    let mut b = B::default();
    let vs: Vec<_> = ins
        .iter()
        .enumerate()
        .map(|(i, t)| b.input(&format!("x{i}"), t))
        .collect();
    let y = b.op(op, &vs);
    match run(&mut b) {
        Ok(_) => ty_of(&b, y),
        Err(e) => format!("error: {e}"),
    }
}

fn add() -> Op {
    Op::Binary(BinaryOp::Add)
}

#[test]
fn broadcasting_and_dtypes() {
    assert_eq!(one(add(), &["f32[2,1,3]", "f32[4,1]"]), "f32[2,4,3]");
    assert_eq!(one(add(), &["f32[B,1]", "f32[7]"]), "f32[B,7]");
    assert!(one(add(), &["f32[2,3]", "f32[4,3]"]).contains("cannot broadcast"));
    let e = one(add(), &["f32[2]", "i64[2]"]);
    assert!(
        e.contains("node 'n1' (Add): operand dtypes differ: f32 vs i64"),
        "{e}"
    );
    assert_eq!(
        one(Op::Binary(BinaryOp::Less), &["f32[2,3]", "f32[3]"]),
        "bool[2,3]"
    );
    assert_eq!(
        one(Op::Binary(BinaryOp::Pow), &["f32[2]", "i64[]"]),
        "f32[2]"
    );
    assert_eq!(
        one(Op::Where, &["bool[2,1]", "f32[3]", "f32[1]"]),
        "f32[2,3]"
    );
    assert!(one(Op::Where, &["f32[2]", "f32[2]", "f32[2]"]).contains("condition"));
    assert_eq!(
        one(
            Op::Variadic(VariadicOp::Max),
            &["f32[3,1]", "f32[4]", "f32[1]"]
        ),
        "f32[3,4]"
    );
    assert_eq!(one(Op::Cast { to: DType::F16 }, &["f32[2]"]), "f16[2]");
    assert_eq!(one(Op::CastLike, &["f32[2]", "i32[]"]), "i32[2]");
    assert_eq!(one(Op::Unary(UnaryOp::IsNaN), &["f32[2]"]), "bool[2]");
}

#[test]
fn matmul_rules() {
    assert_eq!(one(Op::MatMul, &["f32[2,3,4]", "f32[4,5]"]), "f32[2,3,5]");
    assert_eq!(one(Op::MatMul, &["f32[4]", "f32[4,5]"]), "f32[5]");
    assert_eq!(one(Op::MatMul, &["f32[3,4]", "f32[4]"]), "f32[3]");
    assert_eq!(one(Op::MatMul, &["f32[4]", "f32[4]"]), "f32[]");
    assert_eq!(
        one(Op::MatMul, &["f32[2,1,3,4]", "f32[5,4,6]"]),
        "f32[2,5,3,6]"
    );
    assert_eq!(one(Op::MatMul, &["f32[B,S,K]", "f32[4,8]"]), "f32[B,S,8]");
    let e = one(Op::MatMul, &["f32[3,3]", "f32[4,5]"]);
    assert!(
        e.contains("(MatMul): inner dimensions differ: 3 vs 4"),
        "{e}"
    );
    let gemm = |trans_a, trans_b| Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a,
        trans_b,
    };
    assert_eq!(
        one(gemm(true, true), &["f32[4,3]", "f32[5,4]", "f32[5]"]),
        "f32[3,5]"
    );
    assert!(one(gemm(false, false), &["f32[4,3]", "f32[5,4]"]).contains("inner dimensions differ"));
}

fn window(
    k: Option<&[usize]>,
    pads: &[usize],
    strides: &[usize],
    dil: &[usize],
    auto: Option<AutoPad>,
) -> Window {
    Window {
        kernel_shape: k.map(<[usize]>::to_vec),
        pads: pads.to_vec(),
        strides: strides.to_vec(),
        dilations: dil.to_vec(),
        auto_pad: auto,
    }
}

#[test]
fn conv_and_pool_geometry() {
    let conv = |w, group| Op::Conv { window: w, group };
    let w = window(None, &[1, 1, 1, 1], &[2, 2], &[], None);
    assert_eq!(
        one(conv(w, 1), &["f32[1,3,32,32]", "f32[16,3,3,3]", "f32[16]"]),
        "f32[1,16,16,16]"
    );
    let w = window(None, &[], &[], &[2, 2], None);
    assert_eq!(
        one(conv(w, 1), &["f32[1,3,32,32]", "f32[8,3,3,3]"]),
        "f32[1,8,28,28]"
    );
    let w = window(None, &[], &[2, 2], &[], Some(AutoPad::SameUpper));
    assert_eq!(
        one(conv(w, 1), &["f32[1,3,33,32]", "f32[8,3,3,3]"]),
        "f32[1,8,17,16]"
    );
    let w = window(None, &[], &[], &[], Some(AutoPad::Valid));
    assert_eq!(
        one(conv(w, 2), &["f32[1,4,5,5]", "f32[6,2,3,3]"]),
        "f32[1,6,3,3]"
    );
    let w = window(None, &[], &[], &[], None);
    assert!(one(conv(w.clone(), 1), &["f32[1,4,5,5]", "f32[6,2,3,3]"]).contains("channels"));
    assert!(
        one(conv(w.clone(), 1), &["f32[1,2,2,2]", "f32[6,2,3,3]"]).contains("exceeds padded input")
    );
    // Same-size convolution keeps a symbolic extent.
    let w = window(None, &[1, 1, 1, 1], &[], &[], None);
    assert_eq!(
        one(conv(w, 1), &["f32[N,3,H,W]", "f32[8,3,3,3]"]),
        "f32[N,8,H,W]"
    );

    let max = |w, ceil_mode| Op::MaxPool {
        window: w,
        ceil_mode,
    };
    let w = window(Some(&[3]), &[], &[2], &[], None);
    assert_eq!(one(max(w.clone(), true), &["f32[1,1,6]"]), "f32[1,1,3]");
    assert_eq!(one(max(w, false), &["f32[1,1,6]"]), "f32[1,1,2]");
    // The last window would start in the right padding: dropped.
    let w = window(Some(&[2]), &[1, 1], &[2], &[], None);
    assert_eq!(one(max(w, true), &["f32[1,1,5]"]), "f32[1,1,3]");
    assert_eq!(
        one(Op::GlobalAveragePool, &["f32[2,3,7,7]"]),
        "f32[2,3,1,1]"
    );
}

#[test]
fn reshape_and_friends() {
    let mut b = B::default();
    let x = b.input("x", "f32[2,3,4]");
    let z = b.input("z", "f32[0,3]");
    let (s1, s2, s3) = (b.ints(&[0, -1]), b.ints(&[-1]), b.ints(&[3, 0]));
    let r1 = b.op(Op::Reshape { allowzero: false }, &[x, s1]);
    let r2 = b.op(Op::Reshape { allowzero: false }, &[x, s2]);
    let r3 = b.op(Op::Reshape { allowzero: true }, &[z, s3]);
    run(&mut b).unwrap();
    assert_eq!(ty_of(&b, r1), "f32[2,12]");
    assert_eq!(ty_of(&b, r2), "f32[24]");
    assert_eq!(ty_of(&b, r3), "f32[3,0]");

    // All or nothing: a failure leaves every type as it was.
    let mut b = B::default();
    let x = b.input("x", "f32[2,3,4]");
    let s1 = b.ints(&[0, -1]);
    let ok = b.op(Op::Reshape { allowzero: false }, &[x, s1]);
    let s2 = b.ints(&[0, 0, 0, 0]);
    b.op(Op::Reshape { allowzero: false }, &[x, s2]);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(e.contains("input has rank 3"), "{e}");
    assert_eq!(ty_of(&b, ok), "?");

    let mut b = B::default();
    let x = b.input("x", "f32[2,3,4]");
    let s = b.ints(&[5, -1]);
    b.op(Op::Reshape { allowzero: false }, &[x, s]);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(e.contains("(Reshape): cannot reshape"), "{e}");

    let mut b = B::default();
    let x = b.input("x", "f32[2,3,4]");
    let s = b.input("s", "i64[2]");
    b.op(Op::Reshape { allowzero: false }, &[x, s]);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(
        e.contains("shape depends on the run-time value of input 1"),
        "{e}"
    );
}

#[test]
fn reshape_through_symbolic_shape_values() {
    // Reshape(x, Concat(Shape(x)[0:1], [-1])) with x: [B,4,8] → [B,32].
    let mut b = B::default();
    let x = b.input("x", "f32[B,4,8]");
    let shp = b.op(
        Op::Shape {
            start: 0,
            end: None,
        },
        &[x],
    );
    let i0 = b.ints(&[0]);
    let first = b.op(Op::Gather { axis: 0 }, &[shp, i0]);
    let m1 = b.ints(&[-1]);
    let target = b.op(Op::Concat { axis: 0 }, &[first, m1]);
    let y = b.op(Op::Reshape { allowzero: false }, &[x, target]);
    // [-1, 8] → [B*4, 8]
    let t2 = b.ints(&[-1, 8]);
    let z = b.op(Op::Reshape { allowzero: false }, &[x, t2]);
    // Shape(x)[1] * 2 is a known constant even though x is not.
    let one_i = b.scalar(1);
    let d1 = b.op(Op::Gather { axis: 0 }, &[shp, one_i]);
    let two = b.scalar(2);
    let prod = b.op(Op::Binary(BinaryOp::Mul), &[d1, two]);
    let res = run(&mut b).unwrap();
    assert_eq!(ty_of(&b, y), "f32[B,32]");
    assert_eq!(ty_of(&b, z), "f32[B*4,8]");
    assert_eq!(res.consts[&prod].to_i64_vec(), vec![8]);
    assert!(!res.consts.contains_key(&shp));
    crate::verify::verify(&b.g).unwrap();

    // Bound, everything is constant.
    let mut b2 = B::default();
    let x = b2.input("x", "f32[B,4,8]");
    let shp = b2.op(
        Op::Shape {
            start: -2,
            end: None,
        },
        &[x],
    );
    let size = b2.op(Op::Size, &[x]);
    let bindings = BTreeMap::from([("B".to_string(), 3)]);
    let res = infer_types(&mut b2.g, &bindings, &NoFold).unwrap();
    assert_eq!(res.consts[&shp].to_i64_vec(), vec![4, 8]);
    assert_eq!(res.consts[&size].to_i64_vec(), vec![96]);
    assert_eq!(ty_of(&b2, x), "f32[3,4,8]");
}

#[test]
fn slices() {
    let slice = |data: &str, s: &[i64], e: &[i64], a: Option<&[i64]>, st: Option<&[i64]>| {
        let mut b = B::default();
        let x = b.input("x", data);
        let s = b.ints(s);
        let e = b.ints(e);
        let a = a.map(|a| b.ints(a));
        let st = st.map(|st| b.ints(st));
        let y = b.node(Op::Slice, &[Some(x), Some(s), Some(e), a, st], 1)[0];
        match run(&mut b) {
            Ok(_) => ty_of(&b, y),
            Err(e) => format!("error: {e}"),
        }
    };
    assert_eq!(slice("f32[10,4]", &[1], &[-1], None, None), "f32[8,4]");
    assert_eq!(
        slice("f32[10,4]", &[8], &[1], None, Some(&[-2])),
        "f32[4,4]"
    );
    assert_eq!(
        slice("f32[10,4]", &[i64::MAX], &[i64::MIN], None, Some(&[-1])),
        "f32[10,4]"
    );
    assert_eq!(
        slice("f32[10,4]", &[-1], &[-100], Some(&[-1]), Some(&[-3])),
        "f32[10,2]"
    );
    assert_eq!(slice("f32[10,4]", &[5], &[2], None, None), "f32[0,4]");
    assert_eq!(slice("f32[0,4]", &[5], &[2], None, Some(&[-1])), "f32[0,4]");
    assert_eq!(slice("f32[S,4]", &[0], &[i64::MAX], None, None), "f32[S,4]");
    assert!(slice("f32[10,4]", &[0], &[1], None, Some(&[0])).contains("step is 0"));
    assert!(slice("f32[10,4]", &[0, 0], &[1], None, None).contains("differ in length"));

    // A slice of a shape value is propagated.
    let mut b = B::default();
    let x = b.input("x", "f32[B,3,7]");
    let shp = b.op(
        Op::Shape {
            start: 0,
            end: None,
        },
        &[x],
    );
    let (s, e, st) = (b.ints(&[-1]), b.ints(&[-4]), b.ints(&[-2]));
    let y = b.node(Op::Slice, &[Some(shp), Some(s), Some(e), None, Some(st)], 1)[0];
    let res = run(&mut b).unwrap();
    assert_eq!(ty_of(&b, y), "i64[2]");
    assert!(!res.consts.contains_key(&y)); // [7, B]
}

fn resize_attrs(axes: Option<Vec<i64>>, policy: AspectPolicy) -> ResizeAttrs {
    ResizeAttrs {
        mode: ResizeMode::Linear,
        coord: CoordMode::HalfPixel,
        nearest_mode: NearestMode::RoundPreferFloor,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes,
        keep_aspect_ratio_policy: policy,
        scales_input_only: false,
    }
}

#[test]
fn resize_sizes_and_scales() {
    let resize = |x: &str, a: ResizeAttrs, scales: Option<&[f32]>, sizes: Option<&[i64]>| {
        let mut b = B::default();
        let x = b.input("x", x);
        let sc = scales.map(|s| b.floats(s));
        let sz = sizes.map(|s| b.ints(s));
        let y = b.node(Op::Resize(a), &[Some(x), None, sc, sz], 1)[0];
        match run(&mut b) {
            Ok(_) => ty_of(&b, y),
            Err(e) => format!("error: {e}"),
        }
    };
    let all = || resize_attrs(None, AspectPolicy::Stretch);
    assert_eq!(
        resize("f32[1,3,10,10]", all(), Some(&[1.0, 1.0, 2.0, 2.0]), None),
        "f32[1,3,20,20]"
    );
    assert_eq!(
        resize("f32[1,3,10,10]", all(), Some(&[1.0, 1.0, 0.5, 0.33]), None),
        "f32[1,3,5,3]"
    );
    assert_eq!(
        resize("f32[1,3,H,W]", all(), Some(&[1.0, 1.0, 2.0, 2.0]), None),
        "f32[1,3,H*2,W*2]"
    );
    assert_eq!(
        resize("f32[1,3,10,10]", all(), Some(&[]), Some(&[1, 3, 15, 20])),
        "f32[1,3,15,20]"
    );
    let hw = |p| resize_attrs(Some(vec![2, 3]), p);
    assert_eq!(
        resize(
            "f32[1,3,10,20]",
            hw(AspectPolicy::Stretch),
            None,
            Some(&[30, 30])
        ),
        "f32[1,3,30,30]"
    );
    assert_eq!(
        resize(
            "f32[1,3,10,20]",
            hw(AspectPolicy::NotLarger),
            None,
            Some(&[30, 30])
        ),
        "f32[1,3,15,30]"
    );
    assert_eq!(
        resize(
            "f32[1,3,10,20]",
            hw(AspectPolicy::NotSmaller),
            None,
            Some(&[30, 30])
        ),
        "f32[1,3,30,60]"
    );
    assert_eq!(
        resize(
            "f32[1,3,10,20]",
            hw(AspectPolicy::Stretch),
            Some(&[1.5, 0.25]),
            None
        ),
        "f32[1,3,15,5]"
    );
    assert!(
        resize(
            "f32[1,3,10,20]",
            hw(AspectPolicy::Stretch),
            Some(&[2.0]),
            None
        )
        .contains("1 values for 2 axes")
    );
    assert!(resize("f32[1,3,10,20]", all(), None, None).contains("needs scales or sizes"));

    let half = Some(&[1.0f32, 1.0, 0.5, 0.5][..]);
    assert_eq!(resize("f32[B,3,10,10]", all(), half, None), "f32[B,3,5,5]");
    assert_eq!(
        resize("f32[B,3,H,10]", all(), half, None),
        "f32[B,3,?n2:2,5]"
    );
    let fit = hw(AspectPolicy::NotLarger);
    assert_eq!(
        resize("f32[1,3,H,20]", fit, None, Some(&[30, 30])),
        "f32[1,3,?n2:2,?n2:3]"
    );
    // Opset 10: (X, scales).
    let mut a = all();
    a.scales_input_only = true;
    let mut b = B::default();
    let x = b.input("x", "f32[1,1,4,4]");
    let s = b.floats(&[1.0, 1.0, 3.0, 0.5]);
    let y = b.op(Op::Resize(a), &[x, s]);
    run(&mut b).unwrap();
    assert_eq!(ty_of(&b, y), "f32[1,1,12,2]");

    // Run-time scales.
    let mut b = B::default();
    let x = b.input("x", "f32[1,1,4,4]");
    let s = b.input("s", "f32[4]");
    b.node(Op::Resize(all()), &[Some(x), None, Some(s)], 1);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(
        e.contains("(Resize): shape depends on the run-time value of input 2"),
        "{e}"
    );
}

fn attn(q: Option<usize>, kv: Option<usize>) -> Op {
    Op::Attention(AttentionAttrs {
        is_causal: false,
        q_num_heads: q,
        kv_num_heads: kv,
        scale: None,
        softcap: 0.0,
        qk_matmul_output_mode: 0,
        softmax_precision: 0,
    })
}

#[test]
fn attention_layouts() {
    assert_eq!(
        one(
            attn(Some(4), Some(2)),
            &["f32[2,5,64]", "f32[2,7,32]", "f32[2,7,48]"]
        ),
        "f32[2,5,96]"
    );
    assert!(
        one(
            attn(None, None),
            &["f32[2,5,64]", "f32[2,7,32]", "f32[2,7,48]"]
        )
        .contains("q_num_heads")
    );
    assert!(
        one(
            attn(Some(3), Some(2)),
            &["f32[2,5,64]", "f32[2,7,32]", "f32[2,7,48]"]
        )
        .contains("divisible")
    );
    assert_eq!(
        one(
            attn(None, None),
            &["f32[1,8,3,16]", "f32[1,2,9,16]", "f32[1,2,9,32]"]
        ),
        "f32[1,8,3,32]"
    );
    assert!(
        one(
            attn(None, None),
            &["f32[1,8,3,16]", "f32[1,2,9,8]", "f32[1,2,9,32]"]
        )
        .contains("head sizes differ")
    );

    let mut b = B::default();
    let q = b.input("q", "f32[1,8,3,16]");
    let k = b.input("k", "f32[1,2,3,16]");
    let v = b.input("v", "f32[1,2,3,24]");
    let mask = b.input("m", "bool[3,13]");
    let pk = b.input("pk", "f32[1,2,P,16]");
    let pv = b.input("pv", "f32[1,2,P,24]");
    let outs = b.node(
        attn(None, None),
        &[Some(q), Some(k), Some(v), Some(mask), Some(pk), Some(pv)],
        4,
    );
    let bindings = BTreeMap::from([("P".to_string(), 10)]);
    infer_types(&mut b.g, &bindings, &NoFold).unwrap();
    let got: Vec<_> = outs.iter().map(|&o| ty_of(&b, o)).collect();
    assert_eq!(
        got,
        [
            "f32[1,8,3,24]",
            "f32[1,2,13,16]",
            "f32[1,2,13,24]",
            "f32[1,8,3,13]"
        ]
    );

    // Unbound past length: present length stays symbolic.
    let mut b = B::default();
    let q = b.input("q", "f32[1,3,64]");
    let k = b.input("k", "f32[1,3,32]");
    let v = b.input("v", "f32[1,3,32]");
    let pk = b.input("pk", "f32[1,2,P,16]");
    let pv = b.input("pv", "f32[1,2,P,16]");
    let outs = b.node(
        attn(Some(4), Some(2)),
        &[Some(q), Some(k), Some(v), None, Some(pk), Some(pv)],
        3,
    );
    run(&mut b).unwrap();
    assert_eq!(ty_of(&b, outs[0]), "f32[1,3,64]");
    assert_eq!(ty_of(&b, outs[1]), "f32[1,2,P+3,16]");
}

#[test]
fn symbolic_binding_flows_through() {
    let mut b = B::default();
    let x = b.input("x", "f32[B,S,8]");
    let w =
        b.g.add_const("w", Tensor::zeros(DType::F32, vec![8, 4]).unwrap());
    let y = b.op(Op::MatMul, &[x, w]);
    let bindings = BTreeMap::from([("B".to_string(), 2)]);
    infer_types(&mut b.g, &bindings, &NoFold).unwrap();
    assert_eq!(ty_of(&b, y), "f32[2,S,4]");
}

#[test]
fn shape_ops() {
    assert_eq!(
        one(
            Op::Transpose {
                perm: Some(vec![0, 2, 1])
            },
            &["f32[1,2,3]"]
        ),
        "f32[1,3,2]"
    );
    assert_eq!(
        one(Op::Transpose { perm: None }, &["f32[1,2,3]"]),
        "f32[3,2,1]"
    );
    assert!(
        one(
            Op::Transpose {
                perm: Some(vec![0, 0, 1])
            },
            &["f32[1,2,3]"]
        )
        .contains("permutation")
    );
    assert_eq!(
        one(Op::Concat { axis: -1 }, &["f32[2,S]", "f32[2,3]"]),
        "f32[2,S+3]"
    );
    assert!(
        one(Op::Concat { axis: 0 }, &["f32[2,4]", "f32[2,3]"]).contains("non-axis dims differ")
    );
    assert_eq!(one(Op::Flatten { axis: 2 }, &["f32[2,3,4,5]"]), "f32[6,20]");
    assert_eq!(one(Op::Flatten { axis: 0 }, &["f32[B,3]"]), "f32[1,B*3]");
    assert_eq!(
        one(
            Op::Shape {
                start: 1,
                end: Some(-1)
            },
            &["f32[2,3,4,5]"]
        ),
        "i64[2]"
    );
    assert_eq!(
        one(
            Op::Shape {
                start: -10,
                end: Some(10)
            },
            &["f32[2,3]"]
        ),
        "i64[2]"
    );
    assert_eq!(
        one(
            Op::Shape {
                start: 2,
                end: Some(1)
            },
            &["f32[2,3]"]
        ),
        "i64[0]"
    );
    assert_eq!(one(Op::Size, &["f32[2,3]"]), "i64[]");
    let arg = Op::ArgReduce {
        max: true,
        axis: -1,
        keepdims: false,
        select_last_index: false,
    };
    assert_eq!(one(arg, &["f32[2,3]"]), "i64[2]");
    let reduce = |axes, keepdims| Op::Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims,
        noop_with_empty_axes: false,
    };
    assert_eq!(one(reduce(Some(vec![-1]), true), &["f32[2,3]"]), "f32[2,1]");
    assert_eq!(one(reduce(None, false), &["f32[2,3]"]), "f32[]");
    assert!(one(reduce(Some(vec![1, -1]), true), &["f32[2,3]"]).contains("repeated"));
    assert_eq!(
        one(Op::Gather { axis: 1 }, &["f32[5,6,7]", "i64[2,3]"]),
        "f32[5,2,3,7]"
    );
    assert_eq!(
        one(Op::Gather { axis: 0 }, &["f32[5,6]", "i64[]"]),
        "f32[6]"
    );
    assert_eq!(
        one(Op::GatherElements { axis: 1 }, &["f32[5,6]", "i64[5,2]"]),
        "f32[5,2]"
    );
    assert_eq!(
        one(Op::GatherND { batch_dims: 0 }, &["f32[5,6,7]", "i64[4,2]"]),
        "f32[4,7]"
    );
    assert_eq!(
        one(Op::GatherND { batch_dims: 1 }, &["f32[5,6,7]", "i64[5,1]"]),
        "f32[5,7]"
    );
    let ln = Op::LayerNorm {
        axis: -1,
        epsilon: 1e-6,
        stash_type: 1,
    };
    let mut b = B::default();
    let x = b.input("x", "f16[2,5,8]");
    let s = b.input("s", "f16[8]");
    let outs = b.node(ln, &[Some(x), Some(s)], 3);
    run(&mut b).unwrap();
    assert_eq!(ty_of(&b, outs[0]), "f16[2,5,8]");
    assert_eq!(ty_of(&b, outs[2]), "f32[2,5,1]");
    let gn = Op::GroupNorm {
        num_groups: 3,
        epsilon: 1e-5,
        stash_type: 1,
        per_group_affine: false,
    };
    assert!(one(gn, &["f32[1,8,4,4]", "f32[8]", "f32[8]"]).contains("do not split into 3 groups"));
}

#[test]
fn misc_ops() {
    assert_eq!(
        one(Op::Trilu { upper: true }, &["f32[3,4]", "i64[]"]),
        "f32[3,4]"
    );
    assert!(one(Op::Trilu { upper: true }, &["f32[3]"]).contains("rank ≥ 2"));
    let cumsum = Op::CumSum {
        exclusive: false,
        reverse: true,
    };
    assert_eq!(one(cumsum.clone(), &["f32[3,4]", "i32[]"]), "f32[3,4]");
    assert!(one(cumsum, &["f32[3,4]", "f32[]"]).contains("axis cannot be f32"));
    assert_eq!(one(Op::Clip, &["f16[3]", "f16[]", "f16[]"]), "f16[3]");
    assert!(one(Op::Clip, &["f16[3]", "f32[]"]).contains("operand dtypes differ"));
    assert!(one(Op::Binary(BinaryOp::And), &["f32[3]", "f32[3]"]).contains("logical"));
    assert_eq!(
        one(Op::Binary(BinaryOp::Xor), &["bool[3]", "bool[1]"]),
        "bool[3]"
    );
}

#[test]
fn value_dependent_shapes() {
    let mut b = B::default();
    let x = b.input("x", "f32[2,1,3]");
    let a = b.ints(&[0, 3]);
    let u = b.op(Op::Unsqueeze { axes: None }, &[x, a]);
    let sq = b.op(
        Op::Squeeze {
            axes: Some(vec![1]),
        },
        &[x],
    );
    let shp = b.ints(&[4, 2, 1, 1]);
    let e = b.op(Op::Expand, &[x, shp]);
    let reps = b.ints(&[1, 5, 2]);
    let t = b.op(Op::Tile, &[x, reps]);
    let pads = b.ints(&[0, 0, 1, 0, 2, -1]);
    let p = b.op(
        Op::Pad {
            mode: PadMode::Constant,
        },
        &[x, pads],
    );
    let split = b.ints(&[1, 2]);
    let sp = b.node(
        Op::Split {
            axis: 2,
            split: None,
            num_outputs: 0,
        },
        &[Some(x), Some(split)],
        2,
    );
    let sp3 = b.node(
        Op::Split {
            axis: -1,
            split: None,
            num_outputs: 2,
        },
        &[Some(x)],
        2,
    );
    let dims = b.ints(&[2, 3]);
    let cos = b.op(
        Op::ConstantOfShape {
            value: Tensor::from_i64(vec![1], vec![0]).unwrap(),
        },
        &[dims],
    );
    let (s0, s1, s2) = (b.scalar(10), b.scalar(0), b.scalar(-3));
    let r = b.op(Op::Range, &[s0, s1, s2]);
    let res = run(&mut b).unwrap();
    assert_eq!(ty_of(&b, u), "f32[1,2,1,1,3]");
    assert_eq!(ty_of(&b, sq), "f32[2,3]");
    assert_eq!(ty_of(&b, e), "f32[4,2,1,3]");
    assert_eq!(ty_of(&b, t), "f32[2,5,6]");
    assert_eq!(ty_of(&b, p), "f32[2,3,3]");
    assert_eq!(
        (ty_of(&b, sp[0]), ty_of(&b, sp[1])),
        ("f32[2,1,1]".into(), "f32[2,1,2]".into())
    );
    assert_eq!(
        (ty_of(&b, sp3[0]), ty_of(&b, sp3[1])),
        ("f32[2,1,2]".into(), "f32[2,1,1]".into())
    );
    assert_eq!(ty_of(&b, cos), "i64[2,3]");
    assert_eq!(ty_of(&b, r), "i64[4]");
    assert!(
        res.consts.is_empty(),
        "NoFold folds nothing that is not a shape value"
    );

    assert!(
        one(
            Op::Squeeze {
                axes: Some(vec![0])
            },
            &["f32[2,1]"]
        )
        .contains("cannot squeeze axis 0")
    );
    assert!(one(Op::Squeeze { axes: None }, &["f32[B,1]"]).contains("symbolic"));
    assert_eq!(one(Op::Squeeze { axes: None }, &["f32[1,3,1]"]), "f32[3]");
}

#[test]
fn declared_types_must_agree() {
    let declare = |t: &str| {
        let mut b = B::default();
        let x = b.input("x", "f32[B,3]");
        let y = b.op(Op::Unary(UnaryOp::Exp), &[x]);
        b.g.value_mut(y).ty = Some(ty(t));
        run(&mut b)
            .map(|_| ty_of(&b, y))
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    assert_eq!(
        declare("f32[4,3]"),
        "f32[4,3]",
        "declared known dim refines a symbol"
    );
    assert_eq!(
        declare("f32[N,3]"),
        "f32[B,3]",
        "inferred symbol wins over another"
    );
    let e = declare("f16[B,3]");
    assert!(
        e.contains("node 'n1' (Exp): output 0 ('n1_0'): declared as f16[B,3]"),
        "{e}"
    );
    assert!(declare("f32[B,4]").contains("declared as"));
    assert!(declare("f32[B]").contains("declared as"));
}

#[test]
fn hostile_sizes_are_errors() {
    assert!(one(Op::Identity, &["f32[4611686018427387904,4]"]).contains("more than 2^40"));
    let mut b = B::default();
    let x = b.input("x", "f32[1048576,1048576]");
    let reps = b.ints(&[1 << 20, 1 << 20]);
    b.op(Op::Tile, &[x, reps]);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(e.contains("(Tile)") && e.contains("2^40"), "{e}");
    let mut b = B::default();
    let x = b.input("x", "f32[1,1]");
    let shp = b.ints(&[i64::MAX, i64::MAX]);
    b.op(Op::Expand, &[x, shp]);
    let e = run(&mut b).unwrap_err().to_string();
    assert!(e.contains("(Expand)"), "{e}");
    let mut b = B::default();
    let x = b.input("x", "f32[1,1]");
    let shp = b.ints(&[-5, 2]);
    b.op(
        Op::ConstantOfShape {
            value: Tensor::scalar_f32(0.0),
        },
        &[shp],
    );
    let _ = x;
    assert!(run(&mut b).unwrap_err().to_string().contains("negative"));
}

/// Folds integer Add and Concat of 1-D tensors; `lie` makes it return a
/// wrong shape.
struct TestFold {
    lie: bool,
}

impl ConstFold for TestFold {
    fn fold(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
        let ints: Vec<Vec<i64>> = inputs.iter().map(|t| t.unwrap().to_i64_vec()).collect();
        let v = match node.op {
            Op::Binary(BinaryOp::Add) => ints[0].iter().zip(&ints[1]).map(|(a, b)| a + b).collect(),
            Op::Concat { .. } => ints.concat(),
            _ => return Err("unsupported".into()),
        };
        let n = if self.lie { v.len() + 1 } else { v.len() };
        Ok(vec![
            Tensor::from_i64(vec![n], [v, vec![0; n]].concat()[..n].to_vec()).unwrap(),
        ])
    }
}

#[test]
fn folding_uses_the_folder_and_checks_it() {
    let build = || {
        let mut b = B::default();
        let x = b.input("x", "f32[48]");
        let a = b.ints(&[1, 2]);
        let c = b.ints(&[3, 10]);
        let s = b.op(Op::Binary(BinaryOp::Add), &[a, c]);
        let y = b.op(Op::Reshape { allowzero: false }, &[x, s]);
        (b, s, y)
    };
    let (mut b, s, y) = build();
    let res = infer_types(&mut b.g, &BTreeMap::new(), &TestFold { lie: false }).unwrap();
    assert_eq!(res.consts[&s].to_i64_vec(), vec![4, 12]);
    assert_eq!(ty_of(&b, y), "f32[4,12]");
    // Without a folder the same arithmetic runs on shape values.
    let (mut b, s, y) = build();
    let res = run(&mut b).unwrap();
    assert_eq!(res.consts[&s].to_i64_vec(), vec![4, 12]);
    assert_eq!(ty_of(&b, y), "f32[4,12]");
    let (mut b, _, _) = build();
    let e = infer_types(&mut b.g, &BTreeMap::new(), &TestFold { lie: true }).unwrap_err();
    assert!(
        e.to_string()
            .contains("folding output 0 gives i64[3] but inference gives i64[2]"),
        "{e}"
    );
}

#[test]
fn const_types_are_checked_against_declarations() {
    let mut b = B::default();
    let c = b.ints(&[1, 2]);
    b.g.value_mut(c).ty = Some(ty("i64[3]"));
    assert!(run(&mut b).unwrap_err().to_string().contains("(Constant)"));
}

/// xorshift64*: a tiny deterministic generator for the smoke test below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())].clone()
    }

    fn int(&mut self) -> i64 {
        self.pick(&[-3, -2, -1, 0, 1, 2, 3, 5, i64::MAX, i64::MIN, 1 << 40])
    }

    fn ints(&mut self, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.int()).collect()
    }

    fn window(&mut self) -> Window {
        let n = self.below(3);
        let auto = [
            None,
            Some(AutoPad::NotSet),
            Some(AutoPad::SameUpper),
            Some(AutoPad::Valid),
        ];
        Window {
            kernel_shape: (self.below(2) == 0).then(|| (0..n).map(|_| self.below(4)).collect()),
            pads: (0..self.below(5)).map(|_| self.below(3)).collect(),
            strides: (0..self.below(3)).map(|_| self.below(3)).collect(),
            dilations: (0..self.below(3)).map(|_| self.below(3)).collect(),
            auto_pad: self.pick(&auto),
        }
    }

    fn op(&mut self) -> Op {
        let b = self.below(2) == 0;
        let a = self.int();
        let n = self.below(3);
        let opt_axes = if b { None } else { Some(self.ints(n)) };
        match self.below(44) {
            0 => Op::Identity,
            1 => Op::Unary(self.pick(&[UnaryOp::Exp, UnaryOp::Not, UnaryOp::IsNaN])),
            2 => Op::Binary(self.pick(&[
                BinaryOp::Add,
                BinaryOp::Less,
                BinaryOp::And,
                BinaryOp::Pow,
            ])),
            3 => Op::Variadic(VariadicOp::Sum),
            4 => Op::Clip,
            5 => Op::Where,
            6 => Op::Cast { to: DType::I64 },
            7 => Op::CastLike,
            8 => Op::Softmax {
                axis: a,
                log: b,
                coerce_2d: b,
            },
            9 => Op::Reduce {
                kind: ReduceKind::Sum,
                axes: opt_axes,
                keepdims: b,
                noop_with_empty_axes: !b,
            },
            10 => Op::ArgReduce {
                max: b,
                axis: a,
                keepdims: b,
                select_last_index: b,
            },
            11 => Op::LayerNorm {
                axis: a,
                epsilon: 1e-5,
                stash_type: a,
            },
            12 => Op::GroupNorm {
                num_groups: self.below(3),
                epsilon: 1e-5,
                stash_type: 1,
                per_group_affine: b,
            },
            13 => Op::MatMul,
            14 => Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: b,
                trans_b: !b,
            },
            15 => attn(
                self.pick(&[None, Some(0), Some(2)]),
                self.pick(&[None, Some(0), Some(1)]),
            ),
            16 => Op::Conv {
                window: self.window(),
                group: self.below(3),
            },
            17 => Op::AveragePool {
                window: self.window(),
                ceil_mode: b,
                count_include_pad: b,
            },
            18 => Op::MaxPool {
                window: self.window(),
                ceil_mode: b,
            },
            19 => Op::GlobalMaxPool,
            20 => Op::Resize(resize_attrs(
                opt_axes,
                self.pick(&[AspectPolicy::Stretch, AspectPolicy::NotLarger]),
            )),
            21 => Op::Reshape { allowzero: b },
            22 => Op::Transpose {
                perm: (!b).then(|| (0..self.below(4)).map(|_| self.below(4)).collect()),
            },
            23 => Op::Concat { axis: a },
            24 => Op::Split {
                axis: a,
                split: opt_axes,
                num_outputs: self.below(3),
            },
            25 => Op::Slice,
            26 => Op::Squeeze { axes: opt_axes },
            27 => Op::Unsqueeze { axes: opt_axes },
            28 => Op::Flatten { axis: a },
            29 => Op::Expand,
            30 => Op::Tile,
            31 => Op::Pad {
                mode: PadMode::Edge,
            },
            32 => Op::Shape {
                start: a,
                end: opt_axes.and_then(|v| v.first().copied()),
            },
            33 => Op::Size,
            34 => Op::ConstantOfShape {
                value: Tensor::scalar_f32(0.0),
            },
            35 => Op::Range,
            36 => Op::Gather { axis: a },
            37 => Op::GatherElements { axis: a },
            38 => Op::GatherND {
                batch_dims: self.below(3),
            },
            39 => Op::Trilu { upper: b },
            40 => Op::CumSum {
                exclusive: b,
                reverse: b,
            },
            41 => Op::RmsNorm {
                axis: a,
                epsilon: 1e-5,
                stash_type: 1,
            },
            42 => Op::InstanceNorm { epsilon: 1e-5 },
            _ => Op::GlobalAveragePool,
        }
    }
}

/// Random ill-formed nodes never panic inference, the verifier or the printer.
#[test]
fn random_nodes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let dims = ["0", "1", "2", "3", "5", "B", "1099511627777"];
    for _ in 0..4000 {
        let mut b = B::default();
        let op = rng.op();
        let (lo, hi, olo, ohi) = crate::verify::arity(&op);
        let n_in = (lo + rng.below(3)).min(hi.min(6));
        let mut ins = vec![];
        for i in 0..n_in {
            let v = match rng.below(4) {
                0 if i > 0 => None,
                1 => {
                    let n = rng.below(5);
                    Some(b.ints(&rng.ints(n)))
                }
                2 => Some(b.floats(&[0.5, 2.0, 1.0, 3.0][..rng.below(5)])),
                _ => {
                    let rank = rng.below(5);
                    let d: Vec<&str> = (0..rank).map(|_| rng.pick(&dims)).collect();
                    let dt = rng.pick(&["f32", "f32", "i64", "bool"]);
                    Some(b.input(&format!("x{i}"), &format!("{dt}[{}]", d.join(","))))
                }
            };
            ins.push(v);
        }
        let n_out = (olo + rng.below(3)).min(ohi.min(4)).max(olo);
        let outs = b.node(op, &ins, n_out);
        b.g.outputs.push(outs[0]);
        let bindings = BTreeMap::from([("B".to_string(), rng.pick(&[1usize, 4, 1 << 41]))]);
        let _ = crate::verify::verify(&b.g);
        let _ = infer_types(&mut b.g, &bindings, &NoFold);
        let _ = crate::verify::verify(&b.g);
        let _ = crate::print::to_text(&b.g);
        let _ = crate::cost::graph_flops(&b.g);
    }
}
