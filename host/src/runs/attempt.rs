//! One attempt of a run: begin it under a lease, take the run's lock, call the tool in the
//! sandbox with the attempt's capabilities, and record how it ended.
//!
//! Invariant: the attempt's end (and the run's, when final), the release of its lock and the
//! escalation a final failure opens commit in one batch, before the caller hears of it;
//! except for the success of a run recorded `async`, whose whole record is written after its
//! caller has the answer (see `capabilities::deferred`).

use super::sandbox::{self, Stdio};
use super::{RunError, RunReport};
use crate::capabilities::AttemptContext;
use crate::capabilities::budget::StorageBudget;
use crate::capabilities::deferred::{self, Deferred};
use crate::escalation;
use crate::failure::{EffectRef, Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::{self, AttemptStatus, LedgerError, Op, RunLock, RunStatus};
use crate::locks::{self, HeldLock, LeaseRenewer};
use crate::policy::Policy;
use crate::services::Services;
use crate::tool::LoadedTool;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The op beginning the run's next attempt under a fresh lease held by this host.
pub(super) fn begin_op(
    services: &Services,
    tool: &LoadedTool,
    run_id: &str,
    take_over: bool,
) -> Op {
    let now = services.now();
    Op::BeginAttempt {
        run_id: run_id.to_owned(),
        component_digest: tool.digest.clone(),
        holder: services.holder().to_owned(),
        lease_until: now.saturating_add(services.lease_ttl_ms()),
        take_over,
        now,
    }
}

/// The attempt a new run's `begin` op (see [`begin_op`]) begins, as the ledger would
/// return it: the run's first.
pub(super) fn begun_by(begin: &Op) -> Option<ledger::Attempt> {
    match begin {
        Op::BeginAttempt {
            run_id,
            component_digest,
            holder,
            lease_until,
            now,
            ..
        } => Some(ledger::Attempt {
            run_id: run_id.clone(),
            attempt: 1,
            component_digest: component_digest.clone(),
            holder: holder.clone(),
            status: AttemptStatus::Running,
            started_at: *now,
            lease_until: *lease_until,
            ended_at: None,
            error_class: None,
            error_message: None,
            cpu_ms: 0,
        }),
        _ => None,
    }
}

/// Begins the run's next attempt. A live attempt whose holder ran on this machine and whose
/// process is gone crashed: it is taken over at once rather than after its lease.
async fn begin(
    services: &Services,
    tool: &LoadedTool,
    run_id: &str,
) -> Result<ledger::Attempt, LedgerError> {
    let mut take_over = false;
    loop {
        let op = begin_op(services, tool, run_id, take_over);
        match ledger::apply(services.ledger(), vec![op]).await {
            Ok(applied) => match applied.into_iter().next() {
                Some(ledger::Applied::Attempt(a)) => return Ok(a),
                other => {
                    return Err(LedgerError::Internal(format!(
                        "BeginAttempt returned {other:?}"
                    )));
                }
            },
            Err(LedgerError::AttemptLive { holder, .. })
                if !take_over && crate::holder::is_dead_local(&holder) =>
            {
                take_over = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An attempt its caller began already.
pub(super) struct Begun {
    pub(super) attempt: ledger::Attempt,
    /// What the run's rows occupy in the ledger, when the caller knows it (it wrote them
    /// all, in the batch that created the run); else it is read.
    pub(super) stored: Option<u64>,
    /// The run's rows so far, when it is recorded after its caller is answered: not
    /// written yet (see [`Deferred`]).
    pub(super) deferred: Option<Vec<Op>>,
}

/// Runs one attempt of `run_id` on `input`, holding `lock` if the run has one: `begun`, if
/// the caller began it already, else the next one.
pub(super) async fn run(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
    input: serde_json::Value,
    lock: Option<RunLock>,
    begun: Option<Begun>,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let (attempt, known_stored, deferred) = match begun {
        Some(Begun {
            attempt,
            stored,
            deferred,
        }) => (attempt, stored, deferred),
        None => (begin(services, tool, run_id).await?, None, None),
    };
    let deferred = deferred.map(|ops| {
        Arc::new(Deferred::new(
            ops,
            services.clock().clone(),
            services.lease_ttl_ms(),
        ))
    });
    let n = attempt.attempt;
    // The run ID again: a JSON log line names only its innermost span's fields.
    let span = tracing::info_span!("attempt", run_id = %run_id, attempt = n);
    let ending = Ending {
        services,
        tool,
        run_id,
        attempt: n,
        started,
        deferred: deferred.as_deref(),
    };
    let unwritten = deferred.clone();
    async move {
        tracing::info!("attempt started");
        ending.journal(journal::entry(
            ending.at(),
            Event::AttemptStarted {
                holder: services.holder().to_owned(),
                digest: tool.digest.clone(),
            },
            format!("attempt {n} started"),
        ));
        let policy = services.policy_for(&tool.descriptor.name);
        // The attempt's lease is renewed while it waits for the lock too, so nobody takes
        // a waiting attempt for a crashed one.
        let waiting = lock
            .is_some()
            .then(|| LeaseRenewer::spawn(services.clone(), run_id.to_owned(), n, None, None));
        let held = match &lock {
            Some(spec) => match locks::acquire(services, run_id, n, spec).await {
                Ok(held) => Some(held),
                Err(failure) => return ending.record(&policy, Outcome::failed(failure)).await,
            },
            None => None,
        };
        // Dropped with this future: a cancelled attempt stops renewing and its leases lapse.
        let renewer = LeaseRenewer::spawn(
            services.clone(),
            run_id.to_owned(),
            n,
            held.clone(),
            unwritten.clone(),
        );
        drop(waiting);
        // The budget covers the whole run: this attempt gets what earlier ones left.
        let id = run_id.to_owned();
        // Known only while nothing else was written: taking a lock journals its wait.
        let stored = match known_stored.filter(|_| lock.is_none()) {
            Some(stored) => Ok(stored),
            None => ledger::read(services.ledger(), move |l| l.stored_bytes(&id)).await,
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                let failure = Failure::new(
                    FailureClass::Transient,
                    format!("ledger unavailable, attempt not started: {e}"),
                );
                let outcome = Outcome {
                    lock: held,
                    ..Outcome::failed(failure)
                };
                return ending.record(&policy, outcome).await;
            }
        };
        let ctx = Arc::new(AttemptContext {
            run_id: run_id.to_owned(),
            attempt: n,
            tool: tool.descriptor.name.clone(),
            policy: policy.clone(),
            ledger: services.ledger().clone(),
            effects: services.effects().clone(),
            clock: services.clock().clone(),
            fence: held.as_ref().map(|h| h.fence),
            parked: std::sync::Mutex::new(None),
            budget: StorageBudget::new(policy.limits.max_stored_bytes, stored),
            failed_effect: std::sync::Mutex::new(None),
            unrecorded: std::sync::Mutex::new(None),
            deferred: unwritten,
        });
        let run_ctx = sandbox::run_context(services.now(), tool, &policy, run_id, n);
        let (result, stdio) = sandbox::execute(
            services.engine(),
            tool,
            &policy,
            run_ctx,
            Some(ctx.clone()),
            &input.to_string(),
        )
        .await;
        drop(renewer);
        let stdio = within_budget(&ctx, stdio);
        let result = result
            .and_then(|output| sandbox::checked_output(&output, policy.limits.max_output_bytes));
        let outcome = Outcome {
            result,
            stdio,
            parked: ctx.parked.lock().ok().and_then(|p| *p),
            failed_effect: ctx
                .failed_effect
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .map(|(kind, key)| EffectRef { kind, key }),
            lock: held,
        };
        let unrecorded = ctx.unrecorded.lock().ok().and_then(|mut u| u.take());
        let recorded = ending.record(&policy, outcome).await;
        // Whether or not the attempt's end could be recorded, its caller hears first that an
        // effect went out unrecorded: that decides what it must (not) do next.
        if let Some(unrecorded) = unrecorded {
            return Err(RunError::OutcomeUnrecorded {
                run_id: run_id.to_owned(),
                attempt: n,
                recovery: unrecorded.recovery(run_id),
                effect: unrecorded,
            });
        }
        let report = recorded?;
        tracing::info!(status = ?report.status, "attempt ended");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// What the tool printed, cut to what the run's storage budget still holds (the cut noted in
/// the journal), since it is journaled at the attempt's end.
fn within_budget(ctx: &AttemptContext, mut stdio: Stdio) -> Stdio {
    for (stream, bytes) in [("stdout", &mut stdio.stdout), ("stderr", &mut stdio.stderr)] {
        if bytes.is_empty() {
            continue;
        }
        // Measured as stored: invalid UTF-8 is stored as U+FFFD, up to three bytes per byte.
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        let row = tollgate_ledger::stored::ROW_COST + 64 + stream.len() as u64;
        if ctx.budget.charge(row + text.len() as u64).is_err() {
            let room = usize::try_from(ctx.budget.remaining().saturating_sub(row)).unwrap_or(0);
            let mut end = room.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            if text.is_empty() || ctx.budget.charge(row + text.len() as u64).is_err() {
                text.clear();
            }
            ctx.note_budget_spent();
        }
        *bytes = text.into_bytes();
    }
    stdio
}

/// How an attempt ended.
struct Outcome {
    result: Result<serde_json::Value, Failure>,
    stdio: Stdio,
    /// The escalation the attempt stopped to wait on.
    parked: Option<i64>,
    /// The effect the attempt failed on, as the host saw it.
    failed_effect: Option<EffectRef>,
    /// The business-object lock it held, released with its end.
    lock: Option<HeldLock>,
}

impl Outcome {
    fn failed(failure: Failure) -> Self {
        Self {
            result: Err(failure),
            stdio: Stdio::default(),
            parked: None,
            failed_effect: None,
            lock: None,
        }
    }
}

/// The attempt being ended, and what it needs to record its end.
#[derive(Clone, Copy)]
struct Ending<'a> {
    services: &'a Services,
    tool: &'a LoadedTool,
    run_id: &'a str,
    attempt: u32,
    started: Instant,
    /// The run's rows not written yet, when it is recorded after its caller is answered.
    deferred: Option<&'a Deferred>,
}

impl Ending<'_> {
    /// Journals `entry` of this attempt without waiting.
    fn journal(&self, entry: ledger::NewJournalEntry) {
        deferred::journal(self.deferred, self.services.ledger().as_ref(), entry);
    }

    fn at(&self) -> journal::At<'_> {
        journal::At {
            run_id: self.run_id,
            attempt: Some(self.attempt),
            at: self.services.now(),
        }
    }

    /// Records the attempt's end, and the run's when it is final, in one batch: with the
    /// escalation a failure no retry can fix opens, and the release of the run's lock.
    async fn record(&self, policy: &Policy, outcome: Outcome) -> Result<RunReport, RunError> {
        let Outcome {
            result,
            stdio,
            parked,
            failed_effect,
            lock,
        } = outcome;
        let (run_id, n) = (self.run_id, self.attempt);
        // A failure is written before its caller hears of it, as any run's: what of the run
        // waits goes first, so its escalation finds the run.
        if let (Some(deferred), Err(_)) = (self.deferred, &result) {
            deferred
                .apply(
                    self.services.ledger(),
                    Vec::new(),
                    ledger::Durability::Synced,
                )
                .await?;
        }
        let now = self.services.now();
        let mut ops: Vec<Op> = lock.iter().map(|l| l.release(run_id, now)).collect();
        for (bytes, event) in [
            (
                &stdio.stdout,
                Event::ToolStdout {
                    bytes: stdio.stdout.len(),
                },
            ),
            (
                &stdio.stderr,
                Event::ToolStderr {
                    bytes: stdio.stderr.len(),
                },
            ),
        ] {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes).into_owned();
                ops.push(Op::Journal(journal::entry(self.at(), event, text)));
            }
        }
        let status = match &result {
            Ok(output) => {
                ops.extend([
                    Op::EndAttempt {
                        run_id: run_id.to_owned(),
                        attempt: n,
                        status: AttemptStatus::Succeeded,
                        error_class: None,
                        error_message: None,
                        cpu_ms: stdio.cpu_ms,
                        now,
                    },
                    Op::EndRun {
                        run_id: run_id.to_owned(),
                        status: RunStatus::Succeeded,
                        output: Some(output.to_string()),
                        error_class: None,
                        error_message: None,
                        now,
                    },
                    Op::Journal(journal::entry(
                        self.at(),
                        Event::AttemptSucceeded {
                            cpu_ms: stdio.cpu_ms,
                        },
                        format!("attempt {n} succeeded"),
                    )),
                ]);
                RunStatus::Succeeded
            }
            Err(failure) => {
                let run_status = match failure.class {
                    _ if parked.is_some() => RunStatus::WaitingApproval,
                    c if c.is_retryable() => RunStatus::Running,
                    FailureClass::InDoubt => RunStatus::InDoubt,
                    _ => RunStatus::Failed,
                };
                let class = Some(failure.class.as_str().to_owned());
                ops.push(Op::EndAttempt {
                    run_id: run_id.to_owned(),
                    attempt: n,
                    status: AttemptStatus::Failed,
                    error_class: class.clone(),
                    error_message: Some(failure.message.clone()),
                    cpu_ms: stdio.cpu_ms,
                    now,
                });
                if matches!(run_status, RunStatus::Failed | RunStatus::InDoubt) {
                    ops.push(Op::EndRun {
                        run_id: run_id.to_owned(),
                        status: run_status,
                        output: None,
                        error_class: class,
                        error_message: Some(failure.message.clone()),
                        now,
                    });
                    let ledger = self.services.ledger();
                    let action = match &failed_effect {
                        Some(effect) => {
                            let (kind, key) = (effect.kind.clone(), effect.key.clone());
                            ledger::read(ledger, move |l| l.effect(&kind, &key)).await?
                        }
                        None => None,
                    };
                    let stopped = escalation::Stopped {
                        run_id,
                        tool: &self.tool.descriptor.name,
                        policy,
                        failure,
                        action: action.as_ref(),
                    };
                    let ended = escalation::Ending {
                        attempt: n,
                        failure,
                        at: now,
                    };
                    ops.extend(
                        escalation::on_final_failure(
                            ledger,
                            stopped,
                            run_status == RunStatus::InDoubt,
                            ended,
                            now,
                        )
                        .await?,
                    );
                }
                ops.push(Op::Journal(journal::entry(
                    self.at(),
                    Event::AttemptFailed {
                        class: failure.class,
                        details: failure.details.clone(),
                        cpu_ms: stdio.cpu_ms,
                    },
                    failure.message.clone(),
                )));
                run_status
            }
        };
        // Only a success may go unsynced: a failure can open an escalation, which a human
        // must find after any crash.
        let durability = match &result {
            Ok(_) => policy.record.durability(),
            Err(_) => ledger::Durability::Synced,
        };
        let waiting = match (self.deferred, &result) {
            (Some(deferred), Ok(_)) => deferred.take().await,
            _ => None,
        };
        let (batch, permit) = match waiting {
            Some(mut batch) => {
                batch.extend(ops);
                (batch, self.services.unwritten_permit())
            }
            None => (ops, None),
        };
        match permit {
            Some(permit) => self.record_later(batch, durability, permit),
            // Written before the answer: every run not deferred, and a deferred one while
            // too many answered runs wait already.
            None => {
                ledger::apply_with(self.services.ledger(), batch, durability).await?;
            }
        }
        let outcome = match &result {
            Ok(_) => "succeeded",
            Err(failure) => failure.class.as_str(),
        };
        self.services.meters().attempt_ended(
            &self.tool.descriptor.name,
            outcome,
            self.started.elapsed(),
        );
        Ok(RunReport {
            run_id: run_id.to_owned(),
            attempt: n,
            tool: self.tool.descriptor.name.clone(),
            result,
            status,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            already_finished: false,
            failed_effect,
        })
    }

    /// Writes the whole record of a run that succeeded, its caller answered without waiting.
    /// A refused record is logged, and the next runs are written before their answers until
    /// one is written again (see [`Services::defers_records`]).
    fn record_later(
        &self,
        batch: Vec<Op>,
        durability: ledger::Durability,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let refused = self.services.records_refused().clone();
        let run_id = self.run_id.to_owned();
        // Given back once the write is settled and every copy of `settle` is gone.
        let permit = Arc::new(permit);
        ledger::apply_detached(self.services.ledger(), batch, durability, move |result| {
            let _written = &permit;
            if let Err(e) = result {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(run_id = %run_id, error = %e, "the ledger refused the record of a run its caller has the answer of; runs are now written before they are answered");
            }
        });
    }
}
