use tollgate_ledger::{AttemptStatus, LedgerError, LedgerExt, NewRun, Op, RunFilter, RunStatus};

use crate::{T0, ledger, new_run, running};

#[test]
fn created_run_reads_back_running_with_no_attempts() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let run = ledger.run("r1").unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.tool, "echo");
    assert_eq!(run.input, r#"{"x":1}"#);
    assert_eq!(run.attempts, 0);
    assert_eq!((run.created_at, run.updated_at), (T0, T0));
    assert_eq!(ledger.run("nope").unwrap(), None);
}

#[test]
fn creating_a_taken_run_id_is_run_exists() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let err = ledger
        .create_run(NewRun {
            run_id: "r1".into(),
            tool: "other".into(),
            input: "{}".into(),
            now: T0,
            component: None,
            lock: None,
        })
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunExists { run_id } if run_id == "r1"));
    assert_eq!(ledger.run("r1").unwrap().unwrap().tool, "echo");
}

#[test]
fn runs_lists_newest_first_filtered_and_limited() {
    let ledger = ledger();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        ledger
            .create_run(NewRun {
                run_id: (*id).into(),
                tool: "t".into(),
                input: "{}".into(),
                now: T0 + i as i64,
                component: None,
                lock: None,
            })
            .unwrap();
    }
    ledger
        .end_run("b", RunStatus::Succeeded, Some("{}"), None, None, T0 + 10)
        .unwrap();
    let ids = |filter: RunFilter| -> Vec<String> {
        ledger
            .runs(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect()
    };
    assert_eq!(ids(RunFilter::default()), ["c", "b", "a"]);
    assert_eq!(
        ids(RunFilter {
            status: Some(RunStatus::Running),
            limit: 10
        }),
        ["c", "a"]
    );
    assert_eq!(
        ids(RunFilter {
            status: None,
            limit: 1
        }),
        ["c"]
    );
}

#[test]
fn begin_attempt_numbers_attempts_and_counts_them_on_the_run() {
    let ledger = ledger();
    let first = running(&*ledger, "r1");
    assert_eq!(first.attempt, 1);
    assert_eq!(first.status, AttemptStatus::Running);
    assert_eq!(first.holder, "h1");
    ledger
        .end_attempt(
            "r1",
            1,
            AttemptStatus::Failed,
            Some("transient"),
            Some("boom"),
            T0 + 5,
        )
        .unwrap();
    let second = ledger
        .begin_attempt("r1", "sha256:c0ffee", "h2", T0 + 60_000, false, T0 + 10)
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(ledger.run("r1").unwrap().unwrap().attempts, 2);
    let attempts = ledger.attempts("r1").unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, AttemptStatus::Failed);
    assert_eq!(attempts[0].error_class.as_deref(), Some("transient"));
    assert_eq!(attempts[0].ended_at, Some(T0 + 5));
    assert_eq!(attempts[1], second);
}

#[test]
fn begin_attempt_refuses_while_the_latest_lease_is_live() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let err = ledger
        .begin_attempt("r1", "d", "h2", T0 + 90_000, false, T0 + 29_999)
        .unwrap_err();
    match err {
        LedgerError::AttemptLive {
            run_id,
            attempt,
            holder,
            lease_until,
        } => {
            assert_eq!((run_id.as_str(), attempt, holder.as_str()), ("r1", 1, "h1"));
            assert_eq!(lease_until, T0 + 30_000);
        }
        other => panic!("expected AttemptLive, got {other:?}"),
    }
    assert_eq!(ledger.run("r1").unwrap().unwrap().attempts, 1);
}

#[test]
fn begin_attempt_after_lease_expiry_marks_the_old_attempt_crashed() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let now = T0 + 30_000; // lease_until == now counts as expired
    let second = ledger
        .begin_attempt("r1", "d", "h2", now + 30_000, false, now)
        .unwrap();
    assert_eq!(second.attempt, 2);
    let attempts = ledger.attempts("r1").unwrap();
    assert_eq!(attempts[0].status, AttemptStatus::Crashed);
    assert_eq!(attempts[0].ended_at, Some(now));
    assert_eq!(attempts[0].error_class.as_deref(), Some("lease_expired"));
}

