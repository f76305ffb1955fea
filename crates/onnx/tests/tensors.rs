//! Initializer storage forms, element types and size checks.

mod common;

use common::*;
use half::{bf16, f16};
use varc_ir::{DType, Tensor, TensorData};
use varc_onnx::proto::TensorProto;
use varc_onnx::{
    OnnxError, decode_tensor, dtype_to_onnx, import_model, tensor_from_proto, tensor_to_proto,
};

fn t(dtype: i32, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: "w".into(),
        data_type: dtype,
        dims: dims.to_vec(),
        ..Default::default()
    }
}

fn ok(p: &TensorProto) -> Tensor {
    tensor_from_proto(p, None).unwrap_or_else(|e| panic!("{e}"))
}

fn bad(p: &TensorProto) -> String {
    let e = tensor_from_proto(p, None).expect_err("should fail");
    assert!(
        matches!(e, OnnxError::Tensor { .. } | OnnxError::ExternalData { .. }),
        "{e:?}"
    );
    e.to_string()
}

#[test]
fn raw_data_of_every_dtype_round_trips() {
    let samples = [
        TensorData::F32(vec![1.0, -2.5, f32::INFINITY, 0.0]),
        TensorData::F16(vec![
            f16::from_f32(1.5),
            f16::from_f32(-0.25),
            f16::MAX,
            f16::ZERO,
        ]),
        TensorData::BF16(vec![
            bf16::from_f32(3.0),
            bf16::from_f32(-1.0),
            bf16::MIN,
            bf16::ONE,
        ]),
        TensorData::F64(vec![1e300, -1.0, 0.5, 2.0]),
        TensorData::I64(vec![i64::MIN, -1, 0, i64::MAX]),
        TensorData::I32(vec![i32::MIN, -1, 7, i32::MAX]),
        TensorData::I8(vec![-128, -1, 0, 127]),
        TensorData::U8(vec![0, 1, 200, 255]),
        TensorData::Bool(vec![true, false, false, true]),
    ];
    for data in samples {
        let tensor = Tensor::new(vec![2, 2], data).unwrap();
        let p = tensor_to_proto("w", &tensor);
        assert_eq!(p.raw_data.len(), tensor.byte_size());
        assert_eq!(ok(&p), tensor, "{}", tensor.dtype());
        let bytes = prost::Message::encode_to_vec(&p);
        assert_eq!(decode_tensor(&bytes).unwrap(), tensor);
    }
}

#[test]
fn typed_fields() {
    let mut p = t(1, &[3]);
    p.float_data = vec![1.0, 2.0, 3.0];
    assert_eq!(ok(&p).as_f32().unwrap(), &[1.0, 2.0, 3.0]);

    let mut p = t(11, &[2]);
    p.double_data = vec![0.5, -0.5];
    assert_eq!(ok(&p).data(), &TensorData::F64(vec![0.5, -0.5]));

    let mut p = t(7, &[2]);
    p.int64_data = vec![-3, 9];
    assert_eq!(ok(&p).data(), &TensorData::I64(vec![-3, 9]));

    let mut p = t(6, &[2]);
    p.int32_data = vec![-3, 9];
    assert_eq!(ok(&p).data(), &TensorData::I32(vec![-3, 9]));

    let mut p = t(3, &[3]);
    p.int32_data = vec![-128, 0, 127];
    assert_eq!(ok(&p).data(), &TensorData::I8(vec![-128, 0, 127]));

    let mut p = t(2, &[2]);
    p.int32_data = vec![0, 255];
    assert_eq!(ok(&p).data(), &TensorData::U8(vec![0, 255]));

    let mut p = t(9, &[3]);
    p.int32_data = vec![1, 0, 1];
    assert_eq!(ok(&p).data(), &TensorData::Bool(vec![true, false, true]));

    // float16 / bfloat16 travel as bit patterns in int32_data.
    let h = [f16::from_f32(1.5), f16::from_f32(-2.0)];
    let mut p = t(10, &[2]);
    p.int32_data = h.iter().map(|x| x.to_bits() as i32).collect();
    assert_eq!(ok(&p).data(), &TensorData::F16(h.to_vec()));

    let b = [bf16::from_f32(0.75), bf16::from_f32(-8.0)];
    let mut p = t(16, &[1, 2]);
    p.int32_data = b.iter().map(|x| x.to_bits() as i32).collect();
    assert_eq!(ok(&p).data(), &TensorData::BF16(b.to_vec()));
}

