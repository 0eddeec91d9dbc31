//! Why a write was refused.

/// A write the state store refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum StateError {
    /// A required field is empty or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The record the write refers to does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A session named in a lock operation does not exist.
    #[error("invalid session {0:?}")]
    InvalidSession(String),
}

impl StateError {
    /// True for a missing record (HTTP 404), false for bad input (HTTP 400).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StateError::NotFound(_))
    }
}
