//! The `effects` interface: policy checks and bounds, then the effect protocol.
//! A denial is returned to the tool as a `permission` error and journaled with the rule.

use super::{AttemptAbort, AttemptContext, ToolState, journal_denial, to_tool_error};
use crate::bindings::{effects, types};
use crate::effects::{EffectError, EffectRequest, intent};
use crate::failure::{Failure, FailureClass};

/// What an effect's journal entries cost against the storage budget, on top of its claim:
/// up to four rows (intent, outcome, a replay or redispatch note), each quoting the key and
/// a few host-chosen fields (the connector, a digest, a class).
fn effect_events_cost(key: &str) -> u64 {
    4 * (tollgate_ledger::stored::ROW_COST + 512 + u64::try_from(key.len()).unwrap_or(u64::MAX))
}

impl effects::Host for ToolState {
    async fn perform(
        &mut self,
        kind: String,
        key: String,
        payload: String,
    ) -> wasmtime::Result<Result<effects::Outcome, types::ToolError>> {
        let Some(ctx) = self.attempt.clone() else {
            return Ok(Err(to_tool_error(&Failure::new(
                FailureClass::Permission,
                "effects need a recorded run: start one with `run` (not while the host describes the tool or in an unrecorded call)",
            ))));
        };
        let refuse = |failure: Failure| Ok(Err(to_tool_error(&failure)));
        if !ctx.policy.allows_effect(&kind) {
            let failure = Failure::new(
                FailureClass::Permission,
                format!(
                    "tool `{}` is not granted effect kind `{}`: add it to `effects` under [tools.{}] in the operator config",
                    ctx.tool,
                    crate::clip::text(&kind, crate::clip::MAX_ASKED_BYTES),
                    ctx.tool
                ),
            );
            journal_denial(
                &ctx,
                &format!("effect {kind}"),
                &format!("tools.{}.effects", ctx.tool),
                &failure,
            );
            return refuse(failure);
        }
        let limits = &ctx.policy.limits;
        if self.effects_performed >= limits.max_effects_per_run {
            let failure = Failure::new(
                FailureClass::Permission,
                format!(
                    "tool `{}` reached its cap of {} effects per run",
                    ctx.tool, limits.max_effects_per_run
                ),
            );
            journal_denial(
                &ctx,
                &format!("effect {kind}"),
                &format!("tools.{}.limits.max_effects_per_run", ctx.tool),
                &failure,
            );
            return refuse(failure);
        }
        // Checked before anything is claimed: a key no connector can carry never becomes a
        // pending effect, so it can neither be taken for "outcome unknown" nor count against
        // a circuit breaker.
        if let Err(failure) = intent::check_key(&key) {
            return refuse(failure);
        }
        if u64::try_from(payload.len()).unwrap_or(u64::MAX) > limits.max_payload_bytes {
            let failure = Failure::new(
                FailureClass::Permission,
                format!(
                    "effect payload is {} bytes, over the cap of {}",
                    payload.len(),
                    limits.max_payload_bytes
                ),
            );
            journal_denial(
                &ctx,
                &format!("effect {kind} ({} bytes)", payload.len()),
                &format!("tools.{}.limits.max_payload_bytes", ctx.tool),
                &failure,
            );
            return refuse(failure);
        }
        let parsed = match intent::parse_payload(&payload) {
            Ok(parsed) => parsed,
            Err(failure) => return refuse(failure),
        };
        // Reserved before dispatch, since an outcome is recorded whatever its size once the
        // effect went out: the claim, its journal entries and the largest response the
        // connector records. What the outcome did not use is given back.
        let claim = tollgate_ledger::stored::effect_claim(&kind, &key, &payload);
        let response_cap = ctx.effects.response_cap(&kind);
        let cost = claim
            .saturating_add(effect_events_cost(&key))
            .saturating_add(response_cap);
        if ctx.budget.charge(cost).is_err() {
            ctx.note_budget_spent();
            return refuse(Failure::new(
                FailureClass::Permission,
                format!(
                    "tool `{}` used the {} bytes of ledger storage its run may cause (limits.max_stored_bytes): effect `{kind}` not performed",
                    ctx.tool,
                    ctx.budget.limit()
                ),
            ));
        }
        if ctx.policy.needs_approval(&kind) {
            match approval_gate(&ctx, &kind, &key, &payload, parsed).await {
                Gate::Proceed => {}
                Gate::Refuse(failure) => return refuse(failure),
                Gate::Park(failure) => return Err(wasmtime::Error::new(AttemptAbort(failure))),
            }
        }
        self.effects_performed += 1;
        let req = EffectRequest {
            run_id: &ctx.run_id,
            attempt: ctx.attempt,
            tool: &ctx.tool,
            kind: &kind,
            key: &key,
            payload: &payload,
            fence: ctx.fence,
        };
        let performed = ctx.effects.perform(req).await;
        match &performed {
            // A replay stored nothing but its journal note.
            Ok(outcome) if outcome.replayed => {
                ctx.budget.refund(claim.saturating_add(response_cap))
            }
            Ok(outcome) => ctx.budget.refund(
                response_cap.saturating_sub(u64::try_from(outcome.body.len()).unwrap_or(u64::MAX)),
            ),
            Err(_) => {}
        }
        match performed {
            Ok(outcome) => Ok(Ok(effects::Outcome {
                body: outcome.body,
                replayed: outcome.replayed,
                dispatches: outcome.dispatches,
            })),
            Err(EffectError::Refused(failure)) => refuse(failure),
            Err(EffectError::Abort(failure)) => Err(wasmtime::Error::new(AttemptAbort(failure))),
        }
    }
}

