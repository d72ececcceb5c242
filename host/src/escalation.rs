//! The human queue: when a run cannot proceed safely (retries exhausted, a failure no retry
//! can fix, an effect whose outcome is unknown, an effect that needs approval) it is parked
//! with an escalation carrying an evidence packet, and a human settles it.
//!
//! Invariant: the escalation, its evidence and the run's new status commit in one ledger
//! batch, and every resolution (with its reason and who gave it) is journaled in the same
//! batch as the change it makes, so the queue and the runs never disagree.

use crate::clock::Millis;
use crate::failure::Failure;
use crate::ledger::{
    self, Attempt, AttemptStatus, Checkpoint, EffectRecord, EffectStatus, Escalation,
    EscalationReason, EscalationStatus, Ledger, LedgerError, NewEscalation, NewJournalEntry, Op,
    Resolution, RunStatus,
};
use crate::policy::Policy;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// Everything a human needs to settle a run without opening the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct EvidencePacket {
    pub run_id: String,
    pub tool: String,
    pub component_digest: Option<String>,
    pub input: serde_json::Value,
    pub reason: EscalationReason,
    /// The effect the run was attempting when it stopped, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// How the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub attempts: Vec<AttemptEvidence>,
    /// Older attempts not listed in `attempts`.
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts_omitted: usize,
    pub effects: Vec<EffectEvidence>,
    /// Older effects not listed in `effects` (`tollgate runs show` lists every one).
    #[serde(skip_serializing_if = "is_zero")]
    pub effects_omitted: usize,
    pub last_checkpoint: Option<CheckpointEvidence>,
    /// The policy in force for the tool.
    pub policy: Policy,
}

/// The effect a run attempted.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub kind: String,
    pub key: String,
    pub payload_digest: String,
    /// The payload as parsed (strictly: unique keys, decodable strings) before it was recorded.
    pub payload: serde_json::Value,
    /// The exact text that is (or was) sent downstream, whose SHA-256 is `payload_digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptEvidence {
    pub attempt: u32,
    pub status: AttemptStatus,
    pub class: Option<String>,
    pub error: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub duration_ms: Option<Millis>,
    pub holder: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EffectEvidence {
    pub kind: String,
    pub key: String,
    pub payload_digest: String,
    pub status: EffectStatus,
    pub response: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub dispatches: u32,
    pub first_run_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointEvidence {
    pub name: String,
    pub attempt: u32,
    pub seq: i64,
    pub bytes: usize,
    /// The state as JSON when it is JSON, else `{"hex": "…"}`.
    pub state: serde_json::Value,
    pub created_at: Millis,
}

/// How an attempt that has not been recorded as ended yet did end, so the packet built in
/// the same batch as its end already shows it.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub attempt: u32,
    pub failure: &'a Failure,
    pub at: Millis,
}

/// Why an escalation cannot be settled as asked.
#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    #[error("escalation #{0} does not exist: `tollgate escalations list` shows the open ones")]
    NotFound(i64),
    #[error("escalation #{id} was already resolved ({resolution}); nothing to do")]
    AlreadyResolved { id: i64, resolution: String },
    #[error(
        "escalation #{id} is an approval request: answer it with `tollgate approve {id}` or `tollgate reject {id}`"
    )]
    IsApproval { id: i64 },
    #[error(
        "escalation #{id} is not an approval request ({reason}): settle it with `tollgate escalations resolve {id}`"
    )]
    NotApproval { id: i64, reason: EscalationReason },
    #[error(
        "the outcome must be JSON (what downstream returned, e.g. '{{\"id\":\"INV-1\"}}'): {0}"
    )]
    OutcomeNotJson(String),
    #[error("a resolution needs a reason (`--reason`), which is journaled with it")]
    NoReason,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the decision is recorded, but resuming the run failed: {0}")]
    Resume(Box<crate::runs::RunError>),
}

/// The input as an evidence packet shows it: the run's input when small, else a summary with
/// its size and digest (the whole input stays in the run record, `tollgate runs show`).
const MAX_EVIDENCE_INPUT_BYTES: usize = 16 << 10;
/// A checkpoint's state as an evidence packet shows it.
const MAX_EVIDENCE_CHECKPOINT_BYTES: usize = 16 << 10;
/// An effect's response or error as an evidence packet shows it.
const MAX_EVIDENCE_RESPONSE_BYTES: usize = 1 << 10;
/// The newest effects an evidence packet lists; it counts the ones it leaves out.
const MAX_EVIDENCE_EFFECTS: usize = 50;
/// The newest attempts an evidence packet lists.
const MAX_EVIDENCE_ATTEMPTS: usize = 20;