#[test]
fn take_over_supersedes_a_live_attempt() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let second = ledger
        .begin_attempt("r1", "d", "h2", T0 + 60_000, true, T0 + 1)
        .unwrap();
    assert_eq!(second.attempt, 2);
    let first = &ledger.attempts("r1").unwrap()[0];
    assert_eq!(first.status, AttemptStatus::Crashed);
    assert_eq!(first.error_class.as_deref(), Some("taken_over"));
    // The superseded holder can no longer renew or end its attempt as succeeded.
    let err = ledger.renew_lease("r1", 1, "h1", T0 + 90_000).unwrap_err();
    assert!(
        matches!(err, LedgerError::LeaseLost { attempt: 1, .. }),
        "{err:?}"
    );
    let err = ledger
        .end_attempt("r1", 1, AttemptStatus::Succeeded, None, None, T0 + 2)
        .unwrap_err();
    assert!(matches!(err, LedgerError::LeaseLost { .. }), "{err:?}");
}

#[test]
fn finished_run_refuses_new_attempts() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger
        .apply(vec![
            Op::EndAttempt {
                run_id: "r1".into(),
                attempt: 1,
                status: AttemptStatus::Succeeded,
                error_class: None,
                error_message: None,
                cpu_ms: 0,
                now: T0 + 1,
            },
            Op::EndRun {
                run_id: "r1".into(),
                status: RunStatus::Succeeded,
                output: Some(r#"{"ok":true}"#.into()),
                error_class: None,
                error_message: None,
                now: T0 + 1,
            },
        ])
        .unwrap();
    let err = ledger
        .begin_attempt("r1", "d", "h1", T0 + 90_000, true, T0 + 100_000)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RunFinished {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{err:?}"
    );
    let run = ledger.run("r1").unwrap().unwrap();
    assert_eq!(run.output.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(run.updated_at, T0 + 1);
}

#[test]
fn begin_attempt_on_unknown_run_is_run_not_found() {
    let ledger = ledger();
    let err = ledger
        .begin_attempt("ghost", "d", "h", T0, false, T0)
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { run_id } if run_id == "ghost"));
}

#[test]
fn renew_lease_extends_only_for_the_holder() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger.renew_lease("r1", 1, "h1", T0 + 50_000).unwrap();
    assert_eq!(ledger.attempts("r1").unwrap()[0].lease_until, T0 + 50_000);
    let err = ledger
        .renew_lease("r1", 1, "intruder", T0 + 99_000)
        .unwrap_err();
    assert!(matches!(err, LedgerError::LeaseLost { .. }), "{err:?}");
    let err = ledger.renew_lease("r1", 7, "h1", T0 + 99_000).unwrap_err();
    assert!(
        matches!(err, LedgerError::LeaseLost { attempt: 7, .. }),
        "{err:?}"
    );
    assert_eq!(ledger.attempts("r1").unwrap()[0].lease_until, T0 + 50_000);
}

#[test]
fn end_run_is_idempotent_but_refuses_a_different_final_status() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger
        .end_run(
            "r1",
            RunStatus::Failed,
            None,
            Some("permanent"),
            Some("bad input"),
            T0 + 1,
        )
        .unwrap();
    ledger
        .end_run(
            "r1",
            RunStatus::Failed,
            None,
            Some("permanent"),
            Some("bad input"),
            T0 + 2,
        )
        .unwrap();
    let err = ledger
        .end_run("r1", RunStatus::Succeeded, Some("{}"), None, None, T0 + 3)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RunFinished {
                status: RunStatus::Failed,
                ..
            }
        ),
        "{err:?}"
    );
    let err = ledger
        .end_run("r1", RunStatus::Running, None, None, None, T0 + 3)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
    let run = ledger.run("r1").unwrap().unwrap();
    assert_eq!(run.error_message.as_deref(), Some("bad input"));
    assert_eq!(run.updated_at, T0 + 1);
}

