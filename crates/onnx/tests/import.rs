//! Model import: structure, inputs/outputs, constants, errors.

mod common;

use common::*;
use varc_ir::{DType, Dim, Graph, Node, Op, Shape, TensorData};
use varc_onnx::proto::*;
use varc_onnx::{OnnxError, import_model, load_model, unsupported_ops};

fn find<'g>(g: &'g Graph, name: &str) -> &'g Node {
    g.nodes()
        .map(|(_, n)| n)
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node '{name}'"))
}

fn import(m: &ModelProto) -> Result<varc_onnx::Model, OnnxError> {
    import_model(&encode(m), None)
}

fn err(m: &ModelProto) -> String {
    import(m).expect_err("import should fail").to_string()
}

#[test]
fn small_model_imports() {
    let m = import(&small_model()).unwrap();
    assert_eq!(m.opset, 17);
    assert_eq!(m.opsets, vec![(String::new(), 17)]);
    assert_eq!(m.ir_version, 10);
    assert_eq!(m.producer, "varc-tests 1.0");
    assert_eq!(m.doc, "a test model");
    let g = &m.graph;
    assert_eq!(g.name, "g");
    assert_eq!(g.node_count(), 4);
    assert_eq!(g.inputs.len(), 1);
    let x = g.node(g.inputs[0]);
    assert_eq!(x.op, Op::Input);
    let ty = x.outputs[0].ty.as_ref().unwrap();
    assert_eq!(ty.dtype, DType::F32);
    assert_eq!(ty.shape, Shape(vec![Dim::Sym("N".into()), Dim::Known(3)]));
    let add = find(g, "add");
    assert_eq!(add.op.kind(), "Add");
    assert_eq!(g.node(add.inputs[0].unwrap().node).name, "x");
    let b = g.const_value(add.inputs[1].unwrap()).unwrap();
    assert_eq!(b.as_f32().unwrap(), &[1.0, -2.0, 0.5]);
    assert_eq!(g.outputs.len(), 1);
    let y = g.value(g.outputs[0]);
    assert_eq!(y.name, "y");
    assert_eq!(y.ty.as_ref().unwrap().shape.to_string(), "[N,3]");
    assert_eq!(g.topo_order().unwrap().len(), 4);
}

#[test]
fn nodes_out_of_order_are_sorted() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node.reverse();
    let g = import(&m).unwrap().graph;
    let order: Vec<String> = g
        .topo_order()
        .unwrap()
        .into_iter()
        .map(|i| g.node(i).name.clone())
        .collect();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("add") < pos("relu"));
}

#[test]
fn cycle_is_reported_not_looped() {
    let m = model(
        17,
        graph(
            vec![
                node("Add", "a", &["x", "q"], &["p"], vec![]),
                node("Relu", "b", &["p"], &["q"], vec![]),
            ],
            vec![],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("q")],
        ),
    );
    let e = err(&m);
    assert!(e.contains("cycle"), "{e}");
    assert!(e.contains("'a'") || e.contains("'b'"), "{e}");
}

#[test]
fn self_loop_is_a_cycle() {
    let m = model(
        17,
        graph(
            vec![node("Relu", "r", &["y"], &["y"], vec![])],
            vec![],
            vec![],
            vec![out("y")],
        ),
    );
    assert!(err(&m).contains("cycle"));
}

#[test]
fn missing_input_names_node_op_and_value() {
    let m = model(
        17,
        graph(
            vec![node("Mul", "mul1", &["x", "nowhere"], &["y"], vec![])],
            vec![],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("y")],
        ),
    );
    let e = err(&m);
    assert!(
        e.contains("mul1") && e.contains("Mul") && e.contains("'nowhere'"),
        "{e}"
    );
}

#[test]
fn duplicate_outputs_are_refused() {
    let m = model(
        17,
        graph(
            vec![
                node("Relu", "r1", &["x"], &["y"], vec![]),
                node("Neg", "r2", &["x"], &["y"], vec![]),
            ],
            vec![],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("y")],
        ),
    );
    let e = err(&m);
    assert!(
        e.contains("r2") && e.contains("'y'") && e.contains("r1"),
        "{e}"
    );
    // A node output shadowing an initializer.
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[1].output[0] = "b".into();
    let e = err(&m);
    assert!(e.contains("relu") && e.contains("'b'"), "{e}");
}

#[test]
fn unknown_graph_output_is_refused() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().output.push(out("ghost"));
    let e = err(&m);
    assert!(e.contains("ghost"), "{e}");
}

#[test]
fn initializer_wins_over_input() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().input.push(vi("b", FLOAT, &["3"]));
    let g = import(&m).unwrap().graph;
    assert_eq!(g.inputs.len(), 1);
    let add = find(&g, "add");
    assert!(g.const_value(add.inputs[1].unwrap()).is_some());
}

