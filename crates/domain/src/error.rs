//! Errors shared by every aggregate: a broken rule on input, and a store that failed.

use std::error::Error as StdError;

/// Input that breaks a rule of the contract (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct ValidationError {
    /// The field at fault, as the client named it.
    pub field: &'static str,
    /// What is wrong with it, without echoing the value.
    pub message: String,
}

impl ValidationError {
    /// A broken rule of `field`, explained by `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A failure of the store behind a port, not of the caller's request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (pool timeout, lost connection, busy
    /// database); the operation did nothing and may be retried (HTTP 503).
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else: a bug or a corrupt store (HTTP 500).
    #[error("unexpected database error")]
    Unexpected(#[source] Box<dyn StdError + Send + Sync>),
}
