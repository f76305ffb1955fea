//! Agreement between computed outputs and reference (golden) outputs.

use varc_ir::Tensor;

/// How far `got` is from `want`, element by element.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub max_abs: f64,
    /// Largest |got - want| / |want| over elements with |want| > atol.
    pub max_rel: f64,
    /// Elements with |got - want| > atol + rtol·|want| (NaN matches NaN only).
    pub mismatches: usize,
    pub count: usize,
    /// Index of the worst element relative to its allowance, when any.
    pub worst: Option<(usize, f64, f64)>,
}

impl Agreement {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

/// Compares two tensors under `|got - want| <= atol + rtol * |want|`.
/// Dtype or shape differences are errors, not mismatches.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<Agreement, String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} differs from the expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} differs from the expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut a = Agreement {
        max_abs: 0.0,
        max_rel: 0.0,
        mismatches: 0,
        count: g.len(),
        worst: None,
    };
    let mut worst_ratio = 0.0f64;
    for (i, (&x, &y)) in g.iter().zip(&w).enumerate() {
        let ok_special = (x.is_nan() && y.is_nan()) || (x.is_infinite() && x == y);
        if ok_special {
            continue;
        }
        let diff = (x - y).abs();
        let allowed = atol + rtol * y.abs();
        if diff.is_nan() || diff > allowed {
            a.mismatches += 1;
        }
        let diff_for_stats = if diff.is_nan() { f64::INFINITY } else { diff };
        a.max_abs = a.max_abs.max(diff_for_stats);
        if y.abs() > atol {
            a.max_rel = a.max_rel.max(diff_for_stats / y.abs());
        }
        let ratio = if allowed > 0.0 {
            diff_for_stats / allowed
        } else {
            diff_for_stats
        };
        if ratio > worst_ratio {
            worst_ratio = ratio;
            a.worst = Some((i, x, y));
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_and_specials() {
        let w = Tensor::from_f32(vec![4], vec![1.0, 100.0, f32::NAN, f32::NEG_INFINITY]).unwrap();
        let g =
            Tensor::from_f32(vec![4], vec![1.00005, 100.02, f32::NAN, f32::NEG_INFINITY]).unwrap();
        let a = compare(&g, &w, 1e-4, 1e-6).unwrap();
        assert_eq!(a.mismatches, 1, "{a:?}");
        assert_eq!(a.worst.unwrap().0, 1);
        assert!(compare(&g, &w, 1e-3, 1e-6).unwrap().passed());
        let bad = Tensor::from_f32(vec![4], vec![1.0, 100.0, 0.0, f32::NEG_INFINITY]).unwrap();
        assert!(!compare(&bad, &w, 1.0, 1.0).unwrap().passed());
        assert!(
            compare(
                &Tensor::from_f32(vec![2, 2], vec![0.0; 4]).unwrap(),
                &w,
                1.0,
                1.0
            )
            .is_err()
        );
    }
}
