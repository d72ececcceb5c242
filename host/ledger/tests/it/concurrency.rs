use std::sync::{Arc, Barrier};
use std::thread;

use tollgate_ledger::{Ledger, LedgerError, LedgerExt, LedgerOptions, NewRun, Op, SqliteLedger};

use crate::T0;

const THREADS: usize = 32;

fn scratch(group_commit: bool) -> (tempfile::TempDir, Arc<SqliteLedger>) {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        group_commit,
        ..LedgerOptions::default()
    };
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
