//! Approval gates: an effect kind that needs a human's approval is dispatched only once a
//! human approved this very effect (kind, key and payload) of this run.
//!
//! Invariant: an approval covers the payload digest the approver saw, recorded as a column
//! of the escalation; a changed payload under the same key asks again, and a rejection is
//! final for that payload.

use super::{Action, RunRows, open_ops, packet};
use crate::clock::Millis;
use crate::failure::{Failure, FailureClass};
use crate::ledger::{
    self, EffectStatus, Escalation, EscalationFilter, EscalationReason, EscalationStatus, Ledger,
    LedgerError, Resolution, RunStatus,
};
use crate::policy::Policy;
use std::sync::Arc;

/// What the approval gate lets an effect do.
#[derive(Debug)]
pub enum Gate {
    Proceed,
    /// A human rejected this payload: the tool gets the failure.
    Refuse(Failure),
    /// The run now waits for a human (on escalation `escalation`, when it was opened); the
    /// attempt stops here.
    Park {
        failure: Failure,
        escalation: Option<i64>,
    },
}

/// The effect asking to pass the gate.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub run_id: &'a str,
    pub policy: &'a Policy,
    pub kind: &'a str,
    pub key: &'a str,
    /// The exact payload text, and its strict parse.
    pub payload: &'a str,
    pub parsed: &'a serde_json::Value,
}

