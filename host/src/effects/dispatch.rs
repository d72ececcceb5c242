//! Steps (c) and (d) of the effect protocol: sending an effect whose intent is durable, and
//! making what came back durable before the tool sees it. An unknown outcome on a downstream
//! that ignores keys is probed (when its connector can) or marked in doubt; an outcome the
//! ledger will not take is reported as sent and unrecorded, never as "not performed".

use super::connector::{Connector, ConnectorError, Reconciled, Response};
use super::engine::{
    EffectEngine, EffectError, EffectOutcome, EffectRequest, in_doubt_failure, ledger_abort,
};
use crate::clock::Millis;
use crate::failure::{Failure, FailureClass};
use crate::journal::Event;
use crate::ledger;
use serde_json::json;
use tollgate_ledger::{EffectStatus, LedgerError, Op};

/// How many times one perform sends an effect whose probe said it did not happen, before it
/// leaves it in doubt: a downstream that times out on every request and never books one is
/// down, and a human should look.
const MAX_PROBED_SENDS: u32 = 3;

/// An effect that was sent downstream but whose outcome the ledger refused to record (disk
/// full, ledger unwritable or busy). Its intent is durable, so a resume recovers it: the
/// caller must hear that it went out, not that nothing happened.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "effect `{kind}` with key `{key}` was sent downstream, but its outcome could not be recorded: {source}"
)]
pub struct Unrecorded {
    pub kind: String,
    pub key: String,
    /// Whether the downstream honours keys, which decides how a resume recovers it.
    pub honours_keys: bool,
    /// Whether its connector can ask downstream whether it happened.
    pub probed: bool,
    pub source: LedgerError,
}

impl Unrecorded {
    /// How the effect gets settled: by the attempt that took it over, or by a resume.
    pub fn recovery(&self, run_id: &str) -> String {
        // Not a ledger that failed: another attempt (a host that found this one's lease
        // lapsed) owns the effect now, and a resume has nothing to recover.
        if let LedgerError::OwnershipLost {
            owner_run_id,
            owner_attempt,
            status,
            ..
        } = &self.source
        {
            let then = if owner_run_id == run_id {
                format!(
                    "`tollgate runs show {run_id}` shows how the run ends, and the same call under the same idempotency key returns its result"
                )
            } else {
                format!("`tollgate runs show {owner_run_id}` shows how that run settles it")
            };
            return format!(
                "this attempt was superseded: attempt {owner_attempt} of run `{owner_run_id}` owns the effect now ({status}) and settles it, and nothing more is sent from here; {then}"
            );
        }
        if self.honours_keys {
            format!(
                "once the ledger is writable again, `tollgate resume {run_id}` sends it again under the same key, and the downstream, which honours keys, answers with its first outcome"
            )
        } else if self.probed {
            format!(
                "once the ledger is writable again, `tollgate resume {run_id}` asks downstream whether it happened (its reconcile lookup) and records it, or sends it again only if downstream does not have it; without an answer, a human decides"
            )
        } else {
            format!(
                "once the ledger is writable again, `tollgate resume {run_id}` marks it in doubt and asks a human to check downstream (`tollgate escalations list`); it is never sent twice"
            )
        }
    }

    /// What the attempt ends with, for the ledger and the tool's caller.
    pub fn failure(&self, run_id: &str) -> Failure {
        Failure::new(
            FailureClass::Transient,
            format!("{self}; {}", self.recovery(run_id)),
        )
        .with_details(self.details())
    }

    /// The effect, said to have gone out unrecorded, for machine-read answers.
    pub fn details(&self) -> serde_json::Value {
        json!({ "kind": self.kind, "key": self.key, "sent": true, "outcome_recorded": false })
    }
}

