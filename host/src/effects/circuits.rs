//! Circuits per tool and connector: an effect is refused without claiming its key while its
//! circuit is open, and each downstream call's result moves the circuit. Both steps are
//! ledger ops that read and write the circuit in one transaction, because every host on the
//! ledger shares it: concurrent failures all count, and a half-open circuit lets one trial
//! call through at a time.

use super::engine::{EffectEngine, EffectError, EffectRequest, ledger_abort};
use crate::clock::Millis;
use crate::failure::{Failure, FailureClass};
use crate::journal::Event;
use crate::ledger;
use serde_json::json;
use tollgate_ledger::{Admission, Applied, BreakerState, LedgerError, Op};

impl EffectEngine {
    /// Fails fast, without claiming the key, while the connector's circuit is open or a
    /// trial call holds it half-open. Past the cool-down this call becomes the trial.
    pub(super) async fn admit(&self, req: EffectRequest<'_>) -> Result<(), EffectError> {
        let rule = self.breaker.rule();
        // Most calls meet a closed circuit: a read settles those without a write.
        let (kind, tool) = (req.kind.to_owned(), req.tool.to_owned());
        let current = ledger::read(&self.ledger, move |l| l.breaker(&kind, &tool))
            .await
            .map_err(ledger_abort)?;
        if rule.failures == 0 || current.is_none_or(|c| c.state == BreakerState::Closed) {
            return Ok(());
        }
        let op = Op::ProbeBreaker {
            connector: req.kind.to_owned(),
            tool: req.tool.to_owned(),
            rule,
            now: self.clock.now_ms(),
        };
        let applied = ledger::apply(&self.ledger, vec![op])
            .await
            .map_err(ledger_abort)?;
        let admission = match applied.into_iter().next() {
            Some(Applied::Admission(admission)) => admission,
            other => {
                return Err(ledger_abort(LedgerError::Internal(format!(
                    "ProbeBreaker returned {other:?}"
                ))));
            }
        };
        let Admission::Refused {
            state,
            consecutive_failures,
            until,
        } = admission
        else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let wait = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
        let why = match state {
            BreakerState::HalfOpen => format!(
                "circuit for `{}` is half-open and its one trial call is in flight",
                req.kind
            ),
            _ => format!(
                "circuit for `{}` is open after {consecutive_failures} consecutive failures",
                req.kind
            ),
        };
        let failure = Failure::new(
            FailureClass::Transient,
            format!("{why}: not calling downstream for another {wait} ms"),
        )
        .with_details(json!({ "kind": req.kind, "circuit": state.as_str(), "open_until": until, "retry_after_ms": wait }));
        self.note(
            req,
            Event::EffectCircuitOpen {
                kind: req.kind.to_owned(),
                open_until: until,
            },
            &failure.message,
        );
        Err(EffectError::Refused(failure))
    }

    /// The op counting one ended call on the circuit, if the call's result says anything
    /// about downstream's health: a success, or a transient failure or timeout. Anything
    /// else (a rejection, say) leaves the circuit alone.
    pub(super) fn circuit_op(
        &self,
        req: EffectRequest<'_>,
        class: Option<FailureClass>,
        now: Millis,
    ) -> Option<Op> {
        let failed = match class {
            None => false,
            Some(FailureClass::Transient | FailureClass::Timeout) => true,
            Some(_) => return None,
        };
        Some(Op::CountBreakerCall {
            connector: req.kind.to_owned(),
            tool: req.tool.to_owned(),
            failed,
            rule: self.breaker.rule(),
            now,
        })
    }
}
