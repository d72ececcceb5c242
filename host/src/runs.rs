//! A run's lifecycle: create → attempt → (resume → attempt)* → finished.
//!
//! Invariants: a run exists in the ledger before its first instruction executes; an attempt
//! holds a lease, renewed while it runs, so another process can tell a live attempt from a
//! crashed one; the attempt's end (and the run's, when final) is durable before the caller
//! hears of it.

use crate::bindings::{Tool, types};
use crate::capabilities::budget::StorageBudget;
use crate::capabilities::{
    AttemptAbort, AttemptContext, Deadlines, ToolState, from_tool_error, guarded_store,
};
use crate::clock::Millis;
use crate::engine::EPOCH_TICK;
use crate::failure::{Failure, FailureClass};
use crate::ledger::{self, AttemptStatus, LedgerError, NewJournalEntry, Op, RunStatus};
use crate::policy::Policy;
use crate::runtime::Inner;
use crate::tool::LoadedTool;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The result of one attempt of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub attempt: u32,
    pub tool: String,
    /// The tool's JSON output, or its classified failure.
    pub result: Result<serde_json::Value, Failure>,
    /// Whether the run is finished, or may be resumed.
    pub status: RunStatus,
    pub duration_ms: u64,
    /// A resume found the run already finished: this is its recorded ending, and no attempt
    /// was started.
    pub already_finished: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("input is not valid JSON: {}", crate::text::Escaped(.0))]
    InputNotJson(String),
    #[error(
        "input is {bytes} bytes, over the {max} that tool `{tool}` accepts (limits.max_input_bytes in its policy)"
    )]
    InputTooLarge {
        tool: String,
        bytes: usize,
        max: u64,
    },
    #[error("input does not match the schema of tool `{tool}`:\n{}", .problems.iter().map(|p| format!("  - {}", crate::text::Escaped(p))).collect::<Vec<_>>().join("\n"))]
    SchemaViolation { tool: String, problems: Vec<String> },
    #[error("run prefix `{0}` must be 1-32 lowercase letters, digits or `-`")]
    BadPrefix(String),
    #[error(
        "run {run_id} was started with component {expected} but {path} has digest {found}: resume with the same build of the tool"
    )]
    DigestMismatch {
        run_id: String,
        expected: String,
        found: String,
        path: String,
    },
    #[error("run {0} has no record of its component path: pass --plugin <file.wasm>")]
    UnknownComponent(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Load(#[from] crate::tool::LoadError),
    #[error("could not start the tool: {}", crate::text::Escaped(.0))]
    Instantiate(String),
    #[error("cannot name the run's lock: {}; fix `lock.key` in the tool's policy or pass --lock", crate::text::Escaped(.0))]
    LockKey(String),
    #[error("{0}")]
    Parked(String),
}

/// `<prefix>-<yyyy-mm-dd>-<uuid v7>`: sortable by time, unique without coordination.
pub fn new_run_id(prefix: &str, now: Millis) -> Result<String, RunError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(RunError::BadPrefix(prefix.to_owned()));
    }
    let date = chrono::DateTime::from_timestamp_millis(now)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into());
    Ok(format!("{prefix}-{date}-{}", uuid::Uuid::now_v7()))
}

/// How a run is started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run IDs are `<prefix>-<date>-<uuid>`.
    pub prefix: String,
    /// Holds this business-object lock while acting, instead of the policy's `lock.key`.
    pub lock: Option<String>,
    /// How long to wait for the lock, instead of the policy's `lock.wait_ms`.
    pub lock_wait_ms: Option<u64>,
    /// Use this run ID (see [`new_run_id`]) instead of a fresh one, e.g. to watch the run's
    /// journal while it runs.
    pub run_id: Option<String>,
    /// A caller's idempotency key for the whole call, recorded atomically with the run: a
    /// second start with the same key fails with `LedgerError::CallKeyUsed` naming this run.
    pub call_key: Option<CallKey>,
}

/// A caller-supplied idempotency key for a whole run, with the digest of what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallKey {
    pub key: String,
    /// Digest of the tool name and the canonical arguments.
    pub args_digest: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            prefix: "run".into(),
            lock: None,
            lock_wait_ms: None,
            run_id: None,
            call_key: None,
        }
    }
}

/// The business-object lock a run takes before each attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct LockSpec {
    pub key: String,
    pub wait_ms: u64,
    pub ttl_ms: u64,
}

