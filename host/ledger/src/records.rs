//! The ledger's data model: the records it stores and the mutations ([`Op`]) that change them.
//!
//! Owns only plain data shared by every backend; no storage logic lives here, so a Postgres
//! backend reuses it unchanged. Invariant: every status enum round-trips through one stable
//! snake_case string (`as_str` / `parse`), which is what the backends persist.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Unix time in milliseconds, always supplied by the caller: the ledger never reads the clock.
pub type Millis = i64;

/// `ms` as people read a time: RFC 3339 in UTC, to the millisecond (raw milliseconds only if
/// out of range).
pub fn format_ms(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The stable snake_case name stored by every backend.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the name produced by [`Self::as_str`]; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// Where a run stands. `Running` means "not finished": the process driving it may have crashed.
    RunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Finished without knowing whether some effect happened; a human must look.
        InDoubt => "in_doubt",
        /// Parked, not finished: waiting for a human decision on an open escalation.
        Escalated => "escalated",
        /// Parked, not finished: paused before an effect that needs a human's approval.
        WaitingApproval => "waiting_approval",
    }
}

impl RunStatus {
    /// Parked: not finished, but no attempt may start until a human decides
    /// ([`Op::ReopenRun`] resumes it, [`Op::EndRun`] ends it).
    pub fn is_parked(self) -> bool {
        matches!(self, Self::Escalated | Self::WaitingApproval)
    }
}

status_enum! {
    /// Where one attempt of a run stands.
    AttemptStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Ended without reporting: its lease expired or another holder took it over.
        Crashed => "crashed",
    }
}

status_enum! {
    /// Where one idempotency-keyed side effect stands.
    EffectStatus {
        /// Claimed (intent durable); the outcome is not recorded yet.
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The outcome is unknown and the downstream does not honour idempotency keys.
        InDoubt => "in_doubt",
    }
}

status_enum! {
    /// Why a run was escalated to a human.
    EscalationReason {
        /// A retryable failure used up its retry budget.
        RetriesExhausted => "retries_exhausted",
        /// A failure that retrying cannot fix.
        NonRetryable => "non_retryable",
        /// An effect's outcome is unknown; a human must check downstream.
        InDoubt => "in_doubt",
        /// An effect needs a human's approval before it is dispatched.
        Approval => "approval",
    }
}

status_enum! {
    /// Whether an escalation still waits for a decision.
    EscalationStatus {
        Open => "open",
        Resolved => "resolved",
    }
}

status_enum! {
    /// What a human decided about an escalation.
    Resolution {
        /// Resume the run.
        Retry => "retry",
        /// Treat the run (or its in-doubt effect) as having succeeded.
        MarkSucceeded => "mark_succeeded",
        /// Give up on the run.
        Abandon => "abandon",
        /// The effect awaiting approval may go ahead.
        Approved => "approved",
        /// The effect awaiting approval must not happen.
        Rejected => "rejected",
    }
}

status_enum! {
    /// A connector's circuit breaker.
    BreakerState {
        /// Calls flow normally.
        Closed => "closed",
        /// Calls are refused until `open_until`.
        Open => "open",
        /// One trial call may go through to probe recovery.
        HalfOpen => "half_open",
    }
}

