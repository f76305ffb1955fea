//! Loading `.onnx` files: memory-mapped, with each initializer's pages
//! released once converted; the result must equal importing the bytes.

mod common;

use common::*;
use varc_ir::{Graph, Op, Tensor};
use varc_onnx::{import_model, load_model, load_model_with};

/// Initializers by name, in name order.
fn consts(g: &Graph) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = g
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Const(t) => Some((n.outputs[0].name.clone(), t.clone())),
            _ => None,
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// y = x·w1 + w2 with weights big enough (and at odd offsets in the file)
/// that whole pages inside them are released while importing.
fn big_model() -> (varc_onnx::proto::ModelProto, Vec<f32>, Vec<f32>) {
    let (k, n) = (300, 257);
    let w1: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
    let w2: Vec<f32> = (0..n).map(|i| i as f32 - 100.5).collect();
    let m = model(
        17,
        graph(
            vec![
                node("MatMul", "mm", &["x", "w1"], &["p"], vec![]),
                node("Add", "add", &["p", "w2"], &["y"], vec![]),
            ],
            vec![
                f32_raw("w1", &[k as i64, n as i64], &w1),
                f32_raw("w2", &[n as i64], &w2),
            ],
            vec![vi("x", FLOAT, &["2", &k.to_string()])],
            vec![vi("y", FLOAT, &["2", &n.to_string()])],
        ),
    );
    (m, w1, w2)
}

#[test]
fn mapped_file_imports_like_its_bytes() {
    let (m, w1, w2) = big_model();
    let bytes = encode(&m);
    let dir = temp_dir("load-file");
    let path = dir.join("big.onnx");
    std::fs::write(&path, &bytes).unwrap();
    let mut stages = vec![];
    let loaded = load_model_with(&path, &mut |s| stages.push(s.to_string())).unwrap();
    assert_eq!(
        stages,
        [
            "map file",
            "protobuf decode",
            "import to graph",
            "unmap file"
        ]
    );
    let from_bytes = import_model(&bytes, Some(&dir)).unwrap();
    let got = consts(&loaded.graph);
    assert_eq!(got, consts(&from_bytes.graph));
    // Element by element against the values written, not the importer.
    let by_name = |name: &str| got.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(by_name("w1").as_f32().unwrap(), w1.as_slice());
    assert_eq!(by_name("w2").as_f32().unwrap(), w2.as_slice());
    assert_eq!(loaded.graph.node_count(), from_bytes.graph.node_count());
    // Loading twice (the pages released the first time are mapped again).
    assert_eq!(consts(&load_model(&path).unwrap().graph), got);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_that_cannot_be_mapped_keep_their_errors() {
    let dir = temp_dir("load-odd");
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let e = load_model(&empty).unwrap_err().to_string();
    assert!(e.contains("the input is empty"), "{e}");
    // A folder: the read error, naming the path.
    let e = load_model(&dir).unwrap_err().to_string();
    assert!(e.contains(&dir.display().to_string()), "{e}");
    let missing = dir.join("missing.onnx");
    let e = load_model(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.onnx"), "{e}");
    // Truncated: a clear decode error from the mapped bytes, no panic.
    let (m, _, _) = big_model();
    let bytes = encode(&m);
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_model(&cut).unwrap_err().to_string();
    assert!(e.contains("protobuf") || e.contains("graph"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
