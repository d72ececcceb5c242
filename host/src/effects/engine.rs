//! The effect engine: the protocol that turns one effect request into at most one downstream
//! action per key, whatever crashed or retried before.
//!
//! Invariant: an effect is dispatched only after its intent (kind, key, payload digest, owning
//! attempt) is durable, and its outcome is durable before the tool sees it. A key whose
//! outcome is unknown is re-sent only to a downstream that honours keys; otherwise it is marked
//! in doubt and the attempt stops.

use super::connector::{Connector, Dispatch};
use super::decision::{Caller, ExistingKey, Redispatch, decide};
use super::dispatch::Unrecorded;
use super::reconcile::Probed;
use crate::clock::{Clock, Millis};
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger;
use crate::retry::BreakerPolicy;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_ledger::{EffectRecord, Ledger, LedgerError, NewJournalEntry, Op};

/// How many times a perform re-reads the ledger after losing a race for a key.
const MAX_RACES: usize = 8;

/// What a tool gets back from a performed effect.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectOutcome {
    pub body: String,
    pub replayed: bool,
    pub dispatches: u32,
}

/// Why a perform did not return an outcome.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// Returned to the tool as a classified `tool-error`; the tool may handle it.
    #[error("{0}")]
    Refused(Failure),
    /// Ends the attempt: the tool must not continue (in-doubt effect, ledger unavailable).
    #[error("{0}")]
    Abort(Failure),
    /// Ends the attempt: the effect went out, and its outcome could not be recorded.
    #[error("{0}")]
    Unrecorded(Box<Unrecorded>),
}

/// One effect request from one attempt.
#[derive(Debug, Clone, Copy)]
pub struct EffectRequest<'a> {
    pub run_id: &'a str,
    pub attempt: u32,
    /// The tool performing it: circuits are counted per tool.
    pub tool: &'a str,
    pub kind: &'a str,
    pub key: &'a str,
    pub payload: &'a str,
    /// The fencing token of the run's business-object lock, if it holds one.
    pub fence: Option<i64>,
}

impl EffectRequest<'_> {
    /// The request as its connector gets it.
    pub(super) fn call(&self) -> Dispatch<'_> {
        Dispatch {
            run_id: self.run_id,
            attempt: self.attempt,
            kind: self.kind,
            key: self.key,
            payload: self.payload,
            fence: self.fence,
        }
    }
}

pub struct EffectEngine {
    pub(super) ledger: Arc<dyn Ledger>,
    pub(super) connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) breaker: BreakerPolicy,
    pub(super) meters: crate::meters::Meters,
}

impl std::fmt::Debug for EffectEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EffectEngine")
            .field("kinds", &self.connectors.keys())
            .finish_non_exhaustive()
    }
}

