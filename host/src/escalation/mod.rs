//! The human queue: when a run cannot proceed safely (retries exhausted, a failure no retry
//! can fix, an effect whose outcome is unknown, an effect that needs approval) it is parked
//! with an escalation carrying an evidence packet, and a human settles it.
//!
//! Invariant: the escalation, its evidence and the run's new status commit in one ledger
//! batch, and every resolution (with its reason and who gave it) is journaled in the same
//! batch as the change it makes, so the queue and the runs never disagree.

mod approval;
mod evidence;

pub use approval::{Asking, Gate, approval_gate};
pub use evidence::{
    Action, AttemptEvidence, CheckpointEvidence, EffectEvidence, Ending, EvidencePacket, RunRows,
    packet,
};

use crate::clock::Millis;
use crate::failure::Failure;
use crate::journal::{self, Event};
use crate::ledger::{
    self, EffectRecord, EffectStatus, Escalation, EscalationReason, EscalationStatus, Ledger,
    LedgerError, NewEscalation, Op, Resolution, RunStatus,
};
use crate::policy::Policy;
use std::sync::Arc;

/// Why an escalation cannot be settled as asked.
#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    #[error("escalation #{0} does not exist")]
    NotFound(i64),
    #[error("escalation #{id} was already resolved ({resolution}) by {by}; nothing to do")]
    AlreadyResolved {
        id: i64,
        resolution: String,
        by: String,
    },
    #[error("escalation #{id} is an approval request: approve or reject it")]
    IsApproval { id: i64 },
    #[error(
        "escalation #{id} is not an approval request ({reason}): retry, mark it succeeded or abandon it"
    )]
    NotApproval { id: i64, reason: EscalationReason },
    #[error(
        "the outcome must be JSON (what downstream returned, e.g. '{{\"id\":\"INV-1\"}}'): {0}"
    )]
    OutcomeNotJson(String),
    #[error("a resolution needs a reason, which is journaled with it")]
    NoReason,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The ops that open an escalation for a packet (and journal it); `park` also parks the run.
fn open_ops(
    packet: &EvidencePacket,
    summary: String,
    park: Option<RunStatus>,
    now: Millis,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Some(status) = park {
        ops.push(Op::ParkRun {
            run_id: packet.run_id.clone(),
            status,
            now,
        });
    }
    let action = packet.action.as_ref();
    ops.push(Op::OpenEscalation(NewEscalation {
        run_id: packet.run_id.clone(),
        reason: packet.reason,
        summary: summary.clone(),
        effect_kind: action.map(|a| a.kind.clone()),
        effect_key: action.map(|a| a.key.clone()),
        payload_digest: action.map(|a| a.payload_digest.clone()),
        evidence: serde_json::to_value(packet)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        now,
    }));
    ops.push(Op::Journal(journal::entry(
        journal::At {
            run_id: &packet.run_id,
            attempt: None,
            at: now,
        },
        Event::EscalationOpened {
            reason: packet.reason,
        },
        summary,
    )));
    ops
}

/// The run that ended on `failure`.
#[derive(Debug, Clone, Copy)]
pub struct Stopped<'a> {
    pub run_id: &'a str,
    pub tool: &'a str,
    pub policy: &'a Policy,
    pub failure: &'a Failure,
    /// The effect the run was acting on when it stopped, if one failed.
    pub action: Option<&'a EffectRecord>,
}

/// The ops that escalate a run whose attempt `ending` just failed for good (`failed`) or
/// left an effect in doubt (`in_doubt`), to commit in the same batch as the attempt's end.
pub async fn on_final_failure(
    ledger: &Arc<dyn Ledger>,
    stopped: Stopped<'_>,
    in_doubt: bool,
    ending: Ending<'_>,
    now: Millis,
) -> Result<Vec<Op>, LedgerError> {
    let reason = if in_doubt {
        EscalationReason::InDoubt
    } else {
        EscalationReason::NonRetryable
    };
    let rows = RunRows::fetch(ledger, stopped.run_id).await?;
    let packet = packet(
        rows,
        stopped.policy,
        reason,
        Some(stopped.failure),
        stopped.action.map(Action::of_effect),
        Some(ending),
    );
    let summary = format!(
        "run {} of `{}` stopped: {} failure: {}",
        stopped.run_id, stopped.tool, stopped.failure.class, stopped.failure.message
    );
    Ok(open_ops(&packet, summary, None, now))
}

