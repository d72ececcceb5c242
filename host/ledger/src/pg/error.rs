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
            cause: Arc::new(source),
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
    let LedgerError::Storage { cause: source, .. } = err else {
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

/// Whether the server refused `err`'s statement for the values it carried (SQLSTATE class
/// 22, data exception, or 23, integrity constraint violation): sending it again fails the
/// same way, unlike a timeout, a lock not granted or a server short of resources.
pub(super) fn is_refused_value(err: &LedgerError) -> bool {
    postgres_error(err)
        .and_then(postgres::Error::code)
        .is_some_and(|code| {
            // A unique key another transaction inserted is a conflict to retry, not a bad value.
            *code != SqlState::UNIQUE_VIOLATION && matches!(&code.code()[..2], "22" | "23")
        })
}

/// Whether `err` says a statement this connection prepared no longer holds: it was
/// deallocated under it (SQLSTATE 26000, as a pooler's `DISCARD ALL` does), or a table it
/// reads changed its columns' types (0A000, "cached plan must not change result type", as a
/// newer process's migration does). Preparing it again fixes it.
pub(super) fn is_stale_statement(err: &LedgerError) -> bool {
    postgres_error(err)
        .and_then(postgres::Error::code)
        .is_some_and(|code| {
            *code == SqlState::INVALID_SQL_STATEMENT_NAME
                || (*code == SqlState::FEATURE_NOT_SUPPORTED
                    && postgres_error(err)
                        .and_then(postgres::Error::as_db_error)
                        .is_some_and(|db| db.message().contains("cached plan")))
        })
}

/// A storage error that is the caller's to fix, as the [`LedgerError`] that says how; any
/// other error unchanged.
pub(super) fn refine(err: LedgerError, location: &str) -> LedgerError {
    let code = postgres_error(&err).and_then(postgres::Error::code);
    // PostgreSQL text cannot hold U+0000, which a tool's key or name may carry.
    if (code == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        || code == Some(&SqlState::UNTRANSLATABLE_CHARACTER))
        && let LedgerError::Storage {
            context,
            cause: source,
        } = &err
    {
        return LedgerError::Unstorable {
            ledger: location.to_owned(),
            context: context.clone(),
            detail: crate::error::Chain(source.as_ref()).to_string(),
        };
    }
    err
}

fn postgres_error(err: &LedgerError) -> Option<&postgres::Error> {
    match err {
        LedgerError::Storage { cause, .. } => cause.downcast_ref::<postgres::Error>(),
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
