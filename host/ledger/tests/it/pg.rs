//! The PostgreSQL backend against a real server: the reference model, migrations under
//! concurrent start-up, a newer schema, an unreachable server, and conflicting writers.
//!
//! Each test works in a schema of its own on the test server ([`PgScratch`]).

use std::sync::{Arc, Barrier};

use tollgate_ledger::scratch::PgScratch;
use tollgate_ledger::{Claim, Create, Ledger, LedgerError, LedgerExt, Op, PgLedger, PgOptions};

use crate::{T0, log_line, new_run, park, queue_log_lines};

/// A schema of its own on the test server, opened as a ledger.
struct Scratch(PgScratch);

impl Scratch {
    fn new() -> Self {
        Self(PgScratch::new())
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn open(&self) -> PgLedger {
        PgLedger::open(&self.url(), PgOptions::default()).expect("open the PostgreSQL ledger")
    }
}

#[test]
fn postgres_ledger_follows_the_reference_model() {
    let scratches = std::sync::Mutex::new(std::collections::HashMap::new());
    crate::model::check_backend(|path| {
        let mut scratches = scratches.lock().unwrap();
        let scratch = scratches
            .entry(path.to_owned())
            .or_insert_with(Scratch::new);
        Arc::new(scratch.open())
    });
}

#[test]
fn many_processes_opening_a_new_ledger_at_once_migrate_it_once() {
    let scratch = Scratch::new();
    let url = scratch.url();
    let start = Arc::new(Barrier::new(8));
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let (url, start) = (url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                PgLedger::open(&url, PgOptions::default()).map(drop)
            })
        })
        .collect();
    for opener in openers {
        opener
            .join()
            .unwrap()
            .expect("every opener gets the ledger");
    }
    let ledger = scratch.open();
    new_run(&ledger, "r1");
    assert!(ledger.run("r1").unwrap().is_some());
}

#[test]
fn a_read_only_open_of_an_empty_database_says_no_ledger_is_there() {
    let scratch = Scratch::new();
    let options = PgOptions {
        create: Create::Never,
        ..PgOptions::default()
    };
    let err = PgLedger::open(&scratch.url(), options).unwrap_err();
    assert!(matches!(err, LedgerError::Missing { .. }), "{err}");
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let scratch = Scratch::new();
    drop(scratch.open());
    let mut admin = postgres::Client::connect(&scratch.url(), postgres::NoTls).unwrap();
    admin
        .batch_execute("UPDATE tollgate_schema SET version = 999")
        .unwrap();
    let err = PgLedger::open(&scratch.url(), PgOptions::default()).unwrap_err();
    assert!(
        matches!(err, LedgerError::NewerSchema { found: 999, .. }),
        "{err}"
    );
}

#[test]
fn a_server_that_is_down_gives_one_clear_error_without_the_password() {
    // Nothing listens on port 1.
    let url = "postgres://tollgate:s3cret@127.0.0.1:1/ledger";
    let err = PgLedger::open(url, PgOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Unavailable { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
}

#[test]
fn a_malformed_url_is_a_bad_location() {
    let err = PgLedger::open("postgres://[::1", PgOptions::default()).unwrap_err();
    assert!(matches!(err, LedgerError::BadLocation { .. }), "{err}");
}

#[test]
fn concurrent_claims_of_one_key_from_many_handles_have_exactly_one_winner() {
    let scratch = Scratch::new();
    let first = scratch.open();
    for i in 0..16 {
        new_run(&first, &format!("r{i}"));
    }
    let start = Arc::new(Barrier::new(16));
    let claimers: Vec<_> = (0..16)
        .map(|i| {
            let url = scratch.url();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let ledger = PgLedger::open(&url, PgOptions::default()).unwrap();
                start.wait();
                ledger
                    .claim_effect("erp", "k1", "d", "{}", &format!("r{i}"), 1, T0)
                    .expect("a claim is answered, conflicts are retried inside")
            })
        })
        .collect();
    let fresh = claimers
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|claim| *claim == Claim::Fresh)
        .count();
    assert_eq!(fresh, 1, "exactly one claim may win the key");
}