/// Gathers the evidence for `run_id` from the ledger. The packet is bounded whatever the tool
/// did: large inputs, responses and checkpoints appear as clipped summaries with their size
/// and digest, and only the newest effects and attempts are listed (with how many were left
/// out), since the packet is stored in the ledger and read by a human.
pub fn packet(
    ledger: &dyn Ledger,
    run_id: &str,
    policy: &Policy,
    reason: EscalationReason,
    failure: Option<&Failure>,
    action: Option<Action>,
    ending: Option<Ending<'_>>,
) -> Result<EvidencePacket, LedgerError> {
    let run = ledger
        .run(run_id)?
        .ok_or_else(|| LedgerError::RunNotFound {
            run_id: run_id.to_owned(),
        })?;
    let attempts = ledger.attempts(run_id)?;
    let component_digest = attempts.first().map(|a| a.component_digest.clone());
    let attempts_omitted = attempts.len().saturating_sub(MAX_EVIDENCE_ATTEMPTS);
    let attempts = attempts
        .into_iter()
        .skip(attempts_omitted)
        .map(|a| attempt_evidence(a, ending))
        .collect();
    let effects = ledger.effects_for_run(run_id)?;
    let effects_omitted = effects.len().saturating_sub(MAX_EVIDENCE_EFFECTS);
    let effects = effects
        .into_iter()
        .skip(effects_omitted)
        .map(effect_evidence)
        .collect();
    let last_checkpoint = ledger
        .latest_checkpoint(run_id, None)?
        .map(checkpoint_evidence);
    Ok(EvidencePacket {
        run_id: run.run_id,
        tool: run.tool,
        component_digest,
        input: crate::clip::json_text(&run.input, MAX_EVIDENCE_INPUT_BYTES),
        reason,
        action,
        failure: failure.cloned(),
        attempts,
        attempts_omitted,
        effects,
        effects_omitted,
        last_checkpoint,
        policy: policy.clone(),
    })
}

fn attempt_evidence(a: Attempt, ending: Option<Ending<'_>>) -> AttemptEvidence {
    let mut e = AttemptEvidence {
        attempt: a.attempt,
        status: a.status,
        class: a.error_class,
        error: a.error_message,
        started_at: a.started_at,
        ended_at: a.ended_at,
        duration_ms: a.ended_at.map(|end| end - a.started_at),
        holder: a.holder,
    };
    if let Some(end) = ending.filter(|end| end.attempt == a.attempt) {
        e.status = AttemptStatus::Failed;
        e.class = Some(end.failure.class.as_str().to_owned());
        e.error = Some(end.failure.message.clone());
        e.ended_at = Some(end.at);
        e.duration_ms = Some(end.at - a.started_at);
    }
    e
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn effect_evidence(e: EffectRecord) -> EffectEvidence {
    let clip = |text: String| crate::clip::text(&text, MAX_EVIDENCE_RESPONSE_BYTES);
    EffectEvidence {
        kind: e.kind,
        key: e.key,
        payload_digest: e.payload_digest,
        status: e.status,
        response: e.response.map(clip),
        error_class: e.error_class,
        error_message: e.error_message.map(clip),
        dispatches: e.dispatches,
        first_run_id: e.run_id,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn checkpoint_evidence(c: Checkpoint) -> CheckpointEvidence {
    let state = match std::str::from_utf8(&c.state) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            crate::clip::json_text(text, MAX_EVIDENCE_CHECKPOINT_BYTES)
        }
        _ => {
            let shown = c.state.len().min(MAX_EVIDENCE_CHECKPOINT_BYTES / 2);
            json!({ "hex": hex::encode(c.state.get(..shown).unwrap_or_default()), "bytes": c.state.len() })
        }
    };
    CheckpointEvidence {
        name: c.name,
        attempt: c.attempt,
        seq: c.seq,
        bytes: c.state.len(),
        state,
        created_at: c.created_at,
    }
}

/// The ops that open an escalation for a packet (and journal it); `park` also parks the run.
pub fn open_ops(
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
    ops.push(Op::OpenEscalation(NewEscalation {
        run_id: packet.run_id.clone(),
        reason: packet.reason,
        summary: summary.clone(),
        effect_kind: packet.action.as_ref().map(|a| a.kind.clone()),
        effect_key: packet.action.as_ref().map(|a| a.key.clone()),
        evidence: serde_json::to_value(packet)
            .unwrap_or_else(|e| json!({ "error": e.to_string() })),
        now,
    }));
    ops.push(journal(
        &packet.run_id,
        now,
        "warn",
        "escalation.opened",
        summary,
        json!({ "reason": packet.reason }),
    ));
    ops
}

/// The escalation an `apply` of [`open_ops`] returned.
pub fn opened(applied: &[ledger::Applied]) -> Option<Escalation> {
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
    let esc = ledger
        .escalation(id)?
        .ok_or(EscalationError::NotFound(id))?;
    if esc.status == EscalationStatus::Resolved {
        return Err(EscalationError::AlreadyResolved {
            id,
            resolution: esc.resolution.map_or("?".into(), |r| r.to_string()),
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
    let in_doubt = if esc.reason == EscalationReason::InDoubt {
        in_doubt_effect(ledger.as_ref(), &esc)?
    } else {
        None
    };
    let latest = ledger.attempts(&run_id)?.last().map_or(1, |a| a.attempt);
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
            let run = ledger.run(&run_id)?;
            let open = run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Running || r.status.is_parked());
            if open {
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
    ops.push(journal(
        &run_id,
        now,
        "info",
        "escalation.resolved",
        format!(
            "escalation #{id} resolved as {} by {by}: {reason}",
            decision.resolution()
        ),
        json!({ "id": id, "resolution": decision.resolution(), "by": by, "reason": reason }),
    ));
    ledger::apply(ledger, ops).await?;
    let esc = ledger
        .escalation(id)?
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
        journal(
            run_id,
            now,
            "warn",
            "effect.settled",
            message,
            json!({ "kind": effect.kind, "key": effect.key, "status": status }),
        ),
    ]
}

fn journal(
    run_id: &str,
    now: Millis,
    level: &str,
    event: &str,
    message: String,
    fields: serde_json::Value,
) -> Op {
    Op::Journal(NewJournalEntry {
        run_id: run_id.to_owned(),
        attempt: None,
        at: now,
        level: level.to_owned(),
        event: event.to_owned(),
        message,
        fields,
    })
}
