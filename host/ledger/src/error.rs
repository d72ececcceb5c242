//! Every way a ledger call can fail, each with what was wrong and what to do about it.
//!
//! Invariant: `LedgerError` is `Clone` (sources are behind `Arc`), because one failed group
//! commit must hand the same error to every request in the batch.

use std::path::PathBuf;
use std::sync::Arc;

use crate::records::{EffectStatus, Millis, Resolution, RunStatus, format_ms};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("run `{run_id}` does not exist in this ledger; check the run id and the ledger")]
    RunNotFound { run_id: String },

    #[error("run `{run_id}` already exists; use a fresh run id, or resume the existing run")]
    RunExists { run_id: String },

    #[error("run `{run_id}` already finished as {status}; start a new run instead of resuming it")]
    RunFinished { run_id: String, status: RunStatus },

    #[error(
        "run `{run_id}` is waiting for a human decision (status {status}): settle its open \
         escalation first"
    )]
    RunParked { run_id: String, status: RunStatus },

    #[error(
        "attempt {attempt} of run `{run_id}` is still live (held by `{holder}`, its lease runs \
         until {}); wait for it to finish or for its lease to run out (a holder on this \
         machine whose process is gone is taken over at once)",
        format_ms(*lease_until)
    )]
    AttemptLive {
        run_id: String,
        attempt: u32,
        holder: String,
        lease_until: Millis,
    },

    #[error(
        "attempt {attempt} of run `{run_id}` no longer holds its lease ({reason}); stop this \
         attempt without further side effects: another attempt has taken over or it already ended"
    )]
    LeaseLost {
        run_id: String,
        attempt: u32,
        reason: String,
    },

    #[error(
        "effect `{kind}` key `{key}` is not pending under attempt {attempt} of run `{run_id}` \
         (it is {status} under attempt {owner_attempt} of run `{owner_run_id}`); do not dispatch \
         or record it from this attempt: re-claim the key to learn its current state"
    )]
    OwnershipLost {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        owner_run_id: String,
        owner_attempt: u32,
        status: EffectStatus,
    },

    #[error(
        "effect `{kind}` key `{key}` was never claimed; claim it before dispatching or \
         recording its outcome"
    )]
    EffectNotFound { kind: String, key: String },

    #[error("escalation {id} does not exist; check the id")]
    EscalationNotFound { id: i64 },

    #[error(
        "escalation {id} is already resolved as {resolution}; a decision cannot be changed, \
         look at the run's current state instead"
    )]
    EscalationResolved { id: i64, resolution: Resolution },

    #[error(
        "lock `{key}` is held by run `{run_id}` since {} (its lease runs until {}); wait for \
         it, or retry after the lease lapses",
        format_ms(*since),
        format_ms(*lease_until)
    )]
    LockHeld {
        key: String,
        run_id: String,
        since: Millis,
        lease_until: Millis,
    },

    #[error(
        "lock `{key}` is no longer held by run `{run_id}` with fence {fence}: it was released, \
         or another run took the lock; stop acting on it"
    )]
    LockLost {
        key: String,
        run_id: String,
        fence: i64,
    },

    #[error(
        "idempotency key `{key}` was already used by run `{run_id}` (tool `{tool}`); a repeat call \
         returns that run's result, and a new call needs a new key"
    )]
    CallKeyUsed {
        key: String,
        tool: String,
        args_digest: String,
        run_id: String,
    },

    #[error(
        "run {run_id} had {found} attempt(s) when this host meant to claim it after {seen}: \
         another host claimed it first, or its driver went on; nothing was done"
    )]
    RunMoved {
        run_id: String,
        seen: u32,
        found: u32,
    },

    #[error(
        "cannot move {entity} from {from} to {to}; that transition is not allowed, check the \
         status passed to the op"
    )]
    InvalidTransition {
        entity: String,
        from: String,
        to: String,
    },

    #[error(
        "{} is not a Tollgate ledger ({reason}); move it aside, or open another ledger file",
        path.display()
    )]
    NotALedger { path: PathBuf, reason: String },

    #[error(
        "ledger {} is corrupt ({detail}); move it aside and restore a backup, or open another \
         ledger file",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "ledger {} is busy: another process held its write lock for longer than this one waits; \
         let the other tollgate process using this ledger finish, or stop it",
        path.display()
    )]
    Busy { path: PathBuf },

    #[error(
        "ledger {} is read-only to this process: it can read the ledger but not write it (the \
         file, its -wal or -shm file, or their directory is not writable by this user, or the \
         disk is mounted read-only), so nothing more was recorded",
        path.display()
    )]
    ReadOnly { path: PathBuf },

    #[error(
        "the disk holding ledger {} is full, so nothing more was recorded",
        path.display()
    )]
    DiskFull { path: PathBuf },

    #[error(
        "{} is an empty file, not a ledger: a ledger is never empty, so this is a truncated \
         ledger or a placeholder; restore the ledger from a backup, or initialise a new one \
         there explicitly",
        path.display()
    )]
    EmptyFile { path: PathBuf },

    #[error(
        "no ledger at {}: nothing has been recorded there; check the ledger path and the \
         directory this runs in",
        path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "ledger schema version {found} was written by a newer Tollgate (this build supports up \
         to {supported}); upgrade tollgate, or open another ledger file"
    )]
    NewerSchema { found: u32, supported: u32 },

    #[error(
        "cannot use ledger path {}: {source}; check that the directory exists and is writable",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error(
        "ledger storage failed while {context}: {}; check that the ledger's storage is \
         reachable, writable and not full, then retry (rerun with RUST_LOG=debug if it persists)",
        Chain(cause.as_ref())
    )]
    Storage {
        context: String,
        /// The backend's own error (`rusqlite::Error`, `postgres::Error`), for the backend to
        /// refine into the variants above. Not a `source()`: the message already holds its
        /// whole chain (a `postgres::Error` says only "db error" and keeps the server's
        /// message in its own source), and a chain printed twice reads badly.
        cause: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    #[error(
        "the ledger database {ledger} is unavailable ({detail}); check that PostgreSQL is \
         running and reachable there and that the URL's user, password and database are right, \
         then retry"
    )]
    Unavailable { ledger: String, detail: String },

    #[error(
        "`{ledger}` is not a ledger location ({detail}); give a file path, or a URL of the \
         form postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    BadLocation { ledger: String, detail: String },

    #[error(
        "ledger {ledger} refused a value while {context}: {detail}; PostgreSQL text cannot \
         hold the NUL character (U+0000), so remove it from the key, name or id given"
    )]
    Unstorable {
        ledger: String,
        context: String,
        detail: String,
    },

    #[error(
        "the target ledger already holds {rows} row(s) in {table}; copy into an empty database \
         or schema, so that nothing there is mixed with the copy"
    )]
    NotEmpty { table: String, rows: i64 },

    #[error(
        "the copy differs from the source in {what} ({detail}); the copy was committed, so \
         drop the target's tables and copy again, and report this if it repeats"
    )]
    CopyDiffers { what: String, detail: String },

    #[error(
        "the ledger's worker threads have stopped, so nothing more can be committed; restart \
         tollgate (work committed earlier is safe)"
    )]
    WriterGone,

    #[error("internal ledger error: {0}; this is a bug in tollgate, please report it")]
    Internal(String),
}

/// An error and each of its sources, joined by ": ".
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            // Some errors (rusqlite's) are their own source's text: say it once.
            let text = cause.to_string();
            if text != last {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}
