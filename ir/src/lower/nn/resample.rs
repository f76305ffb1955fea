//! `Op::Resample`: the per-axis maps are already resolved, so this is the
//! Resize lowering's last half ([`super::resize::apply_maps`]): one gather
//! kernel when every map picks single inputs, else one tap-table kernel per
//! mapped axis.

use super::shape_of;
use crate::graph::TypeInfo;
use crate::lower::{Cx, View, input};
use crate::resample::AxisMap;

pub(super) fn resample(
    cx: &mut Cx,
    ins: &[Option<View>],
    outs: &[TypeInfo],
    maps: &[Option<AxisMap>],
) -> Result<View, String> {
    let x = input(ins, 0)?.clone();
    if maps.len() != x.shape.len() {
        return Err(format!(
            "Resample has {} axis maps for a rank-{} input",
            maps.len(),
            x.shape.len()
        ));
    }
    if !x.dtype.is_float() {
        return Err(format!("Resample takes a float tensor, not {}", x.dtype));
    }
    let full: Vec<AxisMap> = maps
        .iter()
        .zip(&x.shape)
        .map(|(m, &n)| m.clone().unwrap_or_else(|| AxisMap::identity(n)))
        .collect();
    if let Some(d) = (0..full.len()).find(|&d| full[d].in_len != x.shape[d] || full[d].has_fill()) {
        return Err(format!("Resample axis {d}: the map does not fit the input"));
    }
    let shape = shape_of(outs, 0)?;
    let planned: Vec<usize> = full.iter().map(|m| m.out_len).collect();
    if planned != shape {
        return Err(format!(
            "Resample: output shape {planned:?} differs from the inferred {shape:?}"
        ));
    }
    super::resize::apply_maps(cx, x, &full, &shape)
}
