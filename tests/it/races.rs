//! Callers racing on one ledger: joining a run another caller is starting or still driving,
//! two humans resolving one escalation at once, and abandoning runs that already ended.

use crate::escalations::{approval_config, in_doubt_run};
use crate::harness::{Env, erp_config, events, invoice, load, open_escalations, output};
use tollgate::ledger::{EscalationReason, RunStatus};
use tollgate::{Decision, EscalationError, RunOptions, SettleError};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

/// A joiner that arrives the moment the run exists waits for its driver instead of resuming
/// it too. (With the run created and its first attempt begun in two writes, a joiner in
/// between took the run for abandoned and resumed it: two drivers, one of them failing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_joining_a_run_as_it_starts_waits_for_its_driver() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    for round in 0..10 {
        let run_id = format!("run-join-{round}");
        let options = RunOptions {
            run_id: Some(run_id.clone()),
            ..RunOptions::default()
        };
        let joiner = async {
            // Joins the moment the run is visible, as a second caller with the same call key
            // would.
            while runtime.ledger().run(&run_id).unwrap().is_none() {
                tokio::task::yield_now().await;
            }
            runtime.join(&tool, &run_id).await
        };
        let input = invoice(&format!("INV-J{round}"));
        let (driven, joined) = tokio::join!(
            runtime.run_with_options(&tool, &input, &options, false),
            joiner
        );
        let (driven, joined) = (driven.unwrap(), joined.unwrap());
        assert_eq!(output(&driven)["posted"], true, "round {round}: {driven:?}");
        assert_eq!(output(&joined), output(&driven), "round {round}");
        let attempts = runtime.ledger().attempts(&run_id).unwrap();
        assert_eq!(attempts.len(), 1, "round {round}: one driver: {attempts:?}");
    }
    assert_eq!(erp.stats().requests, 10);
}

/// A caller joining a run whose attempt is in flight gets that run's ending, without a second
/// attempt or a second request downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_joining_a_running_run_gets_its_ending_without_a_second_attempt() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        delay_ms: 700,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let options = RunOptions {
        run_id: Some("run-join-running".into()),
        ..RunOptions::default()
    };
    let joiner = async {
        // Joins once the request is at the ERP: the run is mid-attempt.
        while erp.stats().requests == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        runtime.join(&tool, "run-join-running").await
    };
    let input = invoice("INV-JR");
    let (driven, joined) = tokio::join!(
        runtime.run_with_options(&tool, &input, &options, false),
        joiner
    );
    let (driven, joined) = (driven.unwrap(), joined.unwrap());
    assert_eq!(output(&driven)["posted"], true, "{driven:?}");
    assert_eq!(joined.status, RunStatus::Succeeded);
    assert_eq!(output(&joined), output(&driven));
    assert!(joined.already_finished, "the joiner ran nothing itself");
    assert_eq!(
        runtime.ledger().attempts("run-join-running").unwrap().len(),
        1
    );
    assert_eq!(erp.stats().requests, 1);
}

/// Two approvers approving one escalation at the same moment: one decision commits, the other
/// is told it was already resolved, and the journal holds one resolution. (Before, the second
/// identical resolution committed too, with its own reopening of the run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_resolutions_at_once_commit_once() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&approval_config(&erp));
    let tool = load(&runtime, INVOICE).await;
    for round in 0..8 {
        let paused = runtime
            .run(&tool, &invoice(&format!("INV-R{round}")))
            .await
            .unwrap();
        assert_eq!(paused.status, RunStatus::WaitingApproval);
        let esc = open_escalations(&runtime, &paused.run_id).remove(0);
        let (a, b) = tokio::join!(
            runtime.settle(esc.id, Decision::Approve, "checked", "alice"),
            runtime.settle(esc.id, Decision::Approve, "checked too", "bob")
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            (a, b) => panic!("round {round}: exactly one must commit: {a:?} / {b:?}"),
        };
        assert!(
            matches!(
                lost,
                SettleError::Escalation(EscalationError::AlreadyResolved { .. })
            ),
            "round {round}: {lost}"
        );
        let report = won.report.expect("the winner resumed the run");
        assert_eq!(report.status, RunStatus::Succeeded, "round {round}");
        let resolved = events(&runtime, &paused.run_id)
            .iter()
            .filter(|e| *e == "escalation.resolved")
            .count();
        assert_eq!(resolved, 1, "round {round}: one resolution journaled");
    }
    assert_eq!(erp.stats().requests, 8);
}

/// `escalations resolve --abandon` on a run that already ended in doubt ends it as failed,
/// saying who abandoned it and why. (Before, it kept its in-doubt status and old error.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_an_in_doubt_run_ends_it_failed_with_the_reason() {
    let erp = Erp::start(false).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), false, 300));
    let run_id = in_doubt_run(&runtime, &erp, "INV-AB").await;
    let esc = open_escalations(&runtime, &run_id).remove(0);
    assert_eq!(esc.reason, EscalationReason::InDoubt);
    runtime
        .settle(esc.id, Decision::Abandon, "customer cancelled", "carol")
        .await
        .unwrap();
    let run = runtime.ledger().run(&run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error_message.unwrap_or_default();
    assert!(
        error.contains("abandoned by carol: customer cancelled"),
        "{error}"
    );
}

/// The same for a run that failed for good: abandoning records the decision on the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_a_failed_run_records_who_abandoned_it() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        reject: 1,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-AF"), "run")
        .await
        .unwrap();
    let run = runtime.ledger().run(&report.run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let esc = open_escalations(&runtime, &report.run_id).remove(0);
    runtime
        .settle(esc.id, Decision::Abandon, "credit hold confirmed", "dave")
        .await
        .unwrap();
    let run = runtime.ledger().run(&report.run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error_message.unwrap_or_default();
    assert!(
        error.contains("abandoned by dave: credit hold confirmed"),
        "{error}"
    );
}
