//! Ahead-of-time artifacts: a relocatable object (`--emit obj`) or a shared
//! library (`--emit so`) with a C header beside it.
//!
//! The object comes from `varc_backend_cpu::aot` (kernels, weights in
//! `.rodata`, the exported `varc_<model>_run` entry); a shared library is
//! that object linked by the system C compiler driver (`cc -shared`, or the
//! target's cross gcc).

use crate::LoadedModel;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use varc_backend_cpu::Target;
use varc_backend_cpu::aot::{AotArtifact, AotOptions};
use varc_ir::kernel::plan::plan;

pub use varc_backend_cpu::aot::{AOT_ABI_VERSION, c_identifier};

/// Which file `write` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AotKind {
    /// A relocatable object (`.o`).
    Object,
    /// A shared library (`.so`), linked with the system linker.
    Shared,
}

/// The default C identifier part of a model's symbols: its file stem.
pub fn default_name(model: &Path) -> String {
    c_identifier(
        &model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

impl LoadedModel {
    /// Compiles the whole model for `target` into an object file and C
    /// header; `name` is the symbol prefix part (`varc_<name>_run`).
    pub fn compile_object(&self, target: &Target, name: &str) -> Result<AotArtifact> {
        let program = self.lower()?;
        let memory = plan(&program);
        memory.check(&program).map_err(anyhow::Error::msg)?;
        let opts = AotOptions {
            name: name.to_string(),
            input_names: self.inputs().into_iter().map(|(n, _)| n).collect(),
            output_names: self.output_names(),
            source: self
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        Ok(varc_backend_cpu::aot::compile_object(
            &program, &memory, target, &opts,
        )?)
    }
}

/// The header path for an artifact at `out`: `OUT` with extension `.h`.
pub fn header_path(out: &Path) -> PathBuf {
    out.with_extension("h")
}

/// Writes `art` to `out` as an object or shared library, and its header to
/// [`header_path`]`(out)`. Returns the paths written.
pub fn write(
    art: &AotArtifact,
    kind: AotKind,
    target: &Target,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let header = header_path(out);
    if header == out {
        bail!(
            "{}: the output must not end in .h (the header goes there)",
            out.display()
        );
    }
    match kind {
        AotKind::Object => std::fs::write(out, &art.object)
            .with_context(|| format!("writing {}", out.display()))?,
        AotKind::Shared => {
            let obj = out.with_extension("varc-tmp.o");
            std::fs::write(&obj, &art.object)
                .with_context(|| format!("writing {}", obj.display()))?;
            let linked = link_shared(&obj, out, target);
            let _ = std::fs::remove_file(&obj);
            linked?;
        }
    }
    std::fs::write(&header, &art.header)
        .with_context(|| format!("writing {}", header.display()))?;
    Ok(vec![out.to_path_buf(), header])
}

/// The C compiler driver that links for `target`: `$VARC_LINKER` if set,
/// `cc` for the host, else the Debian cross gcc (`aarch64-linux-gnu-gcc`).
pub fn linker_for(target: &Target) -> String {
    if let Ok(l) = std::env::var("VARC_LINKER")
        && !l.is_empty()
    {
        return l;
    }
    if *target == Target::host() {
        return "cc".into();
    }
    let arch = target.triple.architecture.to_string();
    format!("{arch}-linux-gnu-gcc")
}

/// Links the object `obj` into the shared library `out` (with `-lm`, for
/// the kernels' powf/sinf/cosf).
pub fn link_shared(obj: &Path, out: &Path, target: &Target) -> Result<()> {
    let cc = linker_for(target);
    let output = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(obj)
        .args(["-lm", "-Wl,-z,noexecstack"])
        .output()
        .with_context(|| {
            format!(
                "running the linker '{cc}' (install it, or set VARC_LINKER to a C compiler driver)"
            )
        })?;
    if !output.status.success() {
        bail!(
            "linking {} with '{cc}' failed ({}):\n{}",
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
