//! Resamples as per-axis linear maps: `Resize` (any mode, through
//! [`crate::resample::plan`]) and `AveragePool` with kernel = stride and no
//! padding (area down-sampling). The analysis pass reports each one and
//! which consecutive pairs compose into one per-axis map; `fold-resample`
//! turns them into `Op::Resample` and composes them. [`maps`] (which also
//! reads `Op::Resample`) is what the commutation pass builds on.

use super::matchers::{konst, out0, shape};
use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{AutoPad, CoordMode, Op, ResizeAttrs};
use crate::resample::{AxisMap, plan};

/// `(input, one map per axis)` of a resample node.
pub(super) fn maps(g: &Graph, cx: &PassCx, id: NodeId) -> Result<(ValueRef, Vec<AxisMap>), String> {
    let n = g.node(id);
    let x = n.inputs.first().copied().flatten().ok_or("no operand")?;
    let xs = shape(g, x).ok_or("input shape is not static")?;
    match &n.op {
        Op::Resize(a) => Ok((x, resize_maps(g, cx, id, &xs, a)?)),
        Op::AveragePool {
            window: w,
            ceil_mode,
            ..
        } => {
            let k = w.kernel_shape.clone().ok_or("no kernel_shape")?;
            let ones = |v: &[usize]| v.iter().all(|&d| d == 1);
            if *ceil_mode
                || w.strides != k
                || w.pads.iter().any(|&p| p != 0)
                || !ones(&w.dilations)
                || !matches!(w.auto_pad, None | Some(AutoPad::NotSet | AutoPad::Valid))
            {
                return Err("AveragePool is not kernel = stride without padding".into());
            }
            let lead = xs.len().checked_sub(k.len()).ok_or("rank")?;
            let mut maps: Vec<AxisMap> = xs[..lead].iter().map(|&d| AxisMap::identity(d)).collect();
            for (&len, &k) in xs[lead..].iter().zip(&k) {
                if k == 0 || k > len {
                    return Err("kernel larger than the input".into());
                }
                let out = (len - k) / k + 1;
                let taps =
                    (0..out).map(|o| (o * k..o * k + k).map(|i| (i, 1.0 / k as f64)).collect());
                maps.push(AxisMap {
                    out_len: out,
                    in_len: len,
                    taps: taps.collect(),
                    fill: vec![None; out],
                });
            }
            Ok((x, maps))
        }
        Op::Resample { maps } => {
            if maps.len() != xs.len() {
                return Err("map count differs from the rank".into());
            }
            Ok((
                x,
                maps.iter()
                    .zip(&xs)
                    .map(|(m, &n)| m.clone().unwrap_or_else(|| AxisMap::identity(n)))
                    .collect(),
            ))
        }
        _ => Err("not a resample".into()),
    }
}

fn resize_maps(
    g: &Graph,
    cx: &PassCx,
    id: NodeId,
    xs: &[usize],
    a: &ResizeAttrs,
) -> Result<Vec<AxisMap>, String> {
    let n = g.node(id);
    let get = |slot: usize| -> Result<Option<Vec<f64>>, String> {
        match n.inputs.get(slot).copied().flatten() {
            None => Ok(None),
            Some(v) => match konst(g, cx, v) {
                Some(t) if t.numel() == 0 => Ok(None),
                Some(t) => Ok(Some(t.to_f64_vec())),
                None => Err(format!("operand {slot} is not constant")),
            },
        }
    };
    let (roi, scales, sizes) = if a.scales_input_only {
        (None, get(1)?, None)
    } else {
        // roi matters only for tf_crop_and_resize, scales only without
        // sizes: those must be constants; the others may be anything.
        let roi = if a.coord == CoordMode::TfCropAndResize {
            get(1)?
        } else {
            get(1).ok().flatten()
        };
        let sizes = get(3)?;
        let scales = if sizes.is_none() {
            get(2)?
        } else {
            get(2).ok().flatten()
        };
        (roi, scales, sizes)
    };
    let sizes: Option<Vec<i64>> = sizes.map(|v| v.iter().map(|&x| x as i64).collect());
    let p = plan(xs, roi.as_deref(), scales.as_deref(), sizes.as_deref(), a)?;
    if shape(g, out0(id)).as_deref() != Some(&p.out_shape[..]) {
        return Err("planned shape differs from the inferred one".into());
    }
    Ok(p.maps)
}

pub(super) fn describe(maps: &[AxisMap]) -> String {
    let axes: Vec<String> = maps
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_identity())
        .map(|(d, m)| {
            format!(
                "axis {d}: {}→{} ({} taps)",
                m.in_len,
                m.out_len,
                m.max_taps()
            )
        })
        .collect();
    if axes.is_empty() {
        "identity".into()
    } else {
        axes.join(", ")
    }
}

pub struct ResampleAnalysis;

impl Pass for ResampleAnalysis {
    fn name(&self) -> &'static str {
        "resample-analysis"
    }
    fn about(&self) -> &'static str {
        "recognise Resize / AveragePool(k=s) as per-axis maps; report composable chains"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let ids: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Resize(_) | Op::AveragePool { .. }))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let name = g.node(id).name.clone();
            match maps(g, cx, id) {
                Err(why) => rep.skip(&name, format!("not a constant linear map: {why}")),
                Ok((x, outer)) => {
                    let fill = outer.iter().any(AxisMap::has_fill);
                    let unit = outer
                        .iter()
                        .all(|m| m.row_sums().iter().all(|s| (s - 1.0).abs() < 1e-9));
                    rep.notes.push(format!(
                        "{name}: {}{}{}",
                        describe(&outer),
                        if unit { "; rows sum to 1" } else { "" },
                        if fill {
                            "; has extrapolated outputs"
                        } else {
                            ""
                        }
                    ));
                    if let Ok((_, inner)) = maps(g, cx, x.node) {
                        let composed: Result<Vec<AxisMap>, String> = outer
                            .iter()
                            .zip(&inner)
                            .map(|(o, i)| o.compose(i))
                            .collect();
                        if let Ok(c) = composed {
                            rep.skip(
                                &name,
                                format!(
                                    "composes with '{}' into one map ({}); fold-resample applies it when the inner result has no other user",
                                    g.node(x.node).name,
                                    describe(&c)
                                ),
                            );
                        }
                    }
                }
            }
        }
        Ok(rep)
    }
}
