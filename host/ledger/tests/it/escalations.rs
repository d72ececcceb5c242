use serde_json::json;
use tollgate_ledger::{
    Escalation, EscalationFilter, EscalationReason, EscalationStatus, LedgerError, LedgerExt,
    NewEscalation, Op, Resolution, RunStatus,
};

use crate::{T0, ledger, new_run, running};

fn new_escalation(run_id: &str, reason: EscalationReason, now: i64) -> NewEscalation {
    NewEscalation {
        run_id: run_id.to_owned(),
        reason,
        summary: format!("{run_id} needs a decision"),
        effect_kind: Some("http".to_owned()),
        effect_key: Some("INV-1".to_owned()),
        payload_digest: None,
        evidence: json!({ "attempts": [1, 2], "error": { "class": "permanent" } }),
        now,
    }
}

fn ids(escalations: Vec<Escalation>) -> Vec<i64> {
    escalations.into_iter().map(|e| e.id).collect()
}

#[test]
fn opened_escalation_reads_back_open_with_its_evidence() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let opened = ledger
        .open_escalation(new_escalation("r1", EscalationReason::InDoubt, T0 + 5))
        .unwrap();
    assert_eq!(opened.run_id, "r1");
    assert_eq!(opened.reason, EscalationReason::InDoubt);
    assert_eq!(opened.status, EscalationStatus::Open);
    assert_eq!(opened.summary, "r1 needs a decision");
    assert_eq!(
        (opened.effect_kind.as_deref(), opened.effect_key.as_deref()),
        (Some("http"), Some("INV-1"))
    );
    assert_eq!(
        opened.evidence,
        json!({ "attempts": [1, 2], "error": { "class": "permanent" } })
    );
    assert_eq!(opened.created_at, T0 + 5);
    assert_eq!(
        (
            opened.resolution,
            opened.resolved_at,
            opened.resolved_by.clone()
        ),
        (None, None, None)
    );
    assert_eq!(ledger.escalation(opened.id).unwrap(), Some(opened));
    assert_eq!(ledger.escalation(9_999).unwrap(), None);
}

#[test]
fn a_second_open_for_the_same_run_returns_the_first_unchanged() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let first = ledger
        .open_escalation(new_escalation("r1", EscalationReason::InDoubt, T0))
        .unwrap();
    let second = ledger
        .open_escalation(NewEscalation {
            summary: "something else".into(),
            ..new_escalation("r1", EscalationReason::Approval, T0 + 1)
        })
        .unwrap();
    assert_eq!(second, first);
    let all = ledger.escalations(&EscalationFilter::default()).unwrap();
    assert_eq!(all, [first]);
}

#[test]
fn a_run_can_be_escalated_again_once_its_escalation_is_resolved() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let first = ledger
        .open_escalation(new_escalation("r1", EscalationReason::Approval, T0))
        .unwrap();
    ledger
        .resolve_escalation(first.id, Resolution::Approved, "looks fine", "ana", T0 + 1)
        .unwrap();
    let second = ledger
        .open_escalation(new_escalation("r1", EscalationReason::Approval, T0 + 2))
        .unwrap();
    assert!(second.id > first.id);
    assert_eq!(second.status, EscalationStatus::Open);
}

#[test]
fn opening_for_an_unknown_run_is_run_not_found() {
    let ledger = ledger();
    let err = ledger
        .open_escalation(new_escalation("ghost", EscalationReason::NonRetryable, T0))
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::RunNotFound { run_id } if run_id == "ghost"),
        "{err:?}"
    );
    assert_eq!(
        ledger.escalations(&EscalationFilter::default()).unwrap(),
        []
    );
}

#[test]
fn resolving_records_the_decision_who_made_it_and_when() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let opened = ledger
        .open_escalation(new_escalation("r1", EscalationReason::InDoubt, T0))
        .unwrap();
    ledger
        .resolve_escalation(
            opened.id,
            Resolution::MarkSucceeded,
            "checked downstream: it happened",
            "ana",
            T0 + 60_000,
        )
        .unwrap();
    let resolved = ledger.escalation(opened.id).unwrap().unwrap();
    assert_eq!(resolved.status, EscalationStatus::Resolved);
    assert_eq!(resolved.resolution, Some(Resolution::MarkSucceeded));
    assert_eq!(
        resolved.resolution_reason.as_deref(),
        Some("checked downstream: it happened")
    );
    assert_eq!(resolved.resolved_by.as_deref(), Some("ana"));
    assert_eq!(resolved.resolved_at, Some(T0 + 60_000));
    assert_eq!(resolved.created_at, T0);
    assert_eq!(resolved.evidence, opened.evidence);
}

