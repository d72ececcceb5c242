//! Applying one [`Op`] to SQLite: every INSERT and UPDATE the ledger issues lives here.
//!
//! Invariant: each function either fully applies its op or returns an error; the caller wraps a
//! request's ops in a savepoint, so an error rolls back the whole request and nothing else.
//! Every state check reads inside the same write transaction, so checks and writes never race.

use rusqlite::{Connection, params};

use super::rows;
use crate::error::{LedgerError, SqlContext};
use crate::records::{
    Applied, Attempt, AttemptStatus, BreakerRecord, Claim, EffectRecord, EffectStatus,
    EscalationStatus, LockRecord, Millis, NewEscalation, NewJournalEntry, NewRun, Op, Resolution,
    Run, RunStatus,
};

pub(super) fn apply(conn: &Connection, op: Op) -> Result<Applied, LedgerError> {
    match op {
        Op::CreateRun(run) => create_run(conn, &run),
        Op::BeginAttempt {
            run_id,
            component_digest,
            holder,
            lease_until,
            take_over,
            now,
        } => begin_attempt(
            conn,
            &run_id,
            &component_digest,
            &holder,
            lease_until,
            take_over,
            now,
        ),
        Op::RenewLease {
            run_id,
            attempt,
            holder,
            lease_until,
        } => renew_lease(conn, &run_id, attempt, &holder, lease_until),
        Op::EndAttempt {
            run_id,
            attempt,
            status,
            error_class,
            error_message,
            cpu_ms,
            now,
        } => end_attempt(
            conn,
            &run_id,
            attempt,
            status,
            [error_class.as_deref(), error_message.as_deref()],
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
            conn,
            &run_id,
            status,
            [
                output.as_deref(),
                error_class.as_deref(),
                error_message.as_deref(),
            ],
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
        } => claim_effect(
            conn,
            EffectId {
                kind: &kind,
                key: &key,
                run_id: &run_id,
                attempt,
            },
            &payload_digest,
            &payload,
            now,
        ),
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
            let changed = conn
                .prepare_cached(
                    "UPDATE effects SET run_id = ?6, attempt = ?7, status = 'pending', \
                     response = NULL, error_class = NULL, error_message = NULL, updated_at = ?8 \
                     WHERE kind = ?1 AND key = ?2 AND run_id = ?3 AND attempt = ?4 \
                     AND status = ?5",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        kind,
                        key,
                        expected_run_id,
                        expected_attempt,
                        expected_status,
                        run_id,
                        attempt,
                        now
                    ])
                })
                .context("taking over an effect")?;
            Ok(Applied::TookOver(changed == 1))
        }
        Op::MarkDispatched {
            kind,
            key,
            run_id,
            attempt,
            now,
        } => {
            let id = EffectId {
                kind: &kind,
                key: &key,
                run_id: &run_id,
                attempt,
            };
            owned_pending(conn, &id, NotPending::OwnershipLost)?;
            conn.prepare_cached(
                "UPDATE effects SET dispatches = dispatches + 1, updated_at = ?3 \
                 WHERE kind = ?1 AND key = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![kind, key, now]))
            .context("counting an effect dispatch")?;
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
            let id = EffectId {
                kind: &kind,
                key: &key,
                run_id: &run_id,
                attempt,
            };
            let effect = owned_pending(conn, &id, NotPending::OwnershipLost)?;
            if !matches!(status, EffectStatus::Succeeded | EffectStatus::Failed) {
                return Err(LedgerError::InvalidTransition {
                    entity: id.describe(),
                    from: effect.status.to_string(),
                    to: status.to_string(),
                });
            }
            conn.prepare_cached(
                "UPDATE effects SET status = ?3, response = ?4, error_class = ?5, \
                 error_message = ?6, updated_at = ?7 WHERE kind = ?1 AND key = ?2",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    kind,
                    key,
                    status,
                    response,
                    error_class,
                    error_message,
                    now
                ])
            })
            .context("recording an effect outcome")?;
            Ok(Applied::Done)
        }
        Op::MarkInDoubt {
            kind,
            key,
            run_id,
            attempt,
            now,
        } => {
            let id = EffectId {
                kind: &kind,
                key: &key,
                run_id: &run_id,
                attempt,
            };
            owned_pending(
                conn,
                &id,
                NotPending::InvalidTransition(EffectStatus::InDoubt),
            )?;
            conn.prepare_cached(
                "UPDATE effects SET status = 'in_doubt', updated_at = ?3 \
                 WHERE kind = ?1 AND key = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![kind, key, now]))
            .context("marking an effect in doubt")?;
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
            let current = live_attempt(conn, &run_id, attempt)?;
            if current.status != AttemptStatus::Running {
                return Err(LedgerError::LeaseLost {
                    run_id,
                    attempt,
                    reason: format!("the attempt already ended as {}", current.status),
                });
            }
            // One copy per name: what a resume needs is the newest, and keeping every save
            // would let a tool grow the ledger by saving one name over and over.
            conn.prepare_cached("DELETE FROM checkpoints WHERE run_id = ?1 AND name = ?2")
                .and_then(|mut stmt| stmt.execute(params![run_id, name]))
                .context("replacing a checkpoint")?;
            conn.prepare_cached(
                "INSERT INTO checkpoints (run_id, attempt, name, state, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| stmt.execute(params![run_id, attempt, name, state, now]))
            .context("saving a checkpoint")?;
            Ok(Applied::Done)
        }
        Op::Journal(entry) => {
            insert_journal(conn, &entry)?;
            Ok(Applied::Done)
        }
        Op::OpenEscalation(escalation) => open_escalation(conn, &escalation),
        Op::ResolveEscalation {
            id,
            resolution,
            reason,
            by,
            now,
        } => resolve_escalation(conn, id, resolution, &reason, &by, now),
        Op::ParkRun {
            run_id,
            status,
            now,
        } => park_run(conn, &run_id, status, now),
        Op::ReopenRun { run_id, now } => reopen_run(conn, &run_id, now),
        Op::AcquireLock {
            key,
            run_id,
            holder,
            lease_until,
            now,
        } => acquire_lock(conn, key, run_id, holder, lease_until, now),
        Op::RenewLock {
            key,
            run_id,
            fence,
            lease_until,
        } => renew_lock(conn, key, run_id, fence, lease_until),
        Op::ReleaseLock {
            key,
            run_id,
            fence,
            now,
        } => release_lock(conn, &key, &run_id, fence, now),
        Op::SetBreaker(breaker) => set_breaker(conn, &breaker),
        Op::ProbeBreaker {
            connector,
            tool,
            rule,
            now,
        } => {
            let current = rows::breaker(conn, &connector, &tool)?;
            let (admission, changed) = crate::breaker::probe(current.as_ref(), rule, now);
            if let Some(changed) = changed {
                set_breaker(conn, &changed)?;
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
            let current = rows::breaker(conn, &connector, &tool)?;
            if let Some(changed) =
                crate::breaker::after_call(current.as_ref(), &connector, &tool, failed, rule, now)
            {
                set_breaker(conn, &changed)?;
            }
            Ok(Applied::Done)
        }
        Op::ClaimCallKey {
            key,
            tool,
            args_digest,
            run_id,
            now,
        } => claim_call_key(conn, &key, &tool, &args_digest, &run_id, now),
    }
}

/// Finished for good: no attempt, park or end may follow (only [`Op::ReopenRun`] undoes
/// `Failed` and `InDoubt`). A match, so a new status must be classified here.
fn is_final(status: RunStatus) -> bool {
    match status {
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::InDoubt => true,
        RunStatus::Running | RunStatus::Escalated | RunStatus::WaitingApproval => false,
    }
}

fn existing_run(conn: &Connection, run_id: &str) -> Result<Run, LedgerError> {
    rows::run(conn, run_id)?.ok_or_else(|| LedgerError::RunNotFound {
        run_id: run_id.to_owned(),
    })
}

fn create_run(conn: &Connection, run: &NewRun) -> Result<Applied, LedgerError> {
    if rows::run(conn, &run.run_id)?.is_some() {
        return Err(LedgerError::RunExists {
            run_id: run.run_id.clone(),
        });
    }
    let lock = run.lock.as_ref();
    conn.prepare_cached(
        "INSERT INTO runs (run_id, tool, input, status, attempts, created_at, updated_at, \
         component, lock_key, lock_wait_ms, lock_ttl_ms) \
         VALUES (?1, ?2, ?3, 'running', 0, ?4, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            run.run_id,
            run.tool,
            run.input,
            run.now,
            run.component,
            lock.map(|l| &l.key),
            lock.map(|l| l.wait_ms),
            lock.map(|l| l.ttl_ms),
        ])
    })
    .context("creating a run")?;
    Ok(Applied::Done)
}

