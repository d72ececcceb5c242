//! A run's lifecycle: create → attempt → (resume → attempt)* → finished, with the retry loop
//! that drives resumes under the tool's policy, joining a run another caller drives, and
//! recording a cancelled attempt.
//!
//! Invariants: a run exists in the ledger before its first instruction executes; an attempt
//! holds a lease, renewed while it runs, so another process can tell a live attempt from a
//! crashed one; the attempt's end (and the run's, when final) is durable before the caller
//! hears of it. The one exception to both is a run of a tool whose policy says `record =
//! "async"`, which only a tool that can change nothing may: it is answered first and written
//! after, whole (see `capabilities::deferred`). One attempt is [`attempt`]; the sandbox call
//! inside it is [`sandbox`].

mod attempt;
mod options;
mod recovery;
mod report;
pub mod sandbox;

pub use options::{CallKey, RunOptions, new_run_id};
pub use recovery::Recovery;
pub(crate) use recovery::{recover, stranded};
pub use report::{RunError, RunReport};
pub use sandbox::UNRECORDED_RUN_ID;

use crate::escalation;
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::{self, AttemptStatus, LedgerError, Op, RunStatus};
use crate::locks;
use crate::policy::{Policy, Record};
use crate::retry::{History, Verdict};
use crate::services::Services;
use crate::tool::LoadedTool;
use std::sync::Arc;
use std::time::Duration;

/// The span of a run while this host drives it (its attempts, and the retries between
/// them), under the caller's span.
pub(crate) fn span(tool: &str, run_id: &str) -> tracing::Span {
    tracing::info_span!("run", run_id = %run_id, tool = %tool)
}

/// Creates the run record, then runs its first attempt.
pub(crate) async fn start(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    input: &str,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let policy = services.policy_for(&tool.descriptor.name);
    let value = parse_input(tool, &policy, input)?;
    let lock = locks::spec_for(
        &policy,
        options.lock.as_deref(),
        options.lock_wait_ms,
        &value,
    )
    .map_err(|e| RunError::LockKey(e.0))?;
    let now = services.now();
    let run_id = match &options.run_id {
        Some(id) => id.clone(),
        None => new_run_id(&options.prefix, now, services.random())?,
    };
    let component = tool.path.display().to_string();
    let at = journal::At {
        run_id: &run_id,
        attempt: None,
        at: now,
    };
    let mut ops = vec![
        Op::CreateRun(ledger::NewRun {
            run_id: run_id.clone(),
            tool: tool.descriptor.name.clone(),
            input: value.to_string(),
            now,
            component: Some(component.clone()),
            lock: lock.clone(),
        }),
        Op::Journal(journal::entry(
            at,
            Event::RunCreated {
                component,
                digest: tool.digest.clone(),
                version: tool.descriptor.version.clone(),
                lock: lock.as_ref().map(|l| l.key.clone()),
            },
            format!(
                "run of `{}` {} created",
                tool.descriptor.name, tool.descriptor.version
            ),
        )),
    ];
    if let Some(call) = &options.call_key {
        ops.push(Op::ClaimCallKey {
            key: call.key.clone(),
            tool: tool.descriptor.name.clone(),
            args_digest: call.args_digest.clone(),
            run_id: run_id.clone(),
            now,
        });
    }
    // The first attempt begins in the same batch: a run is never seen without its driver's
    // live attempt, so a caller joining it waits instead of resuming it as abandoned.
    let begin = attempt::begin_op(services, tool, &run_id, false);
    // Every row the new run has is in this batch, so its size needs no read afterwards.
    let written: u64 = ops.iter().map(stored_by).sum();
    // A run that can change nothing, holds no lock and claims no key waits to be written
    // with its end, after its caller has the answer (see `capabilities::deferred`).
    let defer = policy.record == Record::Async
        && lock.is_none()
        && options.call_key.is_none()
        && services.defers_records();
    if defer && let Some(first) = attempt::begun_by(&begin) {
        ops.push(begin);
        let begun = attempt::Begun {
            stored: Some(
                written + ledger::stored::new_attempt(&first.component_digest, &first.holder),
            ),
            attempt: first,
            deferred: Some(ops),
        };
        return attempt::run(services, tool, &run_id, value, lock, Some(begun)).await;
    }
    ops.push(begin);
    let applied = ledger::apply_with(services.ledger(), ops, policy.record.durability()).await?;
    services
        .records_refused()
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let first = applied
        .into_iter()
        .find_map(|a| match a {
            ledger::Applied::Attempt(a) => Some(a),
            _ => None,
        })
        .ok_or_else(|| LedgerError::Internal("CreateRun batch began no attempt".into()))?;
    let begun = attempt::Begun {
        stored: Some(written + ledger::stored::new_attempt(&first.component_digest, &first.holder)),
        attempt: first,
        deferred: None,
    };
    attempt::run(services, tool, &run_id, value, lock, Some(begun)).await
}

