//! Compiling a loaded model for CUDA (PTX, launch plan, weights blob) and
//! running it on a GPU when the CUDA driver and a device are present.

use crate::LoadedModel;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
pub use varc_backend_cuda::{CudaBuild, CudaTarget};
use varc_ir::Tensor;
use varc_runtime::NamedTensors;

impl LoadedModel {
    /// Lowers the model (attention fused, convolutions tagged) and emits PTX plus its launch plan for `target`
    /// (code generation options from the environment, see
    /// [`varc_backend_cuda::Options::from_env`]).
    pub fn compile_cuda(&self, target: CudaTarget) -> Result<CudaBuild> {
        self.compile_cuda_with(target, &varc_backend_cuda::Options::from_env()?)
    }

    /// [`LoadedModel::compile_cuda`] with explicit code generation options.
    pub fn compile_cuda_with(
        &self,
        target: CudaTarget,
        opts: &varc_backend_cuda::Options,
    ) -> Result<CudaBuild> {
        let program = self.lower_cuda()?;
        Ok(varc_backend_cuda::build_with(&program, target, opts)?)
    }

    /// The kernel program the CUDA backend compiles: attention fused into
    /// one kernel tagged `Library::Attention` and convolutions tagged
    /// `Library::Conv`, run by the backend's flash-attention and
    /// implicit-GEMM entries (every tag the lowering emits is supported;
    /// a tagged kernel the backend cannot launch so — head sizes whose
    /// tiles do not fit shared memory, convolutions at f32 precision —
    /// runs its loop nest, which is the specification).
    pub fn lower_cuda(&self) -> Result<varc_ir::kernel::Program> {
        self.lower_with(&varc_ir::lower::LowerOptions {
            fused_attention: true,
            conv_library: true,
            repeated_epilogue_reads: false,
        })
    }
}

/// Where `varc MODEL.onnx --target cuda` writes its files by default:
/// `<model stem>.cuda/` in the current directory.
pub fn default_out_dir(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    PathBuf::from(format!("{stem}.cuda"))
}

/// A CUDA device ready to run builds, or why there is none.
pub fn open_device() -> std::result::Result<varc_backend_cuda::driver::Device, String> {
    varc_backend_cuda::driver::Device::open()
}

/// Runs `build` on `device`; `inputs` are matched by name against the
/// model's inputs, outputs are named as the model's outputs.
pub fn run_cuda(
    device: &varc_backend_cuda::driver::Device,
    model: &LoadedModel,
    build: &CudaBuild,
    inputs: &[(String, Tensor)],
) -> Result<NamedTensors> {
    let names: Vec<String> = model.inputs().into_iter().map(|(n, _)| n).collect();
    let ordered = names
        .iter()
        .map(|name| {
            inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .with_context(|| format!("input '{name}' is missing"))
        })
        .collect::<Result<Vec<_>>>()?;
    let loaded = device.load(build)?;
    let outputs = loaded.run(&ordered)?;
    Ok(model.output_names().into_iter().zip(outputs).collect())
}
