//! Element values lifted out of their storage type: floats as f64, integers
//! as i64, bool as bool. The lift and the way back (`into_tensor`) are exact
//! for every dtype, so data movement through `Vals` never changes a value.

use crate::common::{R, tensor};
use varc_ir::{DType, Tensor, TensorData};

#[derive(Clone, Debug, PartialEq)]
pub enum Vals {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Vals {
    pub fn of(t: &Tensor) -> Vals {
        match t.data() {
            TensorData::Bool(v) => Vals::B(v.clone()),
            d if d.dtype().is_float() => Vals::F(d.to_f64_vec()),
            d => Vals::I(d.to_i64_vec()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Vals::F(v) => v.len(),
            Vals::I(v) => v.len(),
            Vals::B(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Storage of `dtype` (floats rounded to nearest, integers wrapped).
    pub fn into_data(self, dtype: DType) -> TensorData {
        match self {
            Vals::F(v) => TensorData::from_f64(dtype, &v),
            Vals::I(v) => TensorData::from_i64(dtype, &v),
            Vals::B(v) if dtype == DType::Bool => TensorData::Bool(v),
            Vals::B(v) => {
                TensorData::from_i64(dtype, &v.iter().map(|&b| b as i64).collect::<Vec<_>>())
            }
        }
    }

    pub fn into_tensor(self, dtype: DType, shape: Vec<usize>) -> R<Tensor> {
        tensor(shape, self.into_data(dtype))
    }

    /// `out[i] = self[idx[i]]`; every index must be in range.
    pub fn gather(&self, idx: &[usize]) -> R<Vals> {
        fn go<T: Copy>(v: &[T], idx: &[usize]) -> R<Vec<T>> {
            idx.iter()
                .map(|&i| {
                    v.get(i)
                        .copied()
                        .ok_or_else(|| format!("internal: index {i} out of range"))
                })
                .collect()
        }
        Ok(match self {
            Vals::F(v) => Vals::F(go(v, idx)?),
            Vals::I(v) => Vals::I(go(v, idx)?),
            Vals::B(v) => Vals::B(go(v, idx)?),
        })
    }

    /// `out[i] = self[idx[i]]`, or `fill` where `idx[i]` is `None`.
    /// Every `Some` index must be in range (callers construct them so).
    pub fn pick(&self, idx: &[Option<usize>], fill: &Vals) -> R<Vals> {
        fn go<T: Copy>(v: &[T], idx: &[Option<usize>], fill: T) -> R<Vec<T>> {
            idx.iter()
                .map(|i| match i {
                    Some(i) => v
                        .get(*i)
                        .copied()
                        .ok_or_else(|| format!("internal: index {i} out of range")),
                    None => Ok(fill),
                })
                .collect()
        }
        let bad = || "internal: fill value of another kind".to_string();
        Ok(match (self, fill) {
            (Vals::F(v), Vals::F(f)) => Vals::F(go(v, idx, *f.first().ok_or_else(bad)?)?),
            (Vals::I(v), Vals::I(f)) => Vals::I(go(v, idx, *f.first().ok_or_else(bad)?)?),
            (Vals::B(v), Vals::B(f)) => Vals::B(go(v, idx, *f.first().ok_or_else(bad)?)?),
            _ => return Err(bad()),
        })
    }
}

/// Elements of `t` at `idx` (each in range by construction), same dtype.
pub fn gather_data(t: &Tensor, idx: &[usize]) -> R<TensorData> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= t.numel()) {
        return Err(format!(
            "internal: element index {bad} out of range for {} elements",
            t.numel()
        ));
    }
    Ok(t.data().gather(idx))
}

/// Concatenation of the elements of several tensors of one dtype.
pub fn concat_vals(parts: &[Vals]) -> R<Vals> {
    let mut out = match parts.first() {
        Some(Vals::F(_)) => Vals::F(Vec::new()),
        Some(Vals::I(_)) => Vals::I(Vec::new()),
        Some(Vals::B(_)) => Vals::B(Vec::new()),
        None => return Err("nothing to concatenate".into()),
    };
    for p in parts {
        match (&mut out, p) {
            (Vals::F(o), Vals::F(v)) => o.extend_from_slice(v),
            (Vals::I(o), Vals::I(v)) => o.extend_from_slice(v),
            (Vals::B(o), Vals::B(v)) => o.extend_from_slice(v),
            _ => return Err("operands of different element kinds".into()),
        }
    }
    Ok(out)
}
