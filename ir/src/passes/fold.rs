//! Constant folding and dead-code elimination.
//!
//! Type inference already evaluates every node whose operands are small
//! constants (the reference interpreter's node evaluator, below
//! [`crate::infer::FOLD_LIMIT`] elements) and every integer shape value it
//! can resolve (`Shape → Slice → Concat` chains, masks, position slices).
//! This pass materialises those values as `Op::Const` nodes, then removes
//! every node no graph output depends on.

use super::{Pass, PassCx, PassReport};
use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::Op;
use std::collections::HashSet;

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn required(&self) -> bool {
        false
    }
    fn about(&self) -> &'static str {
        "materialise values known at compile time as constants, then remove dead nodes"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError> {
        let mut rep = PassReport::new(self.name());
        let order = g.topo_order()?;
        for id in order {
            let node = g.node(id);
            if matches!(node.op, Op::Input | Op::Const(_)) {
                continue;
            }
            let outs: Vec<ValueRef> = (0..node.outputs.len())
                .map(|slot| ValueRef { node: id, slot })
                .collect();
            let known: Vec<_> = outs
                .iter()
                .filter_map(|v| cx.inferred.consts.get(v).cloned())
                .collect();
            if known.len() != outs.len() {
                continue;
            }
            let name = node.name.clone();
            let what = format!("{} folded to a constant", node.op.kind());
            if !cx.allow("fold-constants", &name, &what) {
                continue;
            }
            for (v, t) in outs.into_iter().zip(known) {
                let vname = g.value(v).name.clone();
                let c = g.add_const(vname, t);
                g.replace_uses(v, c);
            }
            rep.fire(name, what);
        }
        let dead = eliminate_dead(g);
        if dead > 0 {
            rep.fire("(graph)", format!("removed {dead} dead nodes"));
        }
        Ok(rep)
    }
}

/// Removes every node that no graph output depends on (graph inputs stay);
/// returns how many were removed.
pub fn eliminate_dead(g: &mut Graph) -> usize {
    let mut live: HashSet<NodeId> = g.inputs.iter().copied().collect();
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|v| v.node).collect();
    while let Some(id) = stack.pop() {
        if !live.insert(id) {
            continue;
        }
        for v in g.node(id).inputs.iter().flatten() {
            if !live.contains(&v.node) {
                stack.push(v.node);
            }
        }
    }
    let dead: Vec<NodeId> = g.node_ids().filter(|id| !live.contains(id)).collect();
    for &id in &dead {
        g.remove_node(id);
    }
    dead.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::B;
    use crate::infer::{NoFold, infer_types_partial};
    use crate::op::BinaryOp;
    use crate::passes::{PipelineOptions, run_pipeline};

    #[test]
    fn shape_chain_folds_and_dies() {
        let mut b = B::default();
        let x = b.input("x", "f32[2,3,4]");
        let s = b.op(
            Op::Shape {
                start: 0,
                end: None,
            },
            &[x],
        );
        let r = b.op(Op::Reshape { allowzero: false }, &[x, s]);
        let unused = b.op(Op::Binary(BinaryOp::Add), &[x, x]);
        let _ = unused;
        b.g.outputs = vec![r];
        let passes: Vec<Box<dyn Pass>> = vec![Box::new(FoldConstants)];
        let (rep, _) =
            run_pipeline(&mut b.g, &passes, &PipelineOptions::default(), &NoFold).unwrap();
        let kinds: Vec<_> = b.g.nodes().map(|(_, n)| n.op.kind()).collect();
        assert!(
            !kinds.contains(&"Shape") && !kinds.contains(&"Add"),
            "{kinds:?}"
        );
        assert_eq!(
            rep.passes[0].report.fired.len(),
            2,
            "{:?}",
            rep.passes[0].report
        );
        crate::verify::verify(&b.g).unwrap();
        infer_types_partial(&mut b.g, &Default::default(), &NoFold).unwrap();
    }

    #[test]
    fn dce_keeps_inputs() {
        let mut b = B::default();
        let x = b.input("x", "f32[2]");
        let y = b.input("y", "f32[2]");
        b.g.outputs = vec![x];
        let _ = y;
        assert_eq!(eliminate_dead(&mut b.g), 0);
        assert_eq!(b.g.inputs.len(), 2);
    }
}
