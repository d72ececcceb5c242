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

/// Free text holding U+0000 (a downstream's answer, an error, a journal line) cannot go into
/// PostgreSQL text as it is: the copy stores it with U+FFFD, as the backend stores new text,
/// and the verification compares it that way, instead of the whole copy failing on it.
#[test]
fn free_text_holding_nul_copies_with_a_replacement_character() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let source = history(&path);
    let attempt = running(&source, "r-nul");
    source
        .claim_effect("erp", "inv-nul", "d1", "{}", "r-nul", attempt.attempt, T0)
        .unwrap();
    source
        .record_outcome(
            "erp",
            "inv-nul",
            "r-nul",
            attempt.attempt,
            EffectStatus::Failed,
            Some("held\0back"),
            Some("validation"),
            Some("refused\0here"),
            T0 + 1,
        )
        .unwrap();
    source.journal(NewJournalEntry {
        run_id: "r-nul".to_owned(),
        attempt: Some(attempt.attempt),
        at: T0 + 2,
        level: "info".to_owned(),
        event: "log".to_owned(),
        message: "a\0b".to_owned(),
        fields: serde_json::json!({}),
    });
    drop(source);
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();

    let report = target.copy_from_sqlite(&path).expect("copy");
    assert_eq!(report.runs_verified, 3);
    let effect = target.effect("erp", "inv-nul").unwrap().unwrap();
    assert_eq!(effect.response.as_deref(), Some("held\u{FFFD}back"));
    assert_eq!(effect.error_message.as_deref(), Some("refused\u{FFFD}here"));
    let journal = target.journal_entries("r-nul").unwrap();
    assert!(
        journal.iter().any(|e| e.message == "a\u{FFFD}b"),
        "{journal:?}"
    );
}

/// A process that records into the target while a copy runs: the copy waits for it and then
/// finds the target not empty, instead of mixing its rows with the copy's.
#[test]
fn a_write_to_the_target_during_a_copy_makes_the_copy_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(history(&path));
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();
    let mut other = postgres::Client::connect(&scratch.url(), postgres::NoTls).unwrap();
    let mut writing = other.transaction().unwrap();
    writing
        .batch_execute(
            "INSERT INTO runs (run_id, tool, input, status, attempts, created_at, updated_at) \
             VALUES ('elsewhere', 'echo', '{}', 'running', 0, 1, 1)",
        )
        .unwrap();
    let copied = std::thread::scope(|scope| {
        let copy = scope.spawn(|| target.copy_from_sqlite(&path));
        std::thread::sleep(std::time::Duration::from_millis(500));
        writing.commit().unwrap();
        copy.join().unwrap()
    });
    let err = copied.expect_err("the target held a run by the time the copy could write");
    assert!(matches!(err, LedgerError::NotEmpty { .. }), "{err}");
    let runs = target
        .runs(&tollgate_ledger::RunFilter {
            status: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(runs.len(), 1, "only the other process's run");
}

/// A process that goes on recording into the source while it is copied waits until the copy
/// is verified: what is copied is what is verified, and nothing lands in the source between
/// the two.
#[test]
fn a_write_to_the_source_during_a_copy_waits_until_the_copy_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let source = history(&path);
    for i in 0..300 {
        running(&source, &format!("bulk-{i}"));
    }
    drop(source);
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (copied, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let live = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
            let mut written = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // Busy while the copy holds the source: the write waits, or fails and is
                // tried again.
                if live
                    .create_run(tollgate_ledger::NewRun {
                        run_id: format!("late-{written}"),
                        tool: "echo".to_owned(),
                        input: "{}".to_owned(),
                        now: T0,
                        component: None,
                        lock: None,
                    })
                    .is_ok()
                {
                    written += 1;
                }
            }
            written
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let copied = target.copy_from_sqlite(&path);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (copied, writer.join().unwrap())
    });
    let report = copied.expect("the copy verifies what it copied");
    assert!(written > 0, "the writer was live");
    let in_copy = target
        .runs(&tollgate_ledger::RunFilter {
            status: None,
            limit: 100_000,
        })
        .unwrap()
        .len();
    assert_eq!(report.runs_verified, in_copy);
}

/// A copy that fails part way (an effect key holding U+0000, which PostgreSQL cannot store,
/// after the runs and attempts went in) leaves the target as empty as it was.
#[test]
fn a_copy_that_fails_part_way_leaves_the_target_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let source = history(&path);
    let attempt = running(&source, "r-bad-key");
    source
        .claim_effect(
            "erp",
            "inv\0bad",
            "d1",
            "{}",
            "r-bad-key",
            attempt.attempt,
            T0,
        )
        .unwrap();
    drop(source);
    let scratch = PgScratch::new();
    let target = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap();

    let err = target.copy_from_sqlite(&path).unwrap_err();
    assert!(matches!(err, LedgerError::Unstorable { .. }), "{err}");
    assert!(err.to_string().contains("copying effects"), "{err}");
    let runs = target
        .runs(&tollgate_ledger::RunFilter {
            status: None,
            limit: 10,
        })
        .unwrap();
    assert!(
        runs.is_empty(),
        "the runs copied before the failure are gone"
    );
    let report = target.copy_from_sqlite(&path);
    assert!(
        matches!(report, Err(LedgerError::Unstorable { .. })),
        "a second try meets the same key, not a half-filled target: {report:?}"
    );
}