/// Hex SHA-256 of an effect payload, the form [`EffectRecord::payload_digest`] stores.
pub fn payload_digest(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

/// What a run's rows occupy in the ledger, as [`crate::Ledger::stored_bytes`] counts it: the
/// bytes of every text and blob column, plus [`ROW_COST`] per row. The host charges a tool's
/// writes against its storage budget with these same functions, so the budget it enforces
/// and the figure the ledger reports agree.
pub mod stored {
    use super::{NewJournalEntry, NewRun};

    /// What one row costs besides its text and blobs: its header, its keys (the run id among
    /// them) and its index entries, rounded up. Counting it keeps empty rows from being free.
    pub const ROW_COST: u64 = 192;

    fn len(text: &str) -> u64 {
        u64::try_from(text.len()).unwrap_or(u64::MAX)
    }

    /// A new run's row: its tool and its input.
    pub fn new_run(run: &NewRun) -> u64 {
        ROW_COST
            .saturating_add(len(&run.tool))
            .saturating_add(len(&run.input))
    }

    /// A new attempt's row: the component digest it runs and its holder.
    pub fn new_attempt(component_digest: &str, holder: &str) -> u64 {
        ROW_COST
            .saturating_add(len(component_digest))
            .saturating_add(len(holder))
    }

    /// A call's idempotency key row.
    pub fn call_key(key: &str, tool: &str, args_digest: &str) -> u64 {
        ROW_COST
            .saturating_add(len(key))
            .saturating_add(len(tool))
            .saturating_add(len(args_digest))
    }

    /// A journal entry, its fields as the JSON text the ledger stores.
    pub fn journal(entry: &NewJournalEntry, fields_json: &str) -> u64 {
        ROW_COST
            .saturating_add(len(&entry.level))
            .saturating_add(len(&entry.event))
            .saturating_add(len(&entry.message))
            .saturating_add(len(fields_json))
    }

    /// A journal entry, serializing its fields to measure them.
    pub fn journal_entry(entry: &NewJournalEntry) -> u64 {
        journal(entry, &entry.fields.to_string())
    }

    /// A checkpoint of `state_len` bytes.
    pub fn checkpoint(name: &str, state_len: usize) -> u64 {
        ROW_COST
            .saturating_add(len(name))
            .saturating_add(u64::try_from(state_len).unwrap_or(u64::MAX))
    }

    /// An effect's claim: its kind, key, payload and payload digest (64 hex digits).
    pub fn effect_claim(kind: &str, key: &str, payload: &str) -> u64 {
        ROW_COST
            .saturating_add(len(kind))
            .saturating_add(len(key))
            .saturating_add(64)
            .saturating_add(len(payload))
    }
}

/// The business-object lock a run takes before each of its attempts, so overlapping runs on
/// one object never act at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLock {
    pub key: String,
    /// How long an attempt waits for the lock while another run holds it.
    pub wait_ms: u64,
    /// The lease an attempt takes on it, renewed while the attempt lives.
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub run_id: String,
    pub tool: String,
    /// The tool input, as JSON text.
    pub input: String,
    pub now: Millis,
    /// The component file the run was started with, so a resume can load it again.
    #[serde(default)]
    pub component: Option<String>,
    /// The lock each attempt of the run takes.
    #[serde(default)]
    pub lock: Option<RunLock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub tool: String,
    pub input: String,
    pub status: RunStatus,
    pub output: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// How many attempts have been started.
    pub attempts: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The component file the run was started with.
    pub component: Option<String>,
    /// The lock each attempt of the run takes.
    pub lock: Option<RunLock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub run_id: String,
    /// 1-based attempt number within the run.
    pub attempt: u32,
    pub component_digest: String,
    /// Who drives this attempt (e.g. host id + pid); leases are checked against it.
    pub holder: String,
    pub status: AttemptStatus,
    pub started_at: Millis,
    pub lease_until: Millis,
    pub ended_at: Option<Millis>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// The tool's own CPU time in the attempt, recorded when it ended.
    pub cpu_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub kind: String,
    pub key: String,
    /// Hex SHA-256 of the payload (see [`payload_digest`]).
    pub payload_digest: String,
    pub payload: String,
    /// The run that currently owns the effect.
    pub run_id: String,
    /// The attempt that currently owns the effect.
    pub attempt: u32,
    pub status: EffectStatus,
    pub response: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// How many times a dispatch was started (see [`Op::MarkDispatched`]).
    pub dispatches: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run_id: String,
    pub attempt: u32,
    /// Ledger-wide increasing sequence number; later checkpoints have larger numbers.
    pub seq: i64,
    pub name: String,
    pub state: Vec<u8>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJournalEntry {
    pub run_id: String,
    pub attempt: Option<u32>,
    pub at: Millis,
    /// One of trace, debug, info, warn, error.
    pub level: String,
    /// What happened, dotted: "attempt.started", "effect.replayed", "log", …
    pub event: String,
    pub message: String,
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Ledger-wide increasing sequence number: the journal's order.
    pub seq: i64,
    pub run_id: String,
    pub attempt: Option<u32>,
    pub at: Millis,
    pub level: String,
    pub event: String,
    pub message: String,
    pub fields: serde_json::Value,
}

/// Which runs [`crate::Ledger::runs`] returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs in this status; `None` for all.
    pub status: Option<RunStatus>,
    /// At most this many runs.
    pub limit: usize,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            status: None,
            limit: 100,
        }
    }
}

