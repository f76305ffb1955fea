//! IR errors. Every error about a node names the node, its op and the reason.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IrError {
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    #[error("graph: {0}")]
    Graph(String),
}

impl IrError {
    pub fn node(node: impl Into<String>, op: impl Into<String>, reason: impl Into<String>) -> Self {
        IrError::Node {
            node: node.into(),
            op: op.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
