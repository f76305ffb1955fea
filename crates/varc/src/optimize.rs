//! The optimisation pipeline on a loaded model (varc_ir::passes): run in
//! place with [`LoadedModel::optimize`], or implicitly by
//! [`LoadedModel::lower`] (and so by every compile path) on a copy of the
//! graph, unless [`LoadedModel::pipeline`] is `None`.

use crate::LoadedModel;
use anyhow::Result;
use varc_ir::Graph;
use varc_ir::infer::InferResult;
use varc_ir::passes::{PipelineOptions, PipelineReport, default_passes, run_pipeline};

pub use varc_ir::passes::PipelineOptions as PassOptions;

impl LoadedModel {
    /// Runs the optimisation pipeline on the model's graph in place (types
    /// re-inferred); later `lower` calls use the optimised graph as is.
    pub fn optimize(&mut self, opts: &PipelineOptions) -> Result<PipelineReport> {
        let (report, inferred) = run_pipeline(
            &mut self.model.graph,
            &default_passes(),
            &graph_options(opts),
            &varc_backend_ref::RefFolder,
        )?;
        self.inferred = inferred;
        self.optimized = true;
        Ok(report)
    }

    /// The graph and inference result to lower: the model's own when it was
    /// already optimised or passes are off, else an optimised copy.
    pub(crate) fn graph_to_lower(&self) -> Result<Option<(Graph, InferResult)>> {
        let Some(opts) = self.pipeline.as_ref().filter(|_| !self.optimized) else {
            return Ok(None);
        };
        let mut g = self.model.graph.clone();
        crate::timing::mark("clone graph");
        let (report, inferred) = run_pipeline(
            &mut g,
            &default_passes(),
            &graph_options(opts),
            &varc_backend_ref::RefFolder,
        )?;
        crate::timing::passes(&report);
        Ok(Some((g, inferred)))
    }
}

/// `opts` for the graph pipeline: without kernel-level pass names (kernel
/// fusion runs after lowering, see `LoadedModel::kernel_fusion`), which the
/// graph pipeline would reject as unknown.
fn graph_options(opts: &PipelineOptions) -> PipelineOptions {
    let mut o = opts.clone();
    o.disabled.retain(|d| d != varc_ir::kernel::fuse::PASS_NAME);
    o
}
