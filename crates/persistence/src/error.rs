//! Database errors translated into the domain's terms.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tollgate_domain::StoreError;

/// Whether the error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Whether the error is a foreign-key violation. SQLite reports one found
/// while deleting as a plain constraint error, known only by its message.
pub(crate) fn is_foreign_key_violation(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => true,
        DieselError::DatabaseError(_, info) => {
            info.message().starts_with("FOREIGN KEY constraint failed")
        }
        _ => false,
    }
}

/// Messages of the errors that mean "the database is not there right now".
const UNAVAILABLE_MESSAGES: &[&str] = &[
    "database is locked",
    "database is busy",
    "server has gone away",
    "lost connection",
    "can't connect",
    "connection refused",
    "server shutdown",
    "lock wait timeout",
    "deadlock found",
    "too many connections",
];

/// Connection trouble and lock time-outs are `Unavailable` (503, retry);
/// anything else is `Unexpected` (500).
pub(crate) fn store_error(e: DieselError) -> StoreError {
    let unavailable = match &e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            UNAVAILABLE_MESSAGES.iter().any(|m| message.contains(m))
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Unexpected(Box::new(e))
    }
}

/// The same error again, for each of the callers that waited on one batch
/// (its cause kept as text; the cause is logged where the answer is turned
/// into a response).
pub(crate) fn copy_store_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(cause) => StoreError::Unavailable(cause.to_string().into()),
        StoreError::Unexpected(cause) => StoreError::Unexpected(cause.to_string().into()),
    }
}

/// An error inside a transaction: the database's, or a rule's that aborts it.
#[derive(Debug)]
pub(crate) enum TxError<E> {
    Db(DieselError),
    Rule(E),
}

impl<E> From<DieselError> for TxError<E> {
    fn from(e: DieselError) -> Self {
        Self::Db(e)
    }
}

impl<E> TxError<E> {
    /// Turns a failed transaction into the domain error, `on_db` choosing
    /// the business meaning of a database error.
    pub(crate) fn into_domain(self, on_db: impl FnOnce(DieselError) -> E) -> E {
        match self {
            Self::Db(e) => on_db(e),
            Self::Rule(e) => e,
        }
    }
}
