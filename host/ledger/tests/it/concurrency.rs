use std::sync::{Arc, Barrier};
use std::thread;

use tollgate_ledger::{Ledger, LedgerError, LedgerExt, LedgerOptions, NewRun, Op, SqliteLedger};

use crate::{T0, log_line, park, queue_log_lines};

const THREADS: usize = 32;

fn scratch(group_commit: bool) -> (tempfile::TempDir, Arc<SqliteLedger>) {
    scratch_with(LedgerOptions {
        group_commit,
        ..LedgerOptions::default()
    })
}

fn scratch_with(options: LedgerOptions) -> (tempfile::TempDir, Arc<SqliteLedger>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(&dir.path().join("ledger.db"), options).unwrap();
    (dir, Arc::new(ledger))
}

fn create(run_id: String) -> Op {
    Op::CreateRun(NewRun {
        run_id,
        tool: "t".into(),
        input: "{}".into(),
        now: T0,
        component: None,
        lock: None,
    })
}

/// Runs `per_thread` on THREADS threads released together, collecting their results.
fn together<T: Send + 'static>(
    ledger: &Arc<SqliteLedger>,
    per_thread: impl Fn(&SqliteLedger, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let per_thread = Arc::new(per_thread);
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (ledger, barrier, per_thread) = (
                Arc::clone(ledger),
                Arc::clone(&barrier),
                Arc::clone(&per_thread),
            );
            thread::spawn(move || {
                barrier.wait();
                per_thread(&ledger, i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sqlite_ledger_is_shareable_across_threads() {
    fn assert_shareable<T: Send + Sync + 'static>() {}
    assert_shareable::<SqliteLedger>();
    assert_shareable::<Arc<dyn Ledger>>();
}

#[test]
fn a_failing_request_in_a_batch_does_not_fail_the_others() {
    let (_dir, ledger) = scratch(true);
    let results = together(&ledger, |ledger, i| {
        let mut outcomes = Vec::new();
        for round in 0..10 {
            let ops = if i % 2 == 0 {
                vec![create(format!("ok-{i}-{round}"))]
            } else {
                // The first op succeeds, the second fails: the request must vanish whole.
                vec![
                    create(format!("bad-{i}-{round}")),
                    Op::BeginAttempt {
                        run_id: "missing".into(),
                        component_digest: "d".into(),
                        holder: "h".into(),
                        lease_until: T0,
                        take_over: false,
                        now: T0,
                    },
                ]
            };
            outcomes.push(ledger.apply(ops));
        }
        outcomes
    });
    for (i, outcomes) in results.into_iter().enumerate() {
        for (round, outcome) in outcomes.into_iter().enumerate() {
            if i % 2 == 0 {
                assert!(outcome.is_ok(), "thread {i}: {outcome:?}");
                assert!(ledger.run(&format!("ok-{i}-{round}")).unwrap().is_some());
            } else {
                assert!(
                    matches!(outcome, Err(LedgerError::RunNotFound { .. })),
                    "thread {i}: {outcome:?}"
                );
                assert!(ledger.run(&format!("bad-{i}-{round}")).unwrap().is_none());
            }
        }
    }
}

#[test]
fn group_commit_answers_many_requests_per_commit() {
    let (_dir, ledger) = scratch(true);
    together(&ledger, |ledger, i| {
        for round in 0..20 {
            ledger
                .apply(vec![create(format!("r-{i}-{round}"))])
                .unwrap();
        }
    });
    let stats = ledger.stats();
    assert_eq!(stats.requests, (THREADS * 20) as u64);
    assert!(
        stats.commits < stats.requests,
        "no batching happened: {stats:?}"
    );
}

#[test]
fn without_group_commit_every_request_commits_alone() {
    let (_dir, ledger) = scratch(false);
    together(&ledger, |ledger, i| {
        for round in 0..3 {
            ledger
                .apply(vec![create(format!("r-{i}-{round}"))])
                .unwrap();
        }
    });
    let stats = ledger.stats();
    assert_eq!(stats.requests, (THREADS * 3) as u64);
    assert_eq!(stats.commits, stats.requests);
}

#[test]
fn concurrent_claims_of_one_key_yield_exactly_one_fresh() {
    let (_dir, ledger) = scratch(true);
    ledger
        .create_run(NewRun {
            run_id: "r".into(),
            tool: "t".into(),
            input: "{}".into(),
            now: T0,
            component: None,
            lock: None,
        })
        .unwrap();
    let claims = together(&ledger, |ledger, i| {
        ledger
            .claim_effect(
                "http",
                "k",
                "d",
                "{}",
                "r",
                u32::try_from(i).unwrap() + 1,
                T0,
            )
            .unwrap()
    });
    let fresh = claims
        .iter()
        .filter(|c| matches!(c, tollgate_ledger::Claim::Fresh))
        .count();
    assert_eq!(fresh, 1);
}

#[test]
fn journal_entries_queued_during_a_run_go_into_the_commit_of_the_write_that_follows() {
    // A linger far longer than the run, so the test does not depend on timing.
    let (_dir, ledger) = scratch_with(LedgerOptions {
        journal_linger: std::time::Duration::from_secs(30),
        ..LedgerOptions::default()
    });
    ledger.apply(vec![create("r1".to_owned())]).unwrap();
    let before = ledger.stats().commits;
    queue_log_lines(&*ledger, "r1");
    park(&*ledger, "r1");
    assert_eq!(
        ledger.stats().commits - before,
        1,
        "the log lines and the write share one commit"
    );
    assert_eq!(ledger.journal_entries("r1").unwrap().len(), 5);
}

#[test]
fn journal_entries_with_no_write_after_them_are_committed_after_the_linger() {
    let linger = std::time::Duration::from_millis(50);
    let (_dir, ledger) = scratch_with(LedgerOptions {
        journal_linger: linger,
        ..LedgerOptions::default()
    });
    ledger.apply(vec![create("r1".to_owned())]).unwrap();
    let before = ledger.stats().commits;
    ledger.journal(log_line("r1", 0));
    let deadline = std::time::Instant::now() + linger * 100;
    while ledger.stats().commits == before {
        assert!(
            std::time::Instant::now() < deadline,
            "a lone journal entry was never committed"
        );
        thread::sleep(linger / 4);
    }
    assert_eq!(ledger.stats().commits - before, 1);
}

#[test]
fn a_reader_of_the_journal_sees_entries_queued_before_it_read() {
    let (_dir, ledger) = scratch_with(LedgerOptions {
        journal_linger: std::time::Duration::from_secs(30),
        ..LedgerOptions::default()
    });
    ledger.apply(vec![create("r1".to_owned())]).unwrap();
    for n in 0..3 {
        ledger.journal(log_line("r1", n));
        assert_eq!(
            ledger.journal_entries("r1").unwrap().len(),
            n as usize + 1,
            "entry {n} is not in the journal yet"
        );
    }
}

#[test]
fn unsynced_writes_commit_without_a_sync_and_a_synced_write_after_them_syncs() {
    use tollgate_ledger::Durability;
    let (dir, ledger) = scratch_with(LedgerOptions::default());
    let before = ledger.stats();
    for n in 0..3 {
        ledger
            .apply_with(vec![create(format!("r{n}"))], Durability::Unsynced)
            .unwrap();
        // Committed: a reader on another connection sees it at once.
        assert!(ledger.run(&format!("r{n}")).unwrap().is_some());
    }
    let unsynced = ledger.stats();
    assert_eq!(unsynced.commits - before.commits, 3);
    assert_eq!(
        unsynced.synced_commits, before.synced_commits,
        "no unsynced write was synced"
    );
    ledger.apply(vec![create("r3".to_owned())]).unwrap();
    let synced = ledger.stats();
    assert_eq!(synced.synced_commits - unsynced.synced_commits, 1);
    // Another process opening the file sees all four, as after a `kill -9` of this one.
    let other =
        SqliteLedger::open(&dir.path().join("ledger.db"), LedgerOptions::default()).unwrap();
    for n in 0..4 {
        assert!(other.run(&format!("r{n}")).unwrap().is_some(), "r{n}");
    }
}

#[test]
fn an_unsynced_commit_with_nothing_after_it_is_synced_within_a_second() {
    use tollgate_ledger::Durability;
    let (_dir, ledger) = scratch_with(LedgerOptions::default());
    ledger
        .apply_with(vec![create("r1".to_owned())], Durability::Unsynced)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ledger.stats().tail_syncs == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the unsynced commit was never synced"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        ledger.stats().tail_syncs,
        1,
        "synced once, then nothing is left"
    );
}

#[test]
fn a_submitted_write_is_answered_from_the_writer_thread_after_its_commit() {
    use tollgate_ledger::Durability;
    let (_dir, ledger) = scratch_with(LedgerOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let caller = thread::current().id();
    let reader = Arc::clone(&ledger);
    let submitted = ledger.submit(
        vec![create("r1".to_owned())],
        Durability::Synced,
        Box::new(move |result| {
            // Committed before the answer: a reader on another connection sees the run.
            let seen = reader.run("r1").map(|run| run.is_some());
            tx.send((result, seen, thread::current().id())).unwrap();
        }),
    );
    assert!(submitted.is_ok(), "a SQLite ledger queues it");
    let (result, seen, answered_on) = rx.recv().unwrap();
    assert_eq!(result.unwrap().len(), 1);
    assert!(seen.unwrap(), "answered only once committed");
    assert_ne!(answered_on, caller, "answered by the writer thread");
}