fn begin_attempt(
    conn: &Connection,
    run_id: &str,
    component_digest: &str,
    holder: &str,
    lease_until: Millis,
    take_over: bool,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let run = existing_run(conn, run_id)?;
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
    let latest = rows::latest_attempt(conn, run_id)?;
    if let Some(latest) = latest
        .as_ref()
        .filter(|a| a.status == AttemptStatus::Running)
    {
        let live = latest.lease_until > now;
        if live && !take_over {
            return Err(LedgerError::AttemptLive {
                run_id: run.run_id,
                attempt: latest.attempt,
                holder: latest.holder.clone(),
                lease_until: latest.lease_until,
            });
        }
        let (class, message) = if live {
            (
                "taken_over",
                format!(
                    "taken over by `{holder}` while its lease ran until {}",
                    crate::records::format_ms(latest.lease_until)
                ),
            )
        } else {
            (
                "lease_expired",
                format!("lease expired at {} ms without renewal", latest.lease_until),
            )
        };
        conn.prepare_cached(
            "UPDATE attempts SET status = 'crashed', ended_at = ?3, error_class = ?4, \
             error_message = ?5 WHERE run_id = ?1 AND attempt = ?2",
        )
        .and_then(|mut stmt| stmt.execute(params![run_id, latest.attempt, now, class, message]))
        .context("ending a superseded attempt")?;
    }
    // Both counters should agree; taking the larger keeps numbering monotonic regardless.
    let previous = latest.map_or(0, |a| a.attempt).max(run.attempts);
    let number = previous.checked_add(1).ok_or_else(|| {
        LedgerError::Internal(format!("run `{run_id}` has exhausted attempt numbers"))
    })?;
    let attempt = Attempt {
        run_id: run.run_id,
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
    conn.prepare_cached(
        "INSERT INTO attempts (run_id, attempt, component_digest, holder, status, started_at, \
         lease_until) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            attempt.run_id,
            attempt.attempt,
            attempt.component_digest,
            attempt.holder,
            now,
            lease_until
        ])
    })
    .context("starting an attempt")?;
    conn.prepare_cached("UPDATE runs SET attempts = ?2, updated_at = ?3 WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![run_id, number, now]))
        .context("counting an attempt")?;
    Ok(Applied::Attempt(attempt))
}

