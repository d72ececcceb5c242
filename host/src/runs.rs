//! A run's lifecycle: create → attempt → (resume → attempt)* → finished.
//!
//! Invariants: a run exists in the ledger before its first instruction executes; an attempt
//! holds a lease, renewed while it runs, so another process can tell a live attempt from a
//! crashed one; the attempt's end (and the run's, when final) is durable before the caller
//! hears of it.

use crate::bindings::{Tool, types};
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
    #[error("input is not valid JSON: {0}")]
    InputNotJson(String),
    #[error("input does not match the schema of tool `{tool}`:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
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
    #[error("could not start the tool: {0}")]
    Instantiate(String),
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

/// Creates the run record, then runs its first attempt.
pub(crate) async fn start(
    inner: &Arc<Inner>,
    tool: &Arc<LoadedTool>,
    input: &str,
    prefix: &str,
) -> Result<RunReport, RunError> {
    let value = parse_input(tool, input)?;
    let now = inner.clock.now_ms();
    let run_id = new_run_id(prefix, now)?;
    let ops = vec![
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
            }),
        }),
    ];
    ledger::apply(&inner.ledger, ops).await?;
    attempt(inner, tool, &run_id, value).await
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
    attempt(inner, tool, run_id, input).await
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
        let history = crate::retry::History {
            attempts: run.attempts,
            started_at_ms: run.created_at,
            now_ms: inner.clock.now_ms(),
            effects: u32::try_from(effects).unwrap_or(u32::MAX),
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
            return Ok(report);
        };
        inner.sleeper.sleep(Duration::from_millis(after_ms)).await;
        report = resume(inner, tool, &report.run_id).await?;
    }
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
    inner
        .ledger
        .journal_entries(run_id)?
        .into_iter()
        .find(|e| e.event == "run.created")
        .and_then(|e| {
            e.fields
                .get("component")
                .and_then(|c| c.as_str())
                .map(std::path::PathBuf::from)
        })
        .ok_or_else(|| RunError::UnknownComponent(run_id.to_owned()))
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
        // Dropped with this future: a cancelled attempt stops renewing and its lease lapses.
        let renewer = LeaseRenewer::spawn(inner.clone(), run_id.to_owned(), n);
        let policy = inner.config.policy_for(&tool.descriptor.name);
        let ctx = Arc::new(AttemptContext {
            run_id: run_id.to_owned(),
            attempt: n,
            tool: tool.descriptor.name.clone(),
            policy: policy.clone(),
            ledger: inner.ledger.clone(),
            effects: inner.effects.clone(),
            clock: inner.clock.clone(),
        });
        let run_ctx = run_context(inner, tool, &policy, run_id, n);
        let (result, stdio) = execute(
            inner.engine.engine(),
            tool,
            &policy,
            run_ctx,
            Some(ctx),
            &input.to_string(),
        )
        .await;
        drop(renewer);
        let result =
            result.and_then(|output| checked_output(&output, policy.limits.max_output_bytes));
        let report = finish(inner, tool, run_id, n, result, stdio, started).await?;
        tracing::info!(status = ?report.status, "attempt ended");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// What the tool printed, for the journal.
#[derive(Default)]
struct Stdio {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Calls a tool once outside any run: input checked as for a run, nothing recorded, and
/// effects and checkpoints refused. For dry runs of read-only tools and for measuring the
/// sandbox apart from the ledger.
pub(crate) async fn call_unrecorded(
    inner: &Inner,
    tool: &LoadedTool,
    input: &str,
) -> Result<Result<serde_json::Value, Failure>, RunError> {
    let value = parse_input(tool, input)?;
    let policy = inner.config.policy_for(&tool.descriptor.name);
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

fn parse_input(tool: &LoadedTool, input: &str) -> Result<serde_json::Value, RunError> {
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

async fn finish(
    inner: &Arc<Inner>,
    tool: &LoadedTool,
    run_id: &str,
    n: u32,
    result: Result<serde_json::Value, Failure>,
    stdio: Stdio,
    started: Instant,
) -> Result<RunReport, RunError> {
    let now = inner.clock.now_ms();
    let mut ops = Vec::new();
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
                serde_json::json!({}),
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
                c if c.is_retryable() => RunStatus::Running,
                FailureClass::InDoubt => RunStatus::InDoubt,
                _ => RunStatus::Failed,
            };
            if run_status != RunStatus::Running {
                ops.push(Op::EndRun {
                    run_id: run_id.to_owned(),
                    status: run_status,
                    output: None,
                    error_class: class,
                    error_message: Some(failure.message.clone()),
                    now,
                });
            }
            ops.push(Op::Journal(entry(
                inner,
                run_id,
                n,
                "warn",
                "attempt.failed",
                failure.message.clone(),
                serde_json::json!({ "class": failure.class, "details": failure.details }),
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
    fn spawn(inner: Arc<Inner>, run_id: String, attempt: u32) -> Self {
        Self(tokio::spawn(async move {
            let period =
                Duration::from_millis(u64::try_from(inner.lease_ttl_ms / 3).unwrap_or(1).max(1));
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
