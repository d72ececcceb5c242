use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_ledger::{
    Create, EffectStatus, Ledger, LedgerError, LedgerExt, LedgerOptions, NewJournalEntry, NewRun,
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
            .contains("another process held its write lock")
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

fn new_run(id: &str) -> NewRun {
    NewRun {
        run_id: id.into(),
        tool: "t".into(),
        input: "{}".into(),
        now: T0,
        component: None,
        lock: None,
    }
}

#[test]
fn an_empty_file_is_refused_and_left_as_it_was() {
    // A truncated ledger (a bad restore, an operator slip) must not be taken for a new one:
    // an empty ledger would let a retry post what the lost one had recorded as done.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    fs::write(&path, b"").unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::EmptyFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("empty") && text.contains("backup"), "{text}");
    assert_eq!(fs::metadata(&path).unwrap().len(), 0, "left untouched");
    for side in ["ledger.db-wal", "ledger.db-shm"] {
        assert!(!dir.path().join(side).exists(), "{side} created");
    }
}

#[test]
fn an_empty_file_becomes_a_ledger_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    fs::write(&path, b"").unwrap();
    let options = LedgerOptions {
        create: Create::IfAbsentOrEmpty,
        ..LedgerOptions::default()
    };
    let ledger = SqliteLedger::open(&path, options).unwrap();
    ledger.create_run(new_run("r1")).unwrap();
    drop(ledger);
    // Once initialised it is a ledger like any other.
    assert!(open(&path).unwrap().run("r1").unwrap().is_some());
}

#[test]
fn an_empty_sqlite_database_without_the_mark_is_not_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::NotALedger { .. }), "{err:?}");
}

#[test]
fn opening_without_create_never_makes_a_file_or_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elsewhere/ledger.db");
    let options = LedgerOptions {
        create: Create::Never,
        ..LedgerOptions::default()
    };
    let err = SqliteLedger::open(&path, options).unwrap_err();
    assert!(matches!(err, LedgerError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("no ledger"), "{err}");
    assert!(!dir.path().join("elsewhere").exists());
}

#[test]
fn a_new_ledger_appears_whole_or_not_at_all() {
    // The file is made aside and moved into place complete, so no other process can find
    // it half-made: the path holds nothing, or a ledger at the latest schema.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path).unwrap());
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ledger.db"], "no leftovers beside it");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version >= 7, "migrated before it appeared: {version}");
}

#[test]
fn many_openers_of_a_new_path_all_get_the_same_ledger() {
    // Processes started together on a path that does not exist yet: every one opens the
    // one ledger, none is told it is "not a Tollgate ledger" or busy.
    const OPENERS: usize = 8;
    const ROUNDS: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("ledger-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|i| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let ledger = open(&path)?;
                    ledger.create_run(new_run(&format!("r{i}")))
                })
            })
            .collect();
        for (i, opener) in openers.into_iter().enumerate() {
            let result = opener.join().unwrap();
            assert!(result.is_ok(), "round {round}, opener {i}: {result:?}");
        }
        let ledger = open(&path).unwrap();
        for i in 0..OPENERS {
            assert!(ledger.run(&format!("r{i}")).unwrap().is_some(), "r{i} lost");
        }
    }
}
