//! Bytes → [`ModelProto`], and the model's operator-set imports.

use crate::error::OnnxError;
use crate::proto::{ModelProto, OperatorSetIdProto};
use bytes::Bytes;
use prost::Message;

/// The default-domain opsets varc imports.
///
/// Up to 23 every op in the table is implemented as specified. Opsets 24–28
/// changed the ops varc covers only by adding element types (refused by the
/// dtype mapping) and attributes/inputs (refused by the importer's strict
/// attribute and arity checks unless implemented), so they import safely.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 11..=28;

/// Decodes a serialized `ModelProto`. Bytes that are not protobuf, or that
/// decode to something without a graph (a truncated file usually does), are
/// errors; nothing here panics on bad input.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Decode("the input is empty".into()));
    }
    checked(ModelProto::decode(bytes))
}

/// [`decode_model`] from a shared buffer: tensors' `raw_data` become views
/// of `bytes` instead of copies, so a model's weights are not duplicated
/// while it is decoded.
pub fn decode_model_shared(bytes: Bytes) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Decode("the input is empty".into()));
    }
    checked(ModelProto::decode(bytes))
}

fn checked(m: Result<ModelProto, prost::DecodeError>) -> Result<ModelProto, OnnxError> {
    let m = m.map_err(|e| OnnxError::Decode(format!("protobuf: {e}")))?;
    if m.graph.is_none() {
        return Err(OnnxError::Decode(
            "no graph (ModelProto field 7): not an ONNX model, or a truncated one".into(),
        ));
    }
    if m.ir_version <= 0 {
        return Err(OnnxError::Decode(format!(
            "ir_version is {} (it must be present and positive)",
            m.ir_version
        )));
    }
    Ok(m)
}

/// Whether `domain` names the default ONNX operator set.
pub fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The highest version imported for `domain` (`None` when not imported).
pub(crate) fn imported_version(imports: &[OperatorSetIdProto], domain: &str) -> Option<i64> {
    let default = is_default_domain(domain);
    imports
        .iter()
        .filter(|o| {
            if default {
                is_default_domain(&o.domain)
            } else {
                o.domain == domain
            }
        })
        .map(|o| o.version)
        .max()
}

/// The default-domain opset, checked against [`SUPPORTED_OPSETS`].
pub(crate) fn default_opset(m: &ModelProto) -> Result<i64, OnnxError> {
    let (lo, hi) = (SUPPORTED_OPSETS.start(), SUPPORTED_OPSETS.end());
    match imported_version(&m.opset_import, "") {
        None => Err(OnnxError::Opset(format!(
            "the model imports no opset of the default domain (ai.onnx); varc supports ai.onnx opsets {lo} to {hi}"
        ))),
        Some(v) if !SUPPORTED_OPSETS.contains(&v) => Err(OnnxError::Opset(format!(
            "the model imports ai.onnx opset {v}; varc supports ai.onnx opsets {lo} to {hi}"
        ))),
        Some(v) => Ok(v),
    }
}
