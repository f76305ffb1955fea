//! Shared helpers for the varc test suites: where things are, and the
//! models/manifest.json entries.

pub mod build;

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `tests/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn models_dir() -> PathBuf {
    root().join("models")
}

/// Where scripts/test.sh writes the generated ONNX node test cases
/// (override with VARC_NODE_TESTS).
pub fn node_cases_dir() -> PathBuf {
    std::env::var_os("VARC_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/data/generated/node"))
}

/// One shipped model (models/manifest.json).
#[derive(Debug, Clone, Deserialize)]
pub struct ShippedModel {
    pub file: String,
    pub model: String,
    pub exporter: String,
    pub opset: i64,
    pub inputs: String,
    pub outputs: String,
    pub rtol: f64,
    pub atol: f64,
    pub tolerance_why: String,
}

pub fn shipped_models() -> Vec<ShippedModel> {
    let path = models_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a lowered program through the Cranelift JIT. `Ok(None)` when the
/// CPU backend does not support one of its dtypes (f16, bf16, f64 today):
/// the caller then has only the kernel-interpreter result to check.
pub fn run_compiled(
    program: &varc_ir::kernel::Program,
    inputs: &[varc_ir::Tensor],
) -> Result<Option<Vec<varc_ir::Tensor>>, String> {
    match varc_backend_cpu::compile_jit(program) {
        Ok(jit) => jit.run(inputs).map(Some),
        Err(e)
            if e.to_string()
                .contains("is not supported by the CPU backend") =>
        {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Tolerance for comparing compiled (f32-accumulating) results with the
/// f64-accumulating reference: exact stays exact (data movement, integers);
/// otherwise at least rtol 1e-4 and an atol of 1e-5 × the largest expected
/// magnitude — f32 sums of K terms drift by about √K·2⁻²⁴ of their partial
/// sums, ~1e-5 for the K ≤ 1000 in these tests, the same rule as the
/// shipped-model goldens.
pub fn compiled_tolerance(want: &varc_ir::Tensor, rtol: f64, atol: f64) -> (f64, f64) {
    if rtol == 0.0 && atol == 0.0 {
        return (0.0, 0.0);
    }
    let max = want
        .to_f64_vec()
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    (rtol.max(1e-4), atol.max(1e-5 * max))
}
