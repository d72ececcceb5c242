//! `PgLedger::copy_from_sqlite`: a SQLite ledger's whole history moves to PostgreSQL, keeps
//! its identities, and replays there as it did on SQLite.

use tollgate_ledger::scratch::PgScratch;
use tollgate_ledger::{
    BreakerRecord, BreakerState, Claim, EffectStatus, EscalationReason, Ledger, LedgerError,
    LedgerExt, LedgerOptions, NewEscalation, NewJournalEntry, Op, PgLedger, PgOptions, Resolution,
    SqliteLedger,
};

use crate::{T0, running};

/// A SQLite ledger with something in every table.
fn history(path: &std::path::Path) -> SqliteLedger {
    let ledger = SqliteLedger::open(path, LedgerOptions::default()).unwrap();
    for run in ["r1", "r2"] {
        let attempt = running(&ledger, run);
        let key = format!("inv-{run}");
        ledger
            .claim_effect(
                "erp",
                &key,
                "d1",
                r#"{"amount":10}"#,
                run,
                attempt.attempt,
                T0,
            )
            .unwrap();
        ledger
            .mark_dispatched("erp", &key, run, attempt.attempt, T0 + 1)
            .unwrap();
        ledger
            .record_outcome(
                "erp",
                &key,
                run,
                attempt.attempt,
                EffectStatus::Succeeded,
                Some(r#"{"posted":true}"#),
                None,
                None,
                T0 + 2,
            )
            .unwrap();
        ledger
            .save_checkpoint(run, attempt.attempt, "step", b"\x00\x01state", T0 + 3)
            .unwrap();
        ledger.journal(NewJournalEntry {
            run_id: run.to_owned(),
            attempt: Some(attempt.attempt),
            at: T0 + 4,
            level: "info".to_owned(),
            event: "log".to_owned(),
            message: format!("hello from {run}"),
            fields: serde_json::json!({ "n": 1 }),
        });
    }
    ledger
        .acquire_lock("customer-7", "r1", "h1", T0 + 60_000, T0)
        .unwrap();
    let esc = |run: &str| NewEscalation {
        run_id: run.to_owned(),
        reason: EscalationReason::Approval,
        summary: format!("approve {run}"),
        effect_kind: Some("erp".to_owned()),
        effect_key: Some(format!("inv-{run}")),
        payload_digest: Some("d1".to_owned()),
        evidence: serde_json::json!({ "run": run }),
        now: T0 + 5,
    };
    let first = ledger.open_escalation(esc("r1")).unwrap();
    ledger
        .resolve_escalation(first.id, Resolution::Approved, "looks right", "ops", T0 + 6)
        .unwrap();
    ledger.open_escalation(esc("r2")).unwrap();
    ledger
        .claim_call_key("call-1", "invoice", "args-d", "r1", T0)
        .unwrap();
    ledger
        .apply(vec![Op::SetBreaker(BreakerRecord {
            connector: "erp".to_owned(),
            tool: "invoice".to_owned(),
            state: BreakerState::Open,
            consecutive_failures: 3,
            open_until: Some(T0 + 30_000),
            updated_at: T0,
        })])
        .unwrap();
    ledger
}

#[test]
fn a_sqlite_history_copies_to_postgres_and_its_keys_replay_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let source = history(&path);
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();

    let report = target.copy_from_sqlite(&path).expect("copy");
    let rows: std::collections::HashMap<_, _> = report.rows.iter().copied().collect();
    assert_eq!(rows["runs"], 2);
    assert_eq!(rows["effects"], 2);
    assert_eq!(rows["escalations"], 2);
    assert_eq!(rows["locks"], 1);
    assert_eq!(rows["call_keys"], 1);
    assert_eq!(rows["breakers"], 1);
    assert!(rows["journal"] >= 2, "{rows:?}");
    assert_eq!((report.runs_verified, report.effects_verified), (2, 2));

    // A key that replays on SQLite replays on PostgreSQL: the same record, nothing new.
    for ledger in [&source as &dyn Ledger, &target] {
        let claim = ledger
            .claim_effect("erp", "inv-r1", "d1", r#"{"amount":10}"#, "r1", 1, T0 + 10)
            .unwrap();
        let Claim::Existing { effect, .. } = claim else {
            panic!("the key must be known: {claim:?}");
        };
        assert_eq!(effect.status, EffectStatus::Succeeded);
        assert_eq!(effect.response.as_deref(), Some(r#"{"posted":true}"#));
        assert_eq!(effect.dispatches, 1);
    }
    // Identities hold, and what comes next does not collide with what was copied.
    let open = target
        .escalations(&tollgate_ledger::EscalationFilter {
            status: Some(tollgate_ledger::EscalationStatus::Open),
            run_id: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(open.len(), 1);
    let copied_id = open[0].id;
    assert_eq!(source.escalation(copied_id).unwrap().unwrap().run_id, "r2");
    running(&target, "r3");
    let next = target
        .open_escalation(NewEscalation {
            run_id: "r3".to_owned(),
            reason: EscalationReason::Approval,
            summary: "new".to_owned(),
            effect_kind: None,
            effect_key: None,
            payload_digest: None,
            evidence: serde_json::json!({}),
            now: T0 + 20,
        })
        .unwrap();
    assert!(next.id > copied_id, "{} after {copied_id}", next.id);
    let lock = target
        .acquire_lock("customer-7", "r3", "h2", T0 + 200_000, T0 + 100_000)
        .unwrap();
    assert_eq!(lock.fence, 2, "fences go on from the copied one");
}

#[test]
fn a_copy_into_a_ledger_that_holds_runs_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(history(&path));
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();
    running(&target, "already-here");

    let err = target.copy_from_sqlite(&path).unwrap_err();
    assert!(matches!(err, LedgerError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("copy into an empty"), "{err}");
    let runs = target
        .runs(&tollgate_ledger::RunFilter {
            status: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(runs.len(), 1, "nothing was copied");
}
