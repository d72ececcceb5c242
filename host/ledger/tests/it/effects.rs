use tollgate_ledger::{
    AttemptStatus, Claim, EffectStatus, Ledger, LedgerError, LedgerExt, Op, payload_digest,
};

use crate::{T0, ledger, running};

const KIND: &str = "http";
const KEY: &str = "order-42";
const PAYLOAD: &str = r#"{"amount":10}"#;

fn claim(ledger: &(impl Ledger + ?Sized), run_id: &str, attempt: u32, now: i64) -> Claim {
    ledger
        .claim_effect(
            KIND,
            KEY,
            &payload_digest(PAYLOAD.as_bytes()),
            PAYLOAD,
            run_id,
            attempt,
            now,
        )
        .unwrap()
}

#[test]
fn first_claim_is_fresh_and_pending_with_no_dispatches() {
    let ledger = ledger();
    running(&*ledger, "r1");
    assert_eq!(claim(&*ledger, "r1", 1, T0 + 1), Claim::Fresh);
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!(effect.status, EffectStatus::Pending);
    assert_eq!((effect.run_id.as_str(), effect.attempt), ("r1", 1));
    assert_eq!(effect.dispatches, 0);
    assert_eq!(effect.payload, PAYLOAD);
    assert_eq!(effect.payload_digest, payload_digest(PAYLOAD.as_bytes()));
    assert_eq!((effect.created_at, effect.updated_at), (T0 + 1, T0 + 1));
}

#[test]
fn second_claim_returns_the_existing_record_with_its_owner_attempt() {
    let ledger = ledger();
    let owner = running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0 + 1);
    running(&*ledger, "r2");
    // Key scope is (kind, key): another run sees the same record.
    match claim(&*ledger, "r2", 1, T0 + 2) {
        Claim::Existing { effect, owner: got } => {
            assert_eq!(effect.run_id, "r1");
            assert_eq!(effect.status, EffectStatus::Pending);
            assert_eq!(got, Some(owner));
        }
        Claim::Fresh => panic!("second claim must not be fresh"),
    }
    // A different kind with the same key is a different effect.
    let fresh = ledger
        .claim_effect("file", KEY, "d", "{}", "r2", 1, T0 + 3)
        .unwrap();
    assert_eq!(fresh, Claim::Fresh);
}

#[test]
fn claim_of_an_effect_whose_owner_attempt_is_missing_reports_no_owner() {
    let ledger = ledger();
    // No run or attempt rows at all: the effect still records, its owner is unknown.
    let fresh = ledger
        .claim_effect(KIND, KEY, "d", PAYLOAD, "orphan", 3, T0)
        .unwrap();
    assert_eq!(fresh, Claim::Fresh);
    match ledger
        .claim_effect(KIND, KEY, "d", PAYLOAD, "orphan", 3, T0)
        .unwrap()
    {
        Claim::Existing { owner, .. } => assert_eq!(owner, None),
        Claim::Fresh => panic!("second claim must not be fresh"),
    }
}

#[test]
fn replay_after_success_sees_the_recorded_response() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger
        .apply(vec![
            Op::ClaimEffect {
                kind: KIND.into(),
                key: KEY.into(),
                payload_digest: "d".into(),
                payload: PAYLOAD.into(),
                run_id: "r1".into(),
                attempt: 1,
                now: T0,
            },
            Op::MarkDispatched {
                kind: KIND.into(),
                key: KEY.into(),
                run_id: "r1".into(),
                attempt: 1,
                now: T0,
            },
        ])
        .unwrap();
    ledger
        .record_outcome(
            KIND,
            KEY,
            "r1",
            1,
            EffectStatus::Succeeded,
            Some("200 OK"),
            None,
            None,
            T0 + 5,
        )
        .unwrap();
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!(effect.status, EffectStatus::Succeeded);
    assert_eq!(effect.response.as_deref(), Some("200 OK"));
    assert_eq!(effect.dispatches, 1);
    assert_eq!(effect.updated_at, T0 + 5);
    match claim(&*ledger, "r1", 1, T0 + 6) {
        Claim::Existing { effect, .. } => assert_eq!(effect.response.as_deref(), Some("200 OK")),
        Claim::Fresh => panic!("replay must see the existing record"),
    }
}

#[test]
fn mark_dispatched_counts_every_dispatch() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    for i in 0..3 {
        ledger.mark_dispatched(KIND, KEY, "r1", 1, T0 + i).unwrap();
    }
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!(effect.dispatches, 3);
    assert_eq!(effect.updated_at, T0 + 2);
}

