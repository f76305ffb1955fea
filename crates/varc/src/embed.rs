//! The embedding API: a builder that turns a model file into something to
//! run in-process ([`Executable`]) or into an ahead-of-time artifact.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let exe = varc::Compiler::new().compile("models/minvar_dyn18.onnx")?;
//! let x = varc::Tensor::from_f32(vec![1, 64, 2, 2], vec![0.5; 256]).map_err(anyhow::Error::msg)?;
//! let outputs = exe.run(&[("r".to_string(), x)])?;
//! println!("{:?}", outputs[0].1.shape());
//! # Ok(())
//! # }
//! ```

use crate::aot::AotKind;
use crate::{Executable, Target};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Compilation settings; [`Compiler::compile`] loads, checks, lowers and
/// compiles a model in one call.
#[derive(Clone, Debug)]
pub struct Compiler {
    target: String,
    threads: usize,
    dims: BTreeMap<String, usize>,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler::new()
    }
}

// An `Executable` is shared between threads by reference: runs take `&self`
// (the arena is behind a mutex, the code is immutable once finalised).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Executable>();
};

impl Compiler {
    /// Host CPU, one thread, the model's own dimensions.
    pub fn new() -> Compiler {
        Compiler {
            target: "host".into(),
            threads: 1,
            dims: BTreeMap::new(),
        }
    }

    /// `host` (the default) or a triple such as `aarch64-unknown-linux-gnu`.
    /// In-process compilation ([`Compiler::compile`]) needs the host; any
    /// supported triple works for [`Compiler::emit`].
    pub fn target(mut self, target: &str) -> Compiler {
        self.target = target.to_string();
        self
    }

    /// Threads one run uses (at least 1; the calling thread counts as
    /// one): large kernels and matrix products are split across a pool the
    /// executable owns, with bit-identical results for any thread count
    /// (see [`Executable::with_threads`]). Runs from several threads at
    /// once are serialised by the executable's arena.
    pub fn threads(mut self, threads: usize) -> Compiler {
        self.threads = threads;
        self
    }

    /// Binds a symbolic dimension (e.g. `batch`) to a value.
    pub fn dim(mut self, name: &str, value: usize) -> Compiler {
        self.dims.insert(name.to_string(), value);
        self
    }

    /// The configured thread count.
    pub fn thread_count(&self) -> usize {
        self.threads
    }

    fn parsed_target(&self) -> Result<Target> {
        if self.threads == 0 {
            bail!("threads must be at least 1");
        }
        Target::parse(&self.target).map_err(anyhow::Error::msg)
    }

    /// Loads `path` and compiles it for this machine.
    pub fn compile(&self, path: impl AsRef<Path>) -> Result<Executable> {
        let path = path.as_ref();
        let target = self.parsed_target()?;
        if target != Target::host() {
            bail!(
                "target '{}' is not this machine: use Compiler::emit for an object or shared library",
                self.target
            );
        }
        let model =
            crate::load(path, &self.dims).with_context(|| format!("loading {}", path.display()))?;
        // Consumed: the model's weights are not kept alongside their packed
        // copies.
        Ok(model
            .into_executable()
            .with_context(|| format!("compiling {}", path.display()))?
            .with_threads(self.threads))
    }

    /// Compiles `path` ahead of time for the configured target into `out`
    /// (an object or shared library) and `out` with extension `.h`; the
    /// symbols are `varc_<file stem>_*`. Returns the files written.
    pub fn emit(&self, path: impl AsRef<Path>, kind: AotKind, out: &Path) -> Result<Vec<PathBuf>> {
        let path = path.as_ref();
        let target = self.parsed_target()?;
        let model =
            crate::load(path, &self.dims).with_context(|| format!("loading {}", path.display()))?;
        let art = model.compile_object(&target, &crate::aot::default_name(path))?;
        crate::aot::write(&art, kind, &target, out)
    }
}

impl Executable {
    /// Graph input names, in the model's order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// Graph output names, in the model's order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// `(dtype, shape)` of each input, in the model's order.
    pub fn input_types(&self) -> Vec<(varc_ir::DType, Vec<usize>)> {
        self.program()
            .inputs
            .iter()
            .map(|&b| {
                let buf = self.program().buffer(b);
                (buf.dtype, buf.shape.clone())
            })
            .collect()
    }

    /// `(dtype, shape)` of each output, in the model's order.
    pub fn output_types(&self) -> Vec<(varc_ir::DType, Vec<usize>)> {
        self.program()
            .outputs
            .iter()
            .map(|&b| {
                let buf = self.program().buffer(b);
                (buf.dtype, buf.shape.clone())
            })
            .collect()
    }
}
