//! The exactly-once effect protocol against a real ERP server on 127.0.0.1 and a real ledger
//! file: replay, conflict, in-flight keys, crashed attempts with and without key-honouring
//! downstreams, recorded failures, checkpoints across attempts, and bad input.

use crate::harness::{
    Env, checkpoints_saved, closed_port, erp_config, events, failure, invoice, invoice_with, load,
    output,
};
use std::sync::Arc;
use std::time::Duration;
use tollgate::ledger::{EffectStatus, Ledger, LedgerError, RunStatus, SqliteLedger};
use tollgate::{FailureClass, ManualClock, RunError};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::{HELLO, INVOICE};

#[tokio::test]
async fn replays_succeeded_key_without_dispatch() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let first = runtime.run(&tool, &invoice("INV-1")).await.unwrap();
    let second = runtime.run(&tool, &invoice("INV-1")).await.unwrap();
    assert_ne!(
        first.run_id, second.run_id,
        "a new run with the same business intent"
    );
    assert_eq!(output(&second)["replayed"], true);
    assert_eq!(
        output(&second)["erp"],
        output(&first)["erp"],
        "the recorded outcome is returned"
    );
    assert_eq!(
        erp.stats().requests,
        1,
        "nothing dispatched the second time"
    );
    assert!(events(&runtime, &second.run_id).contains(&"effect.replayed".to_owned()));
}

#[tokio::test]
async fn changed_payload_under_used_key_is_a_conflict_naming_the_first_run() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let first = runtime.run(&tool, &invoice_with("INV-2", 3)).await.unwrap();
    let second = runtime.run(&tool, &invoice_with("INV-2", 4)).await.unwrap();
    let f = failure(&second);
    assert_eq!(f.class, FailureClass::Conflict, "{f}");
    assert!(
        f.message.contains("post-invoice:INV-2"),
        "names the key: {f}"
    );
    assert!(
        f.message.contains(&first.run_id),
        "names the first run: {f}"
    );
    assert_eq!(second.status, RunStatus::Failed);
    assert_eq!(erp.stats().requests, 1, "nothing dispatched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_in_flight_in_another_live_attempt_is_transient_and_the_run_resumable() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 10_000));
    let tool = load(&runtime, INVOICE).await;
    let holder = tokio::spawn({
        let (runtime, tool) = (runtime.clone(), Arc::clone(&tool));
        async move { runtime.run(&tool, &invoice("INV-3")).await.unwrap() }
    });
    wait_until(|| erp.postings_for("INV-3") == 1).await;
    let second = runtime.run(&tool, &invoice("INV-3")).await.unwrap();
    let first = holder.await.unwrap();
    let f = failure(&second);
    assert_eq!(f.class, FailureClass::Transient, "{f}");
    assert_eq!(
        second.status,
        RunStatus::Running,
        "resumable, not failed for good"
    );
    assert!(
        f.message.contains("in flight") && f.message.contains(&first.run_id),
        "says who holds it: {f}"
    );
    let wait = f.details.as_ref().unwrap()["retry_after_ms"]
        .as_u64()
        .unwrap();
    assert!(
        wait > 0 && wait <= 30_000,
        "waits out the holder's lease: {wait}"
    );
    assert_eq!(output(&first)["posted"], true);
    assert_eq!(
        erp.stats().requests,
        1,
        "never dispatched twice concurrently"
    );
    // Once the holder finished, the waiting run goes on and replays its outcome.
    let resumed = runtime.resume(&second.run_id, Some(&tool)).await.unwrap();
    assert_eq!(output(&resumed)["replayed"], true);
    assert_eq!(erp.stats().requests, 1);
}

