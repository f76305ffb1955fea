//! Test helpers: run one pass (with inference and the verifier).

use super::{Pass, PassReport, PipelineOptions, run_pipeline};
use crate::graph::Graph;
use crate::infer::NoFold;
use crate::op::Op;

pub(crate) fn run_one(g: &mut Graph, pass: Box<dyn Pass>) -> PassReport {
    let opts = PipelineOptions {
        verify: true,
        ..PipelineOptions::default()
    };
    let (mut rep, _) = run_pipeline(g, &[pass], &opts, &NoFold).expect("pipeline");
    rep.passes.remove(0).report
}

/// Kinds of the non-input, non-constant nodes, sorted.
pub(crate) fn kinds(g: &Graph) -> Vec<&'static str> {
    let mut k: Vec<_> = g
        .nodes()
        .filter(|(_, n)| !matches!(n.op, Op::Input | Op::Const(_)))
        .map(|(_, n)| n.op.kind())
        .collect();
    k.sort();
    k
}
