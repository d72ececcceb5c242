use std::path::Path;

use tollgate_ledger::{
    CallKeyRecord, EscalationFilter, Ledger, LedgerError, LedgerExt, LedgerOptions, NewRun, Op,
    RunFilter, RunStatus, SqliteLedger,
};

use crate::{T0, ledger, new_run};

/// The released migrations before call keys, exactly as the previous build applied them.
const BEFORE_CALL_KEYS: [&str; 4] = [
    include_str!("../../src/sqlite/migrations/0001_init.sql"),
    include_str!("../../src/sqlite/migrations/0002_locks.sql"),
    include_str!("../../src/sqlite/migrations/0003_escalations.sql"),
    include_str!("../../src/sqlite/migrations/0004_breakers.sql"),
];

/// Leaves a ledger file at schema version 4, as a build without call keys would: one
/// transaction per migration with its version bump, and the Tollgate mark ("TLGT").
fn file_at_version_4(path: &Path) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for (index, sql) in BEFORE_CALL_KEYS.iter().enumerate() {
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.pragma_update(None, "application_id", 0x544C_4754)
            .unwrap();
        tx.pragma_update(None, "user_version", index + 1).unwrap();
        tx.commit().unwrap();
    }
}

fn schema_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[test]
fn a_claimed_call_key_reads_back_with_its_run() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    assert_eq!(ledger.call_key("k").unwrap(), None);
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    assert_eq!(
        ledger.call_key("k").unwrap(),
        Some(CallKeyRecord {
            key: "k".into(),
            tool: "invoice".into(),
            args_digest: "d1".into(),
            run_id: "r1".into(),
            created_at: T0,
        })
    );
}

#[test]
fn a_used_call_key_names_the_first_run_whatever_is_asked_the_second_time() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    new_run(&*ledger, "r2");
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    for (tool, digest) in [("invoice", "d1"), ("other", "d2")] {
        let err = ledger
            .claim_call_key("k", tool, digest, "r2", T0 + 1)
            .unwrap_err();
        match err {
            LedgerError::CallKeyUsed {
                key,
                tool,
                args_digest,
                run_id,
            } => {
                assert_eq!((key.as_str(), tool.as_str()), ("k", "invoice"));
                assert_eq!((args_digest.as_str(), run_id.as_str()), ("d1", "r1"));
            }
            other => panic!("expected CallKeyUsed, got {other:?}"),
        }
    }
    assert_eq!(ledger.call_key("k").unwrap().unwrap().run_id, "r1");
}

#[test]
fn a_used_call_key_error_names_the_first_run_and_says_what_to_do() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    new_run(&*ledger, "r2");
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    let text = ledger
        .claim_call_key("k", "invoice", "d1", "r2", T0 + 1)
        .unwrap_err()
        .to_string();
    for part in [
        "idempotency key `k` was already used by run `r1` (tool `invoice`)",
        "a repeat call returns that run's result",
        "a new call needs a new key",
    ] {
        assert!(text.contains(part), "{text}");
    }
}

#[test]
fn a_version_4_ledger_with_data_migrates_to_call_keys_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    file_at_version_4(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, tool, input, status, output, attempts, created_at, \
             updated_at) VALUES \
             ('old', 'invoice', '{\"n\":1}', 'succeeded', '{\"ok\":true}', 1, 5, 9), \
             ('parked', 'invoice', '{}', 'waiting_approval', NULL, 1, 6, 7); \
             INSERT INTO attempts (run_id, attempt, component_digest, holder, status, \
             started_at, lease_until, ended_at) VALUES \
             ('old', 1, 'd', 'h', 'succeeded', 5, 99, 9), \
             ('parked', 1, 'd', 'h', 'running', 6, 99, NULL); \
             INSERT INTO escalations (run_id, reason, summary, evidence, status, created_at) \
             VALUES ('parked', 'approval', 'needs a human', '{}', 'open', 7); \
             INSERT INTO locks (lock_key, run_id, holder, fence, acquired_at, lease_until) \
             VALUES ('invoice:42', 'parked', 'h', 3, 6, 99); \
             INSERT INTO breakers (connector, state, consecutive_failures, open_until, \
             updated_at) VALUES ('http', 'open', 5, 100, 8);",
        )
        .unwrap();
    }
    assert_eq!(schema_version(&path), 4);

    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    let old = ledger.run("old").unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Succeeded);
    assert_eq!(old.output.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(ledger.runs(&RunFilter::default()).unwrap().len(), 2);
    assert_eq!(ledger.attempts("parked").unwrap().len(), 1);
    let escalations = ledger.escalations(&EscalationFilter::default()).unwrap();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].summary, "needs a human");
    assert_eq!(ledger.lock("invoice:42").unwrap().unwrap().fence, 3);
    // Circuits became per tool in migration 6: short-lived health state that is not carried
    // over, so every circuit starts closed.
    assert_eq!(ledger.breakers().unwrap(), []);

    // Runs from before the migration have no key, and can be given one.
    assert_eq!(ledger.call_key("k").unwrap(), None);
    ledger
        .claim_call_key("k", "invoice", "d1", "old", T0)
        .unwrap();
    let err = ledger
        .claim_call_key("k", "invoice", "d1", "parked", T0 + 1)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::CallKeyUsed { run_id, .. } if run_id == "old"),
        "{err:?}"
    );
    drop(ledger);

    // 5 added call keys; later migrations may follow, so only "at least" is stable here.
    assert!(schema_version(&path) >= 5);
    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    assert_eq!(ledger.call_key("k").unwrap().unwrap().run_id, "old");
    assert_eq!(ledger.runs(&RunFilter::default()).unwrap().len(), 2);
}

#[test]
fn a_used_call_key_undoes_the_run_created_in_the_same_batch() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    let batch = vec![
        Op::CreateRun(NewRun {
            run_id: "r2".into(),
            tool: "invoice".into(),
            input: "{}".into(),
            now: T0 + 1,
            component: None,
            lock: None,
        }),
        Op::ClaimCallKey {
            key: "k".into(),
            tool: "invoice".into(),
            args_digest: "d1".into(),
            run_id: "r2".into(),
            now: T0 + 1,
        },
    ];
    assert!(matches!(
        ledger.apply(batch),
        Err(LedgerError::CallKeyUsed { .. })
    ));
    assert_eq!(ledger.run("r2").unwrap(), None, "no orphan run");
}

#[test]
fn a_call_key_for_an_unknown_run_is_refused() {
    let ledger = ledger();
    let err = ledger
        .claim_call_key("k", "invoice", "d1", "nope", T0)
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err}");
    assert_eq!(ledger.call_key("k").unwrap(), None);
}
