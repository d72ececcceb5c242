//! SQLite's errors as [`LedgerError`]s: what the ledger was doing is attached here, and
//! [`super::refine`] turns the ones a user can act on into their own variants.

use std::sync::Arc;

use crate::error::LedgerError;

impl From<rusqlite::Error> for LedgerError {
    fn from(source: rusqlite::Error) -> Self {
        Self::Storage {
            context: "accessing the ledger".to_owned(),
            cause: Arc::new(source),
        }
    }
}

/// Attaches what the ledger was doing to a storage error.
pub(crate) trait SqlContext<T> {
    fn context(self, what: &str) -> Result<T, LedgerError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn context(self, what: &str) -> Result<T, LedgerError> {
        self.map_err(|source| LedgerError::Storage {
            context: what.to_owned(),
            cause: Arc::new(source),
        })
    }
}