/// An escalation to open with [`Op::OpenEscalation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEscalation {
    pub run_id: String,
    pub reason: EscalationReason,
    /// One line for a human: what happened and what is being asked.
    pub summary: String,
    /// The effect the escalation is about, if any.
    pub effect_kind: Option<String>,
    pub effect_key: Option<String>,
    /// The digest of that effect's payload, as the human saw it: an approval covers exactly
    /// this payload.
    pub payload_digest: Option<String>,
    /// The evidence packet a human decides on.
    pub evidence: serde_json::Value,
    pub now: Millis,
}

/// A run parked for a human decision, and that decision once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Ledger-wide increasing id; later escalations have larger ids.
    pub id: i64,
    pub run_id: String,
    pub reason: EscalationReason,
    pub summary: String,
    pub effect_kind: Option<String>,
    pub effect_key: Option<String>,
    pub payload_digest: Option<String>,
    pub evidence: serde_json::Value,
    pub status: EscalationStatus,
    /// Set exactly when `status` is `Resolved`.
    pub resolution: Option<Resolution>,
    /// Why the human decided so.
    pub resolution_reason: Option<String>,
    /// Who decided.
    pub resolved_by: Option<String>,
    pub created_at: Millis,
    pub resolved_at: Option<Millis>,
}

/// Which escalations [`crate::Ledger::escalations`] returns, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationFilter {
    /// Only escalations in this status; `None` for all.
    pub status: Option<EscalationStatus>,
    /// Only escalations of this run; `None` for all.
    pub run_id: Option<String>,
    /// At most this many escalations.
    pub limit: usize,
}

impl Default for EscalationFilter {
    fn default() -> Self {
        Self {
            status: None,
            run_id: None,
            limit: 100,
        }
    }
}

/// A named lock with a fencing token (see [`Op::AcquireLock`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub key: String,
    /// The run that holds (or last held) the lock.
    pub run_id: String,
    /// Who drives that run (e.g. host id + pid).
    pub holder: String,
    /// Per-key fencing token: every acquisition gets a larger one than all before it, so a
    /// downstream that remembers the largest fence it saw can refuse a stale holder.
    pub fence: i64,
    pub acquired_at: Millis,
    /// The lock is free once `lease_until <= now`, even if never released.
    pub lease_until: Millis,
    pub released: bool,
}

/// One tool's circuit breaker on one connector, as last saved by a host. Circuits are kept
/// per tool, so one tool's failures never open the circuit for the other tools using the
/// connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerRecord {
    pub connector: String,
    /// The tool whose calls this circuit counts.
    pub tool: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// While `Open`: when a trial call may be let through. While `HalfOpen`: when the trial
    /// in flight stops holding the circuit, so another may try.
    pub open_until: Option<Millis>,
    pub updated_at: Millis,
}

/// How durable a write must be before [`crate::Ledger::apply_with`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On stable storage: kept through a crash of the machine or of the database server.
    /// Every rule that makes effects exactly-once depends on it.
    #[default]
    Synced,
    /// Committed, seen by every reader and kept if the process is killed, but not yet
    /// flushed to stable storage: a crash of the machine (SQLite) or of the database server
    /// (PostgreSQL) may lose the last such commits. Commits keep their order, so the next
    /// synced commit makes every earlier one durable, and what is lost is always a tail.
    /// For the audit records of runs that change nothing.
    Unsynced,
}

