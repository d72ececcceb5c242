//! Migration 7: the facts the host needs again about a run (its component, its lock, each
//! attempt's CPU time, the payload an approval covers) become typed columns, filled in for
//! runs recorded before from where they used to live.

use std::path::Path;

use tollgate_ledger::{
    AttemptStatus, EscalationFilter, Ledger, LedgerExt, LedgerOptions, NewRun, RunLock,
    SqliteLedger,
};

use crate::{T0, ledger};

/// The released migrations before typed run facts, exactly as the previous build applied them.
const BEFORE_TYPED_FACTS: [&str; 6] = [
    include_str!("../../src/sqlite/migrations/0001_init.sql"),
    include_str!("../../src/sqlite/migrations/0002_locks.sql"),
    include_str!("../../src/sqlite/migrations/0003_escalations.sql"),
    include_str!("../../src/sqlite/migrations/0004_breakers.sql"),
    include_str!("../../src/sqlite/migrations/0005_call_keys.sql"),
    include_str!("../../src/sqlite/migrations/0006_breakers_per_tool.sql"),
];

fn file_at_version_6(path: &Path) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for (index, sql) in BEFORE_TYPED_FACTS.iter().enumerate() {
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.pragma_update(None, "application_id", 0x544C_4754)
            .unwrap();
        tx.pragma_update(None, "user_version", index + 1).unwrap();
        tx.commit().unwrap();
    }
}

#[test]
fn a_version_6_ledger_gets_its_run_facts_from_the_journal_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    file_at_version_6(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"INSERT INTO runs (run_id, tool, input, status, attempts, created_at, updated_at)
               VALUES ('locked', 'invoice', '{}', 'waiting_approval', 2, 5, 9),
                      ('plain', 'hello', '{}', 'succeeded', 1, 6, 7);
               INSERT INTO attempts (run_id, attempt, component_digest, holder, status,
                   started_at, lease_until, ended_at)
               VALUES ('locked', 1, 'd', 'h', 'failed', 5, 99, 6),
                      ('locked', 2, 'd', 'h', 'failed', 7, 99, 8),
                      ('plain', 1, 'd', 'h', 'succeeded', 6, 99, 7);
               INSERT INTO journal (run_id, attempt, at, level, event, message, fields) VALUES
                 ('locked', NULL, 5, 'info', 'run.created', 'created',
                  '{"component":"/srv/invoice.wasm","digest":"d","version":"1","lock":{"key":"invoice:7","wait_ms":250,"ttl_ms":9000}}'),
                 ('locked', 1, 6, 'warn', 'attempt.failed', 'boom', '{"class":"transient","cpu_ms":40}'),
                 ('locked', 2, 8, 'warn', 'attempt.failed', 'boom', '{"class":"transient","cpu_ms":15}'),
                 ('plain', NULL, 6, 'info', 'run.created', 'created',
                  '{"component":"hello.wasm","digest":"d","version":"1","lock":null}'),
                 ('plain', 1, 7, 'info', 'attempt.succeeded', 'ok', '{"cpu_ms":3}');
               INSERT INTO escalations (run_id, reason, summary, effect_kind, effect_key,
                   evidence, status, created_at)
               VALUES ('locked', 'approval', 'approve', 'erp.post', 'k',
                   '{"action":{"kind":"erp.post","key":"k","payload_digest":"abc123"}}', 'open', 8);"#,
        )
        .unwrap();
    }
    let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
    let locked = ledger.run("locked").unwrap().unwrap();
    assert_eq!(locked.component.as_deref(), Some("/srv/invoice.wasm"));
    assert_eq!(
        locked.lock,
        Some(RunLock {
            key: "invoice:7".into(),
            wait_ms: 250,
            ttl_ms: 9000
        })
    );
    let plain = ledger.run("plain").unwrap().unwrap();
    assert_eq!(plain.component.as_deref(), Some("hello.wasm"));
    assert_eq!(plain.lock, None);
    let cpu: Vec<u64> = ledger
        .attempts("locked")
        .unwrap()
        .iter()
        .map(|a| a.cpu_ms)
        .collect();
    assert_eq!(cpu, [40, 15]);
    assert_eq!(ledger.attempts("plain").unwrap()[0].cpu_ms, 3);
    let escalation = ledger
        .escalations(&EscalationFilter::default())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(escalation.payload_digest.as_deref(), Some("abc123"));
}

#[test]
fn a_new_run_records_its_component_lock_and_attempt_cpu_time() {
    let ledger = ledger();
    let lock = RunLock {
        key: "invoice:1".into(),
        wait_ms: 0,
        ttl_ms: 15_000,
    };
    ledger
        .create_run(NewRun {
            run_id: "r1".into(),
            tool: "invoice".into(),
            input: "{}".into(),
            now: T0,
            component: Some("plugins/invoice.wasm".into()),
            lock: Some(lock.clone()),
        })
        .unwrap();
    ledger
        .begin_attempt("r1", "d", "h", T0 + 1000, false, T0)
        .unwrap();
    ledger
        .apply(vec![tollgate_ledger::Op::EndAttempt {
            run_id: "r1".into(),
            attempt: 1,
            status: AttemptStatus::Failed,
            error_class: Some("transient".into()),
            error_message: Some("x".into()),
            cpu_ms: 120,
            now: T0 + 5,
        }])
        .unwrap();
    let run = ledger.run("r1").unwrap().unwrap();
    assert_eq!(run.component.as_deref(), Some("plugins/invoice.wasm"));
    assert_eq!(run.lock, Some(lock));
    assert_eq!(ledger.attempts("r1").unwrap()[0].cpu_ms, 120);
}
