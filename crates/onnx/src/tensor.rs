//! `TensorProto` → [`Tensor`]: element types, dims, and every storage form
//! (`raw_data`, the typed repeated fields, external files).

use crate::error::OnnxError;
use crate::external;
use crate::proto::TensorProto;
use crate::proto::tensor_proto::{DataLocation, DataType};
use half::{bf16, f16};
use std::path::Path;
use varc_ir::{DType, Tensor, TensorData};

/// The largest single tensor the importer materialises (16 GiB).
pub const MAX_TENSOR_BYTES: u64 = 16 << 30;

/// The IR element type of an ONNX `TensorProto.DataType` code.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Float => DType::F32,
        DataType::Uint8 => DType::U8,
        DataType::Int8 => DType::I8,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        DataType::Float16 => DType::F16,
        DataType::Double => DType::F64,
        DataType::Bfloat16 => DType::BF16,
        _ => return None,
    })
}

/// The ONNX `TensorProto.DataType` code of an IR element type.
pub fn dtype_to_onnx(d: DType) -> i32 {
    (match d {
        DType::F32 => DataType::Float,
        DType::U8 => DataType::Uint8,
        DType::I8 => DataType::Int8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
        DType::F16 => DataType::Float16,
        DType::F64 => DataType::Double,
        DType::BF16 => DataType::Bfloat16,
    }) as i32
}

/// "FLOAT (1)", "STRING (8)", "unknown (99)": for error messages.
pub fn onnx_type_label(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => format!("{} ({code})", t.onnx_name()),
        Err(_) => format!("unknown ({code})"),
    }
}

/// The IR type of an element type code, or an error naming the tensor.
pub(crate) fn dtype_of(name: &str, code: i32) -> Result<DType, OnnxError> {
    dtype_from_onnx(code).ok_or_else(|| {
        OnnxError::tensor(
            name,
            format!("data type {} is not supported", onnx_type_label(code)),
        )
    })
}

/// Checks ONNX dims and returns them with the element count: negative dims,
/// overflow and tensors above [`MAX_TENSOR_BYTES`] are errors.
pub(crate) fn checked_dims(
    name: &str,
    dims: &[i64],
    dtype: DType,
) -> Result<(Vec<usize>, usize), OnnxError> {
    let too_big = || {
        OnnxError::tensor(
            name,
            format!(
                "dims {dims:?} of {dtype} exceed the {} GiB limit on one tensor",
                MAX_TENSOR_BYTES >> 30
            ),
        )
    };
    let mut shape = Vec::with_capacity(dims.len());
    // The product of the non-zero dims is bounded too, so that an empty
    // tensor cannot carry absurd extents into stride arithmetic later.
    let mut span: u64 = 1;
    for &d in dims {
        let u = u64::try_from(d)
            .map_err(|_| OnnxError::tensor(name, format!("negative dim {d} in dims {dims:?}")))?;
        span = span.checked_mul(u.max(1)).ok_or_else(too_big)?;
        shape.push(usize::try_from(u).map_err(|_| too_big())?);
    }
    if span
        .checked_mul(dtype.size() as u64)
        .is_none_or(|b| b > MAX_TENSOR_BYTES)
    {
        return Err(too_big());
    }
    let numel = if shape.contains(&0) {
        0
    } else {
        usize::try_from(span).map_err(|_| too_big())?
    };
    Ok((shape, numel))
}