impl EffectEngine {
    /// Steps (c) and (d): dispatch with the key, then make the outcome durable. An unknown
    /// outcome on a downstream that ignores keys is probed, if the connector can, before it
    /// goes in doubt; a "did not happen" sends it again, at most [`MAX_PROBED_SENDS`] times.
    ///
    /// `marked_at` is when this send was about to be recorded: a send that could not start
    /// soon enough after it is not started at all (see [`Connector::start_within_ms`]).
    pub(super) async fn dispatch(
        &self,
        req: EffectRequest<'_>,
        connector: &dyn Connector,
        mut marked_at: Millis,
    ) -> Result<EffectOutcome, EffectError> {
        let call = req.call();
        let mut sends = 0;
        loop {
            sends += 1;
            let sent_at = self.clock.now_ms();
            if let Some(limit) = connector.start_within_ms() {
                let late = u64::try_from(sent_at.saturating_sub(marked_at)).unwrap_or(0);
                if late > limit {
                    return Err(EffectError::Refused(Failure::new(
                        FailureClass::Transient,
                        format!(
                            "effect `{}` with key `{}` was not sent: it could start only {late} ms after its dispatch was recorded, past the {limit} ms within which a later probe of it is safe (the host or ledger was slow); it stays recorded as dispatched, and the next try asks downstream first",
                            req.kind, req.key
                        ),
                    )));
                }
            }
            let span = tracing::info_span!("connector", kind = req.kind, key = req.key, connector = %connector.describe());
            let sent = std::time::Instant::now();
            let result = tracing::Instrument::instrument(connector.dispatch(call), span).await;
            let now = self.clock.now_ms();
            // Only what the downstream did (or failed to do) says anything about its health: a
            // request that failed inside the host before it was sent leaves the circuit alone.
            let health = match &result {
                Ok(_) => Some(None),
                Err(e) if e.before_send => None,
                Err(e) if e.outcome_unknown => Some(Some(FailureClass::Timeout)),
                Err(e) => Some(Some(e.class)),
            };
            let circuit_op = health.and_then(|class| self.circuit_op(req, class, now));
            let mut ops: Vec<Op> = circuit_op.into_iter().collect();
            let result = match result {
                Err(e) if e.outcome_unknown && !connector.honours_idempotency_keys() => {
                    if !connector.can_reconcile() {
                        let why = format!(
                            "{}; downstream does not honour idempotency keys, so it is not re-sent",
                            e.message
                        );
                        return Err(self
                            .go_in_doubt(req, connector, e.status, &why, None, ops)
                            .await);
                    }
                    let answer = self.probe(req, connector, sent_at).await;
                    ops.push(Op::Journal(self.probed_entry(req, &answer)));
                    match answer {
                        Reconciled::Happened(response) => Ok(response),
                        Reconciled::NotHappened { .. } if sends < MAX_PROBED_SENDS => {
                            // Counted as a new dispatch, durably, before it goes.
                            ops.push(self.mark_dispatched(req));
                            marked_at = self.clock.now_ms();
                            ledger::apply(&self.ledger, ops)
                                .await
                                .map_err(ledger_abort)?;
                            continue;
                        }
                        answer => {
                            let why = match answer {
                                Reconciled::NotHappened { .. } => format!(
                                    "{}; sent {sends} times and each time downstream did not have it: not sent again, since a downstream failing every request this way needs a look",
                                    e.message
                                ),
                                _ => format!(
                                    "{}; downstream does not honour idempotency keys, and its probe did not settle it",
                                    e.message
                                ),
                            };
                            return Err(self
                                .go_in_doubt(req, connector, e.status, &why, Some(&answer), ops)
                                .await);
                        }
                    }
                }
                other => other,
            };
            return self.record(req, connector, result, ops, sent).await;
        }
    }

    /// Records a dispatch's known outcome (with `ops`, e.g. the circuit's count) and returns
    /// it to the tool.
    async fn record(
        &self,
        req: EffectRequest<'_>,
        connector: &dyn Connector,
        result: Result<Response, ConnectorError>,
        mut ops: Vec<Op>,
        sent: std::time::Instant,
    ) -> Result<EffectOutcome, EffectError> {
        let now = self.clock.now_ms();
        let (status, response, failure) = match result {
            Ok(response) => (EffectStatus::Succeeded, Some(response.body), None),
            Err(e) => {
                let mut details = json!({ "kind": req.kind, "key": req.key, "status": e.status, "outcome_unknown": e.outcome_unknown });
                if let Some(body) = &e.body {
                    details["body"] = json!(body);
                }
                if let Some(ms) = e.retry_after_ms {
                    details["retry_after_ms"] = json!(ms);
                }
                (
                    EffectStatus::Failed,
                    e.body.clone(),
                    Some(Failure::new(e.class, e.message.clone()).with_details(details)),
                )
            }
        };
        let (kind, key, class) = (
            req.kind.to_owned(),
            req.key.to_owned(),
            failure.as_ref().map(|f| f.class),
        );
        let (event, message) = match &failure {
            None => (
                Event::EffectSucceeded { kind, key, class },
                "outcome recorded".to_owned(),
            ),
            Some(f) => (Event::EffectFailed { kind, key, class }, f.message.clone()),
        };
        ops.extend([
            Op::RecordOutcome {
                kind: req.kind.to_owned(),
                key: req.key.to_owned(),
                run_id: req.run_id.to_owned(),
                attempt: req.attempt,
                status,
                response: response.clone(),
                error_class: failure.as_ref().map(|f| f.class.as_str().to_owned()),
                error_message: failure.as_ref().map(|f| f.message.clone()),
                now,
            },
            self.entry(req, event, &message),
        ]);
        ledger::apply(&self.ledger, ops)
            .await
            .map_err(|e| unrecorded(req, connector, e))?;
        self.meters
            .effect_ended(req.kind, status.as_str(), Some(sent.elapsed()));
        if let Some(failure) = failure {
            return Err(EffectError::Refused(failure));
        }
        let dispatches = self
            .ledger
            .effect(req.kind, req.key)
            .ok()
            .flatten()
            .map_or(1, |e| e.dispatches);
        Ok(EffectOutcome {
            body: response.unwrap_or_default(),
            replayed: false,
            dispatches,
        })
    }