#[test]
fn unknown_dims_get_fresh_symbols() {
    let m = model(
        17,
        graph(
            vec![node("Add", "add", &["x", "z"], &["y"], vec![])],
            vec![],
            vec![vi("x", FLOAT, &["", "unk__0", "4"]), vi("z", FLOAT, &[""])],
            vec![out("y")],
        ),
    );
    let g = import(&m).unwrap().graph;
    let shape = |i: usize| {
        g.node(g.inputs[i]).outputs[0]
            .ty
            .as_ref()
            .unwrap()
            .shape
            .to_string()
    };
    assert_eq!(shape(0), "[unk__1,unk__0,4]");
    assert_eq!(shape(1), "[unk__2]");
}

#[test]
fn input_types_are_checked() {
    let mut m = small_model();
    let x = &mut m.graph.as_mut().unwrap().input[0];
    x.r#type = Some(TypeProto {
        value: Some(type_proto::Value::SequenceType(type_proto::Sequence {
            elem_type: None,
        })),
        denotation: String::new(),
    });
    let e = err(&m);
    assert!(e.contains("'x'") && e.contains("sequence"), "{e}");

    let mut m = small_model();
    m.graph.as_mut().unwrap().input[0] = vi("x", 8, &["3"]);
    let e = err(&m);
    assert!(e.contains("'x'") && e.contains("STRING"), "{e}");

    let mut m = small_model();
    m.graph.as_mut().unwrap().input[0] = vi("x", FLOAT, &["-2"]);
    assert!(err(&m).contains("negative"));

    let mut m = small_model();
    m.graph.as_mut().unwrap().input[0] = out("x");
    assert!(err(&m).contains("'x'"));
}

#[test]
fn value_info_types_attach_to_values() {
    let mut m = small_model();
    m.graph
        .as_mut()
        .unwrap()
        .value_info
        .push(vi("s", FLOAT, &["N", "3"]));
    let g = import(&m).unwrap().graph;
    let s = &find(&g, "add").outputs[0];
    assert_eq!(s.name, "s");
    assert_eq!(s.ty.as_ref().unwrap().to_string(), "f32[N,3]");
}

#[test]
fn opsets_are_checked() {
    let mut m = small_model();
    m.opset_import[0].version = 9;
    let e = import(&m).unwrap_err();
    assert!(matches!(e, OnnxError::Opset(_)));
    let e = e.to_string();
    assert!(e.contains("opset 9") && e.contains("11 to 28"), "{e}");

    m.opset_import[0].version = 29;
    assert!(err(&m).contains("opset 29"));

    m.opset_import[0].domain = "ai.onnx.ml".into();
    assert!(err(&m).contains("no opset of the default domain"));

    // ai.onnx spelled out, plus an unused ai.onnx.ml import: fine.
    let mut m = small_model();
    m.opset_import[0].domain = "ai.onnx".into();
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 3,
    });
    let got = import(&m).unwrap();
    assert_eq!(got.opset, 17);
    assert_eq!(got.opsets.len(), 2);
}

#[test]
fn unsupported_nodes_are_listed_together() {
    let mut ml = node("LinearClassifier", "clf", &["x"], &["c", "p"], vec![]);
    ml.domain = "ai.onnx.ml".into();
    let mut ms = node("FusedMatMul", "fused", &["x", "x"], &["f"], vec![]);
    ms.domain = "com.microsoft".into();
    let mut m = model(
        17,
        graph(
            vec![
                node("Relu", "ok", &["x"], &["r"], vec![]),
                node("LSTM", "lstm", &["x", "x", "x"], &["l"], vec![]),
                node(
                    "If",
                    "branch",
                    &["x"],
                    &["i"],
                    vec![a_graph("then_branch", GraphProto::default())],
                ),
                ml,
                ms,
                node("Relu", "odd", &["x"], &["o"], vec![a_int("foo", 1)]),
                node(
                    "Resize",
                    "rs",
                    &["x", "", "x"],
                    &["z"],
                    vec![a_str("mode", "bicubic")],
                ),
                node(
                    "MaxPool",
                    "mp",
                    &["x"],
                    &["mp0", "mp1"],
                    vec![a_ints("kernel_shape", &[2])],
                ),
            ],
            vec![],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("r")],
        ),
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 3,
    });
    let e = import(&m).unwrap_err();
    let OnnxError::Unsupported(list) = &e else {
        panic!("{e}")
    };
    let names: Vec<&str> = list.iter().map(|u| u.node.as_str()).collect();
    assert_eq!(names, ["lstm", "branch", "clf", "fused", "odd", "rs", "mp"]);
    let text = e.to_string();
    for n in &names {
        assert!(text.contains(n), "{text}");
    }
    assert!(text.contains("7 nodes cannot be imported"), "{text}");
    assert!(text.contains("op type 'LSTM' is not supported"), "{text}");
    assert!(text.contains("com.microsoft"), "{text}");
    assert!(text.contains("unknown attribute 'foo'"), "{text}");
    assert!(text.contains("mode='bicubic'"), "{text}");
    assert!(text.contains("'mp1'"), "{text}");
    assert_eq!(unsupported_ops(&m), *list);
    // An unused optional output is dropped, not refused.
    let mp = node(
        "MaxPool",
        "mp",
        &["x"],
        &["mp0", ""],
        vec![a_ints("kernel_shape", &[2])],
    );
    let ok = model(
        17,
        graph(
            vec![mp],
            vec![],
            vec![vi("x", FLOAT, &["1", "1", "4"])],
            vec![out("mp0")],
        ),
    );
    let g = import(&ok).unwrap().graph;
    assert_eq!(find(&g, "mp").outputs.len(), 1);
}