/// Starts a run whose ERP books the invoice and then holds the response, and cancels the
/// attempt mid-dispatch: the effect is left `pending` with an unknown outcome, as after a crash.
async fn crash_mid_dispatch(runtime: &tollgate::Runtime, erp: &Erp, id: &str) -> String {
    let tool = load(runtime, INVOICE).await;
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 2_000,
        ..Faults::default()
    });
    let task = tokio::spawn({
        let (runtime, tool, input) = (runtime.clone(), Arc::clone(&tool), invoice(id));
        async move { runtime.run(&tool, &input).await }
    });
    wait_until(|| erp.postings_for(id) == 1).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let runs = runtime.ledger().runs(&Default::default()).unwrap();
    let run = runs
        .iter()
        .find(|r| r.input.contains(id))
        .expect("the crashed run is recorded");
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", &format!("post-invoice:{id}"))
        .unwrap()
        .unwrap();
    assert_eq!(
        effect.status,
        EffectStatus::Pending,
        "outcome unknown after the crash"
    );
    run.run_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_pending_key_is_resent_with_the_same_key_when_downstream_honours_keys() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let runtime = env
        .builder(&erp_config(&erp.invoices_url(), true, 10_000))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let run_id = crash_mid_dispatch(&runtime, &erp, "INV-4").await;
    let err = runtime.resume(&run_id, None).await.unwrap_err();
    assert!(
        matches!(err, RunError::Ledger(LedgerError::AttemptLive { .. })),
        "the lease still protects it: {err}"
    );
    clock.advance(60_000);
    let report = runtime.resume(&run_id, None).await.unwrap();
    assert_eq!(report.attempt, 2);
    assert_eq!(output(&report)["posted"], true);
    assert_eq!(
        erp.postings_for("INV-4"),
        1,
        "the downstream deduplicated the re-send"
    );
    assert_eq!(erp.stats().requests, 2);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-4")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.status, effect.dispatches, effect.attempt),
        (EffectStatus::Succeeded, 2, 2)
    );
    assert!(events(&runtime, &run_id).contains(&"effect.redispatch".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_pending_key_goes_in_doubt_when_downstream_ignores_keys() {
    let erp = Erp::start(false).unwrap();
    let env = Env::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let runtime = env
        .builder(&erp_config(&erp.invoices_url(), false, 10_000))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let run_id = crash_mid_dispatch(&runtime, &erp, "INV-5").await;
    clock.advance(60_000);
    let report = runtime.resume(&run_id, None).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::InDoubt, "{f}");
    assert_eq!(report.status, RunStatus::InDoubt);
    assert_eq!(erp.stats().requests, 1, "never re-sent");
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-5")
        .unwrap()
        .unwrap();
    assert_eq!(effect.status, EffectStatus::InDoubt);
    // A new run for the same intent stops too, instead of posting a second time.
    let tool = load(&runtime, INVOICE).await;
    let again = runtime.run(&tool, &invoice("INV-5")).await.unwrap();
    assert_eq!(failure(&again).class, FailureClass::InDoubt);
    assert_eq!(erp.stats().requests, 1);
    // Resuming the finished run reports its recorded ending and starts nothing.
    let attempts = runtime.story(&run_id).unwrap().attempts.len();
    let ending = runtime.resume(&run_id, None).await.unwrap();
    assert!(ending.already_finished);
    assert_eq!(ending.status, RunStatus::InDoubt);
    assert_eq!(failure(&ending).class, FailureClass::InDoubt);
    assert_eq!(runtime.story(&run_id).unwrap().attempts.len(), attempts);
    assert_eq!(erp.stats().requests, 1);
}

#[tokio::test]
async fn timeout_after_success_then_retry_posts_once() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_000,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 300));
    let tool = load(&runtime, INVOICE).await;
    let first = runtime.run(&tool, &invoice("INV-6")).await.unwrap();
    assert_eq!(failure(&first).class, FailureClass::Timeout);
    assert_eq!(
        first.status,
        RunStatus::Running,
        "a timeout leaves the run resumable"
    );
    assert_eq!(erp.postings_for("INV-6"), 1, "the ERP did book it");
    let retry = runtime.resume(&first.run_id, Some(&tool)).await.unwrap();
    assert_eq!(output(&retry)["erp"]["invoice_id"], "INV-6");
    assert_eq!(
        erp.postings_for("INV-6"),
        1,
        "the retry did not book it again"
    );
}

