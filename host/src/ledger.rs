//! The host's door to the ledger: the storage crate re-exported, plus the async bridge.
//!
//! The ledger's contract is synchronous (its rules are plain functions over rows inside one
//! transaction, see `tollgate_ledger::rules`), and async code reaches it only through
//! [`apply`] and [`read`], which run it on the blocking pool. Writes block until their
//! commit is durable (an fsync, or a PostgreSQL round trip); so do reads of a PostgreSQL
//! ledger, and a slow database must not hold the executor threads that serve other calls.
//! One bridge for both backends keeps code from assuming that a read is a local file's
//! microseconds. Synchronous callers (the CLI's read commands) call the contract directly.

pub use tollgate_ledger::*;

use std::sync::Arc;

/// Applies `ops` durably without blocking the executor.
pub async fn apply(ledger: &Arc<dyn Ledger>, ops: Vec<Op>) -> Result<Vec<Applied>, LedgerError> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || ledger.apply(ops))
        .await
        .unwrap_or_else(|e| Err(LedgerError::Internal(format!("ledger task failed: {e}"))))
}

/// Runs `read` against the ledger without blocking the executor.
pub async fn read<T, F>(ledger: &Arc<dyn Ledger>, read: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
{
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || read(ledger.as_ref()))
        .await
        .unwrap_or_else(|e| Err(LedgerError::Internal(format!("ledger task failed: {e}"))))
}
