//! External tensor data: files next to the model, and every way to escape.

mod common;

use common::*;
use std::path::Path;
use varc_onnx::proto::tensor_proto::DataLocation;
use varc_onnx::proto::{StringStringEntryProto, TensorProto};
use varc_onnx::{OnnxError, import_model, load_model, tensor_from_proto};

fn ext(location: &str, offset: Option<u64>, length: Option<u64>, dims: &[i64]) -> TensorProto {
    let mut kv = vec![StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        kv.push(StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
    }
    if let Some(l) = length {
        kv.push(StringStringEntryProto {
            key: "length".into(),
            value: l.to_string(),
        });
    }
    TensorProto {
        name: "w".into(),
        data_type: FLOAT,
        dims: dims.to_vec(),
        data_location: DataLocation::External as i32,
        external_data: kv,
        ..Default::default()
    }
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn load(t: &TensorProto, dir: &Path) -> Result<varc_ir::Tensor, OnnxError> {
    tensor_from_proto(t, Some(dir))
}

fn ext_err(t: &TensorProto, dir: &Path) -> String {
    let e = load(t, dir).expect_err("should fail");
    assert!(matches!(e, OnnxError::ExternalData { .. }), "{e:?}");
    let s = e.to_string();
    assert!(s.contains("'w'"), "{s}");
    s
}

#[test]
fn reads_at_offset() {
    let dir = temp_dir("ext-ok");
    let mut bytes = vec![0xAAu8; 12];
    bytes.extend(floats(&[1.0, 2.0, 3.0, 4.0]));
    bytes.extend([0xBB; 5]);
    std::fs::write(dir.join("weights.bin"), &bytes).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub").join("w2.bin"), floats(&[5.0, 6.0])).unwrap();

    let t = load(&ext("weights.bin", Some(12), Some(16), &[2, 2]), &dir).unwrap();
    assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    // Length optional: taken from the dims.
    let t = load(&ext("weights.bin", Some(16), None, &[2]), &dir).unwrap();
    assert_eq!(t.as_f32().unwrap(), &[2.0, 3.0]);
    // Offset optional; "./" and sub-folders are fine.
    let t = load(&ext("./sub/w2.bin", None, None, &[2]), &dir).unwrap();
    assert_eq!(t.as_f32().unwrap(), &[5.0, 6.0]);
    // Empty tensors read nothing.
    let t = load(&ext("weights.bin", Some(0), Some(0), &[0]), &dir).unwrap();
    assert_eq!(t.numel(), 0);

    // Through load_model, relative to the model's folder.
    let m = model(
        17,
        graph(
            vec![node("Relu", "r", &["w"], &["y"], vec![])],
            vec![ext("weights.bin", Some(12), Some(16), &[4])],
            vec![],
            vec![out("y")],
        ),
    );
    let path = dir.join("model.onnx");
    std::fs::write(&path, encode(&m)).unwrap();
    let g = load_model(&path).unwrap().graph;
    let relu = g.nodes().find(|(_, n)| n.name == "r").unwrap().1;
    assert_eq!(
        g.const_value(relu.inputs[0].unwrap())
            .unwrap()
            .as_f32()
            .unwrap(),
        &[1.0, 2.0, 3.0, 4.0]
    );

    // Without a folder, external data cannot be found.
    let e = import_model(&encode(&m), None).unwrap_err().to_string();
    assert!(e.contains("'w'") && e.contains("no model folder"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn escapes_are_refused() {
    let root = temp_dir("ext-escape");
    let dir = root.join("model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.join("x"), floats(&[1.0])).unwrap();
    std::fs::write(dir.join("in.bin"), floats(&[1.0])).unwrap();

    let e = ext_err(&ext("../x", None, None, &[1]), &dir);
    assert!(e.contains("'..'"), "{e}");
    let e = ext_err(&ext("sub/../../x", None, None, &[1]), &dir);
    assert!(e.contains("'..'"), "{e}");
    let abs = root.join("x");
    let e = ext_err(&ext(abs.to_str().unwrap(), None, None, &[1]), &dir);
    assert!(e.contains("absolute"), "{e}");
    let e = ext_err(&ext("/etc/passwd", None, None, &[1]), &dir);
    assert!(e.contains("absolute"), "{e}");

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("x"), dir.join("link.bin")).unwrap();
        let e = ext_err(&ext("link.bin", None, None, &[1]), &dir);
        assert!(e.contains("outside the model's folder"), "{e}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_ranges_and_keys() {
    let dir = temp_dir("ext-range");
    std::fs::write(dir.join("w.bin"), floats(&[1.0, 2.0])).unwrap();

    let e = ext_err(&ext("w.bin", Some(8), Some(4), &[1]), &dir);
    assert!(e.contains("past the end") && e.contains("8 bytes"), "{e}");
    let e = ext_err(&ext("w.bin", Some(4), None, &[2]), &dir);
    assert!(e.contains("past the end"), "{e}");
    let e = ext_err(&ext("w.bin", Some(u64::MAX), Some(4), &[1]), &dir);
    assert!(e.contains("past the end"), "{e}");
    let e = ext_err(&ext("w.bin", None, Some(4), &[2]), &dir);
    assert!(e.contains("length is 4"), "{e}");
    let e = ext_err(&ext("missing.bin", None, None, &[1]), &dir);
    assert!(e.contains("missing.bin"), "{e}");
    let e = ext_err(&ext("", None, None, &[1]), &dir);
    assert!(e.contains("location"), "{e}");

    let mut t = ext("w.bin", None, None, &[1]);
    t.external_data.push(StringStringEntryProto {
        key: "offset".into(),
        value: "-4".into(),
    });
    assert!(ext_err(&t, &dir).contains("offset '-4'"));
    let mut t = ext("w.bin", None, None, &[1]);
    t.external_data.push(StringStringEntryProto {
        key: "color".into(),
        value: "red".into(),
    });
    assert!(ext_err(&t, &dir).contains("'color'"));
    let mut t = ext("w.bin", None, None, &[1]);
    t.external_data.push(StringStringEntryProto {
        key: "checksum".into(),
        value: "abc".into(),
    });
    assert!(load(&t, &dir).is_ok());

    // Inline data next to an external location is contradictory.
    let mut t = ext("w.bin", None, None, &[1]);
    t.float_data = vec![1.0];
    assert!(
        tensor_from_proto(&t, Some(&dir))
            .unwrap_err()
            .to_string()
            .contains("inline")
    );
    // A folder is not a data file.
    std::fs::create_dir(dir.join("d")).unwrap();
    assert!(ext_err(&ext("d", None, None, &[1]), &dir).contains("not a regular file"));
    std::fs::remove_dir_all(&dir).unwrap();
}