/// One durable mutation. A call to [`crate::Ledger::apply`] commits all its ops atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Creates a run in status `Running`. Error `RunExists` if the id is taken.
    CreateRun(NewRun),
    /// Starts attempt n+1 of a `Running` run → [`Applied::Attempt`].
    ///
    /// A `Running` latest attempt whose `lease_until > now` refuses with `AttemptLive` unless
    /// `take_over`; otherwise it becomes `Crashed` (`ended_at = now`). A parked run refuses
    /// with `RunParked`, a finished run with `RunFinished`, an unknown run with `RunNotFound`.
    BeginAttempt {
        run_id: String,
        component_digest: String,
        holder: String,
        lease_until: Millis,
        take_over: bool,
        now: Millis,
    },
    /// `BeginAttempt` (never taking over a live lease) for a host that found the run
    /// stranded after `seen_attempts` attempts. Error `RunMoved` if the run has had another
    /// attempt since: another host claimed it first, or its own driver went on.
    ClaimStranded {
        run_id: String,
        seen_attempts: u32,
        component_digest: String,
        holder: String,
        lease_until: Millis,
        now: Millis,
    },
    /// Extends the lease. Error `LeaseLost` if that attempt is no longer `Running` or the holder
    /// differs.
    RenewLease {
        run_id: String,
        attempt: u32,
        holder: String,
        lease_until: Millis,
    },
    /// Ends a `Running` attempt as `Succeeded`, `Failed` or `Crashed`. Repeating the same end is
    /// a no-op; ending an attempt that already ended differently is `LeaseLost`.
    EndAttempt {
        run_id: String,
        attempt: u32,
        status: AttemptStatus,
        error_class: Option<String>,
        error_message: Option<String>,
        /// The tool's CPU time in the attempt.
        cpu_ms: u64,
        now: Millis,
    },
    /// Finishes a `Running` or parked run as `Succeeded`, `Failed` or `InDoubt` (ending a
    /// parked run is how an abandon or a rejection lands). Repeating the same status is a
    /// no-op; a run already finished with a different status is `RunFinished`; any other
    /// target status is `InvalidTransition`.
    EndRun {
        run_id: String,
        status: RunStatus,
        output: Option<String>,
        error_class: Option<String>,
        error_message: Option<String>,
        now: Millis,
    },
    /// Step (b) of the effect protocol: makes the intent durable → [`Applied::Claim`].
    ///
    /// Keys are scoped by (kind, key), not by run. Absent: inserts a `Pending` row owned by
    /// (run_id, attempt) with `dispatches = 0` → [`Claim::Fresh`]. Present: returns it with its
    /// owning attempt → [`Claim::Existing`]; the host decides between replay and conflict.
    ClaimEffect {
        kind: String,
        key: String,
        payload_digest: String,
        payload: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Compare-and-set ownership for re-dispatch → [`Applied::TookOver`].
    ///
    /// `true` only if the row still has (expected_run_id, expected_attempt, expected_status);
    /// then it is owned by (run_id, attempt), `Pending`, with response and error cleared.
    TakeOverEffect {
        kind: String,
        key: String,
        expected_run_id: String,
        expected_attempt: u32,
        expected_status: EffectStatus,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// A dispatch is about to start: `dispatches += 1`. Error `OwnershipLost` unless owned by
    /// (run_id, attempt) and `Pending`.
    MarkDispatched {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Step (d): records `Succeeded` or `Failed`. Error `OwnershipLost` unless owned by
    /// (run_id, attempt) and `Pending`.
    RecordOutcome {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        status: EffectStatus,
        response: Option<String>,
        error_class: Option<String>,
        error_message: Option<String>,
        now: Millis,
    },
    /// The outcome is unknown and the downstream does not honour keys: `Pending` → `InDoubt`.
    /// Error `OwnershipLost` if another attempt owns it, `InvalidTransition` if not `Pending`.
    MarkInDoubt {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Saves a checkpoint, replacing the run's earlier checkpoints of the same name (so a tool
    /// that saves one name over and over keeps one copy). The attempt must be the run's
    /// `Running` one, else `LeaseLost`: a superseded attempt cannot overwrite what its
    /// successor resumes from.
    SaveCheckpoint {
        run_id: String,
        attempt: u32,
        name: String,
        state: Vec<u8>,
        now: Millis,
    },
    /// Appends to the journal. Error `RunNotFound` for an unknown run.
    Journal(NewJournalEntry),
    /// Opens an escalation → [`Applied::Escalation`]. Error `RunNotFound` for an unknown run.
    ///
    /// A run has at most one `Open` escalation: if it already has one, that one is returned
    /// unchanged, so repeating the op after a crash never opens a duplicate.
    OpenEscalation(NewEscalation),
    /// Records a human's decision. Error `EscalationNotFound` for an unknown id, and
    /// `EscalationResolved` for one already resolved, even the same way: the batch of the
    /// second of two resolvers racing must not commit what it would change in the run.
    ResolveEscalation {
        id: i64,
        resolution: Resolution,
        reason: String,
        by: String,
        now: Millis,
    },
    /// Parks a `Running` run in `status`, which must be parked ([`RunStatus::is_parked`]), else
    /// `InvalidTransition`. Already in that status: no-op. A finished run is `RunFinished`, a
    /// run parked in the other status `InvalidTransition`, an unknown run `RunNotFound`.
    ParkRun {
        run_id: String,
        status: RunStatus,
        now: Millis,
    },
    /// Puts a parked, `Failed` or `InDoubt` run back to `Running`, clearing its output and
    /// error. Already `Running`: no-op. `Succeeded` is `RunFinished`; unknown `RunNotFound`.
    ReopenRun { run_id: String, now: Millis },
    /// Takes the named lock for `run_id` → [`Applied::Lock`].
    ///
    /// Fences are per key and only grow: a new key starts at 1; a key that is released, whose
    /// lease lapsed (`lease_until <= now`), or that `run_id` itself holds is taken with
    /// `fence + 1`. A key another run holds under a live lease is `LockHeld`.
    AcquireLock {
        key: String,
        run_id: String,
        holder: String,
        lease_until: Millis,
        now: Millis,
    },
    /// Extends the lease of a held lock. Error `LockLost` unless the key is unreleased and
    /// still has this `run_id` and `fence` (a lapsed lease nobody took yet can be renewed).
    RenewLock {
        key: String,
        run_id: String,
        fence: i64,
        lease_until: Millis,
    },
    /// Releases the lock if `run_id` and `fence` still hold it, ending its lease at `now` at
    /// the latest; otherwise a silent no-op, so a stale holder never frees its successor's lock.
    ReleaseLock {
        key: String,
        run_id: String,
        fence: i64,
        now: Millis,
    },
    /// Saves a circuit, replacing the one stored under the same connector and tool.
    SetBreaker(BreakerRecord),
    /// Asks `tool`'s circuit on `connector` to let one call through now →
    /// [`Applied::Admission`], under [`crate::breaker::probe`]: a closed circuit admits; an
    /// open one past its cool-down turns half-open and admits this call as its one trial;
    /// an open one, or a half-open one with a trial in flight, refuses.
    ProbeBreaker {
        connector: String,
        tool: String,
        rule: crate::BreakerRule,
        now: Millis,
    },
    /// Counts one ended downstream call on `tool`'s circuit, as the stored circuit stands
    /// inside this transaction ([`crate::breaker::after_call`]): concurrent calls all count.
    CountBreakerCall {
        connector: String,
        tool: String,
        /// The call failed in a way that says downstream is unhealthy (transient, timeout).
        failed: bool,
        rule: crate::BreakerRule,
        now: Millis,
    },
    /// Records a caller's idempotency key for the run `run_id` (created earlier in the same
    /// batch). A key already recorded is `CallKeyUsed`, naming the first run; since `apply`
    /// is atomic, that also undoes the batch's `CreateRun`.
    ClaimCallKey {
        key: String,
        tool: String,
        args_digest: String,
        run_id: String,
        now: Millis,
    },
    /// Records that node `node_id` is alive at `now`: its row is created on the first beat
    /// (`started_at = now`) and its `heartbeat_at` moved on each later one. A node that had
    /// stopped and beats again is alive again. When `forget_silent_before` is set, rows of
    /// other nodes silent since before then are deleted, so dead nodes do not pile up.
    Heartbeat {
        node_id: String,
        /// Where the node serves, as it was told to listen (`127.0.0.1:8080`).
        address: String,
        /// The host build the node runs.
        version: String,
        /// The node's lease TTL: it counts as dead once silent this long.
        lease_ttl_ms: Millis,
        forget_silent_before: Option<Millis>,
        now: Millis,
    },
    /// Records that node `node_id` shut down cleanly at `now`. Unknown nodes are ignored.
    NodeStopped { node_id: String, now: Millis },
}

/// A host process serving as a node of a fleet ([`Op::Heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub address: String,
    pub version: String,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
    /// The node's lease TTL: it counts as dead once silent this long.
    pub lease_ttl_ms: Millis,
    /// When it shut down cleanly; `None` while it runs or after it died.
    pub stopped_at: Option<Millis>,
}

/// What a holder (a node's id) holds: the running attempts it leases and the locks it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// Running attempts of running runs whose holder it is, oldest run first.
    pub attempts: Vec<Attempt>,
    /// Locks it acquired and has not released, by key.
    pub locks: Vec<LockRecord>,
}

/// Which running runs [`crate::Ledger::stranded`] returns: those of `tool` that no live
/// host drives. That is a run whose latest attempt is running with a lease that lapsed at
/// or before `now`; or whose latest attempt ended at or before `ended_by` (a driver waiting
/// out a backoff would have begun the next one by then); or which has no attempt and was
/// created at or before `created_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrandedFilter {
    pub tool: String,
    pub now: Millis,
    pub ended_by: Millis,
    pub created_by: Millis,
    /// At most this many runs, oldest first.
    pub limit: usize,
}