#[tokio::test]
async fn transient_failure_is_retried_under_the_same_key_from_the_checkpoint() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        unavailable: 1,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let first = runtime.run(&tool, &invoice("INV-8")).await.unwrap();
    assert_eq!(failure(&first).class, FailureClass::Transient);
    assert_eq!(first.status, RunStatus::Running);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-8")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.status, effect.error_class.as_deref()),
        (EffectStatus::Failed, Some("transient"))
    );
    let second = runtime.resume(&first.run_id, None).await.unwrap();
    assert_eq!(
        (second.attempt, output(&second)["posted"].as_bool()),
        (2, Some(true))
    );
    assert_eq!(erp.postings_for("INV-8"), 1);
    let saved = checkpoints_saved(&runtime, &first.run_id);
    assert_eq!(
        saved,
        [("validated".to_owned(), 1), ("posted".to_owned(), 2)],
        "attempt 2 resumed from attempt 1's checkpoint"
    );
}

#[tokio::test]
async fn validation_failure_is_recorded_and_returned_without_resending() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        reject: 1,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let first = runtime.run(&tool, &invoice("INV-9")).await.unwrap();
    let f = failure(&first);
    assert_eq!(f.class, FailureClass::Validation, "{f}");
    assert_eq!(first.status, RunStatus::Failed);
    assert!(
        f.details.as_ref().unwrap()["body"]
            .as_str()
            .unwrap()
            .contains("credit hold"),
        "{f:?}"
    );
    let again = runtime.run(&tool, &invoice("INV-9")).await.unwrap();
    assert_eq!(failure(&again).class, FailureClass::Validation);
    assert_eq!(
        erp.stats().requests,
        1,
        "the recorded failure is returned, not re-sent"
    );
}

/// A downstream answer holding U+0000 (which PostgreSQL text cannot hold) is recorded on
/// either backend, and the tool is given the same text on the first call and on replay.
#[tokio::test]
async fn a_downstream_answer_holding_nul_is_recorded_and_replayed_as_first_returned() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        reject: 1,
        reject_body: Some("customer is on credit hold\0 (code 7)".to_owned()),
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let body = |report: &tollgate::RunReport| {
        let f = failure(report);
        assert_eq!(f.class, FailureClass::Validation, "{f}");
        f.details.as_ref().unwrap()["body"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = runtime.run(&tool, &invoice("INV-NUL")).await.unwrap();
    assert_eq!(first.status, RunStatus::Failed);
    let first = body(&first);
    assert_eq!(first, "customer is on credit hold\u{FFFD} (code 7)");
    let again = runtime.run(&tool, &invoice("INV-NUL")).await.unwrap();
    assert_eq!(
        body(&again),
        first,
        "the replay gives what the first call gave"
    );
    assert_eq!(erp.stats().requests, 1, "replayed, not re-sent");
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-NUL")
        .unwrap()
        .unwrap();
    assert_eq!(effect.status, EffectStatus::Failed);
    assert_eq!(effect.response.as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn unreachable_connector_is_transient_and_resumable() {
    let env = Env::new();
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/invoices");
    // A downstream that does not honour keys: the resume below may send only because the
    // first attempt provably never reached it.
    let runtime = env.runtime(&erp_config(&url, false, 2_000));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice("INV-10")).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Transient, "{f}");
    assert!(f.message.contains("cannot connect"), "{f}");
    assert_eq!(
        report.status,
        RunStatus::Running,
        "nothing reached downstream: safe to resume"
    );
    // The downstream comes up where the connector points, and the run resumes to its end.
    let erp = Erp::start_on(false, port).unwrap();
    let resumed = runtime.resume(&report.run_id, Some(&tool)).await.unwrap();
    assert_eq!(resumed.run_id, report.run_id);
    assert_eq!(resumed.attempt, 2);
    assert_eq!(resumed.status, RunStatus::Succeeded);
    assert_eq!(output(&resumed)["posted"], true);
    assert_eq!(output(&resumed)["erp"]["invoice_id"], "INV-10");
    assert_eq!(erp.stats().requests, 1, "sent once, by the resume");
    assert_eq!(erp.postings_for("INV-10"), 1);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-10")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.status, effect.attempt),
        (EffectStatus::Succeeded, 2)
    );
}

