//! Graph-to-graph optimisation passes and the pipeline that runs them.
//!
//! Every pass keeps the graph's semantics exactly, up to f32
//! reassociation. After each pass the pipeline re-runs type inference (when
//! the pass changed anything) and, when [`PipelineOptions::verify`] is set
//! (always in debug builds and tests), the verifier.
//!
//! A pass asks [`PassCx::allow`] before each rewrite, which lets
//! `--bisect-passes N` apply only the first N rewrites of the whole
//! pipeline; it records what fired where, and why it did not fire elsewhere,
//! in its [`PassReport`].

mod adaln;
mod attention;
mod commute;
mod fold;
mod fold_resample;
mod gelu;
mod groupnorm;
mod matchers;
mod qkv;
mod resample;
mod rmsnorm;
mod silu;

pub use adaln::FuseAdaLn;
pub use attention::FuseAttention;
pub use commute::CommuteResampleProjection;
pub use fold::{FoldConstants, eliminate_dead};
pub use fold_resample::FoldResample;
pub use gelu::FuseGelu;
pub use groupnorm::FuseGroupNorm;
pub use qkv::MergeProjections;
pub use resample::ResampleAnalysis;
pub use rmsnorm::FuseRmsNorm;
pub use silu::FuseSilu;

use crate::error::IrError;
use crate::graph::Graph;
use crate::infer::{ConstFold as Folder, InferResult, infer_types_partial};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One optimisation pass.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// A required pass cannot be disabled (the pipeline relies on it).
    fn required(&self) -> bool {
        false
    }
    /// One line on what the pass does.
    fn about(&self) -> &'static str;
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<PassReport, IrError>;
}

/// What a pass did: one entry per rewrite (`fired`) and per candidate it
/// left alone (`skipped`), each naming the node and the reason.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    pub pass: &'static str,
    pub fired: Vec<Site>,
    pub skipped: Vec<Site>,
    /// Free-form totals (e.g. projection FLOPs before/after).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub node: String,
    pub what: String,
}

impl PassReport {
    pub fn new(pass: &'static str) -> PassReport {
        PassReport {
            pass,
            ..PassReport::default()
        }
    }
    pub fn fire(&mut self, node: impl Into<String>, what: impl Into<String>) {
        self.fired.push(Site {
            node: node.into(),
            what: what.into(),
        });
    }
    pub fn skip(&mut self, node: impl Into<String>, why: impl Into<String>) {
        self.skipped.push(Site {
            node: node.into(),
            what: why.into(),
        });
    }
    pub fn changed(&self) -> bool {
        !self.fired.is_empty()
    }
}

/// What passes may use: the constant folder, the latest inference result,
/// and the rewrite budget for bisection.
pub struct PassCx<'a> {
    pub folder: &'a dyn Folder,
    pub inferred: InferResult,
    /// Rewrites still allowed (`None`: unlimited).
    pub budget: Option<usize>,
    /// Every rewrite allowed so far, in order ("pass: node: what").
    pub log: Vec<String>,
    /// Print each allowed rewrite to stderr (bisection).
    pub echo: bool,
}

impl PassCx<'_> {
    /// Asks to apply one rewrite; false when the bisection budget is spent.
    pub fn allow(&mut self, pass: &str, node: &str, what: &str) -> bool {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return false;
            }
            *b -= 1;
        }
        let line = format!("{pass}: {node}: {what}");
        if self.echo {
            eprintln!("rewrite {}: {line}", self.log.len() + 1);
        }
        self.log.push(line);
        true
    }
}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Passes (by name) not to run; required passes cannot be disabled.
    pub disabled: Vec<String>,
    /// Run the verifier after every pass.
    pub verify: bool,
    /// Apply only the first N rewrites (bisection), printing each.
    pub bisect: Option<usize>,
    /// Passes after which to hand back the graph's text form.
    pub print_after: Vec<String>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            disabled: vec![],
            verify: cfg!(debug_assertions),
            bisect: None,
            print_after: vec![],
        }
    }
}

/// What the pipeline did: per pass its report, time and FLOPs after it.
#[derive(Debug, Default)]
pub struct PipelineReport {
    pub passes: Vec<PassRun>,
    pub flops_before: u64,
    pub flops_after: u64,
    /// `(pass, text IR)` for each `print_after` pass that ran.
    pub printed: Vec<(String, String)>,
    /// Every applied rewrite, in order.
    pub log: Vec<String>,
}

#[derive(Debug)]
pub struct PassRun {
    pub report: PassReport,
    pub time: Duration,
    pub flops_after: u64,
    pub nodes_after: usize,
}

/// The default pipeline, in order.
pub fn default_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(FoldConstants),
        Box::new(FuseGelu),
        Box::new(FuseSilu),
        Box::new(FuseRmsNorm),
        Box::new(FuseGroupNorm),
        Box::new(FuseAdaLn),
        Box::new(FuseAttention),
        Box::new(ResampleAnalysis),
        Box::new(FoldResample),
        Box::new(CommuteResampleProjection),
        // Last: the commutation pass reasons about single projections.
        Box::new(MergeProjections),
        Box::new(FoldConstants),
    ]
}

/// Runs `passes` over `g`. Types must already be inferred; the returned
/// inference result is the one of the final graph.
pub fn run_pipeline(
    g: &mut Graph,
    passes: &[Box<dyn Pass>],
    opts: &PipelineOptions,
    folder: &dyn Folder,
) -> Result<(PipelineReport, InferResult), IrError> {
    for name in &opts.disabled {
        match passes.iter().find(|p| p.name() == name) {
            None => return Err(IrError::Graph(format!("no pass named '{name}'"))),
            Some(p) if p.required() => {
                return Err(IrError::Graph(format!("pass '{name}' is required")));
            }
            Some(_) => {}
        }
    }
    let inferred = infer_types_partial(g, &BTreeMap::new(), folder)?;
    let mut cx = PassCx {
        folder,
        inferred,
        budget: opts.bisect,
        log: vec![],
        echo: opts.bisect.is_some(),
    };
    let mut rep = PipelineReport {
        flops_before: crate::cost::graph_flops(g),
        ..PipelineReport::default()
    };
    for p in passes {
        if opts.disabled.iter().any(|d| d == p.name()) {
            continue;
        }
        let t0 = Instant::now();
        let report = p.run(g, &mut cx)?;
        if report.changed() {
            cx.inferred = infer_types_partial(g, &BTreeMap::new(), folder)
                .map_err(|e| IrError::Graph(format!("after pass '{}': {e}", p.name())))?;
        }
        if opts.verify {
            crate::verify::verify(g)
                .map_err(|e| IrError::Graph(format!("after pass '{}': {e}", p.name())))?;
        }
        let time = t0.elapsed();
        if opts.print_after.iter().any(|n| n == p.name()) {
            rep.printed
                .push((p.name().to_string(), crate::print::to_text(g)));
        }
        rep.passes.push(PassRun {
            report,
            time,
            flops_after: crate::cost::graph_flops(g),
            nodes_after: g.node_count(),
        });
    }
    rep.flops_after = crate::cost::graph_flops(g);
    rep.log = std::mem::take(&mut cx.log);
    Ok((rep, cx.inferred))
}

#[cfg(test)]
pub(crate) mod testing;