/// The attempt row, or `RunNotFound` / `LeaseLost` saying why there is none.
fn live_attempt(conn: &Connection, run_id: &str, attempt: u32) -> Result<Attempt, LedgerError> {
    if let Some(found) = rows::attempt(conn, run_id, attempt)? {
        return Ok(found);
    }
    if rows::run(conn, run_id)?.is_none() {
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
    conn: &Connection,
    run_id: &str,
    attempt: u32,
    holder: &str,
    lease_until: Millis,
) -> Result<Applied, LedgerError> {
    let current = live_attempt(conn, run_id, attempt)?;
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
    conn.prepare_cached("UPDATE attempts SET lease_until = ?3 WHERE run_id = ?1 AND attempt = ?2")
        .and_then(|mut stmt| stmt.execute(params![run_id, attempt, lease_until]))
        .context("renewing a lease")?;
    Ok(Applied::Done)
}

/// `error` is (error_class, error_message).
fn end_attempt(
    conn: &Connection,
    run_id: &str,
    attempt: u32,
    status: AttemptStatus,
    error: [Option<&str>; 2],
    cpu_ms: u64,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let [error_class, error_message] = error;
    let current = live_attempt(conn, run_id, attempt)?;
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
    conn.prepare_cached(
        "UPDATE attempts SET status = ?3, ended_at = ?4, error_class = ?5, error_message = ?6, \
         cpu_ms = ?7 WHERE run_id = ?1 AND attempt = ?2",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            run_id,
            attempt,
            status,
            now,
            error_class,
            error_message,
            cpu_ms
        ])
    })
    .context("ending an attempt")?;
    conn.prepare_cached("UPDATE runs SET updated_at = ?2 WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![run_id, now]))
        .context("touching a run")?;
    Ok(Applied::Done)
}

/// `texts` is (output, error_class, error_message).
fn end_run(
    conn: &Connection,
    run_id: &str,
    status: RunStatus,
    texts: [Option<&str>; 3],
    now: Millis,
) -> Result<Applied, LedgerError> {
    let run = existing_run(conn, run_id)?;
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
    let [output, error_class, error_message] = texts;
    conn.prepare_cached(
        "UPDATE runs SET status = ?2, output = ?3, error_class = ?4, error_message = ?5, \
         updated_at = ?6 WHERE run_id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            run_id,
            status,
            output,
            error_class,
            error_message,
            now
        ])
    })
    .context("finishing a run")?;
    Ok(Applied::Done)
}

