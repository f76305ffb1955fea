//! Bad input gets an error that says what is wrong — never a panic.

use proptest::prelude::*;
use std::path::PathBuf;
use varc_onnx::proto::{ModelProto, StringStringEntryProto, TensorProto};
use varc_tests::build::{FLOAT, INT64, encode, f32_initializer, model, node, value};
use varc_tests::models_dir;

/// A fresh directory per test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varc-malformed-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `bytes` as a model file and returns the error text (the load must fail).
fn load_error(tag: &str, bytes: &[u8]) -> String {
    let dir = temp_dir(tag);
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    match varc::load(&path, &Default::default()) {
        Ok(_) => panic!("{tag}: a bad model loaded without error"),
        Err(e) => format!("{e:#}"),
    }
}

fn expect_error(tag: &str, m: &ModelProto, needles: &[&str]) {
    let err = load_error(tag, &encode(m));
    for n in needles {
        assert!(
            err.contains(n),
            "{tag}: error should mention '{n}', got: {err}"
        );
    }
}

/// y = x + w, the smallest valid model; tests break one thing at a time.
fn add_model() -> ModelProto {
    model(
        vec![node("Add", "add0", &["x", "w"], &["y"])],
        vec![value("x", FLOAT, &[2, 3])],
        vec![value("y", FLOAT, &[2, 3])],
        vec![f32_initializer("w", &[3], &[1.0, 2.0, 3.0])],
    )
}

#[test]
fn the_valid_base_model_loads() {
    let dir = temp_dir("valid");
    let path = dir.join("model.onnx");
    std::fs::write(&path, encode(&add_model())).unwrap();
    varc::load(&path, &Default::default()).expect("the base model is valid");
}

#[test]
fn missing_file_names_the_path() {
    let err = format!(
        "{:#}",
        varc::load(&PathBuf::from("/nonexistent/m.onnx"), &Default::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("/nonexistent/m.onnx"), "{err}");
}

#[test]
fn truncated_shipped_model_is_an_error() {
    let bytes = std::fs::read(models_dir().join("minvar_dyn18.onnx")).unwrap();
    for cut in [1, 7, 100, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let err = load_error(&format!("trunc{cut}"), &bytes[..cut]);
        assert!(!err.is_empty());
    }
}

#[test]
fn random_bytes_are_an_error() {
    let err = load_error("random", &[0xff, 0x13, 0x00, 0x88, 0x99, 0xab, 0x01]);
    assert!(!err.is_empty());
}

#[test]
fn wrong_wire_type_is_a_decode_error() {
    // Field 7 (graph) must be length-delimited; encode it as a varint.
    let err = load_error("wire", &[7 << 3, 0x01]);
    assert!(err.to_lowercase().contains("decod"), "{err}");
}

#[test]
fn cycle_names_a_node() {
    let m = model(
        vec![
            node("Relu", "r1", &["b"], &["a"]),
            node("Relu", "r2", &["a"], &["b"]),
        ],
        vec![],
        vec![value("b", FLOAT, &[2])],
        vec![],
    );
    expect_error("cycle", &m, &["cycle"]);
}

#[test]
fn missing_initializer_names_node_and_value() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer.clear();
    expect_error("missing_init", &m, &["add0", "Add", "'w'"]);
}

#[test]
fn dangling_graph_output_is_named() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().output = vec![value("nowhere", FLOAT, &[2, 3])];
    expect_error("dangling_out", &m, &["nowhere"]);
}

#[test]
fn dtype_mismatch_names_the_node() {
    let m = model(
        vec![node("Add", "mixed_add", &["x", "i"], &["y"])],
        vec![value("x", FLOAT, &[2]), value("i", INT64, &[2])],
        vec![value("y", FLOAT, &[2])],
        vec![],
    );
    expect_error("dtype", &m, &["mixed_add", "Add"]);
}

#[test]
fn shape_mismatch_names_the_node() {
    let m = model(
        vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        vec![value("x", FLOAT, &[2, 3])],
        vec![value("y", FLOAT, &[2, 2])],
        vec![f32_initializer("w", &[4, 2], &[0.0; 8])],
    );
    expect_error("matmul", &m, &["mm", "MatMul"]);
}

#[test]
fn negative_initializer_dim_is_an_error() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![-3];
    expect_error("negdim", &m, &["'w'"]);
}

