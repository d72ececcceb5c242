//! The storage contract every ledger backend implements, plus typed one-op helpers over it.
//!
//! Invariant: `apply` is all-or-nothing and durable on `Ok`; everything else here is reads or
//! sugar over `apply`, so a new backend (Postgres) only has to get `apply` right once.

use crate::error::LedgerError;
use crate::records::{
    Applied, Attempt, AttemptStatus, BreakerRecord, CallKeyRecord, Checkpoint, Claim, Durability,
    EffectRecord, EffectStatus, Escalation, EscalationFilter, EscalationStatus, Holdings,
    JournalEntry, LockRecord, Millis, NewEscalation, NewJournalEntry, NewRun, NodeRecord, Op,
    Resolution, Run, RunFilter, RunStatus, StrandedFilter,
};

/// Called once with the result of a [`Ledger::submit`]ted request.
pub type Done = Box<dyn FnOnce(Result<Vec<Applied>, LedgerError>) + Send>;

/// A request [`Ledger::submit`] did not queue; its `done` was dropped uncalled.
pub enum Unsent {
    /// The backend applies requests only on the caller's thread: apply them there.
    Unsupported {
        ops: Vec<Op>,
        durability: Durability,
    },
    /// The ledger is closed; nothing was applied.
    Closed,
}