fn lock_spec(
    policy: &Policy,
    options: &RunOptions,
    input: &serde_json::Value,
) -> Result<Option<LockSpec>, RunError> {
    let configured = policy.lock.as_ref();
    let key = match (&options.lock, configured) {
        (Some(key), _) => key.clone(),
        (None, Some(lock)) => lock.key_for(input).map_err(RunError::LockKey)?,
        (None, None) => return Ok(None),
    };
    if key.trim().is_empty() {
        return Err(RunError::LockKey("the lock key is empty".into()));
    }
    Ok(Some(LockSpec {
        key,
        wait_ms: options
            .lock_wait_ms
            .or(configured.map(|l| l.wait_ms))
            .unwrap_or(0),
        ttl_ms: configured.map_or(15_000, |l| l.ttl_ms),
    }))
}

/// Creates the run record, then runs its first attempt.
pub(crate) async fn start(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    input: &str,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let policy = inner.config.policy_for(&tool.descriptor.name);
    let value = parse_input(tool, &policy, input)?;
    let lock = lock_spec(&policy, options, &value)?;
    let now = inner.clock.now_ms();
    let run_id = match &options.run_id {
        Some(id) => id.clone(),
        None => new_run_id(&options.prefix, now)?,
    };
    let mut ops = vec![
        Op::CreateRun(ledger::NewRun {
            run_id: run_id.clone(),
            tool: tool.descriptor.name.clone(),
            input: value.to_string(),
            now,
        }),
        Op::Journal(NewJournalEntry {
            run_id: run_id.clone(),
            attempt: None,
            at: now,
            level: "info".into(),
            event: "run.created".into(),
            message: format!(
                "run of `{}` {} created",
                tool.descriptor.name, tool.descriptor.version
            ),
            fields: serde_json::json!({
                "component": tool.path.display().to_string(),
                "digest": tool.digest,
                "version": tool.descriptor.version,
                "lock": lock,
            }),
        }),
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
    ledger::apply(&inner.ledger, ops).await?;
    attempt(inner, tool, &run_id, value, lock).await
}

/// Starts the next attempt of an unfinished run.
pub(crate) async fn resume(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
) -> Result<RunReport, RunError> {
    let run = inner
        .ledger
        .run(run_id)?
        .ok_or_else(|| LedgerError::RunNotFound {
            run_id: run_id.to_owned(),
        })?;
    // A supervisor that crashed after the run ended, before it heard how, may resume again:
    // it gets the recorded ending, and nothing is started.
    if run.status.is_parked() {
        let open = inner.ledger.escalations(&ledger::EscalationFilter {
            status: Some(ledger::EscalationStatus::Open),
            run_id: Some(run_id.to_owned()),
            limit: 1,
        })?;
        let id = open
            .first()
            .map_or_else(|| "?".to_owned(), |e| e.id.to_string());
        return Err(RunError::Parked(format!(
            "run {run_id} is {} on escalation #{id}: see `tollgate escalations show {id}`, then resolve it (or `tollgate approve {id}`)",
            run.status
        )));
    }
    if run.status != RunStatus::Running {
        return recorded_ending(run);
    }
    if let Some(first) = inner.ledger.attempts(run_id)?.first()
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
    let lock = recorded_lock(inner, run_id)?;
    attempt(inner, tool, run_id, input, lock).await
}

/// Resumes a run whose attempt failed retryably, for as long as its tool's retry policy
/// allows, waiting out each backoff on the runtime's sleeper. Every decision is journaled.
pub(crate) async fn retry(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    mut report: RunReport,
) -> Result<RunReport, RunError> {
    let policy = inner.config.policy_for(&tool.descriptor.name).retry;
    loop {
        let Err(failure) = &report.result else {
            return Ok(report);
        };
        if report.status != RunStatus::Running {
            return Ok(report);
        }
        let run = inner
            .ledger
            .run(&report.run_id)?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: report.run_id.clone(),
            })?;
        let effects = inner.ledger.effects_for_run(&report.run_id)?.len();
        let cpu_ms = inner
            .ledger
            .journal_entries(&report.run_id)?
            .iter()
            .filter(|e| e.event == "attempt.failed" || e.event == "attempt.succeeded")
            .filter_map(|e| e.fields.get("cpu_ms").and_then(serde_json::Value::as_u64))
            .sum();
        let history = crate::retry::History {
            attempts: run.attempts,
            started_at_ms: run.created_at,
            now_ms: inner.clock.now_ms(),
            effects: u32::try_from(effects).unwrap_or(u32::MAX),
            cpu_ms,
            last: failure,
        };
        let verdict = policy.decide(&history, rand::random::<f64>());
        let (event, message, fields) = match &verdict {
            crate::retry::Verdict::Retry { after_ms } => (
                "retry.scheduled",
                format!(
                    "attempt {} failed ({}); retrying in {after_ms} ms",
                    run.attempts, failure.class
                ),
                serde_json::json!({ "after_ms": after_ms, "class": failure.class }),
            ),
            crate::retry::Verdict::Stop { reason } => (
                "retry.stopped",
                format!("not retrying: {reason}"),
                serde_json::json!({ "reason": reason, "class": failure.class }),
            ),
        };
        tracing::info!(run_id = %report.run_id, "{message}");
        ledger::apply(
            &inner.ledger,
            vec![Op::Journal(entry(
                inner,
                &report.run_id,
                run.attempts,
                "info",
                event,
                message,
                fields,
            ))],
        )
        .await?;
        let crate::retry::Verdict::Retry { after_ms } = verdict else {
            return escalate_stopped(inner, tool, report).await;
        };
        inner.sleeper.sleep(Duration::from_millis(after_ms)).await;
        report = resume(inner, tool, &report.run_id).await?;
    }
}

