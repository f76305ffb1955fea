//! Dense host tensors: constants in the graph, and the values the reference
//! interpreter passes between ops.

use crate::dtype::DType;
use half::{bf16, f16};
use std::sync::Arc;

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

    /// Side-by-side blocks: row `r` of the result is row `r` of each part
    /// in turn, part `i` having `rows` rows of `width_i` elements (so with
    /// `rows = 1`, plain concatenation). `None` when the parts' dtypes differ
    /// or a part does not hold `rows · width` elements.
    pub fn concat_rows(parts: &[(&TensorData, usize)], rows: usize) -> Option<TensorData> {
        let first = parts.first()?.0.dtype();
        for &(d, w) in parts {
            if d.dtype() != first || Some(d.len()) != rows.checked_mul(w) {
                return None;
            }
        }
        let total: usize = parts.iter().map(|&(_, w)| w).sum();
        macro_rules! cat {
            ($variant:ident) => {{
                let mut out = Vec::with_capacity(total.checked_mul(rows)?);
                for r in 0..rows {
                    for &(d, w) in parts {
                        let TensorData::$variant(v) = d else {
                            return None;
                        };
                        out.extend_from_slice(&v[r * w..(r + 1) * w]);
                    }
                }
                TensorData::$variant(out)
            }};
        }
        Some(match first {
            DType::F32 => cat!(F32),
            DType::F16 => cat!(F16),
            DType::BF16 => cat!(BF16),
            DType::F64 => cat!(F64),
            DType::I64 => cat!(I64),
            DType::I32 => cat!(I32),
            DType::I8 => cat!(I8),
            DType::U8 => cat!(U8),
            DType::Bool => cat!(Bool),
        })
    }

    /// Elements at `indices` (each < len), in that order, same dtype.
    pub fn gather(&self, indices: &[usize]) -> TensorData {
        map_variant!(self, v => indices.iter().map(|&i| v[i]).collect())
    }
}

/// A dense, row-major tensor with a static shape.
///
/// The elements are shared: cloning a tensor (a graph copy for the
/// optimisation passes, a weight handed to the kernel program, the JIT's
/// copy of the program) costs a reference count, not the data, which keeps
/// big models' weights in memory once. Writers copy shared data first
/// ([`Tensor::as_mut_ptr`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<TensorData>,
}

/// Element count of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Fails when the element count of `shape` differs from the data length.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        match checked_numel(&shape) {
            Some(n) if n == data.len() => Ok(Tensor {
                shape,
                data: Arc::new(data),
            }),
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
            data: Arc::new(TensorData::F32(vec![x])),
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

    /// Mutable address of the first element, for compiled kernels to write
    /// (data shared with clones is copied first, so they do not see it).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        Arc::make_mut(&mut self.data).as_mut_ptr()
    }

    /// The elements (copied only when another tensor shares them).
    pub fn into_data(self) -> TensorData {
        Arc::unwrap_or_clone(self.data)
    }

    /// Whether `self` and `other` hold the same storage (not just equal
    /// elements): clones share it.
    pub fn shares_data(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &*self.data {
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

    /// The same elements viewed with another shape of equal element count
    /// (sharing the storage).
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, String> {
        match checked_numel(&shape) {
            Some(n) if n == self.data.len() => Ok(Tensor {
                shape,
                data: self.data,
            }),
            _ => Tensor::new(shape, self.into_data()),
        }
    }

    /// ONNX Cast: float→int truncates toward zero, anything→bool is `x != 0`.
    pub fn cast(&self, to: DType) -> Tensor {
        let data = if self.dtype() == to {
            return self.clone();
        } else if self.dtype().is_float() {
            TensorData::from_f64(to, &self.to_f64_vec())
        } else {
            TensorData::from_i64(to, &self.to_i64_vec())
        };
        Tensor {
            shape: self.shape.clone(),
            data: Arc::new(data),
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
    fn clones_share_storage_until_written() {
        let a = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let mut b = a.clone();
        assert!(a.shares_data(&b));
        let r = a.clone().reshaped(vec![1, 3]).unwrap();
        assert!(r.shares_data(&a));
        assert_eq!(r.shape(), &[1, 3]);
        assert!(a.clone().reshaped(vec![2, 2]).is_err());
        // A write through one handle copies first: the other keeps its values.
        let p = b.as_mut_ptr().cast::<f32>();
        // SAFETY: `b` holds three f32 elements, its own after `as_mut_ptr`.
        unsafe { *p = 9.0 };
        assert!(!a.shares_data(&b));
        assert_eq!(a.as_f32().unwrap(), &[1.0, 2.0, 3.0]);
        assert_eq!(b.as_f32().unwrap(), &[9.0, 2.0, 3.0]);
        assert_eq!(b.into_data(), TensorData::F32(vec![9.0, 2.0, 3.0]));
        assert_eq!(a.cast(DType::F32), a);
    }

    #[test]
    fn concat_rows_places_blocks_side_by_side() {
        let a = TensorData::I32(vec![1, 2, 3, 4]); // [2, 2]
        let b = TensorData::I32(vec![5, 6]); // [2, 1]
        let got = TensorData::concat_rows(&[(&a, 2), (&b, 1)], 2).unwrap();
        let mut want = vec![];
        for r in 0..2 {
            want.extend([[1, 2], [3, 4]][r]);
            want.push([5, 6][r]);
        }
        assert_eq!(got, TensorData::I32(want));
        assert_eq!(
            TensorData::concat_rows(&[(&a, 4), (&b, 2)], 1).unwrap(),
            TensorData::I32(vec![1, 2, 3, 4, 5, 6])
        );
        let f = TensorData::F32(vec![0.0; 2]);
        assert_eq!(TensorData::concat_rows(&[(&a, 2), (&f, 1)], 2), None);
        assert_eq!(TensorData::concat_rows(&[(&a, 3)], 2), None);
        assert_eq!(TensorData::concat_rows(&[(&a, usize::MAX)], 2), None);
        assert_eq!(TensorData::concat_rows(&[], 2), None);
    }

    #[test]
    fn gather_keeps_variant() {
        let d = TensorData::I32(vec![10, 20, 30]);
        assert_eq!(d.gather(&[2, 0]), TensorData::I32(vec![30, 10]));
    }
}
