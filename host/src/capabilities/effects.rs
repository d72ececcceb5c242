//! The `effects` interface: policy checks and bounds, then the effect protocol.
//! A denial is returned to the tool as a `permission` error and journaled with the rule.

use super::{AttemptAbort, ToolState, journal_denial, to_tool_error};
use crate::bindings::{effects, types};
use crate::effects::{EffectError, EffectRequest, intent};
use crate::escalation::{self, Gate};
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
            let asking = escalation::Asking {
                run_id: &ctx.run_id,
                policy: &ctx.policy,
                kind: &kind,
                key: &key,
                payload: &payload,
                parsed: &parsed,
            };
            match escalation::approval_gate(&ctx.ledger, asking, ctx.clock.now_ms()).await {
                Gate::Proceed => {}
                Gate::Refuse(failure) => return refuse(failure),
                Gate::Park {
                    failure,
                    escalation,
                } => {
                    if let Ok(mut parked) = ctx.parked.lock() {
                        *parked = escalation;
                    }
                    return Err(wasmtime::Error::new(AttemptAbort(failure)));
                }
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
        let span = tracing::info_span!("effect", kind = %kind, key = %key);
        let performed = tracing::Instrument::instrument(ctx.effects.perform(req), span).await;
        // Remembered by the host, not read back from what the tool returns: the effect an
        // escalation's evidence shows as the one the run stopped on.
        ctx.note_effect_result(&kind, &key, performed.is_ok());
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
            Err(EffectError::Unrecorded(unrecorded)) => {
                let failure = unrecorded.failure(&ctx.run_id);
                if let Ok(mut slot) = ctx.unrecorded.lock() {
                    *slot = Some(unrecorded);
                }
                Err(wasmtime::Error::new(AttemptAbort(failure)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Harness, KIND, RUN_ID};
    use crate::bindings::effects::Host as _;
    use crate::bindings::types::ErrorClass;
    use crate::journal::EventName;
    use tollgate_ledger::EffectStatus;

    const GRANTED: &str = "effects = [\"demo.act\"]\n";

    #[tokio::test]
    async fn an_ungranted_kind_is_denied_without_claiming_the_key() {
        let mut h = Harness::new("", 1 << 20);
        let err = h
            .state
            .perform(KIND.into(), "k-1".into(), "{}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permission);
        assert!(err.message.contains("[tools.demo]"), "{}", err.message);
        assert!(h.ledger.effect(KIND, "k-1").unwrap().is_none());
        assert_eq!(h.count(EventName::PolicyDenied), 1);
    }

    #[tokio::test]
    async fn a_key_is_dispatched_once_and_replayed_after() {
        let mut h = Harness::new(GRANTED, 1 << 20);
        let first = h
            .state
            .perform(KIND.into(), "k-1".into(), "{\"n\":1}".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.replayed, first.dispatches), (false, 1));
        let again = h
            .state
            .perform(KIND.into(), "k-1".into(), "{\"n\":1}".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.replayed, again.dispatches), (true, 1));
        assert_eq!(again.body, first.body);
        let effect = h.ledger.effect(KIND, "k-1").unwrap().unwrap();
        assert_eq!(
            (effect.status, effect.run_id.as_str()),
            (EffectStatus::Succeeded, RUN_ID)
        );
    }

    #[tokio::test]
    async fn a_key_reused_with_another_payload_is_a_conflict() {
        let mut h = Harness::new(GRANTED, 1 << 20);
        h.state
            .perform(KIND.into(), "k-1".into(), "{\"n\":1}".into())
            .await
            .unwrap()
            .unwrap();
        let err = h
            .state
            .perform(KIND.into(), "k-1".into(), "{\"n\":2}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Conflict);
        assert_eq!(h.ledger.effect(KIND, "k-1").unwrap().unwrap().dispatches, 1);
    }

    #[tokio::test]
    async fn the_per_run_cap_and_payload_cap_deny_before_any_claim() {
        let policy =
            format!("{GRANTED}[limits]\nmax_effects_per_run = 1\nmax_payload_bytes = 16\n");
        let mut h = Harness::new(&policy, 1 << 20);
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(32));
        let err = h
            .state
            .perform(KIND.into(), "big".into(), big)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permission);
        h.state
            .perform(KIND.into(), "k-1".into(), "{}".into())
            .await
            .unwrap()
            .unwrap();
        let err = h
            .state
            .perform(KIND.into(), "k-2".into(), "{}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.message.contains("cap of 1 effects"), "{}", err.message);
        assert!(h.ledger.effect(KIND, "big").unwrap().is_none());
        assert!(h.ledger.effect(KIND, "k-2").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_malformed_payload_or_key_is_refused_before_any_claim() {
        let mut h = Harness::new(GRANTED, 1 << 20);
        let err = h
            .state
            .perform(KIND.into(), "k-1".into(), "{\"a\":1,\"a\":2}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Validation);
        let err = h
            .state
            .perform(KIND.into(), String::new(), "{}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Validation);
        assert!(h.ledger.effects_for_run(RUN_ID).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_effect_needing_approval_parks_the_attempt_with_an_open_escalation() {
        let policy = format!("{GRANTED}[approval]\n\"demo.act\" = \"required\"\n");
        let mut h = Harness::new(&policy, 1 << 20);
        let stopped = h
            .state
            .perform(KIND.into(), "k-1".into(), "{}".into())
            .await
            .expect_err("the attempt stops to wait for a human");
        assert!(
            stopped.downcast_ref::<super::AttemptAbort>().is_some(),
            "{stopped:?}"
        );
        let parked = h
            .ctx
            .parked
            .lock()
            .unwrap()
            .expect("the escalation is noted");
        let escalation = h.ledger.escalation(parked).unwrap().unwrap();
        assert_eq!(escalation.run_id, RUN_ID);
        assert!(
            h.ledger.effect(KIND, "k-1").unwrap().is_none(),
            "nothing dispatched"
        );
    }

    #[tokio::test]
    async fn outside_a_run_effects_are_refused() {
        let mut state = Harness::unrecorded(GRANTED);
        let err = state
            .perform(KIND.into(), "k-1".into(), "{}".into())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permission);
    }
}