/// What the approval gate lets an effect do.
enum Gate {
    Proceed,
    Refuse(Failure),
    /// The run now waits for a human; the attempt stops here.
    Park(Failure),
}

/// An effect kind that needs approval is dispatched only once a human approved this very
/// effect (kind and key) of this run. The first time it is asked for, the run is parked as
/// `waiting_approval` with an approval escalation; a resume after `tollgate approve` passes.
/// A key already in the ledger was approved before (or is a replay) and passes too.
async fn approval_gate(
    ctx: &AttemptContext,
    kind: &str,
    key: &str,
    payload: &str,
    parsed: serde_json::Value,
) -> Gate {
    use crate::escalation::{self, Action};
    use crate::ledger::{
        EscalationFilter, EscalationReason, EscalationStatus, Resolution, RunStatus,
    };
    let abort = |e: crate::ledger::LedgerError| {
        Gate::Park(Failure::new(
            FailureClass::Fatal,
            format!("ledger unavailable, approval not checked: {e}"),
        ))
    };
    // A succeeded key is a replay: nothing is dispatched, so nothing needs approving.
    match ctx.ledger.effect(kind, key) {
        Ok(Some(e)) if e.status == crate::ledger::EffectStatus::Succeeded => return Gate::Proceed,
        Ok(_) => {}
        Err(e) => return abort(e),
    }
    let digest = crate::ledger::payload_digest(payload.as_bytes());
    let filter = EscalationFilter {
        status: None,
        run_id: Some(ctx.run_id.clone()),
        limit: usize::MAX,
    };
    let escalations = match ctx.ledger.escalations(&filter) {
        Ok(list) => list,
        Err(e) => return abort(e),
    };
    // An approval covers the payload the approver saw, not just the key: a changed payload
    // under the same key asks again.
    let asked = escalations.iter().rev().find(|e| {
        e.reason == EscalationReason::Approval
            && e.effect_kind.as_deref() == Some(kind)
            && e.effect_key.as_deref() == Some(key)
            && e.evidence["action"]["payload_digest"].as_str() == Some(digest.as_str())
    });
    if let Some(esc) = asked {
        match (esc.status, esc.resolution) {
            (EscalationStatus::Resolved, Some(Resolution::Approved)) => return Gate::Proceed,
            (EscalationStatus::Resolved, _) => {
                return Gate::Refuse(Failure::new(
                    FailureClass::Permission,
                    format!(
                        "effect `{kind}` with key `{key}` was rejected by {}: {}",
                        esc.resolved_by.as_deref().unwrap_or("a human"),
                        esc.resolution_reason
                            .as_deref()
                            .unwrap_or("no reason given")
                    ),
                ));
            }
            (EscalationStatus::Open, _) => {}
        }
    }
    // The payload was parsed strictly before the gate, so what the approver sees is what
    // the downstream gets; the exact text goes along too.
    let action = Action {
        kind: kind.to_owned(),
        key: key.to_owned(),
        payload_digest: digest,
        payload: parsed,
        payload_text: Some(payload.to_owned()),
    };
    let packet = match escalation::packet(
        ctx.ledger.as_ref(),
        &ctx.run_id,
        &ctx.policy,
        EscalationReason::Approval,
        None,
        Some(action),
        None,
    ) {
        Ok(p) => p,
        Err(e) => return abort(e),
    };
    let now = ctx.clock.now_ms();
    let summary = format!(
        "approve effect `{kind}` with key `{key}` of run {}",
        ctx.run_id
    );
    let ops = escalation::open_ops(&packet, summary, Some(RunStatus::WaitingApproval), now);
    let id = match crate::ledger::apply(&ctx.ledger, ops).await {
        Ok(applied) => escalation::opened(&applied).map(|e| e.id),
        Err(e) => return abort(e),
    };
    if let Ok(mut parked) = ctx.parked.lock() {
        *parked = id;
    }
    let id = id.map_or_else(|| "?".to_owned(), |id| id.to_string());
    Gate::Park(Failure::new(
        FailureClass::Transient,
        format!(
            "waiting for approval of effect `{kind}` with key `{key}` (escalation #{id}): `tollgate approve {id}` or `tollgate reject {id}`"
        ),
    ))
}
