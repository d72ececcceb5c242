//! Tollgate's durable ledger: runs, attempts, effects, checkpoints and the journal.
//!
//! Owns every byte Tollgate persists and is the only place that writes SQL. Invariant: when
//! [`Ledger::apply`] returns `Ok` its ops are durable, and when it returns `Err` none of them
//! were applied. Callers inject time (`now`, unix milliseconds); the ledger never reads a clock.

mod contract;
mod error;
mod records;
mod sqlite;

pub use contract::{Ledger, LedgerExt};
pub use error::LedgerError;
pub use records::{
    Applied, Attempt, AttemptStatus, Checkpoint, Claim, EffectRecord, EffectStatus, JournalEntry,
    Millis, NewJournalEntry, NewRun, Op, Run, RunFilter, RunStatus, payload_digest,
};
pub use sqlite::{LedgerOptions, LedgerStats, SqliteLedger};