#[test]
fn resolving_a_resolved_escalation_again_is_refused_the_same_way_or_not() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let id = ledger
        .open_escalation(new_escalation("r1", EscalationReason::Approval, T0))
        .unwrap()
        .id;
    ledger
        .resolve_escalation(id, Resolution::Rejected, "too expensive", "ana", T0 + 1)
        .unwrap();
    // A second resolver with the same decision is refused too: its batch (which may reopen
    // or end the run) must not commit after the first one's.
    let again = ledger
        .resolve_escalation(id, Resolution::Rejected, "again", "bob", T0 + 2)
        .unwrap_err();
    assert!(
        matches!(again, LedgerError::EscalationResolved { .. }),
        "{again:?}"
    );
    let err = ledger
        .resolve_escalation(id, Resolution::Approved, "changed my mind", "bob", T0 + 3)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::EscalationResolved {
                id: got,
                resolution: Resolution::Rejected
            } if got == id
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("already resolved as rejected"));
    let stored = ledger.escalation(id).unwrap().unwrap();
    assert_eq!(stored.resolution, Some(Resolution::Rejected));
    assert_eq!(
        (stored.resolved_by.as_deref(), stored.resolved_at),
        (Some("ana"), Some(T0 + 1))
    );
    assert_eq!(stored.resolution_reason.as_deref(), Some("too expensive"));
}

#[test]
fn resolving_an_unknown_id_is_escalation_not_found() {
    let ledger = ledger();
    let err = ledger
        .resolve_escalation(42, Resolution::Retry, "r", "ana", T0)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::EscalationNotFound { id: 42 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("escalation 42 does not exist"));
}

#[test]
fn escalations_filter_by_status_and_run_oldest_first_and_limited() {
    let ledger = ledger();
    for run in ["a", "b", "c"] {
        new_run(&*ledger, run);
    }
    let a1 = ledger
        .open_escalation(new_escalation("a", EscalationReason::Approval, T0))
        .unwrap();
    ledger
        .resolve_escalation(a1.id, Resolution::Approved, "ok", "ana", T0 + 1)
        .unwrap();
    let b1 = ledger
        .open_escalation(new_escalation("b", EscalationReason::InDoubt, T0 + 2))
        .unwrap();
    let a2 = ledger
        .open_escalation(new_escalation(
            "a",
            EscalationReason::RetriesExhausted,
            T0 + 3,
        ))
        .unwrap();
    let c1 = ledger
        .open_escalation(new_escalation("c", EscalationReason::NonRetryable, T0 + 4))
        .unwrap();

    let list = |status: Option<EscalationStatus>, run_id: Option<&str>, limit: usize| {
        ids(ledger
            .escalations(&EscalationFilter {
                status,
                run_id: run_id.map(str::to_owned),
                limit,
            })
            .unwrap())
    };
    assert_eq!(
        ids(ledger.escalations(&EscalationFilter::default()).unwrap()),
        [a1.id, b1.id, a2.id, c1.id]
    );
    assert_eq!(
        list(Some(EscalationStatus::Open), None, 100),
        [b1.id, a2.id, c1.id]
    );
    assert_eq!(list(Some(EscalationStatus::Resolved), None, 100), [a1.id]);
    assert_eq!(list(None, Some("a"), 100), [a1.id, a2.id]);
    assert_eq!(list(Some(EscalationStatus::Open), Some("a"), 100), [a2.id]);
    assert_eq!(list(Some(EscalationStatus::Open), None, 2), [b1.id, a2.id]);
    assert_eq!(list(None, Some("nobody"), 100), Vec::<i64>::new());
    // Counted without reading them.
    assert_eq!(ledger.count_escalations(EscalationStatus::Open).unwrap(), 3);
    assert_eq!(
        ledger
            .count_escalations(EscalationStatus::Resolved)
            .unwrap(),
        1
    );
}

#[test]
fn park_and_open_escalation_commit_together_or_not_at_all() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let applied = ledger
        .apply(vec![
            Op::ParkRun {
                run_id: "r1".into(),
                status: RunStatus::Escalated,
                now: T0 + 1,
            },
            Op::OpenEscalation(new_escalation(
                "r1",
                EscalationReason::RetriesExhausted,
                T0 + 1,
            )),
        ])
        .unwrap();
    assert!(
        matches!(applied.as_slice(), [_, tollgate_ledger::Applied::Escalation(e)] if e.run_id == "r1")
    );
    assert_eq!(
        ledger.run("r1").unwrap().unwrap().status,
        RunStatus::Escalated
    );

    new_run(&*ledger, "r2");
    let err = ledger
        .apply(vec![
            Op::ParkRun {
                run_id: "r2".into(),
                status: RunStatus::WaitingApproval,
                now: T0 + 1,
            },
            Op::OpenEscalation(new_escalation("ghost", EscalationReason::Approval, T0 + 1)),
        ])
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err:?}");
    assert_eq!(
        ledger.run("r2").unwrap().unwrap().status,
        RunStatus::Running
    );
}