/// Converts a `TensorProto`. `label` names the tensor in errors when the
/// proto's own name is empty (Constant values, attributes). External data is
/// read relative to `model_dir`.
pub fn tensor_from_proto(t: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor, OnnxError> {
    convert(t, &t.name, model_dir)
}

pub(crate) fn convert(
    t: &TensorProto,
    label: &str,
    model_dir: Option<&Path>,
) -> Result<Tensor, OnnxError> {
    let name = if t.name.is_empty() { label } else { &t.name };
    if t.segment.is_some() {
        return Err(OnnxError::tensor(
            name,
            "segmented tensors are not supported",
        ));
    }
    let dtype = dtype_of(name, t.data_type)?;
    let (shape, numel) = checked_dims(name, &t.dims, dtype)?;
    let nbytes = numel * dtype.size();
    let data = if t.data_location == DataLocation::External as i32 {
        if let Some(field) = filled_fields(t).first() {
            return Err(OnnxError::tensor(
                name,
                format!("external tensor also has inline data in {field}"),
            ));
        }
        let bytes = external::read(t, name, nbytes, model_dir)?;
        from_le_bytes(dtype, &bytes)
    } else if t.data_location != DataLocation::Default as i32 {
        return Err(OnnxError::tensor(
            name,
            format!("unknown data_location {}", t.data_location),
        ));
    } else {
        inline_data(t, name, dtype, numel)?
    };
    Tensor::new(shape, data).map_err(|e| OnnxError::tensor(name, e))
}

/// The names of the storage fields that hold data.
fn filled_fields(t: &TensorProto) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut add = |filled: bool, n| {
        if filled {
            f.push(n)
        }
    };
    add(!t.raw_data.is_empty(), "raw_data");
    add(!t.float_data.is_empty(), "float_data");
    add(!t.int32_data.is_empty(), "int32_data");
    add(!t.int64_data.is_empty(), "int64_data");
    add(!t.double_data.is_empty(), "double_data");
    add(!t.uint64_data.is_empty(), "uint64_data");
    add(!t.string_data.is_empty(), "string_data");
    f
}

/// The typed field ONNX uses for `dtype` when `raw_data` is not used.
fn typed_field(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float_data",
        DType::F64 => "double_data",
        DType::I64 => "int64_data",
        DType::I32 | DType::I8 | DType::U8 | DType::Bool | DType::F16 | DType::BF16 => "int32_data",
    }
}

fn inline_data(
    t: &TensorProto,
    name: &str,
    dtype: DType,
    numel: usize,
) -> Result<TensorData, OnnxError> {
    let filled = filled_fields(t);
    let field = match filled.as_slice() {
        [] if numel == 0 => return Ok(TensorData::zeros(dtype, 0)),
        [] => {
            return Err(OnnxError::tensor(
                name,
                format!("holds no data but its dims need {numel} elements of {dtype}"),
            ));
        }
        [one] => *one,
        many => {
            return Err(OnnxError::tensor(
                name,
                format!("data is split over several fields: {}", many.join(", ")),
            ));
        }
    };
    let count = |given: usize, unit: &str| -> Result<(), OnnxError> {
        if given == numel {
            Ok(())
        } else {
            let rel = if given < numel {
                "too little"
            } else {
                "too much"
            };
            Err(OnnxError::tensor(
                name,
                format!(
                    "{rel} data: {field} has {given} {unit} but dims {:?} of {dtype} need {numel}",
                    t.dims
                ),
            ))
        }
    };
    if field == "raw_data" {
        let want = numel * dtype.size();
        if t.raw_data.len() != want {
            let rel = if t.raw_data.len() < want {
                "too little"
            } else {
                "too much"
            };
            return Err(OnnxError::tensor(
                name,
                format!(
                    "{rel} data: raw_data has {} bytes but dims {:?} of {dtype} need {want}",
                    t.raw_data.len(),
                    t.dims
                ),
            ));
        }
        return Ok(from_le_bytes(dtype, &t.raw_data));
    }
    let expected = typed_field(dtype);
    if field != expected {
        return Err(OnnxError::tensor(
            name,
            format!("data is in {field}, but a {dtype} tensor keeps it in {expected} or raw_data"),
        ));
    }
    Ok(match dtype {
        DType::F32 => {
            count(t.float_data.len(), "values")?;
            TensorData::F32(t.float_data.clone())
        }
        DType::F64 => {
            count(t.double_data.len(), "values")?;
            TensorData::F64(t.double_data.clone())
        }
        DType::I64 => {
            count(t.int64_data.len(), "values")?;
            TensorData::I64(t.int64_data.clone())
        }
        _ => {
            count(t.int32_data.len(), "values")?;
            from_int32(name, dtype, &t.int32_data)?
        }
    })
}

