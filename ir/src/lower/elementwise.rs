//! Lowering of elementwise ops (to be written).

use super::{Cx, View};
use crate::graph::TypeInfo;
use crate::op::Op;

pub fn lower(cx: &mut Cx, op: &Op, ins: &[Option<View>], outs: &[TypeInfo]) -> Result<Vec<View>, String> {
    let _ = (cx, ins, outs);
    Err(format!("{} is not supported by the compiled backends yet", op.kind()))
}