#[test]
fn mark_dispatched_by_a_non_owner_is_ownership_lost() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    let err = ledger.mark_dispatched(KIND, KEY, "r1", 2, T0).unwrap_err();
    assert!(
        matches!(
            &err,
            LedgerError::OwnershipLost {
                owner_attempt: 1,
                attempt: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(ledger.effect(KIND, KEY).unwrap().unwrap().dispatches, 0);
}

#[test]
fn record_outcome_by_a_non_owner_is_ownership_lost() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    let err = ledger
        .record_outcome(
            KIND,
            KEY,
            "r2",
            1,
            EffectStatus::Succeeded,
            Some("x"),
            None,
            None,
            T0,
        )
        .unwrap_err();
    match err {
        LedgerError::OwnershipLost {
            kind,
            key,
            run_id,
            owner_run_id,
            status,
            ..
        } => {
            assert_eq!((kind.as_str(), key.as_str()), (KIND, KEY));
            assert_eq!((run_id.as_str(), owner_run_id.as_str()), ("r2", "r1"));
            assert_eq!(status, EffectStatus::Pending);
        }
        other => panic!("expected OwnershipLost, got {other:?}"),
    }
    assert_eq!(ledger.effect(KIND, KEY).unwrap().unwrap().response, None);
}

#[test]
fn record_outcome_twice_is_ownership_lost_and_keeps_the_first() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    ledger
        .record_outcome(
            KIND,
            KEY,
            "r1",
            1,
            EffectStatus::Failed,
            None,
            Some("permanent"),
            Some("400"),
            T0,
        )
        .unwrap();
    let err = ledger
        .record_outcome(
            KIND,
            KEY,
            "r1",
            1,
            EffectStatus::Succeeded,
            Some("ok"),
            None,
            None,
            T0,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        LedgerError::OwnershipLost {
            status: EffectStatus::Failed,
            ..
        }
    ));
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!(effect.status, EffectStatus::Failed);
    assert_eq!(effect.error_message.as_deref(), Some("400"));
}

#[test]
fn record_outcome_only_accepts_succeeded_or_failed() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    let err = ledger
        .record_outcome(
            KIND,
            KEY,
            "r1",
            1,
            EffectStatus::Pending,
            None,
            None,
            None,
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
}

#[test]
fn outcome_for_an_unclaimed_key_is_effect_not_found() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let err = ledger
        .record_outcome(
            KIND,
            "never",
            "r1",
            1,
            EffectStatus::Succeeded,
            None,
            None,
            None,
            T0,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::EffectNotFound { key, .. } if key == "never"));
}

#[test]
fn mark_in_doubt_moves_pending_only() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    let err = ledger.mark_in_doubt(KIND, KEY, "r9", 1, T0).unwrap_err();
    assert!(matches!(err, LedgerError::OwnershipLost { .. }), "{err:?}");
    ledger.mark_in_doubt(KIND, KEY, "r1", 1, T0 + 1).unwrap();
    assert_eq!(
        ledger.effect(KIND, KEY).unwrap().unwrap().status,
        EffectStatus::InDoubt
    );
    let err = ledger
        .mark_in_doubt(KIND, KEY, "r1", 1, T0 + 2)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::InvalidTransition { from, to, .. } if from == "in_doubt" && to == "in_doubt"),
        "{err:?}"
    );
}

#[test]
fn take_over_succeeds_once_then_fails_for_a_stale_expectation() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    ledger
        .end_attempt("r1", 1, AttemptStatus::Crashed, None, None, T0 + 1)
        .unwrap();
    ledger
        .begin_attempt("r1", "d", "h2", T0 + 60_000, false, T0 + 2)
        .unwrap();
    let take = |run_id: &str, attempt: u32| {
        ledger
            .take_over_effect(
                KIND,
                KEY,
                "r1",
                1,
                EffectStatus::Pending,
                run_id,
                attempt,
                T0 + 3,
            )
            .unwrap()
    };
    assert!(take("r1", 2));
    // Same (now stale) expectation from a competing attempt loses.
    assert!(!take("r1", 3));
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!((effect.attempt, effect.status), (2, EffectStatus::Pending));
    assert_eq!(effect.updated_at, T0 + 3);
    // The old owner has lost it.
    let err = ledger
        .mark_dispatched(KIND, KEY, "r1", 1, T0 + 4)
        .unwrap_err();
    assert!(matches!(err, LedgerError::OwnershipLost { .. }), "{err:?}");
    ledger.mark_dispatched(KIND, KEY, "r1", 2, T0 + 4).unwrap();
}

#[test]
fn take_over_of_a_failed_effect_resets_it_to_pending() {
    let ledger = ledger();
    running(&*ledger, "r1");
    claim(&*ledger, "r1", 1, T0);
    ledger
        .record_outcome(
            KIND,
            KEY,
            "r1",
            1,
            EffectStatus::Failed,
            None,
            Some("transient"),
            Some("503"),
            T0,
        )
        .unwrap();
    let took = ledger
        .take_over_effect(KIND, KEY, "r1", 1, EffectStatus::Failed, "r1", 1, T0 + 1)
        .unwrap();
    assert!(took);
    let effect = ledger.effect(KIND, KEY).unwrap().unwrap();
    assert_eq!(effect.status, EffectStatus::Pending);
    assert_eq!((effect.error_class, effect.error_message), (None, None));
    // Expecting the wrong status, or a key nobody claimed, takes nothing.
    assert!(
        !ledger
            .take_over_effect(KIND, KEY, "r1", 1, EffectStatus::Failed, "r1", 1, T0 + 2)
            .unwrap()
    );
    assert!(
        !ledger
            .take_over_effect(
                KIND,
                "nope",
                "r1",
                1,
                EffectStatus::Pending,
                "r1",
                1,
                T0 + 2
            )
            .unwrap()
    );
}

#[test]
fn effects_for_run_lists_owned_effects_in_creation_order() {
    let ledger = ledger();
    running(&*ledger, "r1");
    running(&*ledger, "r2");
    for key in ["z", "a", "m"] {
        ledger
            .claim_effect(KIND, key, "d", "{}", "r1", 1, T0)
            .unwrap();
    }
    ledger
        .claim_effect(KIND, "other", "d", "{}", "r2", 1, T0)
        .unwrap();
    let keys: Vec<String> = ledger
        .effects_for_run("r1")
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["z", "a", "m"]);
}
