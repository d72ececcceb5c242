//! The host's door to the ledger: the storage crate re-exported, plus the async bridge.
//!
//! The ledger's contract is synchronous (its rules are plain functions over rows inside one
//! transaction, see `tollgate_ledger::rules`), and async code reaches it only through
//! [`apply`], [`read`] and, for a write nobody waits for, [`apply_detached`]: a write is
//! handed to the backend's writer thread where it has one (SQLite), anything else runs on the
//! blocking pool. Writes wait until their
//! commit is as durable as asked (an fsync, or a PostgreSQL round trip); so do reads of a
//! PostgreSQL ledger, and a slow database must not hold the executor threads that serve
//! other calls.
//! One bridge for both backends keeps code from assuming that a read is a local file's
//! microseconds. Synchronous callers (the CLI's read commands) call the contract directly.

pub use tollgate_ledger::*;

use std::sync::Arc;

/// Applies `ops` durably without blocking the executor.
pub async fn apply(ledger: &Arc<dyn Ledger>, ops: Vec<Op>) -> Result<Vec<Applied>, LedgerError> {
    apply_with(ledger, ops, Durability::Synced).await
}

/// [`apply`], as durable as `durability` asks.
pub async fn apply_with(
    ledger: &Arc<dyn Ledger>,
    ops: Vec<Op>,
    durability: Durability,
) -> Result<Vec<Applied>, LedgerError> {
    // A backend with a writer thread answers through a oneshot: no blocking-pool thread
    // is woken only to wait on it.
    let (answer, answered) = tokio::sync::oneshot::channel();
    let done: Done = Box::new(move |result| {
        // Fails only if the caller stopped waiting (its call was cancelled).
        let _ = answer.send(result);
    });
    match ledger.submit(ops, durability, done) {
        Ok(()) => answered.await.unwrap_or(Err(LedgerError::WriterGone)),
        Err(Unsent::Closed) => Err(LedgerError::WriterGone),
        Err(Unsent::Unsupported { ops, durability }) => {
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || ledger.apply_with(ops, durability))
                .await
                .unwrap_or_else(|e| Err(LedgerError::Internal(format!("ledger task failed: {e}"))))
        }
    }
}

/// Applies `ops` as durable as `durability` asks without anyone waiting for it: `settle`
/// hears how it went, on the ledger's writer thread or a blocking-pool thread, so it must not
/// block. For a write whose caller has its answer already (a run recorded `async`).
pub fn apply_detached(
    ledger: &Arc<dyn Ledger>,
    ops: Vec<Op>,
    durability: Durability,
    settle: impl Fn(Result<(), LedgerError>) + Clone + Send + 'static,
) {
    let done = settle.clone();
    match ledger.submit(
        ops,
        durability,
        Box::new(move |result| done(result.map(drop))),
    ) {
        Ok(()) => {}
        Err(Unsent::Closed) => settle(Err(LedgerError::WriterGone)),
        Err(Unsent::Unsupported { ops, durability }) => {
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || {
                settle(ledger.apply_with(ops, durability).map(drop))
            });
        }
    }
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
