//! Reconcile probes: an effect whose outcome is unknown, on a connector that can ask its
//! downstream "did this happen?", is settled by the answer instead of by a human. It happened:
//! downstream's record becomes the outcome. It did not: it is sent again under its key. No
//! answer: it goes in doubt as without a probe, with the probe's answer in the evidence.
//!
//! Invariant: downstream is asked only once no request of the last dispatch can still land
//! (the connector's timeout plus a margin after it began, a send starting within half the
//! margin of being recorded or not at all), so a "not found" cannot be followed by a late
//! arrival, as long as downstream acts on a request within that time of receiving it; and the prober owns the effect while it asks, so one process
//! at a time probes and a crash mid-probe leaves the effect to the next resume.

use super::connector::{Connector, Reconciled};
use super::engine::{EffectEngine, EffectError, EffectOutcome, EffectRequest, ledger_abort};
use crate::clock::Millis;
use crate::journal::Event;
use crate::ledger;
use std::time::Duration;
use tollgate_ledger::{Applied, EffectRecord, EffectStatus, NewJournalEntry, Op};

/// What a probe of an effect taken over from a dead attempt leaves the perform to do.
pub(super) enum Probed {
    /// Settled: the tool gets this outcome.
    Done(Result<EffectOutcome, EffectError>),
    /// Send it again (the effect is owned by this attempt, `Pending`), journaling the
    /// probe's answer with the send.
    Send(NewJournalEntry),
    /// Another attempt moved the effect first: read it again.
    Raced,
}

