//! Dense host tensors: constants in the graph, and the values the reference
//! interpreter passes between ops.

use crate::dtype::DType;
use half::{bf16, f16};

/// Element storage, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

macro_rules! each_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::Bool($v) => $body,
        }
    };
}

/// Applies `$body` to the vector inside any variant and re-wraps the result in
/// the same variant.
macro_rules! map_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::BF16($v) => TensorData::BF16($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::Bool($v) => TensorData::Bool($body),
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element widened to f64 (bool as 0/1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Every element as i64: floats truncate toward zero (ONNX Cast), bool as 0/1.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            other => other.to_f64_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// Builds storage of `dtype` from f64 values with ONNX Cast semantics:
    /// floats round to nearest, integers truncate toward zero and saturate,
    /// bool is `x != 0`.
    pub fn from_f64(dtype: DType, v: &[f64]) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::F64 => TensorData::F64(v.to_vec()),
            DType::I64 => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        }
    }

    /// Builds storage of `dtype` from i64 values (integers wrap like a C cast,
    /// which is what ONNX Cast between integer types does).
    pub fn from_i64(dtype: DType, v: &[i64]) -> TensorData {
        match dtype {
            DType::I64 => TensorData::I64(v.to_vec()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
            float => TensorData::from_f64(float, &v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        }
    }

    /// All-zero (false) storage of `len` elements.
    pub fn zeros(dtype: DType, len: usize) -> TensorData {
        match dtype {
            DType::Bool => TensorData::Bool(vec![false; len]),
            d if d.is_float() => TensorData::from_f64(d, &vec![0.0; len]),
            d => TensorData::from_i64(d, &vec![0; len]),
        }
    }

    /// Address of the first element, for handing the storage to compiled
    /// kernels (bool is one byte 0/1, as kernels store it).
    pub fn as_ptr(&self) -> *const u8 {
        each_variant!(self, v => v.as_ptr().cast::<u8>())
    }

    /// Mutable address of the first element (see [`TensorData::as_ptr`]).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        each_variant!(self, v => v.as_mut_ptr().cast::<u8>())
    }

    /// Little-endian bytes of every element (bool as one byte 0/1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        }
    }

    /// Decodes little-endian element bytes; the length must be a multiple of
    /// the element size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<TensorData, String> {
        let size = dtype.size();
        if !bytes.len().is_multiple_of(size) {
            return Err(format!(
                "{} bytes is not a whole number of {dtype} elements",
                bytes.len()
            ));
        }
        macro_rules! le {
            ($variant:ident, $t:ty) => {
                TensorData::$variant(
                    bytes
                        .chunks_exact(size)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk has element size")))
                        .collect(),
                )
            };
        }
        Ok(match dtype {
            DType::F32 => le!(F32, f32),
            DType::F16 => le!(F16, f16),
            DType::BF16 => le!(BF16, bf16),
            DType::F64 => le!(F64, f64),
            DType::I64 => le!(I64, i64),
            DType::I32 => le!(I32, i32),
            DType::I8 => le!(I8, i8),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        })
    }

    /// Elements at `indices` (each < len), in that order, same dtype.
    pub fn gather(&self, indices: &[usize]) -> TensorData {
        map_variant!(self, v => indices.iter().map(|&i| v[i]).collect())
    }
}

/// A dense, row-major tensor with a static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Element count of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Fails when the element count of `shape` differs from the data length.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        match checked_numel(&shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape, data }),
            Some(n) => Err(format!(
                "shape {shape:?} holds {n} elements but {} were given",
                data.len()
            )),
            None => Err(format!("shape {shape:?} overflows the element count")),
        }
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![x]),
        }
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::I64(v))
    }

    /// `dtype` storage of `shape` filled from f64 values (see [`TensorData::from_f64`]).
    pub fn from_f64_as(dtype: DType, shape: Vec<usize>, v: &[f64]) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::from_f64(dtype, v))
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, String> {
        let n = checked_numel(&shape).ok_or("shape overflows the element count")?;
        Tensor::new(shape, TensorData::zeros(dtype, n))
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn byte_size(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Mutable address of the first element, for compiled kernels to write.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }

    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.data.to_i64_vec()
    }

    /// The same elements viewed with another shape of equal element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, String> {
        Tensor::new(shape, self.data)
    }

    /// ONNX Cast: float→int truncates toward zero, anything→bool is `x != 0`.
    pub fn cast(&self, to: DType) -> Tensor {
        let data = if self.dtype() == to {
            self.data.clone()
        } else if self.dtype().is_float() {
            TensorData::from_f64(to, &self.to_f64_vec())
        } else {
            TensorData::from_i64(to, &self.to_i64_vec())
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_f32(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(Tensor::from_f32(vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::zeros(DType::F32, vec![usize::MAX, 2]).is_err());
    }

    #[test]
    fn cast_truncates_and_tests_nonzero() {
        let t = Tensor::from_f32(vec![4], vec![-1.7, 0.0, 2.9, 0.5]).unwrap();
        assert_eq!(t.cast(DType::I64).to_i64_vec(), vec![-1, 0, 2, 0]);
        assert_eq!(
            t.cast(DType::Bool).data(),
            &TensorData::Bool(vec![true, false, true, true])
        );
    }

    #[test]
    fn le_bytes_round_trip() {
        for dtype in DType::ALL {
            let d = TensorData::from_f64(dtype, &[0.0, 1.0, 3.0]);
            let back = TensorData::from_le_bytes(dtype, &d.to_le_bytes()).unwrap();
            assert_eq!(back, d, "{dtype}");
        }
        assert!(TensorData::from_le_bytes(DType::F32, &[0; 6]).is_err());
    }

    #[test]
    fn gather_keeps_variant() {
        let d = TensorData::I32(vec![10, 20, 30]);
        assert_eq!(d.gather(&[2, 0]), TensorData::I32(vec![30, 10]));
    }
}