fn open_escalation(conn: &Connection, new: &NewEscalation) -> Result<Applied, LedgerError> {
    existing_run(conn, &new.run_id)?;
    // One open escalation per run (also a unique index): repeating the op after a crash
    // returns the escalation the first try opened.
    if let Some(open) = rows::open_escalation(conn, &new.run_id)? {
        return Ok(Applied::Escalation(open));
    }
    let evidence = serde_json::to_string(&new.evidence).map_err(|err| {
        LedgerError::Internal(format!("escalation evidence does not serialize: {err}"))
    })?;
    conn.prepare_cached(
        "INSERT INTO escalations (run_id, reason, summary, effect_kind, effect_key, evidence, \
         status, created_at, payload_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            new.run_id,
            new.reason,
            new.summary,
            new.effect_kind,
            new.effect_key,
            evidence,
            new.now,
            new.payload_digest
        ])
    })
    .context("opening an escalation")?;
    let id = conn.last_insert_rowid();
    let opened = rows::escalation(conn, id)?.ok_or_else(|| {
        LedgerError::Internal(format!("escalation {id} vanished right after its insert"))
    })?;
    Ok(Applied::Escalation(opened))
}

fn resolve_escalation(
    conn: &Connection,
    id: i64,
    resolution: Resolution,
    reason: &str,
    by: &str,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let escalation = rows::escalation(conn, id)?.ok_or(LedgerError::EscalationNotFound { id })?;
    if escalation.status == EscalationStatus::Resolved {
        let decided = escalation.resolution.ok_or_else(|| {
            LedgerError::Internal(format!("escalation {id} is resolved without a resolution"))
        })?;
        return Err(LedgerError::EscalationResolved {
            id,
            resolution: decided,
        });
    }
    conn.prepare_cached(
        "UPDATE escalations SET status = 'resolved', resolution = ?2, resolution_reason = ?3, \
         resolved_by = ?4, resolved_at = ?5 WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![id, resolution, reason, by, now]))
    .context("resolving an escalation")?;
    Ok(Applied::Done)
}

fn park_run(
    conn: &Connection,
    run_id: &str,
    status: RunStatus,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let run = existing_run(conn, run_id)?;
    let invalid = || LedgerError::InvalidTransition {
        entity: format!("run `{run_id}`"),
        from: run.status.to_string(),
        to: status.to_string(),
    };
    if !status.is_parked() {
        return Err(invalid());
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
        return Err(invalid());
    }
    conn.prepare_cached("UPDATE runs SET status = ?2, updated_at = ?3 WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![run_id, status, now]))
        .context("parking a run")?;
    Ok(Applied::Done)
}

fn reopen_run(conn: &Connection, run_id: &str, now: Millis) -> Result<Applied, LedgerError> {
    let run = existing_run(conn, run_id)?;
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
    conn.prepare_cached(
        "UPDATE runs SET status = 'running', output = NULL, error_class = NULL, \
         error_message = NULL, updated_at = ?2 WHERE run_id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![run_id, now]))
    .context("reopening a run")?;
    Ok(Applied::Done)
}

fn acquire_lock(
    conn: &Connection,
    key: String,
    run_id: String,
    holder: String,
    lease_until: Millis,
    now: Millis,
) -> Result<Applied, LedgerError> {
    let fence = match rows::lock(conn, &key)? {
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
    conn.prepare_cached(
        "INSERT INTO locks (lock_key, run_id, holder, fence, acquired_at, lease_until, released) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) ON CONFLICT (lock_key) DO UPDATE SET \
         run_id = excluded.run_id, holder = excluded.holder, fence = excluded.fence, \
         acquired_at = excluded.acquired_at, lease_until = excluded.lease_until, released = 0",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            lock.key,
            lock.run_id,
            lock.holder,
            lock.fence,
            lock.acquired_at,
            lock.lease_until
        ])
    })
    .context("acquiring a lock")?;
    Ok(Applied::Lock(lock))
}

fn renew_lock(
    conn: &Connection,
    key: String,
    run_id: String,
    fence: i64,
    lease_until: Millis,
) -> Result<Applied, LedgerError> {
    // Compare-and-set on (run_id, fence): a holder whose lock was taken over, or released,
    // cannot extend its successor's lease.
    let changed = conn
        .prepare_cached(
            "UPDATE locks SET lease_until = ?4 \
             WHERE lock_key = ?1 AND run_id = ?2 AND fence = ?3 AND released = 0",
        )
        .and_then(|mut stmt| stmt.execute(params![key, run_id, fence, lease_until]))
        .context("renewing a lock")?;
    if changed == 0 {
        return Err(LedgerError::LockLost { key, run_id, fence });
    }
    Ok(Applied::Done)
}

fn release_lock(
    conn: &Connection,
    key: &str,
    run_id: &str,
    fence: i64,
    now: Millis,
) -> Result<Applied, LedgerError> {
    // Matching nothing is fine: a stale holder must never free its successor's lock. The row
    // stays, so the key's next fence still grows from this one.
    conn.prepare_cached(
        "UPDATE locks SET released = 1, lease_until = MIN(lease_until, ?4) \
         WHERE lock_key = ?1 AND run_id = ?2 AND fence = ?3 AND released = 0",
    )
    .and_then(|mut stmt| stmt.execute(params![key, run_id, fence, now]))
    .context("releasing a lock")?;
    Ok(Applied::Done)
}

fn set_breaker(conn: &Connection, breaker: &BreakerRecord) -> Result<Applied, LedgerError> {
    conn.prepare_cached(
        "INSERT INTO breakers (connector, tool, state, consecutive_failures, open_until, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (connector, tool) DO UPDATE SET \
         state = excluded.state, consecutive_failures = excluded.consecutive_failures, \
         open_until = excluded.open_until, updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            breaker.connector,
            breaker.tool,
            breaker.state,
            breaker.consecutive_failures,
            breaker.open_until,
            breaker.updated_at
        ])
    })
    .context("saving a breaker")?;
    Ok(Applied::Done)
}

