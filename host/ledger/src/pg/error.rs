//! PostgreSQL's errors as [`LedgerError`]s, and which of them a retry fixes.

use std::sync::Arc;

use postgres::error::SqlState;

use crate::error::LedgerError;

/// Attaches what the ledger was doing to a storage error.
pub(super) trait PgContext<T> {
    fn context(self, what: &str) -> Result<T, LedgerError>;
}

impl<T> PgContext<T> for Result<T, postgres::Error> {
    fn context(self, what: &str) -> Result<T, LedgerError> {
        self.map_err(|source| LedgerError::Storage {
            context: what.to_owned(),
            source: Arc::new(source),
        })
    }
}

/// What to do about a failed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Another transaction got in the way (serialization failure, deadlock, a unique key
    /// two transactions inserted at once): the whole transaction may run again.
    Conflict,
    /// The connection is gone or the server is not taking work: reconnect, maybe retry.
    Connection,
    /// Anything else: say so.
    Other,
}

pub(super) fn classify(err: &LedgerError) -> Class {
    let LedgerError::Storage { source, .. } = err else {
        return Class::Other;
    };
    let Some(pg) = source.downcast_ref::<postgres::Error>() else {
        return Class::Other;
    };
    if pg.is_closed() {
        return Class::Connection;
    }
    match pg.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION =>
        {
            Class::Conflict
        }
        Some(code)
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW =>
        {
            Class::Connection
        }
        Some(_) => Class::Other,
        // No SQLSTATE: the socket failed, or the request never left this process (a
        // parameter that does not serialize), which a new connection would not fix.
        None if is_io(pg) => Class::Connection,
        None => Class::Other,
    }
}

/// Whether `err` is a unique key another transaction inserted first.
pub(super) fn is_unique_violation(err: &LedgerError) -> bool {
    postgres_error(err).and_then(postgres::Error::code) == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A storage error that is the caller's to fix, as the [`LedgerError`] that says how; any
/// other error unchanged.
pub(super) fn refine(err: LedgerError, location: &str) -> LedgerError {
    let code = postgres_error(&err).and_then(postgres::Error::code);
    // PostgreSQL text cannot hold U+0000, which a tool's key or name may carry.
    if (code == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        || code == Some(&SqlState::UNTRANSLATABLE_CHARACTER))
        && let LedgerError::Storage { context, source } = &err
    {
        return LedgerError::Unstorable {
            ledger: location.to_owned(),
            context: context.clone(),
            detail: source.to_string(),
        };
    }
    err
}

fn postgres_error(err: &LedgerError) -> Option<&postgres::Error> {
    match err {
        LedgerError::Storage { source, .. } => source.downcast_ref::<postgres::Error>(),
        _ => None,
    }
}

/// Whether an I/O error lies under `err`: the connection failed.
fn is_io(err: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The ledger could not be reached at `location` (a URL without its password).
pub(super) fn unavailable(location: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable {
        ledger: location.to_owned(),
        detail: detail.to_string(),
    }
}