#[test]
fn a_failing_op_rolls_back_the_whole_apply() {
    let ledger = ledger();
    let err = ledger
        .apply(vec![
            Op::CreateRun(NewRun {
                run_id: "r1".into(),
                tool: "t".into(),
                input: "{}".into(),
                now: T0,
                component: None,
                lock: None,
            }),
            Op::BeginAttempt {
                run_id: "missing".into(),
                component_digest: "d".into(),
                holder: "h".into(),
                lease_until: T0,
                take_over: false,
                now: T0,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err:?}");
    assert_eq!(ledger.run("r1").unwrap(), None);
}

#[test]
fn errors_say_what_to_do() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let err = ledger
        .begin_attempt("r1", "d", "h2", T0 + 90_000, false, T0)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("still live"), "{text}");
    assert!(text.contains("for its lease to run out"), "{text}");
}

#[test]
fn park_run_moves_a_running_run_to_a_parked_status_and_repeating_is_a_no_op() {
    let ledger = ledger();
    for (run_id, status) in [
        ("r1", RunStatus::Escalated),
        ("r2", RunStatus::WaitingApproval),
    ] {
        running(&*ledger, run_id);
        ledger.park_run(run_id, status, T0 + 1).unwrap();
        ledger.park_run(run_id, status, T0 + 2).unwrap();
        let run = ledger.run(run_id).unwrap().unwrap();
        assert_eq!(run.status, status);
        assert!(run.status.is_parked());
        assert_eq!(run.updated_at, T0 + 1, "the repeat changed nothing");
    }
    let parked = ledger
        .runs(&RunFilter {
            status: Some(RunStatus::WaitingApproval),
            limit: 10,
        })
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].run_id, "r2");
}

#[test]
fn park_run_refuses_unparked_targets_other_parked_runs_finished_and_unknown_runs() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    for status in [RunStatus::Running, RunStatus::Failed] {
        let err = ledger.park_run("r1", status, T0 + 1).unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidTransition { .. }),
            "{err:?}"
        );
    }
    ledger.park_run("r1", RunStatus::Escalated, T0 + 1).unwrap();
    let err = ledger
        .park_run("r1", RunStatus::WaitingApproval, T0 + 2)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
    assert_eq!(
        ledger.run("r1").unwrap().unwrap().status,
        RunStatus::Escalated
    );

    new_run(&*ledger, "done");
    ledger
        .end_run("done", RunStatus::InDoubt, None, None, None, T0 + 1)
        .unwrap();
    let err = ledger
        .park_run("done", RunStatus::Escalated, T0 + 2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RunFinished {
                status: RunStatus::InDoubt,
                ..
            }
        ),
        "{err:?}"
    );

    let err = ledger
        .park_run("ghost", RunStatus::Escalated, T0)
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err:?}");
}

#[test]
fn begin_attempt_on_a_parked_run_is_run_parked() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger
        .end_attempt("r1", 1, AttemptStatus::Failed, None, None, T0 + 1)
        .unwrap();
    ledger.park_run("r1", RunStatus::Escalated, T0 + 1).unwrap();
    let err = ledger
        .begin_attempt("r1", "d", "h2", T0 + 90_000, true, T0 + 2)
        .unwrap_err();
    match &err {
        LedgerError::RunParked { run_id, status } => {
            assert_eq!((run_id.as_str(), *status), ("r1", RunStatus::Escalated));
        }
        other => panic!("expected RunParked, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("run `r1` is waiting for a human decision (status escalated)"),
        "{text}"
    );
    assert!(text.contains("settle its open escalation first"), "{text}");
    assert_eq!(ledger.run("r1").unwrap().unwrap().attempts, 1);
}

