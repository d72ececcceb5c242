//! The ledger's rules: how each [`Op`] moves the stored state, for every backend.
//!
//! A backend opens one write transaction, hands it to [`apply`] as a [`Tx`] and commits or
//! rolls back what [`apply`] did. The rules decide: who may begin an attempt, when a lease
//! may be taken over, which run states are final or parked, whether a lock is free and which
//! fence comes next, who owns an effect, and whether an escalation is still open. A [`Tx`]
//! only reads and writes typed rows.
//!
//! Invariant: every check reads inside the caller's transaction, and a backend makes the rows
//! a check reads stay as read until the transaction ends (SQLite has one writer at a time;
//! PostgreSQL locks each row as a rule reads it, see `pg::tx`), so checks and writes never
//! race. An `Err` leaves the transaction for the caller to roll back.

use crate::breaker;
use crate::error::LedgerError;
use crate::records::{
    Applied, Attempt, AttemptStatus, BreakerRecord, CallKeyRecord, Claim, EffectRecord,
    EffectStatus, Escalation, EscalationStatus, LockRecord, Millis, NewEscalation, NewJournalEntry,
    NewRun, NodeRecord, Op, Resolution, Run, RunStatus, format_ms,
};

/// Typed rows inside one write transaction. Reads see the transaction's own writes.
///
/// `update_*` methods write only the columns the rules change; the immutable ones (an
/// effect's payload, a run's input) are never rewritten.
pub trait Tx {
    fn run(&mut self, run_id: &str) -> Result<Option<Run>, LedgerError>;
    fn insert_run(&mut self, run: &NewRun) -> Result<(), LedgerError>;
    /// Writes `status`, `output`, `error_class`, `error_message`, `attempts`, `updated_at`.
    fn update_run(&mut self, run: &Run) -> Result<(), LedgerError>;
    /// Sets only `updated_at`, without reading the run.
    fn touch_run(&mut self, run_id: &str, now: Millis) -> Result<(), LedgerError>;

    fn attempt(&mut self, run_id: &str, attempt: u32) -> Result<Option<Attempt>, LedgerError>;
    /// The attempt as last committed, for a rule that only reports it and decides nothing on
    /// it: a backend that locks what a rule reads (PostgreSQL) need not lock its run, so a
    /// claim on another run's effect never waits on, or holds up, that run.
    fn attempt_to_report(
        &mut self,
        run_id: &str,
        attempt: u32,
    ) -> Result<Option<Attempt>, LedgerError> {
        self.attempt(run_id, attempt)
    }
    fn latest_attempt(&mut self, run_id: &str) -> Result<Option<Attempt>, LedgerError>;
    fn insert_attempt(&mut self, attempt: &Attempt) -> Result<(), LedgerError>;
    /// Writes `status`, `lease_until`, `ended_at`, `error_class`, `error_message`, `cpu_ms`.
    fn update_attempt(&mut self, attempt: &Attempt) -> Result<(), LedgerError>;