/// What the rows `op` adds to a new run occupy in the ledger; the attempt's row is counted
/// from what the ledger returns.
fn stored_by(op: &Op) -> u64 {
    match op {
        Op::CreateRun(run) => ledger::stored::new_run(run),
        Op::Journal(entry) => ledger::stored::journal_entry(entry),
        Op::ClaimCallKey {
            key,
            tool,
            args_digest,
            ..
        } => ledger::stored::call_key(key, tool, args_digest),
        _ => 0,
    }
}

/// Starts the next attempt of an unfinished run. A finished run gets its recorded ending (a
/// supervisor that crashed after the run ended may resume again), and nothing is started.
pub(crate) async fn resume(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
) -> Result<RunReport, RunError> {
    let run = existing(services, run_id).await?;
    if run.status.is_parked() {
        let filter = ledger::EscalationFilter {
            status: Some(ledger::EscalationStatus::Open),
            run_id: Some(run_id.to_owned()),
            limit: 1,
        };
        let open = read(services, move |l| l.escalations(&filter)).await?;
        return Err(RunError::Parked {
            run_id: run_id.to_owned(),
            status: run.status,
            escalation: open.first().map(|e| e.id),
        });
    }
    if run.status != RunStatus::Running {
        return recorded_ending(run);
    }
    let id = run_id.to_owned();
    if let Some(first) = read(services, move |l| l.attempts(&id)).await?.first()
        && first.component_digest != tool.digest
    {
        return Err(RunError::DigestMismatch {
            run_id: run_id.to_owned(),
            expected: first.component_digest.clone(),
            found: tool.digest.clone(),
            path: tool.path.display().to_string(),
        });
    }
    let input: serde_json::Value =
        serde_json::from_str(&run.input).map_err(|e| RunError::InputNotJson(e.to_string()))?;
    attempt::run(services, tool, run_id, input, run.lock, None).await
}

async fn existing(services: &Services, run_id: &str) -> Result<ledger::Run, RunError> {
    let id = run_id.to_owned();
    Ok(read(services, move |l| l.run(&id))
        .await?
        .ok_or_else(|| LedgerError::RunNotFound {
            run_id: run_id.to_owned(),
        })?)
}

/// A ledger read on the blocking pool (see [`ledger::read`]).
async fn read<T: Send + 'static>(
    services: &Services,
    read: impl FnOnce(&dyn ledger::Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    ledger::read(services.ledger(), read).await
}

/// Resumes a run whose attempt failed retryably, for as long as its tool's retry policy
/// allows, waiting out each backoff on the runtime's sleeper. Every decision is journaled; a
/// run the policy stops retrying is escalated.
pub(crate) async fn retry(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    mut report: RunReport,
) -> Result<RunReport, RunError> {
    let policy = services.policy_for(&tool.descriptor.name);
    loop {
        let Err(failure) = &report.result else {
            return Ok(report);
        };
        if report.status != RunStatus::Running {
            return Ok(report);
        }
        let run = existing(services, &report.run_id).await?;
        let id = report.run_id.clone();
        let (attempts, effects) = read(services, move |l| {
            Ok((l.attempts(&id)?, l.effects_for_run(&id)?.len()))
        })
        .await?;
        let history = History {
            attempts: run.attempts,
            started_at_ms: run.created_at,
            now_ms: services.now(),
            effects: u32::try_from(effects).unwrap_or(u32::MAX),
            cpu_ms: attempts.iter().map(|a| a.cpu_ms).sum(),
            last: failure,
        };
        let verdict = policy.retry.decide(&history, services.random().unit());
        let (event, message) = match &verdict {
            Verdict::Retry { after_ms } => (
                Event::RetryScheduled {
                    after_ms: *after_ms,
                    class: failure.class,
                },
                format!(
                    "attempt {} failed ({}); retrying in {after_ms} ms",
                    run.attempts, failure.class
                ),
            ),
            Verdict::Stop { reason } => (
                Event::RetryStopped {
                    reason: reason.clone(),
                    class: failure.class,
                },
                format!("not retrying: {reason}"),
            ),
        };
        tracing::info!(run_id = %report.run_id, "{message}");
        let at = journal::At {
            run_id: &report.run_id,
            attempt: Some(run.attempts),
            at: services.now(),
        };
        ledger::apply(
            services.ledger(),
            vec![Op::Journal(journal::entry(at, event, message))],
        )
        .await?;
        let Verdict::Retry { after_ms } = verdict else {
            return escalate_stopped(services, tool, &policy, report).await;
        };
        services
            .sleeper()
            .sleep(Duration::from_millis(after_ms))
            .await;
        report = resume(services, tool, &report.run_id).await?;
    }
}