/// Parks a run its retry policy stopped retrying, with an escalation, so a human decides.
pub async fn on_retries_stopped(
    ledger: &Arc<dyn Ledger>,
    stopped: Stopped<'_>,
    attempts: u32,
    now: Millis,
) -> Result<(), LedgerError> {
    let failure = stopped.failure;
    let retryable = failure.class.is_retryable()
        && !stopped.policy.retry.non_retryable.contains(&failure.class);
    let reason = if retryable {
        EscalationReason::RetriesExhausted
    } else {
        EscalationReason::NonRetryable
    };
    let rows = RunRows::fetch(ledger, stopped.run_id).await?;
    let packet = packet(
        rows,
        stopped.policy,
        reason,
        Some(failure),
        stopped.action.map(Action::of_effect),
        None,
    );
    let summary = format!(
        "run {} of `{}` stopped retrying after {attempts} attempt(s): {}: {}",
        stopped.run_id, stopped.tool, failure.class, failure.message
    );
    let ops = open_ops(&packet, summary, Some(RunStatus::Escalated), now);
    ledger::apply(ledger, ops).await.map(drop)
}

/// The escalation an `apply` of [`open_ops`] returned.
fn opened(applied: &[ledger::Applied]) -> Option<Escalation> {
    applied.iter().find_map(|a| match a {
        ledger::Applied::Escalation(e) => Some(e.clone()),
        _ => None,
    })
}

/// What a human decided about an escalation.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Resume the run. For an in-doubt effect: the human checked downstream and it did
    /// **not** happen, so it is sent again under its key.
    Retry,
    /// For an in-doubt effect: it did happen, with this outcome, which a resume replays.
    /// Otherwise: the run is done, with this output.
    MarkSucceeded(String),
    /// End the run as failed.
    Abandon,
    Approve,
    Reject,
}

impl Decision {
    fn resolution(&self) -> Resolution {
        match self {
            Self::Retry => Resolution::Retry,
            Self::MarkSucceeded(_) => Resolution::MarkSucceeded,
            Self::Abandon => Resolution::Abandon,
            Self::Approve => Resolution::Approved,
            Self::Reject => Resolution::Rejected,
        }
    }
}

/// What settling an escalation left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// The run is open again and should be resumed.
    Resume,
    /// The run is finished.
    Done,
}

