//! The `effects` interface: policy checks and bounds, then the effect protocol.
//! A denial is returned to the tool as a `permission` error and journaled with the rule.

use super::{AttemptAbort, ToolState, journal_denial, to_tool_error};
use crate::bindings::{effects, types};
use crate::effects::{EffectError, EffectRequest};
use crate::failure::{Failure, FailureClass};

const MAX_KEY_BYTES: usize = 512;

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
                    "tool `{}` is not granted effect kind `{kind}`: add it to `effects` under [tools.{}] in the operator config",
                    ctx.tool, ctx.tool
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
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return refuse(Failure::new(
                FailureClass::Validation,
                format!(
                    "idempotency key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
                    key.len()
                ),
            ));
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
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
            return refuse(Failure::new(
                FailureClass::Validation,
                format!("effect payload is not valid JSON: {e}"),
            ));
        }
        self.effects_performed += 1;
        let req = EffectRequest {
            run_id: &ctx.run_id,
            attempt: ctx.attempt,
            kind: &kind,
            key: &key,
            payload: &payload,
        };
        match ctx.effects.perform(req).await {
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
