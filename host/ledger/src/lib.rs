//! Tollgate's durable ledger: runs, attempts, effects, checkpoints, the journal, escalations,
//! locks and circuit breakers.
//!
//! Owns every byte Tollgate persists and is the only place that writes SQL. Invariant: when
//! [`Ledger::apply`] returns `Ok` its ops are durable, and when it returns `Err` none of them
//! were applied. Callers inject time (`now`, unix milliseconds); the ledger never reads a clock.

mod breaker;
mod contract;
mod error;
mod location;
mod pg;
mod records;
pub mod rules;
pub mod scratch;
mod sqlite;

pub use breaker::{Admission, BreakerRule};
pub use contract::{Done, Ledger, LedgerExt, Unsent};
pub use error::LedgerError;
pub use location::Location;
pub use pg::{CopyReport, PgLedger, PgOptions, redact, verify_copy};
pub use records::{
    Applied, Attempt, AttemptStatus, BreakerRecord, BreakerState, CallKeyRecord, Checkpoint, Claim,
    Durability, EffectRecord, EffectStatus, Escalation, EscalationFilter, EscalationReason,
    EscalationStatus, Holdings, JournalEntry, LockRecord, Millis, NewEscalation, NewJournalEntry,
    NewRun, NodeRecord, Op, Resolution, Run, RunFilter, RunLock, RunStatus, StrandedFilter,
    format_ms, payload_digest, stored,
};
pub use sqlite::{Create, LedgerOptions, LedgerStats, SqliteLedger};