/// Waits for a run another caller started to end, and returns its ending. A run whose
/// driver died (its attempt's lease lapsed) is resumed here instead of waited on forever.
pub(crate) async fn join(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
) -> Result<RunReport, RunError> {
    loop {
        let run = inner
            .ledger
            .run(run_id)?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: run_id.to_owned(),
            })?;
        if run.status != RunStatus::Running {
            return recorded_ending(run);
        }
        let now = inner.clock.now_ms();
        // Between attempts, its driver may be waiting out a backoff: give it that long.
        let max_backoff = i64::try_from(
            inner
                .config
                .policy_for(&tool.descriptor.name)
                .retry
                .max_interval_ms,
        )
        .unwrap_or(i64::MAX);
        let driven = inner
            .ledger
            .attempts(run_id)?
            .last()
            .is_some_and(|a| match a.status {
                ledger::AttemptStatus::Running => a.lease_until > now,
                _ => a.ended_at.is_some_and(|end| {
                    end.saturating_add(max_backoff)
                        .saturating_add(inner.lease_ttl_ms)
                        > now
                }),
            });
        if !driven {
            let report = resume(inner, tool, run_id).await?;
            return retry(inner, tool, report).await;
        }
        inner.sleeper.sleep(Duration::from_millis(50)).await;
    }
}

/// Ends this host's running attempt of `run_id` after its caller gave up on it (the attempt's
/// future was dropped at an await point, so the tool stopped there). The run stays resumable.
pub(crate) async fn cancelled(inner: &Arc<Inner>, run_id: &str, why: &str) -> Result<(), RunError> {
    let Some(attempt) = inner.ledger.attempts(run_id)?.pop() else {
        return Ok(());
    };
    if attempt.status != ledger::AttemptStatus::Running || attempt.holder != inner.holder {
        return Ok(());
    }
    let n = attempt.attempt;
    let message = format!("attempt {n} cancelled: {why}");
    let mut ops = Vec::new();
    // Free the run's business-object lock now rather than when its lease lapses.
    if let Some(spec) = recorded_lock(inner, run_id)?
        && let Some(lock) = inner.ledger.lock(&spec.key)?
        && lock.run_id == run_id
        && !lock.released
    {
        ops.push(Op::ReleaseLock {
            key: lock.key,
            run_id: run_id.to_owned(),
            fence: lock.fence,
            now: inner.clock.now_ms(),
        });
    }
    ops.extend([
        Op::EndAttempt {
            run_id: run_id.to_owned(),
            attempt: n,
            status: AttemptStatus::Failed,
            error_class: Some(FailureClass::Transient.as_str().to_owned()),
            error_message: Some(message.clone()),
            now: inner.clock.now_ms(),
        },
        Op::Journal(entry(
            inner,
            run_id,
            n,
            "warn",
            "attempt.cancelled",
            message,
            serde_json::json!({ "why": why }),
        )),
    ]);
    ledger::apply(&inner.ledger, ops).await?;
    Ok(())
}

/// Parks a run its retry policy gave up on, with an escalation, so a human decides.
async fn escalate_stopped(
    inner: &Arc<Inner>,
    tool: &LoadedTool,
    mut report: RunReport,
) -> Result<RunReport, RunError> {
    let Err(failure) = &report.result else {
        return Ok(report);
    };
    let policy = inner.config.policy_for(&tool.descriptor.name);
    let reason =
        if failure.class.is_retryable() && !policy.retry.non_retryable.contains(&failure.class) {
            ledger::EscalationReason::RetriesExhausted
        } else {
            ledger::EscalationReason::NonRetryable
        };
    let packet = crate::escalation::packet(
        inner.ledger.as_ref(),
        &report.run_id,
        &policy,
        reason,
        Some(failure),
        failed_action(inner, failure),
        None,
    )?;
    let summary = format!(
        "run {} of `{}` stopped retrying after {} attempt(s): {}: {}",
        report.run_id, report.tool, report.attempt, failure.class, failure.message
    );
    let now = inner.clock.now_ms();
    let ops = crate::escalation::open_ops(&packet, summary, Some(RunStatus::Escalated), now);
    ledger::apply(&inner.ledger, ops).await?;
    report.status = RunStatus::Escalated;
    Ok(report)
}