#[test]
fn end_run_finishes_a_parked_run() {
    let ledger = ledger();
    for (run_id, parked) in [
        ("r1", RunStatus::Escalated),
        ("r2", RunStatus::WaitingApproval),
    ] {
        new_run(&*ledger, run_id);
        ledger.park_run(run_id, parked, T0 + 1).unwrap();
        ledger
            .end_run(
                run_id,
                RunStatus::Failed,
                None,
                Some("permission"),
                Some("rejected by ana"),
                T0 + 2,
            )
            .unwrap();
        let run = ledger.run(run_id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_message.as_deref(), Some("rejected by ana"));
        assert_eq!(run.updated_at, T0 + 2);
    }
}

#[test]
fn end_run_refuses_a_parked_target_status() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    let err = ledger
        .end_run("r1", RunStatus::Escalated, None, None, None, T0 + 1)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
    assert_eq!(
        ledger.run("r1").unwrap().unwrap().status,
        RunStatus::Running
    );
}

#[test]
fn reopen_run_resumes_parked_failed_and_in_doubt_runs_clearing_their_outcome() {
    let ledger = ledger();
    let park = |run_id: &str, status| Op::ParkRun {
        run_id: run_id.into(),
        status,
        now: T0 + 1,
    };
    let end = |run_id: &str, status, output: Option<&str>| Op::EndRun {
        run_id: run_id.into(),
        status,
        output: output.map(str::to_owned),
        error_class: Some("permanent".into()),
        error_message: Some("bad".into()),
        now: T0 + 1,
    };
    let setups = [
        ("escalated", park("escalated", RunStatus::Escalated)),
        ("waiting", park("waiting", RunStatus::WaitingApproval)),
        ("failed", end("failed", RunStatus::Failed, Some("{}"))),
        ("in_doubt", end("in_doubt", RunStatus::InDoubt, None)),
    ];
    for (run_id, setup) in setups {
        running(&*ledger, run_id);
        ledger
            .end_attempt(run_id, 1, AttemptStatus::Failed, None, None, T0 + 1)
            .unwrap();
        ledger.apply(vec![setup]).unwrap();
        assert_ne!(
            ledger.run(run_id).unwrap().unwrap().status,
            RunStatus::Running
        );
        ledger.reopen_run(run_id, T0 + 10).unwrap();
        let run = ledger.run(run_id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Running, "{run_id}");
        assert_eq!(
            (run.output, run.error_class, run.error_message),
            (None, None, None),
            "{run_id}"
        );
        assert_eq!(run.updated_at, T0 + 10, "{run_id}");
        // A reopened run takes attempts again.
        let next = ledger
            .begin_attempt(run_id, "d", "h2", T0 + 90_000, false, T0 + 11)
            .unwrap();
        assert_eq!(next.attempt, 2, "{run_id}");
    }
}

#[test]
fn reopen_run_is_a_no_op_when_running_and_refuses_succeeded_and_unknown_runs() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger.reopen_run("r1", T0 + 5).unwrap();
    assert_eq!(ledger.run("r1").unwrap().unwrap().updated_at, T0);

    ledger
        .end_run("r1", RunStatus::Succeeded, Some("{}"), None, None, T0 + 1)
        .unwrap();
    let err = ledger.reopen_run("r1", T0 + 2).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RunFinished {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        ledger.run("r1").unwrap().unwrap().output.as_deref(),
        Some("{}")
    );

    let err = ledger.reopen_run("ghost", T0).unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err:?}");
}

