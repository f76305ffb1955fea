//! Operand access and argument checks shared by every op module.
//!
//! Op functions report failures as plain `String` reasons; the dispatcher in
//! `lib.rs` wraps them with the node's name and op.

use varc_ir::tensor::checked_numel;
use varc_ir::{DType, Tensor, TensorData};

pub type R<T> = Result<T, String>;

/// The most elements one tensor may hold (2^28, over 30 times the largest
/// tensor of the shipped models). Larger requests are refused with an error
/// instead of attempting (and aborting on) a huge allocation: the
/// interpreter keeps f64 working copies and index maps of 8 bytes per
/// element.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Operand `i`, which must be present.
pub fn arg<'a>(inputs: &[Option<&'a Tensor>], i: usize, what: &str) -> R<&'a Tensor> {
    opt(inputs, i).ok_or_else(|| format!("required input {i} ({what}) is missing"))
}

/// Operand `i` when present (`None` past the end of `inputs` too).
pub fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// The element count of `shape`, refused when it overflows or exceeds
/// [`MAX_ELEMENTS`].
pub fn numel(shape: &[usize]) -> R<usize> {
    match checked_numel(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(n),
        _ => Err(format!(
            "shape {shape:?} has too many elements (the reference interpreter allows at most {MAX_ELEMENTS})"
        )),
    }
}

/// Builds a tensor, turning an element-count mismatch into an error.
pub fn tensor(shape: Vec<usize>, data: TensorData) -> R<Tensor> {
    Tensor::new(shape, data)
}

/// The values of an integer tensor (int32/int64/...), as i64.
pub fn ints(t: &Tensor, what: &str) -> R<Vec<i64>> {
    if !t.dtype().is_int() {
        return Err(format!(
            "{what} must be an integer tensor, got {}",
            t.dtype()
        ));
    }
    Ok(t.to_i64_vec())
}

/// The single value of a one-element integer tensor.
pub fn scalar_int(t: &Tensor, what: &str) -> R<i64> {
    let v = ints(t, what)?;
    match v.as_slice() {
        [x] => Ok(*x),
        _ => Err(format!(
            "{what} must hold exactly one element, got shape {:?}",
            t.shape()
        )),
    }
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(axis: i64, rank: usize) -> R<usize> {
    varc_ir::shape::normalize_axis(axis, rank)
}

/// Normalises a list of axes, refusing duplicates.
pub fn axes(list: &[i64], rank: usize) -> R<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let n = axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated in {list:?}"));
        }
        out.push(n);
    }
    Ok(out)
}

pub fn require_float(t: &Tensor, what: &str) -> R<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {}", t.dtype()))
    }
}

pub fn same_dtype(a: &Tensor, b: &Tensor, what: &str) -> R<()> {
    if a.dtype() == b.dtype() {
        Ok(())
    } else {
        Err(format!(
            "{what}: operand element types differ ({} vs {})",
            a.dtype(),
            b.dtype()
        ))
    }
}

/// The element type an ONNX `stash_type` code names.
pub fn stash_dtype(code: i64) -> R<DType> {
    match code {
        1 => Ok(DType::F32),
        10 => Ok(DType::F16),
        11 => Ok(DType::F64),
        16 => Ok(DType::BF16),
        other => Err(format!("unsupported stash_type {other}")),
    }
}

/// Product of a run of dims (for outer/inner loop extents of a valid shape).
pub fn prod(dims: &[usize]) -> usize {
    dims.iter().product()
}