#[test]
fn absurd_dims_are_an_error() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![1 << 40, 1 << 40];
    expect_error("absurd", &m, &["'w'"]);
    let mut m = add_model();
    m.graph.as_mut().unwrap().input = vec![value("x", FLOAT, &[1 << 62, 1 << 62])];
    let err = load_error("absurd_input", &encode(&m));
    assert!(!err.is_empty());
}

#[test]
fn declared_size_beyond_data_is_an_error() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![100];
    expect_error("short_data", &m, &["'w'"]);
}

fn external_model(location: &str, offset: &str, length: &str) -> ModelProto {
    let mut m = add_model();
    let entry = |k: &str, v: &str| StringStringEntryProto {
        key: k.into(),
        value: v.into(),
    };
    m.graph.as_mut().unwrap().initializer = vec![TensorProto {
        name: "w".into(),
        dims: vec![3],
        data_type: FLOAT,
        data_location: 1, // EXTERNAL
        external_data: vec![
            entry("location", location),
            entry("offset", offset),
            entry("length", length),
        ],
        ..Default::default()
    }];
    m
}

#[test]
fn external_data_is_read_and_confined_to_the_model_folder() {
    let dir = temp_dir("external");
    let data: Vec<u8> = [0.5f32, 1.5, 2.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("w.bin"), [vec![0u8; 4], data].concat()).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, encode(&external_model("w.bin", "4", "12"))).unwrap();
    let loaded =
        varc::load(&path, &Default::default()).expect("external data within the folder loads");
    let x = varc_ir::Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap();
    let y = loaded.run_reference(&[("x".into(), x)]).unwrap();
    assert_eq!(y[0].1.to_f64_vec(), vec![0.5, 1.5, 2.5, 0.5, 1.5, 2.5]);

    for (tag, loc, off, len) in [
        ("traversal", "../w.bin", "0", "12"),
        ("absolute", "/etc/passwd", "0", "12"),
        ("past_end", "w.bin", "8", "12"),
        ("missing", "nope.bin", "0", "12"),
    ] {
        std::fs::write(&path, encode(&external_model(loc, off, len))).unwrap();
        let err = format!(
            "{:#}",
            varc::load(&path, &Default::default()).err().expect(tag)
        );
        assert!(err.contains("'w'"), "{tag}: {err}");
    }
}

#[test]
fn unsupported_ops_are_listed_all_at_once() {
    let m = model(
        vec![
            node("Frobnicate", "f1", &["x"], &["a"]),
            node("Relu", "ok", &["a"], &["b"]),
            node("Unicorn", "u1", &["b"], &["y"]),
        ],
        vec![value("x", FLOAT, &[2])],
        vec![value("y", FLOAT, &[2])],
        vec![],
    );
    expect_error("unsupported", &m, &["f1", "Frobnicate", "u1", "Unicorn"]);
}

#[test]
fn unknown_attribute_is_an_error() {
    let mut m = add_model();
    m.graph.as_mut().unwrap().node[0].attribute = vec![varc_tests::build::int_attr("frob", 1)];
    expect_error("attr", &m, &["add0", "frob"]);
}

#[test]
fn wrong_input_at_run_time_is_an_error() {
    let dir = temp_dir("runinput");
    let path = dir.join("model.onnx");
    std::fs::write(&path, encode(&add_model())).unwrap();
    let loaded = varc::load(&path, &Default::default()).unwrap();
    let wrong_shape = varc_ir::Tensor::from_f32(vec![3, 2], vec![0.0; 6]).unwrap();
    let err = format!(
        "{:#}",
        loaded
            .run_reference(&[("x".into(), wrong_shape)])
            .unwrap_err()
    );
    assert!(err.contains('x'), "{err}");
    let wrong_name = varc_ir::Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap();
    let err = format!(
        "{:#}",
        loaded
            .run_reference(&[("q".into(), wrong_name)])
            .unwrap_err()
    );
    assert!(err.contains("'q'"), "{err}");
    let err = format!("{:#}", loaded.run_reference(&[]).unwrap_err());
    assert!(err.contains("'x'") || err.contains("x"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = varc_onnx::import_model(&bytes, None);
    }

    #[test]
    fn mutated_model_bytes_never_panic(pos in 0usize..10_000, byte in any::<u8>()) {
        let mut bytes = encode(&add_model());
        let n = bytes.len();
        bytes[pos % n] = byte;
        if let Ok(mut m) = varc_onnx::import_model(&bytes, None) {
            let _ = varc_ir::verify::verify(&m.graph)
                .map(|_| varc_ir::infer::infer_types(&mut m.graph, &Default::default(), &varc_backend_ref::RefFolder));
        }
    }
}