/// The report of a finished run, from its ledger record.
fn recorded_ending(run: ledger::Run) -> Result<RunReport, RunError> {
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
                "run {} is {status}: it waits for a human decision (`tollgate escalations list`)",
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
    })
}

/// The component path a run was started with, from its journal.
pub(crate) fn component_path(inner: &Inner, run_id: &str) -> Result<std::path::PathBuf, RunError> {
    inner
        .ledger
        .run(run_id)?
        .ok_or_else(|| LedgerError::RunNotFound {
            run_id: run_id.to_owned(),
        })?;
    created_field(inner, run_id, "component")?
        .and_then(|c| c.as_str().map(std::path::PathBuf::from))
        .ok_or_else(|| RunError::UnknownComponent(run_id.to_owned()))
}

/// The business-object lock the run was started with, as `run.created` recorded it.
fn recorded_lock(inner: &Inner, run_id: &str) -> Result<Option<LockSpec>, LedgerError> {
    Ok(created_field(inner, run_id, "lock")?.and_then(|v| serde_json::from_value(v).ok()))
}

/// A field of the run's `run.created` journal entry: how it was started.
fn created_field(
    inner: &Inner,
    run_id: &str,
    field: &str,
) -> Result<Option<serde_json::Value>, LedgerError> {
    Ok(inner
        .ledger
        .journal_entries(run_id)?
        .into_iter()
        .find(|e| e.event == "run.created")
        .and_then(|e| e.fields.get(field).cloned())
        .filter(|v| !v.is_null()))
}

