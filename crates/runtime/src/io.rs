//! Named tensor files: `.safetensors` and NumPy `.npz`, chosen by extension.

use half::{bf16, f16};
use npyz::WriterBuilder;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use thiserror::Error;
use varc_ir::{DType, Tensor, TensorData};

/// Tensors keyed by name, in file order (safetensors: sorted by name).
pub type NamedTensors = Vec<(String, Tensor)>;

#[derive(Debug, Error)]
pub enum IoError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: unknown tensor file extension (use .safetensors or .npz)")]
    Extension { path: String },
}

enum Kind {
    Safetensors,
    Npz,
}

fn kind_of(path: &Path) -> Result<Kind, IoError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Kind::Safetensors),
        Some("npz") => Ok(Kind::Npz),
        _ => Err(IoError::Extension {
            path: path.display().to_string(),
        }),
    }
}

/// Reads every tensor of a `.safetensors` or `.npz` file.
pub fn read_tensors(path: &Path) -> Result<NamedTensors, IoError> {
    let fmt = |reason: String| IoError::Format {
        path: path.display().to_string(),
        reason,
    };
    let kind = kind_of(path)?;
    let bytes = std::fs::read(path).map_err(|source| IoError::Io {
        path: path.display().to_string(),
        source,
    })?;
    match kind {
        Kind::Safetensors => read_safetensors(&bytes).map_err(fmt),
        Kind::Npz => read_npz(&bytes).map_err(fmt),
    }
}

/// Writes tensors to a `.safetensors` or `.npz` file.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), IoError> {
    let fmt = |reason: String| IoError::Format {
        path: path.display().to_string(),
        reason,
    };
    let bytes = match kind_of(path)? {
        Kind::Safetensors => write_safetensors(tensors).map_err(fmt)?,
        Kind::Npz => write_npz(tensors).map_err(fmt)?,
    };
    std::fs::write(path, bytes).map_err(|source| IoError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    DType::ALL.into_iter().find(|&x| st_dtype(x) == d)
}

fn read_safetensors(bytes: &[u8]) -> Result<NamedTensors, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| e.to_string())?;
        let dtype = from_st_dtype(view.dtype())
            .ok_or_else(|| format!("tensor '{name}': unsupported dtype {:?}", view.dtype()))?;
        let data = TensorData::from_le_bytes(dtype, view.data())
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        let t = Tensor::new(view.shape().to_vec(), data)
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        out.push((name.to_string(), t));
    }
    Ok(out)
}

fn write_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<u8>, &Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.data().to_le_bytes(), t))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, t)| {
            safetensors::tensor::TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("tensor '{n}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

fn read_npz(bytes: &[u8]) -> Result<NamedTensors, String> {
    let mut archive =
        npyz::npz::NpzArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut out = Vec::new();
    for name in names {
        let npy = archive
            .by_name(&name)
            .map_err(|e| format!("array '{name}': {e}"))?
            .ok_or_else(|| format!("array '{name}' vanished"))?;
        if npy.order() == npyz::Order::Fortran {
            return Err(format!(
                "array '{name}' is in Fortran order; save it C-contiguous"
            ));
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let descr = match npy.dtype() {
            npyz::DType::Plain(type_str) => type_str.to_string(),
            other => {
                return Err(format!(
                    "array '{name}': unsupported structured dtype {}",
                    other.descr()
                ));
            }
        };
        let e = |err: std::io::Error| format!("array '{name}': {err}");
        let data = match descr.trim_start_matches(['<', '|', '=']) {
            "f4" => TensorData::F32(npy.into_vec().map_err(e)?),
            "f8" => TensorData::F64(npy.into_vec().map_err(e)?),
            "f2" => TensorData::F16(npy.into_vec::<f16>().map_err(e)?),
            "i8" => TensorData::I64(npy.into_vec().map_err(e)?),
            "i4" => TensorData::I32(npy.into_vec().map_err(e)?),
            "i1" => TensorData::I8(npy.into_vec().map_err(e)?),
            "u1" => TensorData::U8(npy.into_vec().map_err(e)?),
            "b1" => TensorData::Bool(npy.into_vec::<bool>().map_err(e)?),
            other => return Err(format!("array '{name}': unsupported dtype '{other}'")),
        };
        out.push((
            name.clone(),
            Tensor::new(shape, data).map_err(|err| format!("array '{name}': {err}"))?,
        ));
    }
    Ok(out)
}

fn write_npz(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, String> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut npz = npyz::npz::NpzWriter::new(&mut cursor);
        for (name, t) in tensors {
            let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
            macro_rules! put {
                ($ty:ty, $v:expr) => {{
                    let mut w = npz
                        .array::<$ty>(name, Default::default())
                        .map_err(|e| e.to_string())?
                        .default_dtype()
                        .shape(&shape)
                        .begin_nd()
                        .map_err(|e| e.to_string())?;
                    w.extend($v.iter().copied()).map_err(|e| e.to_string())?;
                    w.finish().map_err(|e| e.to_string())?;
                }};
            }
            match t.data() {
                TensorData::F32(v) => put!(f32, v),
                TensorData::F64(v) => put!(f64, v),
                TensorData::F16(v) => put!(f16, v),
                TensorData::I64(v) => put!(i64, v),
                TensorData::I32(v) => put!(i32, v),
                TensorData::I8(v) => put!(i8, v),
                TensorData::U8(v) => put!(u8, v),
                TensorData::Bool(v) => put!(bool, v),
                TensorData::BF16(v) => {
                    // NumPy has no bfloat16: widen to f32, the usual convention.
                    let wide: Vec<f32> = v.iter().map(|x: &bf16| x.to_f32()).collect();
                    put!(f32, wide)
                }
            }
        }
        npz.zip_writer().finish().map_err(|e| e.to_string())?;
    }
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NamedTensors {
        vec![
            (
                "a".into(),
                Tensor::from_f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]).unwrap(),
            ),
            (
                "b".into(),
                Tensor::from_i64(vec![3], vec![7, -1, 0]).unwrap(),
            ),
            (
                "c".into(),
                Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            ),
        ]
    }

    #[test]
    fn round_trips_both_formats() {
        let dir = std::env::temp_dir().join(format!("varc-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for ext in ["safetensors", "npz"] {
            let p = dir.join(format!("t.{ext}"));
            write_tensors(&p, &sample()).unwrap();
            let mut back = read_tensors(&p).unwrap();
            back.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(back, sample(), "{ext}");
        }
        assert!(matches!(
            read_tensors(&dir.join("t.txt")),
            Err(IoError::Extension { .. })
        ));
        std::fs::write(dir.join("bad.npz"), b"not a zip").unwrap();
        assert!(read_tensors(&dir.join("bad.npz")).is_err());
        std::fs::write(dir.join("bad.safetensors"), [255u8; 16]).unwrap();
        assert!(read_tensors(&dir.join("bad.safetensors")).is_err());
    }
}