impl EffectEngine {
    /// Asks downstream whether the effect last dispatched at `sent_at` happened, once a
    /// request of that dispatch can no longer land.
    pub(super) async fn probe(
        &self,
        req: EffectRequest<'_>,
        connector: &dyn Connector,
        sent_at: Millis,
    ) -> Reconciled {
        let ready =
            sent_at.saturating_add(i64::try_from(connector.lands_within_ms()).unwrap_or(i64::MAX));
        let wait = u64::try_from(ready.saturating_sub(self.clock.now_ms())).unwrap_or(0);
        if wait > 0 {
            tracing::info!(
                run_id = req.run_id,
                kind = req.kind,
                key = req.key,
                wait_ms = wait,
                "waiting until the dispatch can no longer land before probing"
            );
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        connector.reconcile(req.call()).await
    }

    /// The journal entry of a probe's answer.
    pub(super) fn probed_entry(
        &self,
        req: EffectRequest<'_>,
        answer: &Reconciled,
    ) -> NewJournalEntry {
        let message = match answer {
            Reconciled::Happened(_) => {
                "probe: downstream has it; its record becomes the outcome, nothing is re-sent"
                    .to_owned()
            }
            Reconciled::NotHappened { .. } => {
                "probe: downstream does not have it; re-sending under the same key".to_owned()
            }
            Reconciled::Unknown { message, .. } => {
                format!("probe: no answer ({message}); the effect goes in doubt")
            }
        };
        self.journal_entry(
            req,
            Event::EffectProbed {
                kind: req.kind.to_owned(),
                key: req.key.to_owned(),
                answer: answer.answer(),
                status: answer.status(),
            },
            &message,
        )
    }

    /// Settles an effect a dead attempt left dispatched with its outcome unknown: takes it
    /// over, asks downstream, and records what that says.
    pub(super) async fn probe_taken_over(
        &self,
        req: EffectRequest<'_>,
        connector: &dyn Connector,
        effect: &EffectRecord,
    ) -> Probed {
        let take_over = super::engine::take_over(req, effect, self.clock.now_ms());
        match ledger::apply(&self.ledger, vec![take_over]).await {
            Ok(applied) if matches!(applied.first(), Some(Applied::TookOver(true))) => {}
            Ok(_) => return Probed::Raced,
            Err(e) => return Probed::Done(Err(ledger_abort(e))),
        }
        // Counted from now, on this host's clock: whoever recorded the last dispatch started
        // it within `start_within_ms` of recording it, so before this take-over plus that
        // (the stored times may come from another host's clock).
        let answer = self.probe(req, connector, self.clock.now_ms()).await;
        let entry = self.probed_entry(req, &answer);
        let now = self.clock.now_ms();
        match answer {
            Reconciled::Happened(response) => {
                let ops = vec![
                    Op::RecordOutcome {
                        kind: req.kind.to_owned(),
                        key: req.key.to_owned(),
                        run_id: req.run_id.to_owned(),
                        attempt: req.attempt,
                        status: EffectStatus::Succeeded,
                        response: Some(response.body.clone()),
                        error_class: None,
                        error_message: None,
                        now,
                    },
                    Op::Journal(entry),
                ];
                Probed::Done(match ledger::apply(&self.ledger, ops).await {
                    Ok(_) => Ok(EffectOutcome {
                        body: response.body,
                        replayed: true,
                        dispatches: effect.dispatches,
                    }),
                    // Downstream has it, and the ledger cannot say so yet.
                    Err(e) => Err(super::dispatch::unrecorded(req, connector, e)),
                })
            }
            Reconciled::NotHappened { .. } => Probed::Send(entry),
            // A downstream that honours keys can take it again whatever the answer.
            Reconciled::Unknown { .. } if connector.honours_idempotency_keys() => {
                Probed::Send(entry)
            }
            unknown @ Reconciled::Unknown { .. } => {
                let why = "outcome unknown, downstream does not honour idempotency keys, and its probe did not settle it; not re-sent";
                Probed::Done(Err(self
                    .go_in_doubt(
                        req,
                        connector,
                        unknown.status(),
                        why,
                        Some(&unknown),
                        vec![Op::Journal(entry)],
                    )
                    .await))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::connector::{Connector, Dispatch};
    use super::super::file::FileConnector;
    use super::*;
    use crate::clock::ManualClock;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tollgate_ledger::{Ledger, LedgerExt, NewRun, SqliteLedger};

    const KIND: &str = "files.export";
    const KEY: &str = "export:1";
    const PAYLOAD: &str = r#"{"rows":3}"#;

    /// A run whose first attempt died after dispatching `KEY` to the file connector (having
    /// written its file, if `landed`), and the engine of its second attempt.
    async fn died_after_dispatch(
        landed: bool,
    ) -> (EffectEngine, Arc<dyn Ledger>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open_in_memory().unwrap());
        let clock = Arc::new(ManualClock::new(1_000));
        ledger
            .create_run(NewRun {
                run_id: "r".into(),
                tool: "export".into(),
                input: "{}".into(),
                now: 1_000,
                component: None,
                lock: None,
            })
            .unwrap();
        ledger
            .begin_attempt("r", "d", "gone", 2_000, false, 1_000)
            .unwrap();
        let digest = tollgate_ledger::payload_digest(PAYLOAD.as_bytes());
        ledger
            .claim_effect(KIND, KEY, &digest, PAYLOAD, "r", 1, 1_000)
            .unwrap();
        ledger.mark_dispatched(KIND, KEY, "r", 1, 1_000).unwrap();
        let connector = FileConnector::open(dir.path()).unwrap();
        if landed {
            let call = Dispatch {
                run_id: "r",
                attempt: 1,
                kind: KIND,
                key: KEY,
                payload: PAYLOAD,
                fence: None,
            };
            connector.dispatch(call).await.unwrap();
        }
        clock.advance(5_000);
        ledger
            .begin_attempt("r", "d", "here", 60_000, false, 6_000)
            .unwrap();
        let connector: Arc<dyn Connector> = Arc::new(connector);
        let engine = EffectEngine::new(
            ledger.clone(),
            BTreeMap::from([(KIND.to_owned(), connector)]),
            clock,
        );
        (engine, ledger, dir)
    }

    fn request() -> EffectRequest<'static> {
        EffectRequest {
            run_id: "r",
            attempt: 2,
            tool: "export",
            kind: KIND,
            key: KEY,
            payload: PAYLOAD,
            fence: None,
        }
    }

    fn probes(ledger: &Arc<dyn Ledger>) -> Vec<serde_json::Value> {
        ledger.apply(Vec::new()).unwrap();
        ledger
            .journal_entries("r")
            .unwrap()
            .into_iter()
            .filter(|e| e.event == "effect.probed")
            .map(|e| e.fields)
            .collect()
    }

    #[tokio::test]
    async fn a_file_the_dead_attempt_wrote_settles_the_effect_without_a_second_write() {
        let (engine, ledger, _dir) = died_after_dispatch(true).await;
        let outcome = engine.perform(request()).await.unwrap();
        assert!(
            outcome.replayed,
            "recorded from the file, not written again"
        );
        assert_eq!(outcome.dispatches, 1);
        let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
        assert_eq!(effect.status, EffectStatus::Succeeded);
        assert_eq!((effect.run_id.as_str(), effect.attempt), ("r", 2));
        let probes = probes(&ledger);
        assert_eq!(probes.len(), 1, "{probes:?}");
        assert_eq!(probes[0]["answer"], "happened");
    }

    #[tokio::test]
    async fn a_missing_file_is_written_under_the_same_key() {
        let (engine, ledger, dir) = died_after_dispatch(false).await;
        let outcome = engine.perform(request()).await.unwrap();
        assert!(!outcome.replayed);
        assert_eq!(outcome.dispatches, 2, "sent again after the probe");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(probes(&ledger)[0]["answer"], "not_happened");
    }
}