#[test]
fn runs_on_distinct_keys_at_once_commit_without_a_conflict_retry() {
    // Eight writers, each running whole runs (with an effect, a lock and journal entries) on
    // keys no other writer touches: nothing they do conflicts, so no transaction may be
    // rolled back and run again. A retry here is work the database did for nothing, and the
    // fleet's throughput falls with every node that adds to it.
    let scratch = Scratch::new();
    let ledger = Arc::new(scratch.open());
    let start = Arc::new(Barrier::new(8));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (ledger, start) = (Arc::clone(&ledger), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for n in 0..25 {
                    let run_id = format!("w{writer}-r{n}");
                    whole_run(&*ledger, &run_id);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(ledger.conflict_retries(), 0, "transactions were run again");
}

/// A run from start to end through the ledger: created, an attempt, a lock, a journal
/// entry, an effect claimed, dispatched and recorded, the attempt and the run ended.
fn whole_run(ledger: &dyn Ledger, run_id: &str) {
    use tollgate_ledger::{AttemptStatus, EffectStatus, RunStatus};
    new_run(ledger, run_id);
    let attempt = ledger
        .begin_attempt(run_id, "sha256:c", "h", T0 + 30_000, false, T0)
        .unwrap();
    ledger
        .acquire_lock(&format!("lock-{run_id}"), run_id, "h", T0 + 30_000, T0)
        .unwrap();
    ledger.journal(entry(run_id, "tool.log", "working"));
    let claim = ledger
        .claim_effect("erp", run_id, "d", "{}", run_id, attempt.attempt, T0)
        .unwrap();
    assert_eq!(claim, Claim::Fresh);
    ledger
        .mark_dispatched("erp", run_id, run_id, attempt.attempt, T0)
        .unwrap();
    ledger
        .record_outcome(
            "erp",
            run_id,
            run_id,
            attempt.attempt,
            EffectStatus::Succeeded,
            Some("{}"),
            None,
            None,
            T0,
        )
        .unwrap();
    ledger
        .end_attempt(
            run_id,
            attempt.attempt,
            AttemptStatus::Succeeded,
            None,
            None,
            T0,
        )
        .unwrap();
    ledger
        .end_run(run_id, RunStatus::Succeeded, Some("{}"), None, None, T0)
        .unwrap();
}

#[test]
fn lock_fences_grow_strictly_across_handles_racing_for_one_key() {
    let scratch = Scratch::new();
    let start = Arc::new(Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let url = scratch.url();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let ledger = PgLedger::open(&url, PgOptions::default()).unwrap();
                start.wait();
                let mut fences = Vec::new();
                for round in 0..10 {
                    let now = T0 + round * 10;
                    let op = Op::AcquireLock {
                        key: "shared".to_owned(),
                        run_id: format!("r{i}"),
                        holder: format!("h{i}"),
                        lease_until: now + 1,
                        now,
                    };
                    if let Ok(applied) = ledger.apply(vec![op])
                        && let Some(tollgate_ledger::Applied::Lock(lock)) = applied.first()
                    {
                        fences.push(lock.fence);
                    }
                }
                fences
            })
        })
        .collect();
    let mut fences: Vec<i64> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    let taken = fences.len();
    assert!(
        taken >= 10,
        "each round's lease lapses, so every round hands out the lock"
    );
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), taken, "a fence was handed out twice");
}

#[test]
fn a_queued_journal_entry_is_written_before_a_later_apply_from_the_same_thread() {
    let scratch = Scratch::new();
    let ledger = scratch.open();
    new_run(&ledger, "r1");
    for i in 0..50 {
        ledger.journal(tollgate_ledger::NewJournalEntry {
            run_id: "r1".to_owned(),
            attempt: None,
            at: T0 + i,
            level: "info".to_owned(),
            event: format!("queued.{i}"),
            message: String::new(),
            fields: serde_json::json!({}),
        });
        if i % 10 == 9 {
            ledger
                .apply(vec![Op::Journal(tollgate_ledger::NewJournalEntry {
                    run_id: "r1".to_owned(),
                    attempt: None,
                    at: T0 + i,
                    level: "info".to_owned(),
                    event: format!("applied.{i}"),
                    message: String::new(),
                    fields: serde_json::json!({}),
                })])
                .unwrap();
        }
    }
    let events = events(&ledger, "r1");
    let mut expected = Vec::new();
    for i in 0..50 {
        expected.push(format!("queued.{i}"));
        if i % 10 == 9 {
            expected.push(format!("applied.{i}"));
        }
    }
    assert_eq!(events, expected);
}

/// The events of `run_id`'s journal, in order.
fn events(ledger: &dyn Ledger, run_id: &str) -> Vec<String> {
    ledger
        .journal_entries(run_id)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn entry(run_id: &str, event: &str, message: &str) -> tollgate_ledger::NewJournalEntry {
    tollgate_ledger::NewJournalEntry {
        run_id: run_id.to_owned(),
        attempt: None,
        at: T0,
        level: "info".to_owned(),
        event: event.to_owned(),
        message: message.to_owned(),
        fields: serde_json::json!({}),
    }
}

#[test]
fn a_journal_entry_the_database_refuses_is_dropped_and_later_writes_go_on() {
    let scratch = Scratch::new();
    let ledger = scratch.open();
    new_run(&ledger, "r1");
    // PostgreSQL text cannot hold U+0000, so the server refuses this entry's run id.
    ledger.journal(entry("r\0one", "refused", ""));
    ledger.journal(entry("r1", "kept", ""));
    // The next apply takes the queue: it must commit, not fail on the refused entry.
    new_run(&ledger, "r2");
    assert!(ledger.run("r2").unwrap().is_some());
    let events = events(&ledger, "r1");
    assert!(events.contains(&"kept".to_owned()), "{events:?}");
}

#[test]
fn free_text_holding_nul_is_kept_with_a_replacement_character() {
    let scratch = Scratch::new();
    let ledger = scratch.open();
    let attempt = crate::running(&ledger, "r1");
    ledger.journal(entry("r1", "log", "before\0after"));
    ledger
        .end_attempt(
            "r1",
            attempt.attempt,
            tollgate_ledger::AttemptStatus::Failed,
            Some("tool"),
            Some("a tool's error\0with a NUL"),
            T0 + 1,
        )
        .expect("an error message holding U+0000 is recorded");
    let messages: Vec<String> = ledger
        .journal_entries("r1")
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        messages.contains(&"before\u{FFFD}after".to_owned()),
        "{messages:?}"
    );
    let attempts = ledger.attempts("r1").unwrap();
    assert_eq!(
        attempts[0].error_message.as_deref(),
        Some("a tool's error\u{FFFD}with a NUL")
    );
}