#[test]
fn stored_bytes_counts_every_row_of_the_run_the_way_the_host_charges_it() {
    use tollgate_ledger::{NewJournalEntry, stored};
    let ledger = ledger();
    running(&*ledger, "r1");
    running(&*ledger, "other");
    let start = ledger.stored_bytes("r1").unwrap();
    // The run row and its first attempt, with the per-row cost each.
    let run_row = stored::ROW_COST + "echo".len() as u64 + r#"{"x":1}"#.len() as u64;
    let attempt_row = stored::ROW_COST + "sha256:c0ffee".len() as u64 + "h1".len() as u64;
    assert_eq!(start, run_row + attempt_row);
    // What the host counts a new run's first attempt from, without asking the ledger.
    let new_run = tollgate_ledger::NewRun {
        run_id: "r1".into(),
        tool: "echo".into(),
        input: r#"{"x":1}"#.into(),
        now: T0,
        component: Some("/tools/echo.wasm".into()),
        lock: None,
    };
    assert_eq!(
        stored::new_run(&new_run) + stored::new_attempt("sha256:c0ffee", "h1"),
        start
    );

    let entry = NewJournalEntry {
        run_id: "r1".into(),
        attempt: Some(1),
        at: T0,
        level: "info".into(),
        event: "log".into(),
        message: String::new(),
        fields: serde_json::json!({ "k": "v\u{1b}" }),
    };
    ledger.apply(vec![Op::Journal(entry.clone())]).unwrap();
    ledger.save_checkpoint("r1", 1, "c", &[7; 100], T0).unwrap();
    let digest = tollgate_ledger::payload_digest(br#"{"a":1}"#);
    ledger
        .claim_effect("erp.post", "k1", &digest, r#"{"a":1}"#, "r1", 1, T0)
        .unwrap();
    ledger
        .claim_call_key("call-1", "echo", "d1", "r1", T0)
        .unwrap();
    let grown = ledger.stored_bytes("r1").unwrap() - start;
    // An empty log event is not free, and fields count as the JSON text stored.
    assert!(stored::journal_entry(&entry) > stored::ROW_COST + 12);
    assert_eq!(
        grown,
        stored::journal_entry(&entry)
            + stored::checkpoint("c", 100)
            + stored::effect_claim("erp.post", "k1", r#"{"a":1}"#)
            + stored::call_key("call-1", "echo", "d1")
    );
    // Another run's rows are not counted.
    assert_eq!(ledger.stored_bytes("other").unwrap(), run_row + attempt_row);
    assert!(matches!(
        ledger.stored_bytes("ghost"),
        Err(LedgerError::RunNotFound { .. })
    ));
}

#[test]
fn a_live_attempt_error_shows_its_lease_as_a_time_and_names_only_real_ways_out() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let err = ledger
        .begin_attempt("r1", "d", "h2", T0 + 90_000, false, T0 + 1)
        .unwrap_err();
    let text = err.to_string();
    // T0 + 30 s, as a time; never raw epoch milliseconds.
    assert!(text.contains("until 2023-11-14T22:13:50.000Z"), "{text}");
    assert!(!text.contains(&(T0 + 30_000).to_string()), "{text}");
    assert!(!text.contains("explicitly"), "no such option: {text}");
}

/// Two hosts find one run stranded after attempt 1 (lease lapsed at T0 + 30 s). The first
/// claim begins attempt 2; that attempt then ends before the second host's claim lands, so
/// no live lease stands in its way: only the attempt count it saw refuses it.
#[test]
fn a_stranded_claim_is_refused_once_the_run_had_another_attempt() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let claim = |holder: &str, now| Op::ClaimStranded {
        run_id: "r1".into(),
        seen_attempts: 1,
        component_digest: "sha256:c0ffee".into(),
        holder: holder.into(),
        lease_until: now + 30_000,
        now,
    };
    let won = ledger.apply(vec![claim("node-a", T0 + 40_000)]).unwrap();
    assert!(matches!(&won[..], [tollgate_ledger::Applied::Attempt(a)] if a.attempt == 2));
    ledger
        .end_attempt(
            "r1",
            2,
            AttemptStatus::Failed,
            Some("transient"),
            Some("x"),
            T0 + 41_000,
        )
        .unwrap();
    let err = ledger
        .apply(vec![claim("node-b", T0 + 42_000)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RunMoved {
                seen: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("another host claimed it first"),
        "{err}"
    );
    assert_eq!(ledger.attempts("r1").unwrap().len(), 2, "no third attempt");
}