async fn begin(
    inner: &Arc<Inner>,
    tool: &LoadedTool,
    run_id: &str,
) -> Result<ledger::Attempt, LedgerError> {
    let mut take_over = false;
    loop {
        let now = inner.clock.now_ms();
        let op = Op::BeginAttempt {
            run_id: run_id.to_owned(),
            component_digest: tool.digest.clone(),
            holder: inner.holder.clone(),
            lease_until: now + inner.lease_ttl_ms,
            take_over,
            now,
        };
        match ledger::apply(&inner.ledger, vec![op]).await {
            Ok(applied) => match applied.into_iter().next() {
                Some(ledger::Applied::Attempt(a)) => return Ok(a),
                other => {
                    return Err(LedgerError::Internal(format!(
                        "BeginAttempt returned {other:?}"
                    )));
                }
            },
            // The previous holder ran on this machine and its process is gone: it crashed,
            // so its lease need not run out before the run continues.
            Err(LedgerError::AttemptLive { holder, .. })
                if !take_over && crate::holder::is_dead_local(&holder) =>
            {
                take_over = true;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn attempt(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
    input: serde_json::Value,
    lock: Option<LockSpec>,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let attempt = begin(inner, tool, run_id).await?;
    let n = attempt.attempt;
    let span =
        tracing::info_span!("run", run_id = %run_id, attempt = n, tool = %tool.descriptor.name);
    async move {
        tracing::info!("attempt started");
        inner.ledger.journal(entry(
            inner,
            run_id,
            n,
            "info",
            "attempt.started",
            format!("attempt {n} started"),
            serde_json::json!({ "holder": inner.holder, "digest": tool.digest }),
        ));
        let policy = inner.config.policy_for(&tool.descriptor.name);
        // The attempt's lease is renewed while it waits for the lock too, so nobody takes
        // a waiting attempt for a crashed one.
        let waiting = LeaseRenewer::spawn(inner.clone(), run_id.to_owned(), n, None);
        let held = match &lock {
            Some(spec) => match acquire_lock(inner, run_id, n, spec).await {
                Ok(held) => Some(held),
                Err(failure) => {
                    let end = AttemptEnd {
                        result: Err(failure),
                        stdio: Stdio::default(),
                        started,
                        parked: None,
                        lock: None,
                    };
                    return finish(inner, tool, &policy, run_id, n, end).await;
                }
            },
            None => None,
        };
        // Dropped with this future: a cancelled attempt stops renewing and its leases lapse.
        let renewer = LeaseRenewer::spawn(inner.clone(), run_id.to_owned(), n, held.clone());
        drop(waiting);
        // The budget covers the whole run: this attempt gets what earlier ones left.
        let stored = match inner.ledger.stored_bytes(run_id) {
            Ok(stored) => stored,
            Err(e) => {
                let end = AttemptEnd {
                    result: Err(Failure::new(
                        FailureClass::Transient,
                        format!("ledger unavailable, attempt not started: {e}"),
                    )),
                    stdio: Stdio::default(),
                    started,
                    parked: None,
                    lock: held,
                };
                return finish(inner, tool, &policy, run_id, n, end).await;
            }
        };
        let ctx = Arc::new(AttemptContext {
            run_id: run_id.to_owned(),
            attempt: n,
            tool: tool.descriptor.name.clone(),
            policy: policy.clone(),
            ledger: inner.ledger.clone(),
            effects: inner.effects.clone(),
            clock: inner.clock.clone(),
            fence: held.as_ref().map(|h| h.fence),
            parked: std::sync::Mutex::new(None),
            budget: StorageBudget::new(policy.limits.max_stored_bytes, stored),
        });
        let run_ctx = run_context(inner, tool, &policy, run_id, n);
        let (result, stdio) = execute(
            inner.engine.engine(),
            tool,
            &policy,
            run_ctx,
            Some(ctx.clone()),
            &input.to_string(),
        )
        .await;
        drop(renewer);
        let stdio = within_budget(&ctx, stdio);
        let result =
            result.and_then(|output| checked_output(&output, policy.limits.max_output_bytes));
        let parked = ctx.parked.lock().ok().and_then(|p| *p);
        let end = AttemptEnd {
            result,
            stdio,
            started,
            parked,
            lock: held,
        };
        let report = finish(inner, tool, &policy, run_id, n, end).await?;
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

/// What the tool printed, for the journal, and the CPU time it used.
#[derive(Default)]
struct Stdio {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cpu_ms: u64,
}

/// Calls a tool once outside any run: input checked as for a run, nothing recorded, and
/// effects and checkpoints refused. For dry runs of read-only tools and for measuring the
/// sandbox apart from the ledger.
pub(crate) async fn call_unrecorded(
    inner: &Inner,
    tool: &LoadedTool,
    input: &str,
) -> Result<Result<serde_json::Value, Failure>, RunError> {
    let policy = inner.config.policy_for(&tool.descriptor.name);
    let value = parse_input(tool, &policy, input)?;
    let run_ctx = run_context(inner, tool, &policy, UNRECORDED_RUN_ID, 1);
    let (result, _stdio) = execute(
        inner.engine.engine(),
        tool,
        &policy,
        run_ctx,
        None,
        &value.to_string(),
    )
    .await;
    Ok(result.and_then(|output| checked_output(&output, policy.limits.max_output_bytes)))
}

/// What the tool learns about the attempt it runs in; the deadline is the policy's timeout
/// from now, by the host's clock.
fn run_context(
    inner: &Inner,
    tool: &LoadedTool,
    policy: &Policy,
    run_id: &str,
    attempt: u32,
) -> types::RunContext {
    let deadline_ms = inner
        .clock
        .now_ms()
        .saturating_add(i64::try_from(policy.limits.timeout_ms).unwrap_or(i64::MAX));
    types::RunContext {
        run_id: run_id.to_owned(),
        attempt,
        tool: tool.descriptor.name.clone(),
        deadline_ms: u64::try_from(deadline_ms).unwrap_or(0),
    }
}

/// The run ID a tool sees in an unrecorded call.
pub const UNRECORDED_RUN_ID: &str = "unrecorded";

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

/// Instantiates `tool` in a fresh store and calls `run`, under the policy's memory, table and
/// instance limits and its deadline. The sandbox alone: nothing here touches the ledger.
async fn execute(
    engine: &wasmtime::Engine,
    tool: &LoadedTool,
    policy: &Policy,
    run_ctx: types::RunContext,
    attempt: Option<Arc<AttemptContext>>,
    input_text: &str,
) -> (Result<String, Failure>, Stdio) {
    let timeout = Duration::from_millis(policy.limits.timeout_ms);
    let state = match ToolState::new(policy, &run_ctx.tool, attempt) {
        Ok(state) => state,
        Err(e) => {
            return (
                Err(Failure::new(FailureClass::Fatal, e.to_string())),
                Stdio::default(),
            );
        }
    };
    let stdio = state.stdio.clone();
    let mut store = guarded_store(
        engine,
        state,
        &Deadlines {
            wall: timeout,
            wall_rule: "limits.timeout_ms",
            cpu_ms: Some(policy.limits.cpu_ms),
        },
    );
    let call = async {
        let instance: Tool = tool.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, &run_ctx, input_text).await
    };
    // A guest blocked in a host call (a slow connector) never sees the epoch; the outer
    // timeout bounds that case, with a little grace so the epoch trap wins when it can.
    let outcome = tokio::time::timeout(timeout + EPOCH_TICK * 5, call).await;
    let result = match outcome {
        Err(_) => Err(Failure::new(
            FailureClass::Timeout,
            format!("attempt exceeded its {} ms time limit", timeout.as_millis()),
        )),
        Ok(Ok(Ok(output))) => Ok(output),
        Ok(Ok(Err(tool_error))) => Err(from_tool_error(tool_error)),
        Ok(Err(trap)) => Err(classify_trap(
            &trap,
            store.data().limiter.exceeded.as_deref(),
            timeout,
        )),
    };
    let stdio = Stdio {
        stdout: stdio.stdout.contents().to_vec(),
        stderr: stdio.stderr.contents().to_vec(),
        cpu_ms: store.data().cpu_ms(),
    };
    (result, stdio)
}

/// Maps a trap or host abort to a failure class.
fn classify_trap(error: &wasmtime::Error, limit_hit: Option<&str>, timeout: Duration) -> Failure {
    if let Some(AttemptAbort(failure)) = error.downcast_ref::<AttemptAbort>() {
        return failure.clone();
    }
    if let Some(limit) = limit_hit {
        return Failure::new(
            FailureClass::ResourceExhausted,
            format!("tool hit its {limit} and trapped"),
        )
        .with_details(serde_json::json!({ "trap": format!("{error:#}") }));
    }
    if error
        .downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some_and(|e| matches!(e, wasmtime::component::ResourceTableError::Full))
    {
        return Failure::new(
            FailureClass::ResourceExhausted,
            "tool holds too many host resource handles (limits.max_resources)",
        )
        .with_details(serde_json::json!({ "trap": format!("{error:#}") }));
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Failure::new(
            FailureClass::Timeout,
            format!(
                "tool ran past its {} ms deadline and was interrupted",
                timeout.as_millis()
            ),
        ),
        Some(wasmtime::Trap::StackOverflow) => {
            Failure::new(FailureClass::ResourceExhausted, "tool overflowed its stack")
        }
        Some(trap) => Failure::new(FailureClass::Fatal, format!("tool trapped: {trap}"))
            .with_details(serde_json::json!({ "trap": format!("{error:#}") })),
        None => Failure::new(FailureClass::Fatal, format!("tool failed: {error:#}")),
    }
}

/// The tool's output as JSON, within the policy's size cap.
fn checked_output(output: &str, max: u64) -> Result<serde_json::Value, Failure> {
    if u64::try_from(output.len()).unwrap_or(u64::MAX) > max {
        return Err(Failure::new(
            FailureClass::ResourceExhausted,
            format!(
                "tool output is {} bytes, over the cap of {max}",
                output.len()
            ),
        ));
    }
    serde_json::from_str(output).map_err(|e| {
        Failure::new(
            FailureClass::Fatal,
            format!("tool returned output that is not JSON: {e}"),
        )
    })
}

/// How an attempt ended, for [`finish`] to record.
struct AttemptEnd {
    result: Result<serde_json::Value, Failure>,
    stdio: Stdio,
    started: Instant,
    /// The escalation the attempt stopped to wait on.
    parked: Option<i64>,
    /// The business-object lock it held, released with its end.
    lock: Option<HeldLock>,
}

/// Records an attempt's end, and the run's when it is final, in one batch: with the
/// escalation a failure no retry can fix opens, and the release of the run's lock.
async fn finish(
    inner: &Arc<Inner>,
    tool: &LoadedTool,
    policy: &Policy,
    run_id: &str,
    n: u32,
    end: AttemptEnd,
) -> Result<RunReport, RunError> {
    let AttemptEnd {
        result,
        stdio,
        started,
        parked,
        lock,
    } = end;
    let now = inner.clock.now_ms();
    let mut ops = Vec::new();
    if let Some(lock) = &lock {
        ops.push(Op::ReleaseLock {
            key: lock.key.clone(),
            run_id: run_id.to_owned(),
            fence: lock.fence,
            now,
        });
    }
    for (stream, bytes) in [("stdout", &stdio.stdout), ("stderr", &stdio.stderr)] {
        if !bytes.is_empty() {
            ops.push(Op::Journal(entry(
                inner,
                run_id,
                n,
                "info",
                &format!("tool.{stream}"),
                String::from_utf8_lossy(bytes).into_owned(),
                serde_json::json!({ "bytes": bytes.len() }),
            )));
        }
    }
    let status = match &result {
        Ok(output) => {
            ops.push(Op::EndAttempt {
                run_id: run_id.to_owned(),
                attempt: n,
                status: AttemptStatus::Succeeded,
                error_class: None,
                error_message: None,
                now,
            });
            ops.push(Op::EndRun {
                run_id: run_id.to_owned(),
                status: RunStatus::Succeeded,
                output: Some(output.to_string()),
                error_class: None,
                error_message: None,
                now,
            });
            ops.push(Op::Journal(entry(
                inner,
                run_id,
                n,
                "info",
                "attempt.succeeded",
                format!("attempt {n} succeeded"),
                serde_json::json!({ "cpu_ms": stdio.cpu_ms }),
            )));
            RunStatus::Succeeded
        }
        Err(failure) => {
            let class = Some(failure.class.as_str().to_owned());
            ops.push(Op::EndAttempt {
                run_id: run_id.to_owned(),
                attempt: n,
                status: AttemptStatus::Failed,
                error_class: class.clone(),
                error_message: Some(failure.message.clone()),
                now,
            });
            let run_status = match failure.class {
                _ if parked.is_some() => RunStatus::WaitingApproval,
                c if c.is_retryable() => RunStatus::Running,
                FailureClass::InDoubt => RunStatus::InDoubt,
                _ => RunStatus::Failed,
            };
            if matches!(run_status, RunStatus::Failed | RunStatus::InDoubt) {
                ops.push(Op::EndRun {
                    run_id: run_id.to_owned(),
                    status: run_status,
                    output: None,
                    error_class: class,
                    error_message: Some(failure.message.clone()),
                    now,
                });
                let reason = if run_status == RunStatus::InDoubt {
                    ledger::EscalationReason::InDoubt
                } else {
                    ledger::EscalationReason::NonRetryable
                };
                let packet = crate::escalation::packet(
                    inner.ledger.as_ref(),
                    run_id,
                    policy,
                    reason,
                    Some(failure),
                    failed_action(inner, failure),
                    Some(crate::escalation::Ending {
                        attempt: n,
                        failure,
                        at: now,
                    }),
                )?;
                let summary = format!(
                    "run {run_id} of `{}` stopped: {} failure: {}",
                    tool.descriptor.name, failure.class, failure.message
                );
                ops.extend(crate::escalation::open_ops(&packet, summary, None, now));
            }
            ops.push(Op::Journal(entry(
                inner,
                run_id,
                n,
                "warn",
                "attempt.failed",
                failure.message.clone(),
                serde_json::json!({ "class": failure.class, "details": failure.details, "cpu_ms": stdio.cpu_ms }),
            )));
            run_status
        }
    };
    ledger::apply(&inner.ledger, ops).await?;
    Ok(RunReport {
        run_id: run_id.to_owned(),
        attempt: n,
        tool: tool.descriptor.name.clone(),
        result,
        status,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        already_finished: false,
    })
}

/// The effect a failure names (its details carry `kind` and `key`), for the evidence.
fn failed_action(inner: &Inner, failure: &Failure) -> Option<crate::escalation::Action> {
    let details = failure.details.as_ref()?;
    let kind = details.get("kind")?.as_str()?;
    let key = details.get("key")?.as_str()?;
    let effect = inner.ledger.effect(kind, key).ok().flatten()?;
    Some(crate::escalation::Action {
        kind: kind.to_owned(),
        key: key.to_owned(),
        payload_digest: effect.payload_digest,
        payload: crate::effects::intent::parse_payload(&effect.payload).unwrap_or_default(),
        payload_text: Some(effect.payload),
    })
}

/// A business-object lock held for one attempt.
#[derive(Debug, Clone)]
struct HeldLock {
    key: String,
    fence: i64,
    ttl_ms: i64,
}

/// Takes the run's lock, waiting up to its `wait_ms` while another run holds it.
async fn acquire_lock(
    inner: &Arc<Inner>,
    run_id: &str,
    attempt: u32,
    spec: &LockSpec,
) -> Result<HeldLock, Failure> {
    let ttl_ms = i64::try_from(spec.ttl_ms).unwrap_or(i64::MAX);
    let deadline = inner
        .clock
        .now_ms()
        .saturating_add(i64::try_from(spec.wait_ms).unwrap_or(i64::MAX));
    let mut waited = false;
    loop {
        let now = inner.clock.now_ms();
        let op = Op::AcquireLock {
            key: spec.key.clone(),
            run_id: run_id.to_owned(),
            holder: inner.holder.clone(),
            lease_until: now.saturating_add(ttl_ms),
            now,
        };
        match ledger::apply(&inner.ledger, vec![op]).await {
            Ok(applied) => {
                let Some(ledger::Applied::Lock(lock)) = applied.into_iter().next() else {
                    return Err(Failure::new(
                        FailureClass::Fatal,
                        "ledger returned no lock for AcquireLock",
                    ));
                };
                inner.ledger.journal(entry(
                    inner,
                    run_id,
                    attempt,
                    "info",
                    "lock.acquired",
                    format!("holding lock `{}` with fence {}", lock.key, lock.fence),
                    serde_json::json!({ "key": lock.key, "fence": lock.fence, "waited": waited }),
                ));
                return Ok(HeldLock {
                    key: lock.key,
                    fence: lock.fence,
                    ttl_ms,
                });
            }
            Err(LedgerError::LockHeld {
                run_id: other,
                since,
                lease_until,
                ..
            }) => {
                if now >= deadline {
                    let waited_for = if spec.wait_ms > 0 {
                        format!(" after waiting {} ms", spec.wait_ms)
                    } else {
                        String::new()
                    };
                    // Transient: the run stays resumable, and a retry waits out the lease.
                    let retry_after_ms = lease_until.saturating_sub(now).max(0);
                    return Err(Failure::new(
                        FailureClass::Transient,
                        format!(
                            "lock `{}` is held by run {other} since {}{waited_for}; try again after it finishes (its lease runs until {})",
                            spec.key,
                            crate::clock::format_ms(since),
                            crate::clock::format_ms(lease_until)
                        ),
                    )
                    .with_details(serde_json::json!({ "lock": spec.key, "held_by_run_id": other, "since": since, "lease_until": lease_until, "retry_after_ms": retry_after_ms })));
                }
                if !waited {
                    inner.ledger.journal(entry(
                        inner,
                        run_id,
                        attempt,
                        "info",
                        "lock.waiting",
                        format!("waiting for lock `{}`, held by run {other}", spec.key),
                        serde_json::json!({ "key": spec.key, "held_by_run_id": other }),
                    ));
                    waited = true;
                }
                // Poll with jitter so waiters spread out; never past the deadline.
                let pause = 20 + (rand::random::<u64>() % 60);
                let left = u64::try_from(deadline.saturating_sub(now)).unwrap_or(0);
                inner
                    .sleeper
                    .sleep(Duration::from_millis(pause.min(left.max(1))))
                    .await;
            }
            Err(e) => {
                return Err(Failure::new(
                    FailureClass::Fatal,
                    format!("ledger unavailable, lock `{}` not taken: {e}", spec.key),
                ));
            }
        }
    }
}

fn entry(
    inner: &Inner,
    run_id: &str,
    attempt: u32,
    level: &str,
    event: &str,
    message: String,
    fields: serde_json::Value,
) -> NewJournalEntry {
    NewJournalEntry {
        run_id: run_id.to_owned(),
        attempt: Some(attempt),
        at: inner.clock.now_ms(),
        level: level.to_owned(),
        event: event.to_owned(),
        message,
        fields,
    }
}

/// Renews an attempt's lease at a third of its TTL for as long as it is alive.
struct LeaseRenewer(tokio::task::JoinHandle<()>);

impl Drop for LeaseRenewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LeaseRenewer {
    fn spawn(inner: Arc<Inner>, run_id: String, attempt: u32, lock: Option<HeldLock>) -> Self {
        Self(tokio::spawn(async move {
            let ttl = lock
                .as_ref()
                .map_or(inner.lease_ttl_ms, |l| l.ttl_ms.min(inner.lease_ttl_ms));
            let period = Duration::from_millis(u64::try_from(ttl / 3).unwrap_or(1).max(1));
            loop {
                tokio::time::sleep(period).await;
                let op = Op::RenewLease {
                    run_id: run_id.clone(),
                    attempt,
                    holder: inner.holder.clone(),
                    lease_until: inner.clock.now_ms() + inner.lease_ttl_ms,
                };
                if let Err(e) = ledger::apply(&inner.ledger, vec![op]).await {
                    tracing::warn!(run_id = %run_id, attempt, error = %e, "could not renew the attempt's lease");
                }
                if let Some(lock) = &lock {
                    let op = Op::RenewLock {
                        key: lock.key.clone(),
                        run_id: run_id.clone(),
                        fence: lock.fence,
                        lease_until: inner.clock.now_ms().saturating_add(lock.ttl_ms),
                    };
                    if let Err(e) = ledger::apply(&inner.ledger, vec![op]).await {
                        tracing::warn!(run_id = %run_id, attempt, error = %e, "could not renew the run's lock");
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_has_prefix_date_and_uuid_v7() {
        let id = new_run_id("run", 1_764_331_200_000).unwrap();
        assert!(id.starts_with("run-2025-11-28-"), "{id}");
        let uuid = uuid::Uuid::parse_str(id.trim_start_matches("run-2025-11-28-")).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[test]
    fn run_id_prefix_is_checked() {
        assert!(matches!(
            new_run_id("Bad Prefix", 0),
            Err(RunError::BadPrefix(_))
        ));
        assert!(matches!(new_run_id("", 0), Err(RunError::BadPrefix(_))));
    }
}
