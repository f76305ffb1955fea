//! Import errors. Every message names what it is about: the file, tensor,
//! node (with its op) or value.

use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error("unsupported opset: {0}")]
    Opset(String),
    #[error("model: {0}")]
    Model(String),
    #[error("value '{name}': {reason}")]
    Value { name: String, reason: String },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    #[error("external data of tensor '{tensor}': {reason}")]
    ExternalData { tensor: String, reason: String },
    #[error("{}", UnsupportedTable(.0))]
    Unsupported(Vec<Unsupported>),
    #[error(transparent)]
    Ir(#[from] varc_ir::IrError),
}

impl OnnxError {
    pub(crate) fn tensor(name: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::Tensor {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn external(tensor: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::ExternalData {
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn value(name: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::Value {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn node(node: &str, op: &str, reason: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: node.to_string(),
            op: op.to_string(),
            reason: reason.into(),
        }
    }
}

/// One node the importer cannot take, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub node: String,
    pub op: String,
    /// The node's domain as written ("" is the default ONNX domain).
    pub domain: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node '{}' ({} in {}): {}",
            self.node,
            self.op,
            domain_label(&self.domain),
            self.reason
        )
    }
}

fn domain_label(d: &str) -> &str {
    if d.is_empty() { "ai.onnx" } else { d }
}

/// Renders the list as an aligned table, one row per node.
struct UnsupportedTable<'a>(&'a [Unsupported]);

impl fmt::Display for UnsupportedTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.0;
        let n = rows.len();
        writeln!(
            f,
            "{n} node{} cannot be imported:",
            if n == 1 { "" } else { "s" }
        )?;
        let head = ["node", "op", "domain"];
        let w = |i: usize, get: &dyn Fn(&Unsupported) -> usize| {
            rows.iter().map(get).max().unwrap_or(0).max(head[i].len())
        };
        let wn = w(0, &|u| u.node.chars().count());
        let wo = w(1, &|u| u.op.chars().count());
        let wd = w(2, &|u| domain_label(&u.domain).chars().count());
        writeln!(
            f,
            "  {:wn$}  {:wo$}  {:wd$}  reason",
            head[0], head[1], head[2]
        )?;
        for (i, u) in rows.iter().enumerate() {
            write!(
                f,
                "  {:wn$}  {:wo$}  {:wd$}  {}",
                u.node,
                u.op,
                domain_label(&u.domain),
                u.reason
            )?;
            if i + 1 < n {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