fn claim_call_key(
    conn: &Connection,
    key: &str,
    tool: &str,
    args_digest: &str,
    run_id: &str,
    now: Millis,
) -> Result<Applied, LedgerError> {
    if let Some(first) = rows::call_key(conn, key)? {
        return Err(LedgerError::CallKeyUsed {
            key: first.key,
            tool: first.tool,
            args_digest: first.args_digest,
            run_id: first.run_id,
        });
    }
    existing_run(conn, run_id)?;
    conn.prepare_cached(
        "INSERT INTO call_keys (idempotency_key, tool, args_digest, run_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| stmt.execute(params![key, tool, args_digest, run_id, now]))
    .context("recording a call key")?;
    Ok(Applied::Done)
}

/// An effect key plus the attempt acting on it.
struct EffectId<'a> {
    kind: &'a str,
    key: &'a str,
    run_id: &'a str,
    attempt: u32,
}

impl EffectId<'_> {
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

fn claim_effect(
    conn: &Connection,
    id: EffectId<'_>,
    payload_digest: &str,
    payload: &str,
    now: Millis,
) -> Result<Applied, LedgerError> {
    if let Some(effect) = rows::effect(conn, id.kind, id.key)? {
        let owner = rows::attempt(conn, &effect.run_id, effect.attempt)?;
        return Ok(Applied::Claim(Claim::Existing { effect, owner }));
    }
    conn.prepare_cached(
        "INSERT INTO effects (kind, key, payload_digest, payload, run_id, attempt, status, \
         dispatches, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.kind,
            id.key,
            payload_digest,
            payload,
            id.run_id,
            id.attempt,
            now
        ])
    })
    .context("claiming an effect")?;
    Ok(Applied::Claim(Claim::Fresh))
}

/// What to report when the caller owns the effect but it is no longer `Pending`.
enum NotPending {
    OwnershipLost,
    InvalidTransition(EffectStatus),
}

/// The effect, provided `id`'s attempt owns it and it is `Pending`.
fn owned_pending(
    conn: &Connection,
    id: &EffectId<'_>,
    not_pending: NotPending,
) -> Result<EffectRecord, LedgerError> {
    let effect = rows::effect(conn, id.kind, id.key)?.ok_or_else(|| id.not_found())?;
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

pub(super) fn insert_journal(
    conn: &Connection,
    entry: &NewJournalEntry,
) -> Result<(), LedgerError> {
    let fields = serde_json::to_string(&entry.fields)
        .map_err(|err| LedgerError::Internal(format!("journal fields do not serialize: {err}")))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO journal (run_id, attempt, at, level, event, message, fields) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                entry.run_id,
                entry.attempt,
                entry.at,
                entry.level,
                entry.event,
                entry.message,
                fields
            ])
        })
        .context("appending to the journal")?;
    if inserted == 0 {
        return Err(LedgerError::RunNotFound {
            run_id: entry.run_id.clone(),
        });
    }
    Ok(())
}
