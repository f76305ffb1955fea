//! Ahead-of-time artifacts: a relocatable object (`--emit obj`) or a shared
//! library (`--emit so`) with a C header beside it, and with
//! `--weights external` a weights file beside it too.
//!
//! The object comes from `varc_backend_cpu::aot` (kernels, weights in
//! `.rodata` or the side file, the exported `varc_<model>_run` and
//! `_run_parallel` entries); a shared library is that object linked by the
//! system C compiler driver (`cc -shared`, or the target's cross gcc),
//! together with the varc runtime library when the object calls the sgemm
//! microkernels (`--ukernels link`).

use crate::LoadedModel;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use varc_backend_cpu::Target;
use varc_backend_cpu::aot::{AotArtifact, AotOptions};
use varc_ir::kernel::plan::plan;

pub use varc_backend_cpu::aot::{AOT_ABI_VERSION, Weights, c_identifier};

/// How an artifact is built (the defaults: weights in `.rodata`, pure
/// Cranelift kernels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AotConfig {
    pub weights: Weights,
    /// Contraction kernels call the runtime's `varc_sgemm` (host only).
    pub ukernels: bool,
}

/// The static library `--ukernels link` shared libraries are linked with
/// by default: the C API's, which exports `varc_sgemm`.
pub const RUNTIME_LIB: &str = "libvarc_capi.a";

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
        self.compile_object_with(target, name, AotConfig::default())
    }

    /// [`LoadedModel::compile_object`] with the weights binding and
    /// microkernel option of `config`.
    pub fn compile_object_with(
        &self,
        target: &Target,
        name: &str,
        config: AotConfig,
    ) -> Result<AotArtifact> {
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
            weights: config.weights,
            ukernels: config.ukernels,
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

/// The weights file path for an artifact at `out`: `OUT` with extension
/// `.weights`.
pub fn weights_path(out: &Path) -> PathBuf {
    out.with_extension("weights")
}

/// Writes `art` to `out` as an object or shared library, its header to
/// [`header_path`]`(out)` and its weights file (if any) to
/// [`weights_path`]`(out)`; a shared library that needs the runtime is
/// linked with [`default_runtime_lib`]. Returns the paths written.
pub fn write(
    art: &AotArtifact,
    kind: AotKind,
    target: &Target,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    write_with(art, kind, target, out, None)
}

/// [`write`], linking a shared library that needs the runtime with
/// `runtime_lib` (a static library exporting `varc_sgemm`) when given.
pub fn write_with(
    art: &AotArtifact,
    kind: AotKind,
    target: &Target,
    out: &Path,
    runtime_lib: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let header = header_path(out);
    if header == out {
        bail!(
            "{}: the output must not end in .h (the header goes there)",
            out.display()
        );
    }
    let weights = art.weights_file.as_ref().map(|w| (weights_path(out), w));
    if let Some((path, _)) = &weights
        && path == out
    {
        bail!(
            "{}: the output must not end in .weights (the weights file goes there)",
            out.display()
        );
    }
    match kind {
        AotKind::Object => std::fs::write(out, &art.object)
            .with_context(|| format!("writing {}", out.display()))?,
        AotKind::Shared => {
            let runtime = match (art.needs_runtime, runtime_lib) {
                (false, _) => None,
                (true, Some(p)) => Some(p.to_path_buf()),
                (true, None) => Some(default_runtime_lib().with_context(|| {
                    format!(
                        "the object calls varc_sgemm (--ukernels link), so the shared library \
                         links the varc runtime: {RUNTIME_LIB} was not found next to the varc \
                         executable (build it with `cargo build -p varc-capi`, or pass \
                         --runtime-lib PATH)"
                    )
                })?),
            };
            if let Some(lib) = &runtime
                && !lib.is_file()
            {
                bail!(
                    "runtime library {} does not exist (it must define varc_sgemm: \
                     {RUNTIME_LIB} from `cargo build -p varc-capi`)",
                    lib.display()
                );
            }
            let obj = out.with_extension("varc-tmp.o");
            std::fs::write(&obj, &art.object)
                .with_context(|| format!("writing {}", obj.display()))?;
            let linked = link_shared(&obj, out, target, runtime.as_deref());
            let _ = std::fs::remove_file(&obj);
            linked?;
        }
    }
    std::fs::write(&header, &art.header)
        .with_context(|| format!("writing {}", header.display()))?;
    let mut written = vec![out.to_path_buf(), header];
    if let Some((path, bytes)) = weights {
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// [`RUNTIME_LIB`] next to the running executable (or one folder up, for
/// test binaries in `target/<profile>/deps`), if it is there.
pub fn default_runtime_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(RUNTIME_LIB))
        .find(|p| p.is_file())
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
/// the kernels' powf/sinf/cosf), and with `runtime` (a static library
/// defining `varc_sgemm`) when given; the runtime's own symbols stay
/// local to the library.
pub fn link_shared(obj: &Path, out: &Path, target: &Target, runtime: Option<&Path>) -> Result<()> {
    let cc = linker_for(target);
    let mut cmd = Command::new(&cc);
    cmd.arg("-shared").arg("-o").arg(out).arg(obj);
    if let Some(lib) = runtime {
        // Only varc_sgemm's closure is pulled from the archive,
        // --gc-sections drops the unreferenced functions of its members,
        // and --strip-debug the Rust standard library's debug info (the
        // generated code has none).
        cmd.arg(lib).args([
            "-lpthread",
            "-ldl",
            "-Wl,--exclude-libs,ALL",
            "-Wl,--gc-sections",
            "-Wl,--strip-debug",
        ]);
    }
    let output = cmd
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