    fn effect(&mut self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError>;
    fn insert_effect(&mut self, effect: &EffectRecord) -> Result<(), LedgerError>;
    /// Writes `run_id`, `attempt`, `status`, `response`, `error_class`, `error_message`,
    /// `dispatches`, `updated_at`.
    fn update_effect(&mut self, effect: &EffectRecord) -> Result<(), LedgerError>;

    /// Stores the checkpoint, replacing the run's earlier one of the same name.
    fn replace_checkpoint(
        &mut self,
        run_id: &str,
        attempt: u32,
        name: &str,
        state: &[u8],
        now: Millis,
    ) -> Result<(), LedgerError>;

    /// Appends the entry if its run exists; `false` if it does not (nothing is written).
    fn insert_journal(&mut self, entry: &NewJournalEntry) -> Result<bool, LedgerError>;

    fn escalation(&mut self, id: i64) -> Result<Option<Escalation>, LedgerError>;
    /// The run's open escalation, if it has one.
    fn open_escalation(&mut self, run_id: &str) -> Result<Option<Escalation>, LedgerError>;
    /// Inserts an open escalation and returns its new id.
    fn insert_escalation(&mut self, new: &NewEscalation) -> Result<i64, LedgerError>;
    /// Writes `status`, `resolution`, `resolution_reason`, `resolved_by`, `resolved_at`.
    fn update_escalation(&mut self, escalation: &Escalation) -> Result<(), LedgerError>;

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord>, LedgerError>;
    /// Inserts the lock row, or overwrites the key's row: lock rows are never deleted.
    fn put_lock(&mut self, lock: &LockRecord) -> Result<(), LedgerError>;

    fn breaker(
        &mut self,
        connector: &str,
        tool: &str,
    ) -> Result<Option<BreakerRecord>, LedgerError>;
    fn put_breaker(&mut self, breaker: &BreakerRecord) -> Result<(), LedgerError>;

    fn call_key(&mut self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError>;
    fn insert_call_key(&mut self, record: &CallKeyRecord) -> Result<(), LedgerError>;

    fn node(&mut self, node_id: &str) -> Result<Option<NodeRecord>, LedgerError>;
    /// Inserts the node's row or overwrites it.
    fn put_node(&mut self, node: &NodeRecord) -> Result<(), LedgerError>;
    /// Deletes the rows of nodes whose last heartbeat is older than `before`.
    fn forget_nodes(&mut self, before: Millis) -> Result<(), LedgerError>;
}

/// Applies one op inside the caller's transaction.
pub fn apply(tx: &mut impl Tx, op: Op) -> Result<Applied, LedgerError> {
    match op {
        Op::CreateRun(run) => create_run(tx, &run),
        Op::BeginAttempt {
            run_id,
            component_digest,
            holder,
            lease_until,
            take_over,
            now,
        } => begin_attempt(
            tx,
            &run_id,
            &component_digest,
            &holder,
            lease_until,
            take_over,
            now,
        ),
        Op::ClaimStranded {
            run_id,
            seen_attempts,
            component_digest,
            holder,
            lease_until,
            now,
        } => {
            let run = existing_run(tx, &run_id)?;
            if run.attempts != seen_attempts {
                return Err(LedgerError::RunMoved {
                    run_id,
                    seen: seen_attempts,
                    found: run.attempts,
                });
            }
            begin_attempt(
                tx,
                &run_id,
                &component_digest,
                &holder,
                lease_until,
                false,
                now,
            )
        }
        Op::RenewLease {
            run_id,
            attempt,
            holder,
            lease_until,
        } => renew_lease(tx, &run_id, attempt, &holder, lease_until),
        Op::EndAttempt {
            run_id,
            attempt,
            status,
            error_class,
            error_message,
            cpu_ms,
            now,
        } => end_attempt(
            tx,
            &run_id,
            attempt,
            status,
            (error_class, error_message),
            cpu_ms,
            now,
        ),
        Op::EndRun {
            run_id,
            status,
            output,
            error_class,
            error_message,
            now,
        } => end_run(
            tx,
            &run_id,
            status,
            (output, error_class, error_message),
            now,
        ),
        Op::ClaimEffect {
            kind,
            key,
            payload_digest,
            payload,
            run_id,
            attempt,
            now,
        } => claim_effect(tx, kind, key, payload_digest, payload, run_id, attempt, now),
        Op::TakeOverEffect {
            kind,
            key,
            expected_run_id,
            expected_attempt,
            expected_status,
            run_id,
            attempt,
            now,
        } => {
            // Compare-and-set: only the owner the caller saw, in the state it saw, is replaced.
            let Some(mut effect) = tx.effect(&kind, &key)? else {
                return Ok(Applied::TookOver(false));
            };
            if effect.run_id != expected_run_id
                || effect.attempt != expected_attempt
                || effect.status != expected_status
            {
                return Ok(Applied::TookOver(false));
            }
            effect.run_id = run_id;
            effect.attempt = attempt;
            effect.status = EffectStatus::Pending;
            effect.response = None;
            effect.error_class = None;
            effect.error_message = None;
            effect.updated_at = now;
            tx.update_effect(&effect)?;
            Ok(Applied::TookOver(true))
        }
        Op::MarkDispatched {
            kind,
            key,
            run_id,
            attempt,
            now,
        } => {
            let id = EffectId::new(&kind, &key, &run_id, attempt);
            let mut effect = owned_pending(tx, &id, NotPending::OwnershipLost)?;
            effect.dispatches = effect.dispatches.saturating_add(1);
            effect.updated_at = now;
            tx.update_effect(&effect)?;
            Ok(Applied::Done)
        }
        Op::RecordOutcome {
            kind,
            key,
            run_id,
            attempt,
            status,
            response,
            error_class,
            error_message,
            now,
        } => {
            let id = EffectId::new(&kind, &key, &run_id, attempt);
            let mut effect = owned_pending(tx, &id, NotPending::OwnershipLost)?;
            if !matches!(status, EffectStatus::Succeeded | EffectStatus::Failed) {
                return Err(LedgerError::InvalidTransition {
                    entity: id.describe(),
                    from: effect.status.to_string(),
                    to: status.to_string(),
                });
            }
            effect.status = status;
            effect.response = response;
            effect.error_class = error_class;
            effect.error_message = error_message;
            effect.updated_at = now;
            tx.update_effect(&effect)?;
            Ok(Applied::Done)
        }
        Op::MarkInDoubt {
            kind,
            key,
            run_id,
            attempt,
            now,
        } => {
            let id = EffectId::new(&kind, &key, &run_id, attempt);
            let mut effect = owned_pending(
                tx,
                &id,
                NotPending::InvalidTransition(EffectStatus::InDoubt),
            )?;
            effect.status = EffectStatus::InDoubt;
            effect.updated_at = now;
            tx.update_effect(&effect)?;
            Ok(Applied::Done)
        }
        Op::SaveCheckpoint {
            run_id,
            attempt,
            name,
            state,
            now,
        } => {
            // Fencing: only the live attempt may write what the next attempt resumes from.
            let current = live_attempt(tx, &run_id, attempt)?;
            if current.status != AttemptStatus::Running {
                return Err(LedgerError::LeaseLost {
                    run_id,
                    attempt,
                    reason: format!("the attempt already ended as {}", current.status),
                });
            }
            // One copy per name: what a resume needs is the newest, and keeping every save
            // would let a tool grow the ledger by saving one name over and over.
            tx.replace_checkpoint(&run_id, attempt, &name, &state, now)?;
            Ok(Applied::Done)
        }
        Op::Journal(entry) => {
            journal(tx, &entry)?;
            Ok(Applied::Done)
        }
        Op::OpenEscalation(escalation) => open_escalation(tx, &escalation),
        Op::ResolveEscalation {
            id,
            resolution,
            reason,
            by,
            now,
        } => resolve_escalation(tx, id, resolution, reason, by, now),
        Op::ParkRun {
            run_id,
            status,
            now,
        } => park_run(tx, &run_id, status, now),
        Op::ReopenRun { run_id, now } => reopen_run(tx, &run_id, now),
        Op::AcquireLock {
            key,
            run_id,
            holder,
            lease_until,
            now,
        } => acquire_lock(tx, key, run_id, holder, lease_until, now),
        Op::RenewLock {
            key,
            run_id,
            fence,
            lease_until,
        } => {
            // Compare-and-set on (run_id, fence): a holder whose lock was taken over, or
            // released, cannot extend its successor's lease.
            match tx.lock(&key)? {
                Some(mut lock) if holds(&lock, &run_id, fence) => {
                    lock.lease_until = lease_until;
                    tx.put_lock(&lock)?;
                    Ok(Applied::Done)
                }
                _ => Err(LedgerError::LockLost { key, run_id, fence }),
            }
        }
        Op::ReleaseLock {
            key,
            run_id,
            fence,
            now,
        } => {
            // Matching nothing is fine: a stale holder must never free its successor's lock.
            // The row stays, so the key's next fence still grows from this one.
            if let Some(mut lock) = tx.lock(&key)?
                && holds(&lock, &run_id, fence)
            {
                lock.released = true;
                lock.lease_until = lock.lease_until.min(now);
                tx.put_lock(&lock)?;
            }
            Ok(Applied::Done)
        }
        Op::SetBreaker(breaker) => {
            tx.put_breaker(&breaker)?;
            Ok(Applied::Done)
        }
        Op::ProbeBreaker {
            connector,
            tool,
            rule,
            now,
        } => {
            let current = tx.breaker(&connector, &tool)?;
            let (admission, changed) = breaker::probe(current.as_ref(), rule, now);
            if let Some(changed) = changed {
                tx.put_breaker(&changed)?;
            }
            Ok(Applied::Admission(admission))
        }
        Op::CountBreakerCall {
            connector,
            tool,
            failed,
            rule,
            now,
        } => {
            let current = tx.breaker(&connector, &tool)?;
            if let Some(changed) =
                breaker::after_call(current.as_ref(), &connector, &tool, failed, rule, now)
            {
                tx.put_breaker(&changed)?;
            }
            Ok(Applied::Done)
        }
        Op::ClaimCallKey {
            key,
            tool,
            args_digest,
            run_id,
            now,
        } => {
            if let Some(first) = tx.call_key(&key)? {
                return Err(LedgerError::CallKeyUsed {
                    key: first.key,
                    tool: first.tool,
                    args_digest: first.args_digest,
                    run_id: first.run_id,
                });
            }
            existing_run(tx, &run_id)?;
            tx.insert_call_key(&CallKeyRecord {
                key,
                tool,
                args_digest,
                run_id,
                created_at: now,
            })?;
            Ok(Applied::Done)
        }
        Op::Heartbeat {
            node_id,
            address,
            version,
            lease_ttl_ms,
            forget_silent_before,
            now,
        } => {
            if let Some(before) = forget_silent_before {
                tx.forget_nodes(before)?;
            }
            let started_at = match tx.node(&node_id)? {
                Some(known) => known.started_at,
                None => now,
            };
            tx.put_node(&NodeRecord {
                node_id,
                address,
                version,
                started_at,
                heartbeat_at: now,
                lease_ttl_ms,
                stopped_at: None,
            })?;
            Ok(Applied::Done)
        }
        Op::NodeStopped { node_id, now } => {
            if let Some(mut node) = tx.node(&node_id)? {
                node.stopped_at = Some(now);
                tx.put_node(&node)?;
            }
            Ok(Applied::Done)
        }
    }
}

/// Appends a journal entry; `RunNotFound` if its run does not exist.
pub fn journal(tx: &mut impl Tx, entry: &NewJournalEntry) -> Result<(), LedgerError> {
    if tx.insert_journal(entry)? {
        Ok(())
    } else {
        Err(LedgerError::RunNotFound {
            run_id: entry.run_id.clone(),
        })
    }
}

/// Finished for good: no attempt, park or end may follow (only [`Op::ReopenRun`] undoes
/// `Failed` and `InDoubt`). A match, so a new status must be classified here.
pub fn is_final(status: RunStatus) -> bool {
    match status {
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::InDoubt => true,
        RunStatus::Running | RunStatus::Escalated | RunStatus::WaitingApproval => false,
    }
}

/// Whether `lock` is still held by `run_id` under `fence`.
fn holds(lock: &LockRecord, run_id: &str, fence: i64) -> bool {
    lock.run_id == run_id && lock.fence == fence && !lock.released
}

fn existing_run(tx: &mut impl Tx, run_id: &str) -> Result<Run, LedgerError> {
    tx.run(run_id)?.ok_or_else(|| LedgerError::RunNotFound {
        run_id: run_id.to_owned(),
    })
}

fn create_run(tx: &mut impl Tx, run: &NewRun) -> Result<Applied, LedgerError> {
    if tx.run(&run.run_id)?.is_some() {
        return Err(LedgerError::RunExists {
            run_id: run.run_id.clone(),
        });
    }
    tx.insert_run(run)?;
    Ok(Applied::Done)
}

fn begin_attempt(
    tx: &mut impl Tx,
    run_id: &str,
    component_digest: &str,
    holder: &str,
    lease_until: Millis,
    take_over: bool,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let mut run = existing_run(tx, run_id)?;
    if run.status.is_parked() {
        return Err(LedgerError::RunParked {
            run_id: run.run_id,
            status: run.status,
        });
    }
    if run.status != RunStatus::Running {
        return Err(LedgerError::RunFinished {
            run_id: run.run_id,
            status: run.status,
        });
    }
    let latest = tx.latest_attempt(run_id)?;
    if let Some(mut latest) = latest
        .clone()
        .filter(|a| a.status == AttemptStatus::Running)
    {
        let live = latest.lease_until > now;
        if live && !take_over {
            return Err(LedgerError::AttemptLive {
                run_id: run.run_id,
                attempt: latest.attempt,
                holder: latest.holder,
                lease_until: latest.lease_until,
            });
        }
        let (class, message) = if live {
            (
                "taken_over",
                format!(
                    "taken over by `{holder}` while its lease ran until {}",
                    format_ms(latest.lease_until)
                ),
            )
        } else {
            (
                "lease_expired",
                format!("lease expired at {} ms without renewal", latest.lease_until),
            )
        };
        latest.status = AttemptStatus::Crashed;
        latest.ended_at = Some(now);
        latest.error_class = Some(class.to_owned());
        latest.error_message = Some(message);
        tx.update_attempt(&latest)?;
    }
    // Both counters should agree; taking the larger keeps numbering monotonic regardless.
    let previous = latest.map_or(0, |a| a.attempt).max(run.attempts);
    let number = previous.checked_add(1).ok_or_else(|| {
        LedgerError::Internal(format!("run `{run_id}` has exhausted attempt numbers"))
    })?;
    let attempt = Attempt {
        run_id: run.run_id.clone(),
        attempt: number,
        component_digest: component_digest.to_owned(),
        holder: holder.to_owned(),
        status: AttemptStatus::Running,
        started_at: now,
        lease_until,
        ended_at: None,
        error_class: None,
        error_message: None,
        cpu_ms: 0,
    };
    tx.insert_attempt(&attempt)?;
    run.attempts = number;
    run.updated_at = now;
    tx.update_run(&run)?;
    Ok(Applied::Attempt(attempt))
}

/// The attempt row, or `RunNotFound` / `LeaseLost` saying why there is none.
fn live_attempt(tx: &mut impl Tx, run_id: &str, attempt: u32) -> Result<Attempt, LedgerError> {
    if let Some(found) = tx.attempt(run_id, attempt)? {
        return Ok(found);
    }
    if tx.run(run_id)?.is_none() {
        return Err(LedgerError::RunNotFound {
            run_id: run_id.to_owned(),
        });
    }
    Err(LedgerError::LeaseLost {
        run_id: run_id.to_owned(),
        attempt,
        reason: "the run has no such attempt".to_owned(),
    })
}

fn renew_lease(
    tx: &mut impl Tx,
    run_id: &str,
    attempt: u32,
    holder: &str,
    lease_until: Millis,
) -> Result<Applied, LedgerError> {
    let mut current = live_attempt(tx, run_id, attempt)?;
    let reason = if current.status != AttemptStatus::Running {
        Some(format!("the attempt already ended as {}", current.status))
    } else if current.holder != holder {
        Some(format!("it is held by `{}`", current.holder))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(LedgerError::LeaseLost {
            run_id: run_id.to_owned(),
            attempt,
            reason,
        });
    }
    current.lease_until = lease_until;
    tx.update_attempt(&current)?;
    Ok(Applied::Done)
}

fn end_attempt(
    tx: &mut impl Tx,
    run_id: &str,
    attempt: u32,
    status: AttemptStatus,
    (error_class, error_message): (Option<String>, Option<String>),
    cpu_ms: u64,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let mut current = live_attempt(tx, run_id, attempt)?;
    if status == AttemptStatus::Running {
        return Err(LedgerError::InvalidTransition {
            entity: format!("attempt {attempt} of run `{run_id}`"),
            from: current.status.to_string(),
            to: status.to_string(),
        });
    }
    if current.status != AttemptStatus::Running {
        // Repeating the same end is harmless (a retried call); a different end is a zombie
        // attempt reporting after it was superseded.
        if current.status == status {
            return Ok(Applied::Done);
        }
        return Err(LedgerError::LeaseLost {
            run_id: run_id.to_owned(),
            attempt,
            reason: format!("the attempt already ended as {}", current.status),
        });
    }
    current.status = status;
    current.ended_at = Some(now);
    current.error_class = error_class;
    current.error_message = error_message;
    current.cpu_ms = cpu_ms;
    tx.update_attempt(&current)?;
    tx.touch_run(run_id, now)?;
    Ok(Applied::Done)
}

fn end_run(
    tx: &mut impl Tx,
    run_id: &str,
    status: RunStatus,
    (output, error_class, error_message): (Option<String>, Option<String>, Option<String>),
    now: Millis,
) -> Result<Applied, LedgerError> {
    let mut run = existing_run(tx, run_id)?;
    if !is_final(status) {
        return Err(LedgerError::InvalidTransition {
            entity: format!("run `{run_id}`"),
            from: run.status.to_string(),
            to: status.to_string(),
        });
    }
    // A parked run can be ended too: that is how an abandon or a rejection lands.
    if is_final(run.status) {
        if run.status == status {
            return Ok(Applied::Done);
        }
        return Err(LedgerError::RunFinished {
            run_id: run.run_id,
            status: run.status,
        });
    }
    run.status = status;
    run.output = output;
    run.error_class = error_class;
    run.error_message = error_message;
    run.updated_at = now;
    tx.update_run(&run)?;
    Ok(Applied::Done)
}

fn open_escalation(tx: &mut impl Tx, new: &NewEscalation) -> Result<Applied, LedgerError> {
    existing_run(tx, &new.run_id)?;
    // One open escalation per run (also a unique index): repeating the op after a crash
    // returns the escalation the first try opened.
    if let Some(open) = tx.open_escalation(&new.run_id)? {
        return Ok(Applied::Escalation(open));
    }
    let id = tx.insert_escalation(new)?;
    let opened = tx.escalation(id)?.ok_or_else(|| {
        LedgerError::Internal(format!("escalation {id} vanished right after its insert"))
    })?;
    Ok(Applied::Escalation(opened))
}

fn resolve_escalation(
    tx: &mut impl Tx,
    id: i64,
    resolution: Resolution,
    reason: String,
    by: String,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let mut escalation = tx
        .escalation(id)?
        .ok_or(LedgerError::EscalationNotFound { id })?;
    if escalation.status == EscalationStatus::Resolved {
        let decided = escalation.resolution.ok_or_else(|| {
            LedgerError::Internal(format!("escalation {id} is resolved without a resolution"))
        })?;
        return Err(LedgerError::EscalationResolved {
            id,
            resolution: decided,
        });
    }
    escalation.status = EscalationStatus::Resolved;
    escalation.resolution = Some(resolution);
    escalation.resolution_reason = Some(reason);
    escalation.resolved_by = Some(by);
    escalation.resolved_at = Some(now);
    tx.update_escalation(&escalation)?;
    Ok(Applied::Done)
}

fn park_run(
    tx: &mut impl Tx,
    run_id: &str,
    status: RunStatus,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let mut run = existing_run(tx, run_id)?;
    let invalid = |run: &Run| LedgerError::InvalidTransition {
        entity: format!("run `{run_id}`"),
        from: run.status.to_string(),
        to: status.to_string(),
    };
    if !status.is_parked() {
        return Err(invalid(&run));
    }
    if run.status == status {
        return Ok(Applied::Done);
    }
    if is_final(run.status) {
        return Err(LedgerError::RunFinished {
            run_id: run.run_id,
            status: run.status,
        });
    }
    if run.status != RunStatus::Running {
        return Err(invalid(&run));
    }
    run.status = status;
    run.updated_at = now;
    tx.update_run(&run)?;
    Ok(Applied::Done)
}

fn reopen_run(tx: &mut impl Tx, run_id: &str, now: Millis) -> Result<Applied, LedgerError> {
    let mut run = existing_run(tx, run_id)?;
    match run.status {
        RunStatus::Running => return Ok(Applied::Done),
        RunStatus::Succeeded => {
            return Err(LedgerError::RunFinished {
                run_id: run.run_id,
                status: run.status,
            });
        }
        RunStatus::Failed
        | RunStatus::InDoubt
        | RunStatus::Escalated
        | RunStatus::WaitingApproval => {}
    }
    run.status = RunStatus::Running;
    run.output = None;
    run.error_class = None;
    run.error_message = None;
    run.updated_at = now;
    tx.update_run(&run)?;
    Ok(Applied::Done)
}

fn acquire_lock(
    tx: &mut impl Tx,
    key: String,
    run_id: String,
    holder: String,
    lease_until: Millis,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let fence = match tx.lock(&key)? {
        None => 1,
        Some(current) => {
            let free = current.released || current.lease_until <= now || current.run_id == run_id;
            if !free {
                return Err(LedgerError::LockHeld {
                    key,
                    run_id: current.run_id,
                    since: current.acquired_at,
                    lease_until: current.lease_until,
                });
            }
            // The row is never deleted, so fences keep growing across every holder.
            current.fence.checked_add(1).ok_or_else(|| {
                LedgerError::Internal(format!("lock `{key}` has exhausted its fencing tokens"))
            })?
        }
    };
    let lock = LockRecord {
        key,
        run_id,
        holder,
        fence,
        acquired_at: now,
        lease_until,
        released: false,
    };
    tx.put_lock(&lock)?;
    Ok(Applied::Lock(lock))
}

/// An effect key plus the attempt acting on it.
struct EffectId<'a> {
    kind: &'a str,
    key: &'a str,
    run_id: &'a str,
    attempt: u32,
}

impl<'a> EffectId<'a> {
    fn new(kind: &'a str, key: &'a str, run_id: &'a str, attempt: u32) -> Self {
        Self {
            kind,
            key,
            run_id,
            attempt,
        }
    }