#[test]
fn out_of_range_int32_data() {
    let mut p = t(3, &[1]);
    p.int32_data = vec![300];
    assert!(bad(&p).contains("300"));
    let mut p = t(10, &[1]);
    p.int32_data = vec![70000];
    assert!(bad(&p).contains("70000"));
}

#[test]
fn sizes_must_match() {
    let mut p = t(1, &[2, 3]);
    p.float_data = vec![0.0; 5];
    let e = bad(&p);
    assert!(e.contains("'w'") && e.contains("too little"), "{e}");
    p.float_data = vec![0.0; 7];
    assert!(bad(&p).contains("too much"));

    let mut p = t(1, &[2]);
    p.raw_data = vec![0; 7].into();
    let e = bad(&p);
    assert!(
        e.contains("raw_data has 7 bytes") && e.contains("need 8"),
        "{e}"
    );

    let p = t(1, &[2]);
    assert!(bad(&p).contains("no data"));

    // Empty tensors need no data.
    let p = t(1, &[0, 3]);
    assert_eq!(ok(&p).shape(), &[0, 3]);
}

#[test]
fn wrong_or_mixed_fields() {
    let mut p = t(1, &[2]);
    p.int64_data = vec![1, 2];
    let e = bad(&p);
    assert!(e.contains("int64_data") && e.contains("float_data"), "{e}");

    let mut p = t(1, &[1]);
    p.uint64_data = vec![1];
    assert!(bad(&p).contains("uint64_data"));

    let mut p = t(1, &[1]);
    p.float_data = vec![1.0];
    p.raw_data = vec![0; 4].into();
    assert!(bad(&p).contains("several fields"));
}

#[test]
fn unsupported_types_name_the_tensor() {
    for (code, name) in [
        (8, "STRING"),
        (13, "UINT64"),
        (12, "UINT32"),
        (5, "INT16"),
        (17, "FLOAT8E4M3FN"),
        (0, "UNDEFINED"),
    ] {
        let mut p = t(code, &[1]);
        p.uint64_data = vec![1];
        let e = bad(&p);
        assert!(e.contains("'w'") && e.contains(name), "{e}");
    }
    assert!(bad(&t(99, &[1])).contains("unknown (99)"));
}

#[test]
fn absurd_dims() {
    let mut p = t(1, &[2, -1]);
    p.float_data = vec![0.0; 2];
    assert!(bad(&p).contains("negative"));
    let p = t(1, &[1 << 31, 1 << 31]);
    assert!(bad(&p).contains("limit"));
    let p = t(1, &[i64::MAX, i64::MAX, 2]);
    assert!(bad(&p).contains("limit"));
    // Empty but with absurd extents is refused too.
    let p = t(1, &[0, i64::MAX]);
    assert!(bad(&p).contains("limit"));
}

#[test]
fn segments_are_refused() {
    let mut p = t(1, &[1]);
    p.float_data = vec![1.0];
    p.segment = Some(varc_onnx::proto::tensor_proto::Segment { begin: 0, end: 1 });
    assert!(bad(&p).contains("segment"));
}

#[test]
fn initializers_of_each_form_import() {
    let mut fd = t(1, &[2]);
    fd.name = "fd".into();
    fd.float_data = vec![1.0, 2.0];
    let mut i8d = t(3, &[2]);
    i8d.name = "i8d".into();
    i8d.int32_data = vec![-1, 1];
    let m = model(
        17,
        graph(
            vec![node(
                "Cast",
                "c",
                &["i8d"],
                &["y"],
                vec![a_int("to", dtype_to_onnx(DType::F32) as i64)],
            )],
            vec![fd, i8d, i64_data("shape", &[1], &[2])],
            vec![],
            vec![out("y"), out("fd"), out("shape")],
        ),
    );
    let g = import_model(&encode(&m), None).unwrap().graph;
    assert_eq!(
        g.const_value(g.outputs[1]).unwrap().as_f32().unwrap(),
        &[1.0, 2.0]
    );
    assert_eq!(g.const_value(g.outputs[2]).unwrap().to_i64_vec(), vec![2]);
    let e = {
        let mut m = m.clone();
        m.graph.as_mut().unwrap().initializer[0]
            .float_data
            .push(3.0);
        import_model(&encode(&m), None).unwrap_err().to_string()
    };
    assert!(e.contains("'fd'"), "{e}");
}
