//! `varc run --emit obj|so --emit-to FILE`: ahead-of-time artifacts.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use varc::LoadedModel;
use varc::aot::{AotKind, default_name, write};
use varc_backend_cpu::Target;

pub fn emit(
    model: &LoadedModel,
    target: &Target,
    kind: AotKind,
    to: Option<&Path>,
) -> Result<ExitCode> {
    let Some(out) = to else {
        bail!(
            "--emit obj|so writes a file: add --emit-to FILE (the C header goes to FILE with extension .h)"
        );
    };
    let t0 = Instant::now();
    let name = default_name(&model.path);
    let art = model.compile_object(target, &name)?;
    let written = write(&art, kind, target, out)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{} for {}: {} kernels, {} weight bytes, arena {} bytes, entry varc_{}_run ({size} bytes, {ms:.0} ms)",
        match kind {
            AotKind::Object => "object",
            AotKind::Shared => "shared library",
        },
        target.triple,
        art.kernels,
        art.weight_bytes,
        art.arena_bytes,
        art.name
    );
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