    fn describe(&self) -> String {
        format!("effect `{}` key `{}`", self.kind, self.key)
    }

    fn not_found(&self) -> LedgerError {
        LedgerError::EffectNotFound {
            kind: self.kind.to_owned(),
            key: self.key.to_owned(),
        }
    }

    fn ownership_lost(&self, effect: &EffectRecord) -> LedgerError {
        LedgerError::OwnershipLost {
            kind: self.kind.to_owned(),
            key: self.key.to_owned(),
            run_id: self.run_id.to_owned(),
            attempt: self.attempt,
            owner_run_id: effect.run_id.clone(),
            owner_attempt: effect.attempt,
            status: effect.status,
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the fields of Op::ClaimEffect, moved in"
)]
fn claim_effect(
    tx: &mut impl Tx,
    kind: String,
    key: String,
    payload_digest: String,
    payload: String,
    run_id: String,
    attempt: u32,
    now: Millis,
) -> Result<Applied, LedgerError> {
    if let Some(effect) = tx.effect(&kind, &key)? {
        let owner = tx.attempt_to_report(&effect.run_id, effect.attempt)?;
        return Ok(Applied::Claim(Claim::Existing { effect, owner }));
    }
    tx.insert_effect(&EffectRecord {
        kind,
        key,
        payload_digest,
        payload,
        run_id,
        attempt,
        status: EffectStatus::Pending,
        response: None,
        error_class: None,
        error_message: None,
        dispatches: 0,
        created_at: now,
        updated_at: now,
    })?;
    Ok(Applied::Claim(Claim::Fresh))
}

/// What to report when the caller owns the effect but it is no longer `Pending`.
enum NotPending {
    OwnershipLost,
    InvalidTransition(EffectStatus),
}

/// The effect, provided `id`'s attempt owns it and it is `Pending`.
fn owned_pending(
    tx: &mut impl Tx,
    id: &EffectId<'_>,
    not_pending: NotPending,
) -> Result<EffectRecord, LedgerError> {
    let effect = tx.effect(id.kind, id.key)?.ok_or_else(|| id.not_found())?;
    if effect.run_id != id.run_id || effect.attempt != id.attempt {
        return Err(id.ownership_lost(&effect));
    }
    if effect.status != EffectStatus::Pending {
        return Err(match not_pending {
            NotPending::OwnershipLost => id.ownership_lost(&effect),
            NotPending::InvalidTransition(to) => LedgerError::InvalidTransition {
                entity: id.describe(),
                from: effect.status.to_string(),
                to: to.to_string(),
            },
        });
    }
    Ok(effect)
}

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;