impl EffectEngine {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            ledger,
            connectors,
            clock,
            breaker: BreakerPolicy::default(),
            meters: crate::meters::Meters::default(),
        }
    }

    /// Counts each recorded dispatch into `meters`.
    pub fn with_meters(mut self, meters: crate::meters::Meters) -> Self {
        self.meters = meters;
        self
    }

    /// Sets the circuit breaker every connector gets.
    pub fn with_breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn connector(&self, kind: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(kind)
    }

    /// The most bytes one dispatch of `kind` can add to the ledger besides its claim: the
    /// connector's response cap, plus room for a failure message. 0 when no connector is
    /// configured (nothing is dispatched then).
    pub fn response_cap(&self, kind: &str) -> u64 {
        self.connectors
            .get(kind)
            .map_or(0, |c| c.max_response_bytes().saturating_add(1024))
    }

    /// Performs one effect under the protocol. The caller has already checked the policy.
    pub async fn perform(&self, req: EffectRequest<'_>) -> Result<EffectOutcome, EffectError> {
        let connector = self.connectors.get(req.kind).cloned().ok_or_else(|| {
            EffectError::Refused(Failure::new(
                FailureClass::Fatal,
                format!(
                    "no connector is configured for effect kind `{}`: add a [connectors.\"{}\"] table to the operator config",
                    req.kind, req.kind
                ),
            ))
        })?;
        let digest = hex::encode(Sha256::digest(req.payload.as_bytes()));
        let caller = Caller {
            run_id: req.run_id,
            attempt: req.attempt,
            payload_digest: &digest,
        };
        // Admission is asked once per perform: a call that is the circuit's trial stays it when
        // it loses a race for the key and tries again.
        let mut admitted = false;
        for _ in 0..MAX_RACES {
            let existing = self
                .ledger
                .effect(req.kind, req.key)
                .map_err(ledger_abort)?;
            let ops = match existing {
                None => vec![
                    Op::ClaimEffect {
                        kind: req.kind.to_owned(),
                        key: req.key.to_owned(),
                        payload_digest: digest.clone(),
                        payload: req.payload.to_owned(),
                        run_id: req.run_id.to_owned(),
                        attempt: req.attempt,
                        now: self.clock.now_ms(),
                    },
                    self.mark_dispatched(req),
                    self.entry(
                        req,
                        Event::EffectIntent {
                            kind: req.kind.to_owned(),
                            key: req.key.to_owned(),
                            payload_digest: digest.clone(),
                            connector: connector.describe(),
                        },
                        "intent recorded; dispatching",
                    ),
                ],
                Some(effect) => {
                    // A holder known to be gone holds nothing, whatever its lease says: its
                    // key is taken over as a resume would, not waited on.
                    let owner = self
                        .owner_of(&effect)
                        .await?
                        .filter(|o| !crate::holder::is_dead_local(&o.holder));
                    let now = self.clock.now_ms();
                    match decide(
                        &effect,
                        owner.as_ref(),
                        caller,
                        now,
                        connector.honours_idempotency_keys(),
                    ) {
                        ExistingKey::Replay => return Ok(self.replay(req, &effect)),
                        ExistingKey::ReturnRecordedFailure(class) => {
                            self.note(
                                req,
                                Event::EffectReplayed {
                                    kind: req.kind.to_owned(),
                                    key: req.key.to_owned(),
                                    first_run_id: effect.run_id.clone(),
                                    class: Some(class),
                                },
                                "returned the recorded failure without dispatch",
                            );
                            return Err(EffectError::Refused(recorded_failure(&effect, class)));
                        }
                        ExistingKey::PayloadConflict => {
                            let failure = Failure::new(
                                FailureClass::Conflict,
                                format!(
                                    "idempotency key `{}` for `{}` was first used by run {} with a different payload; use a new key for a new intent",
                                    req.key, req.kind, effect.run_id
                                ),
                            )
                            .with_details(json!({ "key": req.key, "first_run_id": effect.run_id, "recorded_payload_digest": effect.payload_digest, "payload_digest": digest }));
                            self.note(
                                req,
                                Event::EffectConflict {
                                    kind: req.kind.to_owned(),
                                    key: req.key.to_owned(),
                                    other_run_id: effect.run_id.clone(),
                                },
                                &failure.message,
                            );
                            return Err(EffectError::Refused(failure));
                        }
                        ExistingKey::InFlight {
                            run_id,
                            attempt,
                            lease_until,
                        } => {
                            // Transient, not a conflict: the other attempt finishes or its
                            // lease runs out, and then this run can go on.
                            let retry_after_ms = lease_until.saturating_sub(now).max(0);
                            let failure = Failure::new(
                                FailureClass::Transient,
                                format!(
                                    "idempotency key `{}` for `{}` is in flight in run {run_id} (attempt {attempt}, its lease runs until {}); this run stays resumable: resume it once that run has finished",
                                    req.key,
                                    req.kind,
                                    crate::clock::format_ms(lease_until)
                                ),
                            )
                            .with_details(json!({ "key": req.key, "held_by_run_id": run_id, "held_by_attempt": attempt, "lease_until": lease_until, "retry_after_ms": retry_after_ms }));
                            self.note(
                                req,
                                Event::EffectConflict {
                                    kind: req.kind.to_owned(),
                                    key: req.key.to_owned(),
                                    other_run_id: run_id.clone(),
                                },
                                &failure.message,
                            );
                            return Err(EffectError::Refused(failure));
                        }
                        // A dead attempt's dispatch of unknown outcome, and a downstream that
                        // can say whether it happened: ask it rather than a human (or rather
                        // than re-sending blindly).
                        ExistingKey::MarkInDoubt
                        | ExistingKey::Redispatch {
                            why: Redispatch::UnknownOutcomeKeyHonoured,
                        } if connector.can_reconcile() => {
                            // Asked first: a circuit that refuses the send must not cost a
                            // probe whose answer then goes unused.
                            if !admitted {
                                self.admit(req).await?;
                                admitted = true;
                            }
                            match self
                                .probe_taken_over(req, connector.as_ref(), &effect)
                                .await
                            {
                                Probed::Done(result) => return result,
                                Probed::Raced => continue,
                                Probed::Send(entry) => {
                                    vec![Op::Journal(entry), self.mark_dispatched(req)]
                                }
                            }
                        }
                        ExistingKey::AlreadyInDoubt => {
                            return Err(EffectError::Abort(in_doubt_failure(req, &effect)));
                        }
                        ExistingKey::MarkInDoubt => {
                            let ops = vec![
                                Op::MarkInDoubt {
                                    kind: req.kind.to_owned(),
                                    key: req.key.to_owned(),
                                    run_id: effect.run_id.clone(),
                                    attempt: effect.attempt,
                                    now,
                                },
                                self.entry(req, Event::EffectInDoubt { kind: req.kind.to_owned(), key: req.key.to_owned(), owner_run_id: effect.run_id.clone(), owner_attempt: effect.attempt, status: None }, "outcome unknown and downstream does not honour idempotency keys; not re-sent"),
                            ];
                            match ledger::apply(&self.ledger, ops).await {
                                Ok(_) => {
                                    return Err(EffectError::Abort(in_doubt_failure(req, &effect)));
                                }
                                Err(
                                    LedgerError::OwnershipLost { .. }
                                    | LedgerError::InvalidTransition { .. },
                                ) => continue,
                                Err(e) => return Err(ledger_abort(e)),
                            }
                        }
                        ExistingKey::Redispatch { why } => vec![
                            take_over(req, &effect, now),
                            self.mark_dispatched(req),
                            self.entry(
                                req,
                                Event::EffectRedispatch {
                                    kind: req.kind.to_owned(),
                                    key: req.key.to_owned(),
                                    why: format!("{why:?}"),
                                    previous_run_id: effect.run_id.clone(),
                                    previous_attempt: effect.attempt,
                                    previous_status: effect.status,
                                },
                                "re-sending under the same idempotency key",
                            ),
                        ],
                    }
                }
            };
            if !admitted {
                self.admit(req).await?;
                admitted = true;
            }
            let marked_at = self.clock.now_ms();
            match ledger::apply(&self.ledger, ops).await {
                Ok(_) => return self.dispatch(req, connector.as_ref(), marked_at).await,
                // Another attempt claimed or moved the key between our read and our write.
                Err(LedgerError::OwnershipLost { .. }) => continue,
                Err(e) => return Err(ledger_abort(e)),
            }
        }
        Err(EffectError::Refused(Failure::new(
            FailureClass::Conflict,
            format!(
                "idempotency key `{}` for `{}` is contended by other runs; retry later",
                req.key, req.kind
            ),
        )))
    }

    fn replay(&self, req: EffectRequest<'_>, effect: &EffectRecord) -> EffectOutcome {
        self.note(
            req,
            Event::EffectReplayed {
                kind: req.kind.to_owned(),
                key: req.key.to_owned(),
                first_run_id: effect.run_id.clone(),
                class: None,
            },
            "returned the recorded outcome without dispatch",
        );
        EffectOutcome {
            body: effect.response.clone().unwrap_or_default(),
            replayed: true,
            dispatches: effect.dispatches,
        }
    }

    async fn owner_of(
        &self,
        effect: &EffectRecord,
    ) -> Result<Option<tollgate_ledger::Attempt>, EffectError> {
        let run_id = effect.run_id.clone();
        let attempts = ledger::read(&self.ledger, move |l| l.attempts(&run_id))
            .await
            .map_err(ledger_abort)?;
        Ok(attempts.into_iter().find(|a| a.attempt == effect.attempt))
    }

    pub(super) fn mark_dispatched(&self, req: EffectRequest<'_>) -> Op {
        Op::MarkDispatched {
            kind: req.kind.to_owned(),
            key: req.key.to_owned(),
            run_id: req.run_id.to_owned(),
            attempt: req.attempt,
            now: self.clock.now_ms(),
        }
    }

    pub(super) fn entry(&self, req: EffectRequest<'_>, event: Event, message: &str) -> Op {
        Op::Journal(self.journal_entry(req, event, message))
    }

    /// Journals without waiting for a commit: for paths that change no effect state.
    pub(super) fn note(&self, req: EffectRequest<'_>, event: Event, message: &str) {
        self.ledger.journal(self.journal_entry(req, event, message));
    }

    pub(super) fn journal_entry(
        &self,
        req: EffectRequest<'_>,
        event: Event,
        message: &str,
    ) -> NewJournalEntry {
        tracing::info!(
            run_id = req.run_id,
            attempt = req.attempt,
            kind = req.kind,
            key = req.key,
            event = %event.name(),
            "{message}"
        );
        let at = journal::At {
            run_id: req.run_id,
            attempt: Some(req.attempt),
            at: self.clock.now_ms(),
        };
        journal::entry(at, event, message)
    }
}