/// Records a human's decision, atomically with what it changes in the run and its effects.
pub async fn settle(
    ledger: &Arc<dyn Ledger>,
    id: i64,
    decision: Decision,
    reason: &str,
    by: &str,
    now: Millis,
) -> Result<(Escalation, NextStep), EscalationError> {
    if reason.trim().is_empty() {
        return Err(EscalationError::NoReason);
    }
    let esc = ledger::read(ledger, move |l| l.escalation(id))
        .await?
        .ok_or(EscalationError::NotFound(id))?;
    if esc.status == EscalationStatus::Resolved {
        return Err(EscalationError::AlreadyResolved {
            id,
            resolution: esc.resolution.map_or("?".into(), |r| r.to_string()),
            by: esc.resolved_by.unwrap_or_else(|| "?".into()),
        });
    }
    let approval = esc.reason == EscalationReason::Approval;
    match (&decision, approval) {
        (Decision::Approve | Decision::Reject, false) => {
            return Err(EscalationError::NotApproval {
                id,
                reason: esc.reason,
            });
        }
        (Decision::Retry | Decision::MarkSucceeded(_), true) => {
            return Err(EscalationError::IsApproval { id });
        }
        _ => {}
    }
    let run_id = esc.run_id.clone();
    let mut ops = vec![Op::ResolveEscalation {
        id,
        resolution: decision.resolution(),
        reason: reason.to_owned(),
        by: by.to_owned(),
        now,
    }];
    // One read for what the decision needs: the effect in doubt, the latest attempt and the
    // run's status.
    let (in_doubt, latest, status) = {
        let (esc, run_id) = (esc.clone(), run_id.clone());
        ledger::read(ledger, move |l| {
            let in_doubt = if esc.reason == EscalationReason::InDoubt {
                in_doubt_effect(l, &esc)?
            } else {
                None
            };
            let latest = l.attempts(&run_id)?.last().map_or(1, |a| a.attempt);
            let status = l.run(&run_id)?.map(|r| r.status);
            Ok((in_doubt, latest, status))
        })
        .await?
    };
    let next = match &decision {
        Decision::Retry | Decision::Approve => {
            if let Some(effect) = &in_doubt {
                ops.extend(settle_effect(
                    effect,
                    &run_id,
                    latest,
                    EffectStatus::Failed,
                    None,
                    format!("settled by {by}: not performed downstream ({reason}); re-sent under its key"),
                    now,
                ));
            }
            ops.push(Op::ReopenRun {
                run_id: run_id.clone(),
                now,
            });
            NextStep::Resume
        }
        Decision::MarkSucceeded(outcome) => {
            serde_json::from_str::<serde::de::IgnoredAny>(outcome)
                .map_err(|e| EscalationError::OutcomeNotJson(e.to_string()))?;
            ops.push(Op::ReopenRun {
                run_id: run_id.clone(),
                now,
            });
            match &in_doubt {
                // In doubt, but no longer (another escalation settled the effect): resume,
                // and the run replays or re-sends it as its record now says.
                None if esc.reason == EscalationReason::InDoubt => NextStep::Resume,
                Some(effect) => {
                    ops.extend(settle_effect(
                        effect,
                        &run_id,
                        latest,
                        EffectStatus::Succeeded,
                        Some(outcome.clone()),
                        format!("settled by {by}: performed downstream ({reason})"),
                        now,
                    ));
                    NextStep::Resume
                }
                None => {
                    ops.push(Op::EndRun {
                        run_id: run_id.clone(),
                        status: RunStatus::Succeeded,
                        output: Some(outcome.clone()),
                        error_class: None,
                        error_message: None,
                        now,
                    });
                    NextStep::Done
                }
            }
        }
        Decision::Abandon | Decision::Reject => {
            // A failed or in-doubt run is reopened and ended in the same batch, so it records
            // who abandoned it and why instead of keeping its old error.
            if matches!(status, Some(RunStatus::Failed | RunStatus::InDoubt)) {
                ops.push(Op::ReopenRun {
                    run_id: run_id.clone(),
                    now,
                });
            }
            if status.is_some_and(|s| s != RunStatus::Succeeded) {
                let verb = if matches!(decision, Decision::Reject) {
                    "rejected"
                } else {
                    "abandoned"
                };
                ops.push(Op::EndRun {
                    run_id: run_id.clone(),
                    status: RunStatus::Failed,
                    output: None,
                    error_class: Some("permission".into()),
                    error_message: Some(format!("{verb} by {by}: {reason}")),
                    now,
                });
            }
            NextStep::Done
        }
    };
    ops.push(Op::Journal(journal::entry(
        journal::At {
            run_id: &run_id,
            attempt: None,
            at: now,
        },
        Event::EscalationResolved {
            id,
            resolution: decision.resolution(),
            by: by.to_owned(),
            reason: reason.to_owned(),
        },
        format!(
            "escalation #{id} resolved as {} by {by}: {reason}",
            decision.resolution()
        ),
    )));
    match ledger::apply(ledger, ops).await {
        Ok(_) => {}
        // Another resolver committed between our read and our write: nothing of ours did.
        Err(LedgerError::EscalationResolved { .. }) => {
            let esc = ledger
                .escalation(id)?
                .ok_or(EscalationError::NotFound(id))?;
            return Err(EscalationError::AlreadyResolved {
                id,
                resolution: esc.resolution.map_or("?".into(), |r| r.to_string()),
                by: esc.resolved_by.unwrap_or_else(|| "?".into()),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let esc = ledger::read(ledger, move |l| l.escalation(id))
        .await?
        .ok_or(EscalationError::NotFound(id))?;
    Ok((esc, next))
}

/// The in-doubt effect an escalation is about: the one it names, else the run's first.
fn in_doubt_effect(
    ledger: &dyn Ledger,
    esc: &Escalation,
) -> Result<Option<EffectRecord>, LedgerError> {
    if let (Some(kind), Some(key)) = (&esc.effect_kind, &esc.effect_key) {
        return Ok(ledger
            .effect(kind, key)?
            .filter(|effect| effect.status == EffectStatus::InDoubt));
    }
    Ok(ledger
        .effects_for_run(&esc.run_id)?
        .into_iter()
        .find(|e| e.status == EffectStatus::InDoubt))
}

/// Takes an in-doubt effect over for the run's latest attempt and records the outcome a
/// human verified downstream.
fn settle_effect(
    effect: &EffectRecord,
    run_id: &str,
    attempt: u32,
    status: EffectStatus,
    response: Option<String>,
    message: String,
    now: Millis,
) -> Vec<Op> {
    let failed = status == EffectStatus::Failed;
    vec![
        Op::TakeOverEffect {
            kind: effect.kind.clone(),
            key: effect.key.clone(),
            expected_run_id: effect.run_id.clone(),
            expected_attempt: effect.attempt,
            expected_status: EffectStatus::InDoubt,
            run_id: run_id.to_owned(),
            attempt,
            now,
        },
        Op::RecordOutcome {
            kind: effect.kind.clone(),
            key: effect.key.clone(),
            run_id: run_id.to_owned(),
            attempt,
            status,
            response,
            // Transient, so that a resume sends it again under the same key.
            error_class: failed.then(|| "transient".to_owned()),
            error_message: failed.then(|| message.clone()),
            now,
        },
        Op::Journal(journal::entry(
            journal::At {
                run_id,
                attempt: None,
                at: now,
            },
            Event::EffectSettled {
                kind: effect.kind.clone(),
                key: effect.key.clone(),
                status,
            },
            message,
        )),
    ]
}