/// A caller's idempotency key for a whole run (see [`Op::ClaimCallKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallKeyRecord {
    pub key: String,
    pub tool: String,
    /// Digest of the tool and the arguments the key was first used with.
    pub args_digest: String,
    pub run_id: String,
    pub created_at: Millis,
}

/// What [`Op::ClaimEffect`] found.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per op, never stored in bulk; boxing would only complicate matching"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// The key was new; the caller now owns it in `Pending`.
    Fresh,
    /// The key was already claimed; `owner` is the attempt row that owns it (`None` if missing).
    Existing {
        effect: EffectRecord,
        owner: Option<Attempt>,
    },
}

/// The result of one [`Op`]; [`crate::Ledger::apply`] returns one per op, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Done,
    Attempt(Attempt),
    Claim(Claim),
    TookOver(bool),
    Escalation(Escalation),
    Lock(LockRecord),
    Admission(crate::Admission),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_and_match_serde() {
        for status in [
            EffectStatus::Pending,
            EffectStatus::Succeeded,
            EffectStatus::Failed,
            EffectStatus::InDoubt,
        ] {
            assert_eq!(EffectStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(RunStatus::parse("in_doubt"), Some(RunStatus::InDoubt));
        assert_eq!(
            AttemptStatus::parse("crashed"),
            Some(AttemptStatus::Crashed)
        );
        assert_eq!(RunStatus::parse("InDoubt"), None);
        assert_eq!(
            RunStatus::parse("waiting_approval"),
            Some(RunStatus::WaitingApproval)
        );
        assert_eq!(
            EscalationReason::parse("retries_exhausted"),
            Some(EscalationReason::RetriesExhausted)
        );
        assert_eq!(
            Resolution::parse("mark_succeeded"),
            Some(Resolution::MarkSucceeded)
        );
        assert_eq!(
            BreakerState::parse("half_open"),
            Some(BreakerState::HalfOpen)
        );
        assert_eq!(EscalationStatus::Open.as_str(), "open");
        assert_eq!(
            serde_json::to_string(&Resolution::MarkSucceeded).unwrap(),
            "\"mark_succeeded\""
        );
    }

    #[test]
    fn only_escalated_and_waiting_approval_are_parked() {
        let parked: Vec<RunStatus> = [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::InDoubt,
            RunStatus::Escalated,
            RunStatus::WaitingApproval,
        ]
        .into_iter()
        .filter(|s| s.is_parked())
        .collect();
        assert_eq!(parked, [RunStatus::Escalated, RunStatus::WaitingApproval]);
    }

    #[test]
    fn payload_digest_is_lowercase_hex_sha256() {
        assert_eq!(
            payload_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
