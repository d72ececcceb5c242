//! The host's door to the ledger: the storage crate re-exported, plus the async bridge.
//! Ledger writes block until their commit is durable (an fsync), so they run on the blocking
//! pool, never on an executor thread; reads are microseconds and run inline.

pub use tollgate_ledger::*;

use std::sync::Arc;

/// Applies `ops` durably without blocking the executor.
pub async fn apply(ledger: &Arc<dyn Ledger>, ops: Vec<Op>) -> Result<Vec<Applied>, LedgerError> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || ledger.apply(ops))
        .await
        .unwrap_or_else(|e| Err(LedgerError::Internal(format!("ledger task failed: {e}"))))
}