/// The first time an effect asks, the run is parked as `waiting_approval` with an approval
/// escalation; a resume after the approval passes. A key already in the ledger as succeeded
/// is a replay: nothing is dispatched, so nothing needs approving.
pub async fn approval_gate(ledger: &Arc<dyn Ledger>, asking: Asking<'_>, now: Millis) -> Gate {
    let seen = {
        let (run_id, kind, key) = (
            asking.run_id.to_owned(),
            asking.kind.to_owned(),
            asking.key.to_owned(),
        );
        ledger::read(ledger, move |l| Seen::read(l, &run_id, &kind, &key)).await
    };
    match seen.map(|seen| decide(&seen, asking)) {
        Ok(Some(gate)) => gate,
        Ok(None) => park(ledger, asking, now).await,
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: LedgerError) -> Gate {
    Gate::Park {
        failure: Failure::new(
            FailureClass::Fatal,
            format!("ledger unavailable, approval not checked: {e}"),
        ),
        escalation: None,
    }
}

/// What the ledger says about an effect asking to pass the gate.
struct Seen {
    succeeded: bool,
    /// The run's escalations, oldest first.
    escalations: Vec<Escalation>,
}

impl Seen {
    fn read(ledger: &dyn Ledger, run_id: &str, kind: &str, key: &str) -> Result<Self, LedgerError> {
        Ok(Self {
            succeeded: ledger
                .effect(kind, key)?
                .is_some_and(|e| e.status == EffectStatus::Succeeded),
            escalations: ledger.escalations(&EscalationFilter {
                status: None,
                run_id: Some(run_id.to_owned()),
                limit: usize::MAX,
            })?,
        })
    }
}

/// What earlier decisions say about this effect; `None` when it has not been asked yet (or
/// is still waiting).
fn decide(seen: &Seen, asking: Asking<'_>) -> Option<Gate> {
    let Asking { kind, key, .. } = asking;
    if seen.succeeded {
        return Some(Gate::Proceed);
    }
    let digest = ledger::payload_digest(asking.payload.as_bytes());
    let escalations = &seen.escalations;
    let asked = escalations.iter().rev().find(|e| {
        e.reason == EscalationReason::Approval
            && e.effect_kind.as_deref() == Some(kind)
            && e.effect_key.as_deref() == Some(key)
            && e.payload_digest.as_deref() == Some(digest.as_str())
    });
    asked.and_then(|esc| match (esc.status, esc.resolution) {
        (EscalationStatus::Resolved, Some(Resolution::Approved)) => Some(Gate::Proceed),
        (EscalationStatus::Resolved, _) => Some(Gate::Refuse(Failure::new(
            FailureClass::Permission,
            format!(
                "effect `{kind}` with key `{key}` was rejected by {}: {}",
                esc.resolved_by.as_deref().unwrap_or("a human"),
                esc.resolution_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        ))),
        (EscalationStatus::Open, _) => None,
    })
}

async fn park(ledger: &Arc<dyn Ledger>, asking: Asking<'_>, now: Millis) -> Gate {
    let Asking {
        run_id, kind, key, ..
    } = asking;
    // The payload was parsed strictly before the gate, so what the approver sees is what
    // the downstream gets; the exact text goes along too.
    let action = Action {
        kind: kind.to_owned(),
        key: key.to_owned(),
        payload_digest: ledger::payload_digest(asking.payload.as_bytes()),
        payload: asking.parsed.clone(),
        payload_text: Some(asking.payload.to_owned()),
    };
    let rows = match RunRows::fetch(ledger, run_id).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let packet = packet(
        rows,
        asking.policy,
        EscalationReason::Approval,
        None,
        Some(action),
        None,
    );
    let summary = format!("approve effect `{kind}` with key `{key}` of run {run_id}");
    let ops = open_ops(&packet, summary, Some(RunStatus::WaitingApproval), now);
    let escalation = match ledger::apply(ledger, ops).await {
        Ok(applied) => super::opened(&applied).map(|e| e.id),
        Err(e) => return unavailable(e),
    };
    let shown = escalation.map_or_else(|| "?".to_owned(), |id| id.to_string());
    Gate::Park {
        failure: Failure::new(
            FailureClass::Transient,
            format!(
                "waiting for approval of effect `{kind}` with key `{key}` (escalation #{shown})"
            ),
        )
        .with_details(serde_json::json!({ "escalation_id": escalation, "kind": kind, "key": key })),
        escalation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{Harness, KIND, RUN_ID};
    use tollgate_ledger::LedgerExt;

    const KEY: &str = "act:1";

    fn asking<'a>(
        policy: &'a Policy,
        payload: &'a str,
        parsed: &'a serde_json::Value,
    ) -> Asking<'a> {
        Asking {
            run_id: RUN_ID,
            policy,
            kind: KIND,
            key: KEY,
            payload,
            parsed,
        }
    }

    /// An approval covers the payload the approver saw: if the tool asks with another payload
    /// under the same key when the run resumes, a human is asked again, and the approved
    /// payload still passes.
    #[tokio::test]
    async fn a_payload_changed_between_approval_and_resume_is_asked_again() {
        let h = Harness::new("", 1 << 20);
        let policy = h.ctx.policy.clone();
        let (a, b) = (r#"{"amount":100}"#, r#"{"amount":900}"#);
        let (parsed_a, parsed_b) = (
            serde_json::from_str(a).unwrap(),
            serde_json::from_str(b).unwrap(),
        );
        let Gate::Park {
            escalation: Some(first),
            ..
        } = approval_gate(&h.ledger, asking(&policy, a, &parsed_a), 2_000).await
        else {
            panic!("the first ask parks the run");
        };
        h.ledger
            .resolve_escalation(first, Resolution::Approved, "ok", "alice", 3_000)
            .unwrap();
        h.ledger.reopen_run(RUN_ID, 3_000).unwrap();

        // The resumed tool asks with a different payload under the same key.
        let Gate::Park {
            escalation: Some(second),
            failure,
        } = approval_gate(&h.ledger, asking(&policy, b, &parsed_b), 4_000).await
        else {
            panic!("a changed payload is not covered by the approval");
        };
        assert_ne!(second, first);
        assert!(
            failure.message.contains("waiting for approval"),
            "{failure}"
        );
        let asked = h.ledger.escalation(second).unwrap().unwrap();
        assert_eq!(
            asked.payload_digest.as_deref(),
            Some(ledger::payload_digest(b.as_bytes()).as_str())
        );
        assert_eq!(asked.evidence["action"]["payload"]["amount"], 900);
        assert_eq!(
            h.ledger.run(RUN_ID).unwrap().unwrap().status,
            RunStatus::WaitingApproval
        );
        // What was approved still passes, and a rejection of the new payload refuses it.
        assert!(matches!(
            approval_gate(&h.ledger, asking(&policy, a, &parsed_a), 5_000).await,
            Gate::Proceed
        ));
        h.ledger
            .resolve_escalation(second, Resolution::Rejected, "too much", "bob", 6_000)
            .unwrap();
        let Gate::Refuse(refused) =
            approval_gate(&h.ledger, asking(&policy, b, &parsed_b), 7_000).await
        else {
            panic!("a rejected payload is refused");
        };
        assert_eq!(refused.class, FailureClass::Permission);
        assert!(refused.message.contains("rejected by bob"), "{refused}");
    }
}
