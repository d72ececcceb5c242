//! Recovery: finding running runs no live host drives (their holder died, so its lease
//! lapsed) and claiming one, so that exactly one host resumes it.

use super::{RunError, RunReport, attempt, driven, existing, read, retry};
use crate::escalation;
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::{self, LedgerError, Op, RunStatus};
use crate::services::Services;
use crate::tool::LoadedTool;
use std::sync::Arc;

/// What [`recover`] did with a run.
#[derive(Debug)]
pub enum Recovery {
    /// A live host drives it, it ended, or another host claimed it first: nothing to do.
    NotStranded,
    /// Its retry budget was spent by the hosts that died on it: a human decides.
    Escalated,
    /// Claimed and resumed here under the tool's retry policy; how its last attempt ended.
    Resumed(RunReport),
}

/// Up to `batch` running runs of the tools in `tools` that no live host drives, oldest
/// first, as `(run id, tool)`: one ledger query per tool, however many runs are running.
/// Which runs those are is [`driven`]'s rule, asked of the ledger as a
/// [`ledger::StrandedFilter`] with each tool's own longest backoff.
pub(crate) async fn stranded(
    services: &Services,
    batch: usize,
    tools: &[String],
) -> Result<Vec<(String, String)>, LedgerError> {
    let now = services.now();
    let ttl = services.lease_ttl_ms();
    let mut found: Vec<ledger::Run> = Vec::new();
    for tool in tools {
        let max_backoff = services.policy_for(tool).retry.max_interval_ms;
        let max_backoff = i64::try_from(max_backoff).unwrap_or(i64::MAX);
        let filter = ledger::StrandedFilter {
            tool: tool.clone(),
            now,
            ended_by: now.saturating_sub(max_backoff).saturating_sub(ttl),
            created_by: now.saturating_sub(ttl),
            limit: batch,
        };
        found.extend(read(services, move |l| l.stranded(&filter)).await?);
    }
    // The oldest `batch` across tools, so one busy tool cannot starve another's old runs.
    found.sort_by_key(|run| run.created_at);
    found.truncate(batch);
    Ok(found
        .into_iter()
        .map(|run| (run.run_id, run.tool))
        .collect())
}

/// Resumes `run_id` if no live host drives it (its holder died, so its lease lapsed).
///
/// The claim is `ClaimStranded` (the next attempt, on condition that the run still has the
/// attempts this host read), committed with the `run.recovered` journal line: the ledger
/// lets exactly one host begin it (a `SERIALIZABLE` transaction on PostgreSQL, the one writer
/// on SQLite), and the stale holder's attempt ends `crashed`, so anything it still tries to
/// record is refused by its attempt number. A run its hosts keep
/// dying on stops at its retry budget and is escalated instead of claimed again.
pub(crate) async fn recover(
    services: &Arc<Services>,
    tool: &Arc<LoadedTool>,
    run_id: &str,
) -> Result<Recovery, RunError> {
    let run = existing(services, run_id).await?;
    if run.status != RunStatus::Running {
        return Ok(Recovery::NotStranded);
    }
    let policy = services.policy_for(&tool.descriptor.name);
    let id = run_id.to_owned();
    let attempts = read(services, move |l| l.attempts(&id)).await?;
    let last = attempts.last();
    if driven(services, &run, last, policy.retry.max_interval_ms) {
        return Ok(Recovery::NotStranded);
    }
    let from = last.map(|a| a.holder.clone());
    if run.attempts >= policy.retry.max_attempts {
        let failure = Failure::new(
            FailureClass::Transient,
            format!(
                "attempt {} of {} stopped renewing its lease (held by {}): its host died or \
                 hung on it, and the retry budget allows no further attempt",
                run.attempts,
                policy.retry.max_attempts,
                from.as_deref().unwrap_or("no host")
            ),
        );
        let stopped = escalation::Stopped {
            run_id,
            tool: &tool.descriptor.name,
            policy: &policy,
            failure: &failure,
            action: None,
        };
        escalation::on_retries_stopped(services.ledger(), stopped, run.attempts, services.now())
            .await?;
        return Ok(Recovery::Escalated);
    }
    let node = services.holder().to_owned();
    let message = format!(
        "recovered by {node}: {} stopped renewing its lease",
        from.as_deref().unwrap_or("the host that recorded it")
    );
    let at = journal::At {
        run_id,
        attempt: Some(run.attempts.saturating_add(1)),
        at: services.now(),
    };
    let input: serde_json::Value =
        serde_json::from_str(&run.input).map_err(|e| RunError::InputNotJson(e.to_string()))?;
    // Conditional on the attempt count read above: a host whose read went stale (another
    // claimed the run, or its driver began its next attempt) is refused, not let in beside.
    let now = services.now();
    let claim = vec![
        Op::ClaimStranded {
            run_id: run_id.to_owned(),
            seen_attempts: run.attempts,
            component_digest: tool.digest.clone(),
            holder: services.holder().to_owned(),
            lease_until: now.saturating_add(services.lease_ttl_ms()),
            now,
        },
        Op::Journal(journal::entry(
            at,
            Event::RunRecovered { node, from },
            message,
        )),
    ];
    let begun = match ledger::apply(services.ledger(), claim).await {
        Ok(applied) => match applied.into_iter().next() {
            Some(ledger::Applied::Attempt(a)) => a,
            other => {
                return Err(
                    LedgerError::Internal(format!("BeginAttempt returned {other:?}")).into(),
                );
            }
        },
        // Another host claimed it, or it went on or ended, between the read and the claim.
        Err(
            LedgerError::RunMoved { .. }
            | LedgerError::AttemptLive { .. }
            | LedgerError::RunFinished { .. }
            | LedgerError::RunParked { .. },
        ) => return Ok(Recovery::NotStranded),
        Err(e) => return Err(e.into()),
    };
    let report = attempt::run(
        services,
        tool,
        run_id,
        input,
        run.lock,
        Some(attempt::Begun {
            attempt: begun,
            stored: None,
            deferred: None,
        }),
    )
    .await?;
    Ok(Recovery::Resumed(retry(services, tool, report).await?))
}