pub trait Ledger: Send + Sync + 'static {
    /// Applies `ops` atomically and returns one [`Applied`] per op, in order.
    ///
    /// When this returns `Ok` the ops are durable; on `Err` nothing of this call is applied.
    /// Everything queued earlier by [`Ledger::journal`] on the same thread is durable too, so
    /// `apply(vec![])` is a flush.
    fn apply(&self, ops: Vec<Op>) -> Result<Vec<Applied>, LedgerError> {
        self.apply_with(ops, Durability::Synced)
    }

    /// [`Ledger::apply`], returning once the commit is as durable as `durability` asks.
    fn apply_with(&self, ops: Vec<Op>, durability: Durability)
    -> Result<Vec<Applied>, LedgerError>;

    /// [`Ledger::apply_with`] without waiting: a backend with a writer thread of its own
    /// queues the request and calls `done` with its result from that thread, so an async
    /// caller needs no thread of its own to wait on. A backend without one hands the
    /// request back ([`Unsent::Unsupported`]) for the caller to apply on a thread it can
    /// block. `done` must not block, call the ledger's writes or hold the last handle to
    /// the ledger: it runs on the writer's thread, ahead of the next batch.
    fn submit(&self, ops: Vec<Op>, durability: Durability, done: Done) -> Result<(), Unsent> {
        drop(done);
        Err(Unsent::Unsupported { ops, durability })
    }

    /// Queues a journal entry without waiting; it commits with the next batch (or shortly
    /// after). FIFO with later `apply` calls from the same thread. An entry that cannot be
    /// stored (e.g. unknown run) is dropped with a warning and never fails other work.
    fn journal(&self, entry: NewJournalEntry);

    fn run(&self, run_id: &str) -> Result<Option<Run>, LedgerError>;

    /// Runs matching `filter`, newest first.
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, LedgerError>;

    /// The run's attempts, oldest first.
    fn attempts(&self, run_id: &str) -> Result<Vec<Attempt>, LedgerError>;

    fn effect(&self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError>;

    /// Effects currently owned by `run_id`, in creation order.
    fn effects_for_run(&self, run_id: &str) -> Result<Vec<EffectRecord>, LedgerError>;

    /// The newest checkpoint of the run, restricted to `name` if given.
    fn latest_checkpoint(
        &self,
        run_id: &str,
        name: Option<&str>,
    ) -> Result<Option<Checkpoint>, LedgerError>;

    /// All checkpoints of the run, oldest first.
    fn checkpoints(&self, run_id: &str) -> Result<Vec<Checkpoint>, LedgerError>;

    /// The run's journal, in commit order.
    fn journal_entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, LedgerError>;

    /// The run's committed journal entries after `seq`, in order: for a follower that has
    /// read up to `seq`. Entries still queued are not written first (they come with the
    /// run's next commit, within the journal linger), so following a run costs no commit. On
    /// PostgreSQL a sequence number is taken at insert, so an entry whose transaction
    /// commits after one with a higher number is missed by a follower already past it:
    /// good for progress, not for audit.
    fn journal_since(&self, run_id: &str, seq: i64) -> Result<Vec<JournalEntry>, LedgerError>;

    fn escalation(&self, id: i64) -> Result<Option<Escalation>, LedgerError>;

    /// Escalations matching `filter`, oldest first (by id).
    fn escalations(&self, filter: &EscalationFilter) -> Result<Vec<Escalation>, LedgerError>;

    /// How many escalations are in `status`, counted by the ledger (for gauges, which must
    /// not read the rows).
    fn count_escalations(&self, status: EscalationStatus) -> Result<u64, LedgerError>;

    /// The lock row for `key`, released or not; `None` if it was never taken.
    fn lock(&self, key: &str) -> Result<Option<LockRecord>, LedgerError>;

    /// Every saved circuit, by connector name, then tool.
    fn breakers(&self) -> Result<Vec<BreakerRecord>, LedgerError>;

    /// One tool's circuit on one connector; `None` if it was never saved (closed).
    fn breaker(&self, connector: &str, tool: &str) -> Result<Option<BreakerRecord>, LedgerError>;

    /// The bytes the run's rows occupy, counted as [`crate::stored`] counts them: the run,
    /// its attempts, the effects it owns, its checkpoints, journal, escalations and call keys.
    /// `RunNotFound` for an unknown run.
    ///
    /// Counts what is committed: journal entries still queued are not flushed first, so that
    /// reading a budget at an attempt's start does not cost a commit. What can be queued
    /// then is the host's own record of that attempt (its start, a lock wait), since every
    /// earlier `apply` of the run (its last attempt's end among them) made what was queued
    /// before it durable.
    fn stored_bytes(&self, run_id: &str) -> Result<u64, LedgerError>;

    /// The run a caller's idempotency key started, if the key is known.
    fn call_key(&self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError>;

    /// Running runs no live host drives, as `filter` defines them, oldest first. One query,
    /// however many runs are running: a recovering node calls it on every look.
    fn stranded(&self, filter: &StrandedFilter) -> Result<Vec<Run>, LedgerError>;

    /// Every node that heartbeats in this ledger and has not been forgotten, most recently
    /// started first.
    fn nodes(&self) -> Result<Vec<NodeRecord>, LedgerError>;

    /// The running attempts and unreleased locks whose holder is `holder`.
    fn holdings(&self, holder: &str) -> Result<Holdings, LedgerError>;
}

/// Typed one-op helpers over [`Ledger::apply`]. Arguments follow the field order of the
/// matching [`Op`] variant.
pub trait LedgerExt: Ledger {
    fn create_run(&self, run: NewRun) -> Result<(), LedgerError> {
        expect_done(self.apply(vec![Op::CreateRun(run)]), "CreateRun")
    }

    fn begin_attempt(
        &self,
        run_id: &str,
        component_digest: &str,
        holder: &str,
        lease_until: Millis,
        take_over: bool,
        now: Millis,
    ) -> Result<Attempt, LedgerError> {
        let op = Op::BeginAttempt {
            run_id: run_id.to_owned(),
            component_digest: component_digest.to_owned(),
            holder: holder.to_owned(),
            lease_until,
            take_over,
            now,
        };
        match single(self.apply(vec![op]), "BeginAttempt")? {
            Applied::Attempt(attempt) => Ok(attempt),
            other => Err(unexpected("BeginAttempt", &other)),
        }
    }

    fn renew_lease(
        &self,
        run_id: &str,
        attempt: u32,
        holder: &str,
        lease_until: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::RenewLease {
            run_id: run_id.to_owned(),
            attempt,
            holder: holder.to_owned(),
            lease_until,
        };
        expect_done(self.apply(vec![op]), "RenewLease")
    }

    fn end_attempt(
        &self,
        run_id: &str,
        attempt: u32,
        status: AttemptStatus,
        error_class: Option<&str>,
        error_message: Option<&str>,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::EndAttempt {
            run_id: run_id.to_owned(),
            attempt,
            status,
            error_class: error_class.map(str::to_owned),
            error_message: error_message.map(str::to_owned),
            cpu_ms: 0,
            now,
        };
        expect_done(self.apply(vec![op]), "EndAttempt")
    }

    fn end_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&str>,
        error_class: Option<&str>,
        error_message: Option<&str>,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::EndRun {
            run_id: run_id.to_owned(),
            status,
            output: output.map(str::to_owned),
            error_class: error_class.map(str::to_owned),
            error_message: error_message.map(str::to_owned),
            now,
        };
        expect_done(self.apply(vec![op]), "EndRun")
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors Op::ClaimEffect field for field"
    )]
    fn claim_effect(
        &self,
        kind: &str,
        key: &str,
        payload_digest: &str,
        payload: &str,
        run_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<Claim, LedgerError> {
        let op = Op::ClaimEffect {
            kind: kind.to_owned(),
            key: key.to_owned(),
            payload_digest: payload_digest.to_owned(),
            payload: payload.to_owned(),
            run_id: run_id.to_owned(),
            attempt,
            now,
        };
        match single(self.apply(vec![op]), "ClaimEffect")? {
            Applied::Claim(claim) => Ok(claim),
            other => Err(unexpected("ClaimEffect", &other)),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors Op::TakeOverEffect field for field"
    )]
    fn take_over_effect(
        &self,
        kind: &str,
        key: &str,
        expected_run_id: &str,
        expected_attempt: u32,
        expected_status: EffectStatus,
        run_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<bool, LedgerError> {
        let op = Op::TakeOverEffect {
            kind: kind.to_owned(),
            key: key.to_owned(),
            expected_run_id: expected_run_id.to_owned(),
            expected_attempt,
            expected_status,
            run_id: run_id.to_owned(),
            attempt,
            now,
        };
        match single(self.apply(vec![op]), "TakeOverEffect")? {
            Applied::TookOver(took) => Ok(took),
            other => Err(unexpected("TakeOverEffect", &other)),
        }
    }

    fn mark_dispatched(
        &self,
        kind: &str,
        key: &str,
        run_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::MarkDispatched {
            kind: kind.to_owned(),
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            attempt,
            now,
        };
        expect_done(self.apply(vec![op]), "MarkDispatched")
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors Op::RecordOutcome field for field"
    )]
    fn record_outcome(
        &self,
        kind: &str,
        key: &str,
        run_id: &str,
        attempt: u32,
        status: EffectStatus,
        response: Option<&str>,
        error_class: Option<&str>,
        error_message: Option<&str>,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::RecordOutcome {
            kind: kind.to_owned(),
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            attempt,
            status,
            response: response.map(str::to_owned),
            error_class: error_class.map(str::to_owned),
            error_message: error_message.map(str::to_owned),
            now,
        };
        expect_done(self.apply(vec![op]), "RecordOutcome")
    }

    fn mark_in_doubt(
        &self,
        kind: &str,
        key: &str,
        run_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::MarkInDoubt {
            kind: kind.to_owned(),
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            attempt,
            now,
        };
        expect_done(self.apply(vec![op]), "MarkInDoubt")
    }

    fn save_checkpoint(
        &self,
        run_id: &str,
        attempt: u32,
        name: &str,
        state: &[u8],
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::SaveCheckpoint {
            run_id: run_id.to_owned(),
            attempt,
            name: name.to_owned(),
            state: state.to_vec(),
            now,
        };
        expect_done(self.apply(vec![op]), "SaveCheckpoint")
    }

    fn open_escalation(&self, escalation: NewEscalation) -> Result<Escalation, LedgerError> {
        match single(
            self.apply(vec![Op::OpenEscalation(escalation)]),
            "OpenEscalation",
        )? {
            Applied::Escalation(escalation) => Ok(escalation),
            other => Err(unexpected("OpenEscalation", &other)),
        }
    }

    fn resolve_escalation(
        &self,
        id: i64,
        resolution: Resolution,
        reason: &str,
        by: &str,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::ResolveEscalation {
            id,
            resolution,
            reason: reason.to_owned(),
            by: by.to_owned(),
            now,
        };
        expect_done(self.apply(vec![op]), "ResolveEscalation")
    }

    fn park_run(&self, run_id: &str, status: RunStatus, now: Millis) -> Result<(), LedgerError> {
        let op = Op::ParkRun {
            run_id: run_id.to_owned(),
            status,
            now,
        };
        expect_done(self.apply(vec![op]), "ParkRun")
    }

    fn reopen_run(&self, run_id: &str, now: Millis) -> Result<(), LedgerError> {
        let op = Op::ReopenRun {
            run_id: run_id.to_owned(),
            now,
        };
        expect_done(self.apply(vec![op]), "ReopenRun")
    }

    fn acquire_lock(
        &self,
        key: &str,
        run_id: &str,
        holder: &str,
        lease_until: Millis,
        now: Millis,
    ) -> Result<LockRecord, LedgerError> {
        let op = Op::AcquireLock {
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            holder: holder.to_owned(),
            lease_until,
            now,
        };
        match single(self.apply(vec![op]), "AcquireLock")? {
            Applied::Lock(lock) => Ok(lock),
            other => Err(unexpected("AcquireLock", &other)),
        }
    }

    fn renew_lock(
        &self,
        key: &str,
        run_id: &str,
        fence: i64,
        lease_until: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::RenewLock {
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            fence,
            lease_until,
        };
        expect_done(self.apply(vec![op]), "RenewLock")
    }

    fn release_lock(
        &self,
        key: &str,
        run_id: &str,
        fence: i64,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::ReleaseLock {
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            fence,
            now,
        };
        expect_done(self.apply(vec![op]), "ReleaseLock")
    }

    fn set_breaker(&self, breaker: BreakerRecord) -> Result<(), LedgerError> {
        expect_done(self.apply(vec![Op::SetBreaker(breaker)]), "SetBreaker")
    }

    fn heartbeat(
        &self,
        node_id: &str,
        address: &str,
        version: &str,
        lease_ttl_ms: Millis,
        forget_silent_before: Option<Millis>,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::Heartbeat {
            node_id: node_id.to_owned(),
            address: address.to_owned(),
            version: version.to_owned(),
            lease_ttl_ms,
            forget_silent_before,
            now,
        };
        expect_done(self.apply(vec![op]), "Heartbeat")
    }

    fn node_stopped(&self, node_id: &str, now: Millis) -> Result<(), LedgerError> {
        let op = Op::NodeStopped {
            node_id: node_id.to_owned(),
            now,
        };
        expect_done(self.apply(vec![op]), "NodeStopped")
    }

    fn claim_call_key(
        &self,
        key: &str,
        tool: &str,
        args_digest: &str,
        run_id: &str,
        now: Millis,
    ) -> Result<(), LedgerError> {
        let op = Op::ClaimCallKey {
            key: key.to_owned(),
            tool: tool.to_owned(),
            args_digest: args_digest.to_owned(),
            run_id: run_id.to_owned(),
            now,
        };
        expect_done(self.apply(vec![op]), "ClaimCallKey")
    }
}

impl<L: Ledger + ?Sized> LedgerExt for L {}

/// The one result of a one-op `apply`; a different count means the backend broke the contract.
fn single(result: Result<Vec<Applied>, LedgerError>, op: &str) -> Result<Applied, LedgerError> {
    let mut applied = result?;
    let count = applied.len();
    match applied.pop() {
        Some(one) if count == 1 => Ok(one),
        _ => Err(LedgerError::Internal(format!(
            "{op}: backend returned {count} results for one op"
        ))),
    }
}

fn expect_done(result: Result<Vec<Applied>, LedgerError>, op: &str) -> Result<(), LedgerError> {
    match single(result, op)? {
        Applied::Done => Ok(()),
        other => Err(unexpected(op, &other)),
    }
}

fn unexpected(op: &str, got: &Applied) -> LedgerError {
    LedgerError::Internal(format!("{op}: backend returned unexpected result {got:?}"))
}