#[test]
fn a_key_holding_nul_is_refused_with_a_clear_error_and_the_ledger_goes_on() {
    let scratch = Scratch::new();
    let ledger = scratch.open();
    let attempt = crate::running(&ledger, "r1");
    let err = ledger
        .save_checkpoint("r1", attempt.attempt, "step\0one", b"state", T0 + 1)
        .unwrap_err();
    assert!(matches!(err, LedgerError::Unstorable { .. }), "{err}");
    assert!(err.to_string().contains("U+0000"), "{err}");
    ledger
        .save_checkpoint("r1", attempt.attempt, "step-one", b"state", T0 + 2)
        .expect("the next write commits");
}

#[test]
fn a_password_given_as_a_url_parameter_is_redacted_too() {
    let shown =
        tollgate_ledger::redact("postgres://u@127.0.0.1/db?password=s3cret&sslmode=disable");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("sslmode=disable"), "{shown}");
}

#[test]
fn journal_entries_queued_during_a_run_go_into_the_transaction_of_the_write_that_follows() {
    let scratch = Scratch::new();
    // A linger far longer than the run, so the test does not depend on timing.
    let ledger = open_with_linger(&scratch, std::time::Duration::from_secs(30));
    new_run(&ledger, "r1");
    let mut db = postgres::Client::connect(&scratch.url(), postgres::NoTls).unwrap();
    let count = "SELECT count(*) FROM journal WHERE run_id = 'r1' AND event = 'tool.log'";
    queue_log_lines(&ledger, "r1");
    let before: i64 = db.query_one(count, &[]).unwrap().get(0);
    assert_eq!(before, 0, "no transaction of their own wrote them");
    park(&ledger, "r1");
    let after: i64 = db.query_one(count, &[]).unwrap().get(0);
    assert_eq!(after, 5, "the write carried them");
    // The (sub)transaction that wrote a row is its `xmin`.
    let journal_txs = db
        .query(
            "SELECT DISTINCT xmin::text FROM journal WHERE run_id = 'r1' AND event = 'tool.log'",
            &[],
        )
        .unwrap();
    assert_eq!(journal_txs.len(), 1, "one transaction carried them all");
}

#[test]
fn journal_entries_with_no_write_after_them_are_written_after_the_linger() {
    let scratch = Scratch::new();
    let ledger = open_with_linger(&scratch, std::time::Duration::from_millis(50));
    new_run(&ledger, "r1");
    ledger.journal(log_line("r1", 0));
    let mut db = postgres::Client::connect(&scratch.url(), postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let written: i64 = db
            .query_one(
                "SELECT count(*) FROM journal WHERE run_id = 'r1' AND event = 'tool.log'",
                &[],
            )
            .unwrap()
            .get(0);
        if written == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a lone journal entry was never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_lock_taken_and_released_in_one_request_ends_released() {
    // The request inserts the lock's row (its key was absent), then reads it back and
    // writes it again: the second write updates the row the first made.
    let scratch = Scratch::new();
    let ledger = scratch.open();
    new_run(&ledger, "r1");
    let ops = vec![
        Op::AcquireLock {
            key: "l1".to_owned(),
            run_id: "r1".to_owned(),
            holder: "h1".to_owned(),
            lease_until: T0 + 10_000,
            now: T0,
        },
        Op::ReleaseLock {
            key: "l1".to_owned(),
            run_id: "r1".to_owned(),
            fence: 1,
            now: T0,
        },
    ];
    ledger
        .apply(ops)
        .expect("one request takes and releases the lock");
    let lock = ledger.lock("l1").unwrap().expect("the row stays");
    assert!(lock.released);
    assert_eq!(lock.fence, 1);
}

fn open_with_linger(scratch: &Scratch, linger: std::time::Duration) -> PgLedger {
    PgLedger::open(
        &scratch.url(),
        PgOptions {
            journal_linger: linger,
            ..PgOptions::default()
        },
    )
    .expect("open a scratch ledger")
}