#[tokio::test]
async fn effect_kind_not_granted_is_a_permission_error_and_journaled() {
    let env = Env::new();
    let runtime = env.runtime("[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n");
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice("INV-11")).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert!(
        f.message.contains("[tools.invoice]"),
        "says how to grant it: {f}"
    );
    let story = runtime.story(&report.run_id).unwrap();
    let denial = story
        .journal
        .iter()
        .find(|e| e.event == "policy.denied")
        .expect("journaled");
    assert_eq!(denial.fields["rule"], "tools.invoice.effects");
    assert_eq!(denial.fields["asked"], "effect erp.post-invoice");
    assert!(story.effects.is_empty(), "nothing recorded or dispatched");
}

#[tokio::test]
async fn oversized_payload_and_checkpoint_are_refused() {
    let env = Env::new();
    let noop = "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n[tools.invoice]\neffects = [\"erp.post-invoice\"]\n";
    let runtime = env.runtime(&format!(
        "{noop}[tools.invoice.limits]\nmax_payload_bytes = 64\n"
    ));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice("INV-12")).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission);
    assert!(f.message.contains("over the cap of 64"), "{f}");
    assert!(runtime.story(&report.run_id).unwrap().effects.is_empty());
    assert!(events(&runtime, &report.run_id).contains(&"policy.denied".to_owned()));

    let env = Env::new();
    let runtime = env.runtime(&format!(
        "{noop}[tools.invoice.limits]\nmax_checkpoint_bytes = 8\n"
    ));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice("INV-13")).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission);
    assert!(f.message.contains("checkpoint `validated`"), "{f}");
    assert!(events(&runtime, &report.run_id).contains(&"policy.denied".to_owned()));
    assert!(
        runtime
            .story(&report.run_id)
            .unwrap()
            .checkpoints
            .is_empty()
    );
}