    /// Marks this attempt's effect in doubt (with `ops`), and the failure that stops the
    /// attempt; a probe's answer goes into its details, and so into the evidence.
    pub(super) async fn go_in_doubt(
        &self,
        req: EffectRequest<'_>,
        connector: &dyn Connector,
        status: Option<u16>,
        why: &str,
        probe: Option<&Reconciled>,
        mut ops: Vec<Op>,
    ) -> EffectError {
        ops.extend([
            Op::MarkInDoubt {
                kind: req.kind.to_owned(),
                key: req.key.to_owned(),
                run_id: req.run_id.to_owned(),
                attempt: req.attempt,
                now: self.clock.now_ms(),
            },
            self.entry(
                req,
                Event::EffectInDoubt {
                    kind: req.kind.to_owned(),
                    key: req.key.to_owned(),
                    owner_run_id: req.run_id.to_owned(),
                    owner_attempt: req.attempt,
                    status,
                },
                why,
            ),
        ]);
        if let Err(e) = ledger::apply(&self.ledger, ops).await {
            return unrecorded(req, connector, e);
        }
        self.meters
            .effect_ended(req.kind, EffectStatus::InDoubt.as_str(), None);
        let (kind, key) = (req.kind.to_owned(), req.key.to_owned());
        let effect = match ledger::read(&self.ledger, move |l| l.effect(&kind, &key)).await {
            Ok(effect) => effect,
            Err(e) => return ledger_abort(e),
        };
        let mut failure = match effect {
            Some(effect) => in_doubt_failure(req, &effect),
            None => Failure::new(FailureClass::InDoubt, why.to_owned()),
        };
        if let (Some(probe), Some(details)) = (probe, failure.details.as_mut()) {
            details["probe"] = probe.evidence();
        }
        EffectError::Abort(failure)
    }
}

/// After a dispatch, a ledger failure means the effect went out unrecorded.
pub(super) fn unrecorded(
    req: EffectRequest<'_>,
    connector: &dyn Connector,
    e: LedgerError,
) -> EffectError {
    EffectError::Unrecorded(Box::new(Unrecorded {
        kind: req.kind.to_owned(),
        key: req.key.to_owned(),
        honours_keys: connector.honours_idempotency_keys(),
        probed: connector.can_reconcile(),
        source: e,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unrecorded(source: LedgerError) -> Unrecorded {
        Unrecorded {
            kind: "erp.post".into(),
            key: "k".into(),
            honours_keys: true,
            probed: false,
            source,
        }
    }

    #[test]
    fn an_outcome_refused_because_another_attempt_took_the_effect_over_says_so_not_resume() {
        let superseded = unrecorded(LedgerError::OwnershipLost {
            kind: "erp.post".into(),
            key: "k".into(),
            run_id: "r".into(),
            attempt: 1,
            owner_run_id: "r".into(),
            owner_attempt: 2,
            status: EffectStatus::Succeeded,
        });
        let text = superseded.failure("r").message;
        assert!(
            text.contains("this attempt was superseded: attempt 2"),
            "{text}"
        );
        assert!(!text.contains("writable again"), "{text}");
        let unwritable = unrecorded(LedgerError::WriterGone).failure("r").message;
        assert!(
            unwritable.contains("once the ledger is writable again"),
            "{unwritable}"
        );
    }
}
