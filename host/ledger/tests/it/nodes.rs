//! The fleet's reads and writes: which running runs no live host drives (`stranded`), the
//! nodes' heartbeats, and what each holder holds.

use tollgate_ledger::{AttemptStatus, LedgerExt, NewRun, RunStatus, StrandedFilter};

use crate::{T0, ledger, new_run, running};

fn filter(now: i64) -> StrandedFilter {
    StrandedFilter {
        tool: "echo".into(),
        now,
        ended_by: now - 60_000,
        created_by: now - 30_000,
        limit: 100,
    }
}

fn ids(runs: &[tollgate_ledger::Run]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

/// Each kind of stranded run is found exactly when its own rule says so, and a driven run,
/// a finished run, a parked run or another tool's run never is.
#[test]
fn stranded_finds_lapsed_leases_ended_attempts_past_backoff_and_attemptless_runs_oldest_first() {
    let ledger = ledger();
    // Lease until T0 + 30 s.
    running(&*ledger, "lapsed");
    // Ended at T0 + 5 s: its driver may begin the next attempt until `ended_by`.
    running(&*ledger, "ended");
    ledger
        .end_attempt(
            "ended",
            1,
            AttemptStatus::Failed,
            Some("transient"),
            Some("x"),
            T0 + 5_000,
        )
        .unwrap();
    // Created at T0, never began an attempt.
    new_run(&*ledger, "bare");
    // Finished, parked, and another tool's lapsed run: never stranded.
    running(&*ledger, "done");
    ledger
        .end_run("done", RunStatus::Succeeded, Some("{}"), None, None, T0 + 1)
        .unwrap();
    running(&*ledger, "parked");
    ledger
        .park_run("parked", RunStatus::Escalated, T0 + 1)
        .unwrap();
    ledger
        .create_run(NewRun {
            run_id: "other".into(),
            tool: "other-tool".into(),
            input: "{}".into(),
            now: T0,
            component: None,
            lock: None,
        })
        .unwrap();
    ledger
        .begin_attempt("other", "sha256:c0ffee", "h1", T0 + 1, false, T0)
        .unwrap();

    // Everything is still within its lease, backoff or grace.
    let early = ledger
        .stranded(&StrandedFilter {
            ended_by: T0 + 4_999,
            created_by: T0 - 1,
            ..filter(T0 + 29_999)
        })
        .unwrap();
    assert_eq!(ids(&early), Vec::<&str>::new());
    // The lease lapses at T0 + 30 s exactly; the backoff and the grace are inclusive too.
    let lapsed = ledger
        .stranded(&StrandedFilter {
            ended_by: T0 + 4_999,
            created_by: T0 - 1,
            ..filter(T0 + 30_000)
        })
        .unwrap();
    assert_eq!(ids(&lapsed), ["lapsed"]);
    let all = ledger
        .stranded(&StrandedFilter {
            ended_by: T0 + 5_000,
            created_by: T0,
            ..filter(T0 + 30_000)
        })
        .unwrap();
    // Created in the order lapsed, ended, bare (equal times: insertion order).
    assert_eq!(ids(&all), ["lapsed", "ended", "bare"]);
    let first_two = ledger
        .stranded(&StrandedFilter {
            limit: 2,
            ..filter(T0 + 100_000)
        })
        .unwrap();
    assert_eq!(ids(&first_two), ["lapsed", "ended"]);

    // A new attempt makes the run driven again.
    ledger
        .begin_attempt(
            "lapsed",
            "sha256:c0ffee",
            "h2",
            T0 + 200_000,
            false,
            T0 + 40_000,
        )
        .unwrap();
    let after = ledger.stranded(&filter(T0 + 100_000)).unwrap();
    assert_eq!(ids(&after), ["ended", "bare"]);
}

#[test]
fn a_heartbeat_records_the_node_keeps_its_start_and_a_stop_marks_it_until_it_beats_again() {
    let ledger = ledger();
    assert!(ledger.nodes().unwrap().is_empty());
    ledger
        .heartbeat("a:1:x", "127.0.0.1:8080", "0.1.0", 30_000, None, T0)
        .unwrap();
    ledger
        .heartbeat("a:1:x", "127.0.0.1:8080", "0.1.0", 30_000, None, T0 + 1_000)
        .unwrap();
    ledger
        .heartbeat("b:2:y", "127.0.0.1:8081", "0.1.0", 30_000, None, T0 + 500)
        .unwrap();
    let nodes = ledger.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    // Most recently started first.
    assert_eq!(nodes[0].node_id, "b:2:y");
    let a = &nodes[1];
    assert_eq!(
        (
            a.address.as_str(),
            a.started_at,
            a.heartbeat_at,
            a.stopped_at
        ),
        ("127.0.0.1:8080", T0, T0 + 1_000, None)
    );

    ledger.node_stopped("a:1:x", T0 + 2_000).unwrap();
    ledger.node_stopped("never-seen", T0 + 2_000).unwrap();
    let nodes = ledger.nodes().unwrap();
    assert_eq!(nodes.len(), 2, "stopping an unknown node adds nothing");
    assert_eq!(nodes[1].stopped_at, Some(T0 + 2_000));
    assert_eq!(nodes[1].heartbeat_at, T0 + 1_000);

    ledger
        .heartbeat("a:1:x", "127.0.0.1:8080", "0.1.0", 30_000, None, T0 + 3_000)
        .unwrap();
    let again = &ledger.nodes().unwrap()[1];
    assert_eq!((again.started_at, again.stopped_at), (T0, None));
}

#[test]
fn a_heartbeat_that_forgets_silent_nodes_deletes_only_those_silent_since_before_the_cutoff() {
    let ledger = ledger();
    ledger.heartbeat("old", "a", "v", 30_000, None, T0).unwrap();
    ledger
        .heartbeat("recent", "b", "v", 30_000, None, T0 + 10)
        .unwrap();
    ledger
        .heartbeat("new", "c", "v", 30_000, Some(T0 + 10), T0 + 20)
        .unwrap();
    let mut left: Vec<String> = ledger
        .nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    left.sort();
    assert_eq!(left, ["new", "recent"]);
}

#[test]
fn holdings_are_the_holders_running_attempts_of_running_runs_and_its_unreleased_locks() {
    let ledger = ledger();
    // "h1" holds r1's attempt; r2's attempt was taken over by h2; r3 ended.
    running(&*ledger, "r1");
    running(&*ledger, "r2");
    ledger
        .begin_attempt("r2", "sha256:c0ffee", "h2", T0 + 90_000, true, T0 + 1)
        .unwrap();
    running(&*ledger, "r3");
    ledger
        .end_run(
            "r3",
            RunStatus::Failed,
            None,
            Some("permanent"),
            Some("x"),
            T0 + 2,
        )
        .unwrap();
    let held = ledger
        .acquire_lock("invoice-1", "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    ledger
        .acquire_lock("invoice-2", "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    ledger.release_lock("invoice-2", "r1", 1, T0 + 5).unwrap();
    ledger
        .acquire_lock("invoice-3", "r2", "h2", T0 + 30_000, T0)
        .unwrap();

    let h1 = ledger.holdings("h1").unwrap();
    let attempts: Vec<(&str, u32)> = h1
        .attempts
        .iter()
        .map(|a| (a.run_id.as_str(), a.attempt))
        .collect();
    assert_eq!(attempts, [("r1", 1)]);
    assert_eq!(h1.locks, [held]);
    let h2 = ledger.holdings("h2").unwrap();
    assert_eq!(h2.attempts.len(), 1);
    assert_eq!(
        (h2.attempts[0].run_id.as_str(), h2.attempts[0].attempt),
        ("r2", 2)
    );
    assert_eq!(h2.locks.len(), 1);
    assert!(ledger.holdings("nobody").unwrap().attempts.is_empty());
}
