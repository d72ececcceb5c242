//! Circuits per tool and connector: an effect is refused without claiming its key while its
//! circuit is open, and each downstream call's result moves the circuit.

use super::engine::{EffectEngine, EffectError, EffectRequest, ledger_abort};
use crate::clock::Millis;
use crate::failure::{Failure, FailureClass};
use crate::journal::Event;
use crate::retry::{Circuit, CircuitState};
use serde_json::json;
use tollgate_ledger::{BreakerRecord, BreakerState, LedgerError, Op};

impl EffectEngine {
    /// `tool`'s circuit on the connector for `kind`, as the ledger (shared by every host) has
    /// it. Circuits are per tool, so one tool's failures never close a connector to others.
    pub fn circuit(&self, kind: &str, tool: &str) -> Result<Circuit, LedgerError> {
        Ok(self
            .ledger
            .breaker(kind, tool)?
            .map(|b| Circuit {
                state: match b.state {
                    BreakerState::Closed => CircuitState::Closed,
                    BreakerState::Open => CircuitState::Open,
                    BreakerState::HalfOpen => CircuitState::HalfOpen,
                },
                consecutive_failures: b.consecutive_failures,
                open_until: b.open_until,
            })
            .unwrap_or_default())
    }

    /// Fails fast, without claiming the key, while the connector's circuit is open.
    pub(super) fn admit(&self, req: EffectRequest<'_>) -> Result<Circuit, EffectError> {
        let circuit = self.circuit(req.kind, req.tool).map_err(ledger_abort)?;
        let now = self.clock.now_ms();
        self.breaker.admit(&circuit, now).map_err(|until| {
            let wait = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
            let failure = Failure::new(
                FailureClass::Transient,
                format!(
                    "circuit for `{}` is open after {} consecutive failures: not calling downstream for another {wait} ms",
                    req.kind, circuit.consecutive_failures
                ),
            )
            .with_details(json!({ "kind": req.kind, "circuit": "open", "open_until": until, "retry_after_ms": wait }));
            self.note(req, Event::EffectCircuitOpen { kind: req.kind.to_owned(), open_until: until }, &failure.message);
            EffectError::Refused(failure)
        })
    }

    /// The op recording the circuit after a call, when the call changed it.
    pub(super) fn circuit_op(
        &self,
        req: EffectRequest<'_>,
        before: &Circuit,
        class: Option<FailureClass>,
        now: Millis,
    ) -> Option<Op> {
        let after = self.breaker.after(before, class, now);
        (after != *before).then(|| {
            Op::SetBreaker(BreakerRecord {
                connector: req.kind.to_owned(),
                tool: req.tool.to_owned(),
                state: match after.state {
                    CircuitState::Closed => BreakerState::Closed,
                    CircuitState::Open => BreakerState::Open,
                    CircuitState::HalfOpen => BreakerState::HalfOpen,
                },
                consecutive_failures: after.consecutive_failures,
                open_until: after.open_until,
                updated_at: now,
            })
        })
    }
}