#[test]
fn unknown_attribute_is_refused() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0]
        .attribute
        .push(a_float("foo", 1.0));
    let e = err(&m);
    assert!(
        e.contains("unknown attribute 'foo'") && e.contains("add"),
        "{e}"
    );
}

#[test]
fn malformed_attributes_name_the_node() {
    let mk = |attrs| {
        model(
            17,
            graph(
                vec![node("Flatten", "fl", &["x"], &["y"], attrs)],
                vec![],
                vec![vi("x", FLOAT, &["2", "3"])],
                vec![out("y")],
            ),
        )
    };
    let e = err(&mk(vec![a_float("axis", 1.0)]));
    assert!(
        e.contains("'fl' (Flatten)") && e.contains("'axis' must be INT"),
        "{e}"
    );
    let e = err(&mk(vec![a_int("axis", 1), a_int("axis", 0)]));
    assert!(e.contains("twice"), "{e}");
    let mut r = a_int("axis", 1);
    r.ref_attr_name = "outer".into();
    let e = err(&mk(vec![r]));
    assert!(e.contains("ref_attr_name"), "{e}");
    // An untyped (IR 1) attribute is read from the one field set.
    let mut u = a_int("axis", 0);
    u.r#type = 0;
    let g = import(&mk(vec![u])).unwrap().graph;
    assert_eq!(find(&g, "fl").op, Op::Flatten { axis: 0 });
    // A proto3 writer omits a zero INT: type INT, no i → 0.
    let mut z = a_int("axis", 0);
    z.i = None;
    let g = import(&mk(vec![z])).unwrap().graph;
    assert_eq!(find(&g, "fl").op, Op::Flatten { axis: 0 });
}

#[test]
fn wrong_arity_is_refused() {
    let m = model(
        17,
        graph(
            vec![node("Add", "a", &["x"], &["y"], vec![])],
            vec![],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("y")],
        ),
    );
    let e = err(&m);
    assert!(
        e.contains("'a' (Add)") && e.contains("takes 2 inputs, got 1"),
        "{e}"
    );
}

#[test]
fn omitted_optional_inputs_are_none() {
    let m = model(
        17,
        graph(
            vec![node("Clip", "clip", &["x", "", "hi", ""], &["y"], vec![])],
            vec![f32_raw("hi", &[], &[6.0])],
            vec![vi("x", FLOAT, &["2"])],
            vec![out("y")],
        ),
    );
    let g = import(&m).unwrap().graph;
    let clip = find(&g, "clip");
    assert_eq!(clip.inputs.len(), 3);
    assert!(clip.inputs[0].is_some() && clip.inputs[1].is_none() && clip.inputs[2].is_some());
}

#[test]
fn constant_nodes_become_consts() {
    let t = f32_raw("", &[2], &[1.5, 2.5]);
    let nodes = vec![
        node("Constant", "c0", &[], &["v"], vec![a_tensor("value", t)]),
        node(
            "Constant",
            "c1",
            &[],
            &["vf"],
            vec![a_float("value_float", 0.25)],
        ),
        node(
            "Constant",
            "c2",
            &[],
            &["vfs"],
            vec![a_floats("value_floats", &[1.0, 2.0, 3.0])],
        ),
        node("Constant", "c3", &[], &["vi"], vec![a_int("value_int", -4)]),
        node(
            "Constant",
            "c4",
            &[],
            &["vis"],
            vec![a_ints("value_ints", &[5, 6])],
        ),
    ];
    let outs = ["v", "vf", "vfs", "vi", "vis"].map(out).to_vec();
    let g = import(&model(17, graph(nodes, vec![], vec![], outs)))
        .unwrap()
        .graph;
    let c = |i: usize| g.const_value(g.outputs[i]).unwrap().clone();
    assert_eq!(g.value(g.outputs[0]).name, "v");
    assert_eq!(c(0).as_f32().unwrap(), &[1.5, 2.5]);
    assert_eq!(c(1).shape(), &[] as &[usize]);
    assert_eq!(c(1).as_f32().unwrap(), &[0.25]);
    assert_eq!(c(2).shape(), &[3]);
    assert_eq!(c(3).data(), &TensorData::I64(vec![-4]));
    assert_eq!(c(4).data(), &TensorData::I64(vec![5, 6]));
}