fn recorded_failure(effect: &EffectRecord, class: FailureClass) -> Failure {
    Failure::new(
        class,
        format!(
            "{} (recorded for key `{}` by run {}; not re-sent)",
            effect.error_message.as_deref().unwrap_or("effect failed"),
            effect.key,
            effect.run_id
        ),
    )
    .with_details(
        json!({ "key": effect.key, "first_run_id": effect.run_id, "body": effect.response }),
    )
}

pub(super) fn in_doubt_failure(req: EffectRequest<'_>, effect: &EffectRecord) -> Failure {
    Failure::new(
        FailureClass::InDoubt,
        format!(
            "effect `{}` with key `{}` may or may not have happened downstream (dispatched by run {} attempt {}), and its downstream does not honour idempotency keys: check downstream and settle it by hand",
            req.kind, req.key, effect.run_id, effect.attempt
        ),
    )
    .with_details(json!({ "kind": req.kind, "key": req.key, "run_id": effect.run_id, "attempt": effect.attempt, "payload_digest": effect.payload_digest }))
}

/// Moves `effect` to this attempt, if it is still as it was read.
pub(super) fn take_over(req: EffectRequest<'_>, effect: &EffectRecord, now: Millis) -> Op {
    Op::TakeOverEffect {
        kind: req.kind.to_owned(),
        key: req.key.to_owned(),
        expected_run_id: effect.run_id.clone(),
        expected_attempt: effect.attempt,
        expected_status: effect.status,
        run_id: req.run_id.to_owned(),
        attempt: req.attempt,
        now,
    }
}

pub(super) fn ledger_abort(e: LedgerError) -> EffectError {
    EffectError::Abort(Failure::new(
        FailureClass::Fatal,
        format!("ledger unavailable, effect not performed: {e}"),
    ))
}
