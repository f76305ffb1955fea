//! Resample (the IR's internal per-axis linear map, made by the
//! `fold-resample` pass): the maps applied one axis at a time in f64 by
//! [`crate::resize::apply_maps`], the result rounded to the input's type.

use varc_ir::Tensor;
use varc_ir::resample::AxisMap;

/// Resample(X) with one optional map per axis (`None`: identity).
pub fn resample(x: &Tensor, maps: &[Option<AxisMap>]) -> Result<Tensor, String> {
    if !x.dtype().is_float() {
        return Err(format!("Resample takes a float tensor, not {}", x.dtype()));
    }
    if maps.len() != x.rank() {
        return Err(format!(
            "Resample has {} axis maps for a rank-{} tensor",
            maps.len(),
            x.rank()
        ));
    }
    if maps.iter().flatten().any(AxisMap::has_fill) {
        return Err("Resample maps cannot have fill rows".into());
    }
    let full: Vec<AxisMap> = maps
        .iter()
        .zip(x.shape())
        .map(|(m, &n)| m.clone().unwrap_or_else(|| AxisMap::identity(n)))
        .collect();
    crate::resize::apply_maps(x, &full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::resample::area_map;

    #[test]
    fn area_rows_then_identity_columns() {
        let x = Tensor::from_f32(vec![4, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let y = resample(&x, &[Some(area_map(4, 2)), None]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.to_f64_vec(), vec![1.0, 2.0, 5.0, 6.0]);
        assert!(resample(&x, &[None]).is_err());
        let i = Tensor::from_i64(vec![2], vec![1, 2]).unwrap();
        assert!(resample(&i, &[None]).is_err());
    }
}