#[test]
fn unsupported_constants() {
    let mk = |attrs| {
        model(
            17,
            graph(
                vec![node("Constant", "c", &[], &["v"], attrs)],
                vec![],
                vec![],
                vec![out("v")],
            ),
        )
    };
    let e = err(&mk(vec![a_strs("value_strings", &["a"])]));
    assert!(e.contains("string constants"), "{e}");
    let e = err(&mk(vec![a_str("value_string", "a")]));
    assert!(e.contains("string constants"), "{e}");
    let sparse = AttributeProto {
        name: "sparse_value".into(),
        r#type: attribute_proto::AttributeType::SparseTensor as i32,
        sparse_tensor: Some(SparseTensorProto::default()),
        ..Default::default()
    };
    let e = err(&mk(vec![sparse]));
    assert!(e.contains("sparse constants"), "{e}");
    let e = err(&mk(vec![]));
    assert!(e.contains("exactly one"), "{e}");
    let e = err(&mk(vec![
        a_int("value_int", 1),
        a_float("value_float", 1.0),
    ]));
    assert!(e.contains("exactly one"), "{e}");
}

#[test]
fn truncated_and_random_bytes_are_errors() {
    let bytes = encode(&small_model());
    for n in 0..bytes.len() {
        assert!(
            import_model(&bytes[..n], None).is_err(),
            "prefix of {n} bytes imported"
        );
    }
    assert!(import_model(&bytes, None).is_ok());
    // Deterministic pseudo-random garbage, and garbage after a valid model.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 2, 7, 64, 1000, 4096] {
        for _ in 0..50 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            let _ = import_model(&v, None);
            let mut w = bytes.clone();
            w.extend_from_slice(&v);
            let _ = import_model(&w, None);
            // Flip bytes inside the valid model.
            let mut f = bytes.clone();
            let i = (s as usize) % f.len();
            f[i] ^= v[0] | 1;
            let _ = import_model(&f, None);
        }
    }
}

#[test]
fn load_model_reports_the_path() {
    let p = std::path::Path::new("/definitely/not/here/model.onnx");
    let e = load_model(p).unwrap_err();
    assert!(matches!(e, OnnxError::Io { .. }));
    assert!(
        e.to_string().contains("/definitely/not/here/model.onnx"),
        "{e}"
    );
}

#[test]
fn load_model_reads_a_file() {
    let dir = temp_dir("load");
    let p = dir.join("m.onnx");
    std::fs::write(&p, encode(&small_model())).unwrap();
    let m = load_model(&p).unwrap();
    assert_eq!(m.graph.node_count(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn subgraph_free_models_need_a_graph() {
    let mut m = small_model();
    m.graph = None;
    let e = import_model(&encode(&m), None).unwrap_err();
    assert!(matches!(e, OnnxError::Decode(_)), "{e}");
    assert!(import_model(&[], None).is_err());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // TypeProto { sequence_type { elem_type { sequence_type { ... } } } }, 5000 deep.
    fn wrap(field: u8, inner: Vec<u8>) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2];
        let mut n = inner.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        v.extend(inner);
        v
    }
    let mut t = Vec::new();
    for _ in 0..5000 {
        t = wrap(4, wrap(1, t));
    }
    let value_info = wrap(2, t); // ValueInfoProto.type
    let graph = wrap(11, value_info); // GraphProto.input
    let mut bytes = vec![0x08, 10]; // ir_version = 10
    bytes.extend(wrap(7, graph)); // ModelProto.graph
    let e = import_model(&bytes, None).unwrap_err();
    assert!(matches!(e, OnnxError::Decode(_)), "{e}");
}

#[test]
fn unusable_value_info_is_only_a_missing_hint() {
    let mut m = small_model();
    let g = m.graph.as_mut().unwrap();
    g.value_info.push(vi("s", 8, &["3"]));
    g.value_info.push(vi("s2", FLOAT, &["-1"]));
    assert!(import(&m).is_ok());
    // But a graph output must be a tensor varc can produce.
    m.graph.as_mut().unwrap().output[0] = vi("y", 8, &["3"]);
    let e = err(&m);
    assert!(e.contains("'y'") && e.contains("graph output"), "{e}");
}