/// Decodes `int32_data`, which carries every element type narrower than 32
/// bits: integers by value, float16/bfloat16 as their bit patterns.
fn from_int32(name: &str, dtype: DType, v: &[i32]) -> Result<TensorData, OnnxError> {
    fn narrow<T: TryFrom<i32>>(name: &str, dtype: DType, v: &[i32]) -> Result<Vec<T>, OnnxError> {
        v.iter()
            .map(|&x| {
                T::try_from(x).map_err(|_| {
                    OnnxError::tensor(name, format!("int32_data value {x} does not fit {dtype}"))
                })
            })
            .collect()
    }
    let bits = |v: &[i32]| -> Result<Vec<u16>, OnnxError> {
        v.iter()
            .map(|&x| {
                // Writers store the 16-bit pattern zero- or sign-extended.
                u16::try_from(x)
                    .or_else(|_| i16::try_from(x).map(|s| s as u16))
                    .map_err(|_| {
                        OnnxError::tensor(
                            name,
                            format!("int32_data value {x} is not a 16-bit pattern of {dtype}"),
                        )
                    })
            })
            .collect()
    };
    Ok(match dtype {
        DType::I32 => TensorData::I32(v.to_vec()),
        DType::I8 => TensorData::I8(narrow(name, dtype, v)?),
        DType::U8 => TensorData::U8(narrow(name, dtype, v)?),
        DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
        DType::F16 => TensorData::F16(bits(v)?.into_iter().map(f16::from_bits).collect()),
        DType::BF16 => TensorData::BF16(bits(v)?.into_iter().map(bf16::from_bits).collect()),
        other => {
            return Err(OnnxError::tensor(
                name,
                format!("int32_data cannot hold {other}"),
            ));
        }
    })
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

/// Little-endian bytes (whose length the caller has checked) → storage.
pub(crate) fn from_le_bytes(dtype: DType, b: &[u8]) -> TensorData {
    match dtype {
        DType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::F64 => TensorData::F64(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::I32 => TensorData::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::F16 => TensorData::F16(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes(le(c)))
                .collect(),
        ),
        DType::I8 => TensorData::I8(b.iter().map(|&x| x as i8).collect()),
        DType::U8 => TensorData::U8(b.to_vec()),
        DType::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

/// Storage → little-endian bytes (the `raw_data` form).
pub fn to_le_bytes(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}

/// A `TensorProto` holding `t` in `raw_data` (for writing models and test data).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(t.dtype()),
        raw_data: to_le_bytes(t.data()).into(),
        ..TensorProto::default()
    }
}

/// Decodes a serialized `TensorProto` (the `.pb` files of ONNX test data).
pub fn decode_tensor(bytes: &[u8]) -> Result<Tensor, OnnxError> {
    let t = <TensorProto as prost::Message>::decode(bytes)
        .map_err(|e| OnnxError::Decode(format!("TensorProto: {e}")))?;
    tensor_from_proto(&t, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(dtype_from_onnx(dtype_to_onnx(d)), Some(d));
        }
        assert_eq!(dtype_from_onnx(8), None);
        assert_eq!(dtype_from_onnx(-3), None);
        assert_eq!(onnx_type_label(8), "STRING (8)");
    }

    #[test]
    fn dims_are_checked() {
        assert!(checked_dims("t", &[2, -1], DType::F32).is_err());
        assert!(checked_dims("t", &[i64::MAX, i64::MAX], DType::F32).is_err());
        assert!(checked_dims("t", &[1 << 20, 1 << 20, 1 << 20], DType::U8).is_err());
        assert_eq!(
            checked_dims("t", &[2, 0], DType::F32).unwrap(),
            (vec![2, 0], 0)
        );
        assert_eq!(checked_dims("t", &[], DType::F32).unwrap(), (vec![], 1));
    }
}
