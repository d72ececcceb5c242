use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_ledger::{
    EffectStatus, Ledger, LedgerError, LedgerExt, LedgerOptions, NewJournalEntry, NewRun,
    SqliteLedger,
};

use crate::T0;

fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
    SqliteLedger::open(path, LedgerOptions::default())
}

#[test]
fn committed_and_queued_writes_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/ledger.db");
    {
        let ledger = open(&path).unwrap();
        ledger
            .create_run(NewRun {
                run_id: "r1".into(),
                tool: "t".into(),
                input: "{}".into(),
                now: T0,
                component: None,
                lock: None,
            })
            .unwrap();
        ledger
            .begin_attempt("r1", "d", "h", T0 + 1000, false, T0)
            .unwrap();
        ledger
            .claim_effect("http", "k", "d", "{}", "r1", 1, T0)
            .unwrap();
        ledger
            .record_outcome(
                "http",
                "k",
                "r1",
                1,
                EffectStatus::Succeeded,
                Some("ok"),
                None,
                None,
                T0,
            )
            .unwrap();
        ledger.save_checkpoint("r1", 1, "c", b"state", T0).unwrap();
        // Queued only: the drop must flush it.
        ledger.journal(NewJournalEntry {
            run_id: "r1".into(),
            attempt: None,
            at: T0,
            level: "info".into(),
            event: "log".into(),
            message: "last words".into(),
            fields: json!(null),
        });
    }
    let ledger = open(&path).unwrap();
    assert_eq!(ledger.run("r1").unwrap().unwrap().attempts, 1);
    let effect = ledger.effect("http", "k").unwrap().unwrap();
    assert_eq!(effect.response.as_deref(), Some("ok"));
    assert_eq!(
        ledger.latest_checkpoint("r1", None).unwrap().unwrap().state,
        b"state"
    );
    let journal = ledger.journal_entries("r1").unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].message, "last words");
}

#[test]
fn garbage_file_is_not_a_ledger_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content = b"these are my precious notes, not a database\n".repeat(100);
    fs::write(&path, &content).unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::NotALedger { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("move it aside, or open another ledger file")
    );
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn short_file_and_directory_are_not_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.db");
    fs::write(&short, b"SQLite").unwrap();
    assert!(matches!(open(&short), Err(LedgerError::NotALedger { .. })));
    assert!(matches!(
        open(dir.path()),
        Err(LedgerError::NotALedger { .. })
    ));
}

#[test]
fn another_applications_sqlite_file_is_not_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let tagged = dir.path().join("tagged.db");
    {
        let conn = rusqlite::Connection::open(&tagged).unwrap();
        conn.pragma_update(None, "application_id", 0x1234_5678)
            .unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
    }
    let err = open(&tagged).unwrap_err();
    assert!(
        matches!(&err, LedgerError::NotALedger { reason, .. } if reason.contains("application_id")),
        "{err:?}"
    );

    let untagged = dir.path().join("untagged.db");
    {
        let conn = rusqlite::Connection::open(&untagged).unwrap();
        conn.execute_batch("CREATE TABLE customers (id INTEGER)")
            .unwrap();
    }
    let err = open(&untagged).unwrap_err();
    assert!(
        matches!(&err, LedgerError::NotALedger { reason, .. } if reason.contains("customers")),
        "{err:?}"
    );
}

#[test]
fn ledger_from_a_newer_tollgate_is_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = open(&path).unwrap_err();
    assert!(
        matches!(err, LedgerError::NewerSchema { found: 999, supported } if supported < 999),
        "{err:?}"
    );
}

#[test]
fn damaged_pages_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let ledger = open(&path).unwrap();
        for i in 0..50 {
            ledger
                .create_run(NewRun {
                    run_id: format!("run-{i:04}"),
                    tool: "t".repeat(200),
                    input: "{}".into(),
                    now: T0,
                    component: None,
                    lock: None,
                })
                .unwrap();
        }
    }
    let len = fs::metadata(&path).unwrap().len();
    assert!(len > 3 * 4096, "ledger too small to damage: {len}");
    {
        let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Overwrite pages 2.. with junk, keeping the header page intact.
        file.seek(SeekFrom::Start(4096)).unwrap();
        file.write_all(&vec![0xA5; usize::try_from(len).unwrap() - 4096])
            .unwrap();
    }
    let err = open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
}

#[test]
fn write_lock_held_elsewhere_beyond_the_timeout_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let options = LedgerOptions {
        busy_timeout: Duration::from_millis(100),
        ..LedgerOptions::default()
    };
    let ledger = SqliteLedger::open(&path, options).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = ledger
        .create_run(NewRun {
            run_id: "r1".into(),
            tool: "t".into(),
            input: "{}".into(),
            now: T0,
            component: None,
            lock: None,
        })
        .unwrap_err();
    assert!(matches!(err, LedgerError::Busy { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert!(
        err.to_string()
            .contains("another process holds a write lock")
    );
    // Once the other process lets go, the same ledger works again.
    other.execute_batch("ROLLBACK").unwrap();
    ledger
        .create_run(NewRun {
            run_id: "r1".into(),
            tool: "t".into(),
            input: "{}".into(),
            now: T0,
            component: None,
            lock: None,
        })
        .unwrap();
}

#[test]
fn scratch_ledger_deletes_its_file_on_drop() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let path = ledger.path().to_owned();
    assert!(path.exists());
    drop(ledger);
    assert!(!path.exists());
}
