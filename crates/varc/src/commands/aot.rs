//! `varc MODEL.onnx --emit obj|so -o FILE [--weights external] [--ukernels
//! link]`: ahead-of-time artifacts.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use varc::LoadedModel;
use varc::aot::{AotConfig, AotKind, default_name, write_with};
use varc_backend_cpu::Target;

pub fn emit(
    model: &LoadedModel,
    target: &Target,
    kind: AotKind,
    config: AotConfig,
    to: Option<&Path>,
    runtime_lib: Option<&Path>,
) -> Result<ExitCode> {
    let Some(out) = to else {
        bail!(
            "--emit obj|so writes a file: add -o FILE (or --emit-to FILE; the C header goes to FILE with extension .h)"
        );
    };
    let t0 = Instant::now();
    let name = default_name(&model.path);
    let art = model.compile_object_with(target, &name, config)?;
    let written = write_with(&art, kind, target, out, runtime_lib)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{} for {}: {} kernels ({} split by run_parallel), {} weight bytes{}, arena {} bytes, entry varc_{}_run{} ({size} bytes, {ms:.0} ms)",
        match kind {
            AotKind::Object => "object",
            AotKind::Shared => "shared library",
        },
        target.triple,
        art.kernels,
        art.parallel_kernels,
        art.weight_bytes,
        if art.weights_file.is_some() {
            " (external)"
        } else {
            ""
        },
        art.arena_bytes,
        art.name,
        if art.needs_runtime {
            ", calls varc_sgemm"
        } else {
            ""
        },
    );
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