/// Parks a run its retry policy gave up on, with an escalation, so a human decides.
async fn escalate_stopped(
    services: &Services,
    tool: &LoadedTool,
    policy: &Policy,
    mut report: RunReport,
) -> Result<RunReport, RunError> {
    let Err(failure) = &report.result else {
        return Ok(report);
    };
    let action = match &report.failed_effect {
        Some(effect) => {
            let (kind, key) = (effect.kind.clone(), effect.key.clone());
            read(services, move |l| l.effect(&kind, &key)).await?
        }
        None => None,
    };
    let stopped = escalation::Stopped {
        run_id: &report.run_id,
        tool: &tool.descriptor.name,
        policy,
        failure,
        action: action.as_ref(),
    };
    escalation::on_retries_stopped(services.ledger(), stopped, report.attempt, services.now())
        .await?;
    report.status = RunStatus::Escalated;
    Ok(report)
}

/// Waits for a run another caller started to end, and returns its ending. A run whose
/// driver died (its attempt's lease lapsed) is resumed here instead of waited on forever.
pub(crate) async fn join(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
) -> Result<RunReport, RunError> {
    let max_backoff = services
        .policy_for(&tool.descriptor.name)
        .retry
        .max_interval_ms;
    loop {
        let run = existing(services, run_id).await?;
        if run.status != RunStatus::Running {
            return recorded_ending(run);
        }
        let id = run_id.to_owned();
        let attempts = read(services, move |l| l.attempts(&id)).await?;
        if !driven(services, &run, attempts.last(), max_backoff) {
            let report = resume(services, tool, run_id).await?;
            return retry(services, tool, report).await;
        }
        services.sleeper().sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a live host still drives `run`, whose latest attempt is `last`: the attempt's
/// lease runs, or it ended so recently that its driver may be waiting out a backoff (at most
/// `max_backoff_ms`).
fn driven(
    services: &Services,
    run: &ledger::Run,
    last: Option<&ledger::Attempt>,
    max_backoff_ms: u64,
) -> bool {
    let now = services.now();
    let max_backoff = i64::try_from(max_backoff_ms).unwrap_or(i64::MAX);
    match last {
        Some(a) => match a.status {
            AttemptStatus::Running => a.lease_until > now,
            _ => a.ended_at.is_some_and(|end| {
                end.saturating_add(max_backoff)
                    .saturating_add(services.lease_ttl_ms())
                    > now
            }),
        },
        // Runs begin their first attempt as they are created; one without any (left by an
        // older host that crashed between the two writes) is driven by no one once a lease
        // has passed.
        None => run.created_at.saturating_add(services.lease_ttl_ms()) > now,
    }
}

/// Ends this host's running attempt of `run_id` after its caller gave up on it (the attempt's
/// future was dropped at an await point, so the tool stopped there), freeing its lock at
/// once. The run stays resumable.
pub(crate) async fn cancelled(
    services: &Services,
    run_id: &str,
    why: &str,
) -> Result<(), RunError> {
    give_up(services, run_id, why, GiveUp::Cancelled)
        .await
        .map(drop)
}

/// Gives up this host's running attempt of `run_id` because the host is shutting down (the
/// attempt's future was dropped at an await point): its lease ends now and its lock is
/// freed, so any host's recovery loop resumes the run at once rather than after the lease.
/// `false` if this host had no running attempt of it (it was between attempts).
pub(crate) async fn released(
    services: &Services,
    run_id: &str,
    why: &str,
) -> Result<bool, RunError> {
    give_up(services, run_id, why, GiveUp::Released).await
}

#[derive(Clone, Copy)]
enum GiveUp {
    /// The attempt ends `failed` (transient): the run waits for its caller or a resume.
    Cancelled,
    /// The attempt's lease ends now: the run is stranded for any host to claim.
    Released,
}

/// `false` if this host had no running attempt of `run_id` to give up.
async fn give_up(
    services: &Services,
    run_id: &str,
    why: &str,
    how: GiveUp,
) -> Result<bool, RunError> {
    let id = run_id.to_owned();
    let Some(attempt) = read(services, move |l| l.attempts(&id)).await?.pop() else {
        return Ok(false);
    };
    if attempt.status != AttemptStatus::Running || attempt.holder != services.holder() {
        return Ok(false);
    }
    let n = attempt.attempt;
    let now = services.now();
    let mut ops = Vec::new();
    let lock = match existing(services, run_id).await?.lock {
        Some(spec) => read(services, move |l| l.lock(&spec.key)).await?,
        None => None,
    };
    if let Some(lock) = lock
        && lock.run_id == run_id
        && !lock.released
    {
        ops.push(Op::ReleaseLock {
            key: lock.key,
            run_id: run_id.to_owned(),
            fence: lock.fence,
            now,
        });
    }
    let at = journal::At {
        run_id,
        attempt: Some(n),
        at: now,
    };
    match how {
        GiveUp::Cancelled => {
            let message = format!("attempt {n} cancelled: {why}");
            ops.extend([
                Op::EndAttempt {
                    run_id: run_id.to_owned(),
                    attempt: n,
                    status: AttemptStatus::Failed,
                    error_class: Some(FailureClass::Transient.as_str().to_owned()),
                    error_message: Some(message.clone()),
                    cpu_ms: 0,
                    now,
                },
                Op::Journal(journal::entry(
                    at,
                    Event::AttemptCancelled {
                        why: why.to_owned(),
                    },
                    message,
                )),
            ]);
        }
        GiveUp::Released => {
            let node = services.holder().to_owned();
            let message =
                format!("attempt {n} released by {node}: {why}; another host resumes the run");
            ops.extend([
                Op::RenewLease {
                    run_id: run_id.to_owned(),
                    attempt: n,
                    holder: node.clone(),
                    lease_until: now,
                },
                Op::Journal(journal::entry(
                    at,
                    Event::AttemptReleased {
                        node,
                        why: why.to_owned(),
                    },
                    message,
                )),
            ]);
        }
    }
    ledger::apply(services.ledger(), ops).await?;
    Ok(true)
}

/// The report of a finished run, from its ledger record.
pub(crate) fn recorded_ending(run: ledger::Run) -> Result<RunReport, RunError> {
    let result = match run.status {
        RunStatus::Succeeded => {
            let output = run.output.as_deref().unwrap_or("null");
            Ok(serde_json::from_str(output).map_err(|e| {
                LedgerError::Internal(format!("recorded output of {}: {e}", run.run_id))
            })?)
        }
        status if status.is_parked() => Err(Failure::new(
            FailureClass::Transient,
            format!(
                "run {} is {status}: it waits for a human decision",
                run.run_id
            ),
        )),
        _ => Err(Failure::new(
            run.error_class
                .as_deref()
                .and_then(FailureClass::parse)
                .unwrap_or(FailureClass::Fatal),
            run.error_message.unwrap_or_default(),
        )),
    };
    Ok(RunReport {
        run_id: run.run_id,
        attempt: run.attempts,
        tool: run.tool,
        result,
        status: run.status,
        duration_ms: 0,
        already_finished: true,
        failed_effect: None,
    })
}

/// The component file a run was started with.
pub(crate) async fn component_path(
    services: &Services,
    run_id: &str,
) -> Result<std::path::PathBuf, RunError> {
    existing(services, run_id)
        .await?
        .component
        .map(std::path::PathBuf::from)
        .ok_or_else(|| RunError::UnknownComponent(run_id.to_owned()))
}

/// Calls a tool once outside any run: input checked as for a run, nothing recorded, and
/// effects and checkpoints refused. For dry runs of read-only tools and for measuring the
/// sandbox apart from the ledger.
pub(crate) async fn call_unrecorded(
    services: &Services,
    tool: &LoadedTool,
    input: &str,
) -> Result<Result<serde_json::Value, Failure>, RunError> {
    let policy = services.policy_for(&tool.descriptor.name);
    let value = parse_input(tool, &policy, input)?;
    let run_ctx = sandbox::run_context(services.now(), tool, &policy, UNRECORDED_RUN_ID, 1);
    let (result, _stdio) = sandbox::execute(
        services.engine(),
        tool,
        &policy,
        run_ctx,
        None,
        &value.to_string(),
    )
    .await;
    Ok(result.and_then(|output| sandbox::checked_output(&output, policy.limits.max_output_bytes)))
}

fn parse_input(
    tool: &LoadedTool,
    policy: &Policy,
    input: &str,
) -> Result<serde_json::Value, RunError> {
    // Before parsing and validating: both cost time and memory in proportion to the input.
    let max = policy.limits.max_input_bytes;
    if u64::try_from(input.len()).unwrap_or(u64::MAX) > max {
        return Err(RunError::InputTooLarge {
            tool: tool.descriptor.name.clone(),
            bytes: input.len(),
            max,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(input).map_err(|e| RunError::InputNotJson(e.to_string()))?;
    tool.validate_input(&value)
        .map_err(|problems| RunError::SchemaViolation {
            tool: tool.descriptor.name.clone(),
            problems,
        })?;
    Ok(value)
}
