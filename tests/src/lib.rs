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