#[tokio::test]
async fn resume_of_succeeded_run_returns_recorded_output_and_unknown_run_is_refused() {
    let env = Env::new();
    let runtime = env.runtime("");
    let tool = load(&runtime, HELLO).await;
    let done = runtime.run(&tool, r#"{"message":"x"}"#).await.unwrap();
    let again = runtime.resume(&done.run_id, None).await.unwrap();
    assert_eq!(
        again.result.as_ref().unwrap(),
        done.result.as_ref().unwrap()
    );
    assert_eq!(again.status, RunStatus::Succeeded);
    assert!(again.already_finished && !done.already_finished);
    let story = runtime.story(&done.run_id).unwrap();
    assert_eq!(story.attempts.len(), 1, "no new attempt for a finished run");
    let err = runtime
        .resume("run-2026-01-01-nope", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunError::Ledger(LedgerError::RunNotFound { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_ledger_file_is_refused_and_left_untouched() {
    let env = Env::new();
    let garbage = b"definitely not a sqlite database, but someone's notes".repeat(100);
    std::fs::write(env.ledger(), &garbage).unwrap();
    let err = env.builder("").build().unwrap_err().to_string();
    assert!(
        err.contains(&env.ledger().display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(
        std::fs::read(env.ledger()).unwrap(),
        garbage,
        "nothing written to it"
    );
}

/// 64 concurrent runs in one process: the single writer batches their durable requests
/// into fewer commits, and every outcome is on disk afterwards, read back through a
/// connection of its own. (That an outcome is durable before its tool sees it is what the
/// `kill -9` campaigns in `crash.rs` prove.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_share_commits() {
    let env = Env::new();
    let ledger = Arc::new(SqliteLedger::open(&env.ledger(), Default::default()).unwrap());
    let noop = "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n[tools.invoice]\neffects = [\"erp.post-invoice\"]\n";
    let runtime = env.builder(noop).ledger(ledger.clone()).build().unwrap();
    let tool = load(&runtime, INVOICE).await;
    let before = ledger.stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (runtime, tool) = (runtime.clone(), Arc::clone(&tool));
        tasks.spawn(async move {
            runtime
                .run(&tool, &invoice(&format!("INV-C{i}")))
                .await
                .unwrap()
        });
    }
    while let Some(report) = tasks.join_next().await {
        assert_eq!(output(&report.unwrap())["posted"], true);
    }
    let after = ledger.stats();
    let (commits, requests) = (
        after.commits - before.commits,
        after.requests - before.requests,
    );
    println!("64 runs: {requests} durable requests in {commits} commits");
    assert!(
        commits < requests,
        "{commits} commits for {requests} requests: no batching"
    );
    let on_disk = SqliteLedger::open(&env.ledger(), Default::default()).unwrap();
    for i in 0..64 {
        let key = format!("post-invoice:INV-C{i}");
        let effect = on_disk
            .effect("erp.post-invoice", &key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is not on disk"));
        assert_eq!(effect.status, EffectStatus::Succeeded, "{key}");
        assert!(effect.response.is_some(), "{key}: outcome recorded");
    }
}

async fn wait_until(cond: impl FnMut() -> bool) {
    crate::harness::wait_until(Duration::from_secs(5), cond).await;
}

/// An ERP that ignores keys, with a lookup by key, behind a 300 ms timeout; the lookup goes
/// to `lookup` (the ERP's own, unless a test points it elsewhere). The margin is wide: a
/// send must start within half of it after its dispatch is recorded, and on a loaded
/// machine a commit to a shared PostgreSQL server alone can take 50 ms.
fn probed_config(erp: &Erp, lookup: &str) -> String {
    format!(
        "{}\n[connectors.\"erp.post-invoice\".reconcile]\nurl = \"{lookup}\"\nmargin_ms = 1000\n",
        erp_config(&erp.invoices_url(), false, 300)
    )
}

/// One run of the invoice tool on `erp` under [`probed_config`], with `extra` lines added to
/// its reconcile table. The environment holds the ledger, so it is returned to live on.
async fn probed_run(
    erp: &Erp,
    lookup: &str,
    extra: &str,
    invoice_id: &str,
) -> (Env, tollgate::Runtime, tollgate::RunReport) {
    let env = Env::new();
    let runtime = env.runtime(&format!("{}{extra}", probed_config(erp, lookup)));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice(invoice_id)).await.unwrap();
    (env, runtime, report)
}

fn lookup_url(erp: &Erp) -> String {
    format!("http://{}/invoices/by-key/{{key}}", erp.addr())
}

fn probe_answers(runtime: &tollgate::Runtime, run_id: &str) -> Vec<String> {
    runtime
        .story(run_id)
        .unwrap()
        .journal
        .iter()
        .filter(|e| e.event == "effect.probed")
        .map(|e| e.fields["answer"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A timeout after the ERP booked, on a downstream that ignores keys: the lookup finds the
/// booking, which becomes the outcome. Nothing is sent twice and no human is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_on_a_key_ignoring_erp_is_settled_by_its_lookup() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let (_env, runtime, report) = probed_run(&erp, &lookup_url(&erp), "", "INV-P1").await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(output(&report)["erp"]["posting_id"], "ERP-000001");
    let stats = erp.stats();
    assert_eq!((stats.requests, stats.postings), (1, 1));
    assert_eq!((stats.lookups, stats.lookups_found), (1, 1));
    assert_eq!(probe_answers(&runtime, &report.run_id), ["happened"]);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-P1")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.status, effect.dispatches),
        (EffectStatus::Succeeded, 1)
    );
    assert!(crate::harness::open_escalations(&runtime, &report.run_id).is_empty());
}

/// A 500 the ERP answered without booking: the lookup says it did not happen, so it is sent
/// again under the same key, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_lookup_does_not_find_is_sent_again_under_its_key() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        fail_unbooked: 1,
        ..Faults::default()
    });
    let (_env, runtime, report) = probed_run(&erp, &lookup_url(&erp), "", "INV-P2").await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let stats = erp.stats();
    assert_eq!((stats.requests, stats.postings), (2, 1));
    assert_eq!(stats.requests_by_key["post-invoice:INV-P2"], 2, "same key");
    assert_eq!(probe_answers(&runtime, &report.run_id), ["not_happened"]);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-P2")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.status, effect.dispatches),
        (EffectStatus::Succeeded, 2)
    );
}

/// A lookup that cannot answer leaves the effect in doubt as without one, and the evidence a
/// human gets says what the probe got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_lookup_leaves_the_effect_in_doubt_with_its_answer_in_the_evidence() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let dead = format!("http://127.0.0.1:{}/by-key/{{key}}", closed_port());
    let (_env, runtime, report) = probed_run(&erp, &dead, "", "INV-P3").await;
    assert_eq!(report.status, RunStatus::InDoubt, "{report:?}");
    assert_eq!(erp.stats().requests, 1, "not re-sent");
    assert_eq!(probe_answers(&runtime, &report.run_id), ["unknown"]);
    let esc = crate::harness::open_escalations(&runtime, &report.run_id).remove(0);
    let probe = &esc.evidence["failure"]["details"]["probe"];
    assert_eq!(probe["answer"], "unknown", "{}", esc.evidence);
    assert!(
        probe["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{probe}"
    );
}

/// A downstream that loses every request (500, nothing booked) is sent the effect three
/// times, each after its lookup said it did not happen, and then a human is asked, with a
/// message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_loses_every_request_is_sent_at_most_three_times() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        fail_unbooked: 10,
        ..Faults::default()
    });
    let (_env, runtime, report) = probed_run(&erp, &lookup_url(&erp), "", "INV-P4").await;
    assert_eq!(report.status, RunStatus::InDoubt, "{report:?}");
    assert_eq!(erp.stats().requests, 3);
    assert_eq!(erp.stats().postings, 0);
    assert_eq!(probe_answers(&runtime, &report.run_id), ["not_happened"; 3]);
    let message = &failure(&report).message;
    let journal = runtime.story(&report.run_id).unwrap().journal;
    let why = journal
        .iter()
        .find(|e| e.event == "effect.in_doubt")
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(why.contains("sent 3 times"), "{why} / {message}");
}

/// With `not_found_body`, a 404 that is not downstream's own answer (here, a lookup path that
/// does not exist) says nothing: the effect goes in doubt instead of being sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_without_downstreams_not_found_text_is_no_answer() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        fail_unbooked: 1,
        ..Faults::default()
    });
    let wrong_path = format!("http://{}/no-such-lookup/{{key}}", erp.addr());
    let not_found = "not_found_body = \"no booking\"\n";
    let (_env, runtime, report) = probed_run(&erp, &wrong_path, not_found, "INV-P5").await;
    assert_eq!(report.status, RunStatus::InDoubt, "{report:?}");
    assert_eq!(erp.stats().requests, 1, "not sent again on a stray 404");
    assert_eq!(probe_answers(&runtime, &report.run_id), ["unknown"]);

    // The same 404 text from downstream's real lookup counts as "not found".
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        fail_unbooked: 1,
        ..Faults::default()
    });
    let (_env, _runtime, report) = probed_run(&erp, &lookup_url(&erp), not_found, "INV-P6").await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(erp.stats().requests, 2);
}
