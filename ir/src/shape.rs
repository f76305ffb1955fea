//! Static and symbolic shapes, and numpy-style broadcasting.

use std::collections::BTreeMap;
use std::fmt;

/// One dimension: a known extent or a named symbol (ONNX `dim_param`) that is
/// bound to a value at compile time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A tensor shape whose dims may be symbolic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dims as numbers when none is symbolic.
    pub fn as_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::known).collect()
    }

    /// Element count when every dim is known.
    pub fn numel(&self) -> Option<usize> {
        self.as_known()?
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// Replaces bound symbols by their values; unbound ones stay symbolic.
    pub fn bind(&self, bindings: &BTreeMap<String, usize>) -> Shape {
        Shape(
            self.0
                .iter()
                .map(|d| match d {
                    Dim::Sym(s) => bindings.get(s).map_or(d.clone(), |&v| Dim::Known(v)),
                    known => known.clone(),
                })
                .collect(),
        )
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Numpy/ONNX multidirectional broadcasting of two shapes.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        out.push(match (da, db) {
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d,
            (x, y) if x == y => x,
            // Two different symbols, or a symbol and a number: only legal if
            // they are equal at run time; assume the non-1 known value wins.
            (Dim::Sym(_), k @ Dim::Known(_)) | (k @ Dim::Known(_), Dim::Sym(_)) => k,
            (x @ Dim::Sym(_), Dim::Sym(_)) => x,
            (x, y) => return Err(format!("cannot broadcast {a} with {b} (dim {x} vs {y})")),
        });
    }
    Ok(Shape(out))
}

/// Broadcast of plain numeric shapes.
pub fn broadcast_known(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let s = broadcast(&Shape::known(a), &Shape::known(b))?;
    Ok(s.as_known().expect("known inputs give known output"))
}

fn dim_from_right(s: &Shape, from_right: usize) -> Dim {
    if from_right < s.rank() {
        s.0[s.rank() - 1 - from_right].clone()
    } else {
        Dim::Known(1)
    }
}

/// Normalises a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_known(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_known(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_known(&[2, 3], &[4, 3]).is_err());
        let s = broadcast(
            &Shape(vec![Dim::Sym("B".into()), Dim::Known(1)]),
            &Shape::known(&[7]),
        )
        .unwrap();
        assert_eq!(s.to_string(), "[B,7]");
    }

    #[test]
    fn axes_and_strides() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert!(normalize_axis(3, 3).is_err());
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
