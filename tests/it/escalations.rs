//! The human queue against a real ERP on 127.0.0.1: in-doubt effects settled by hand,
//! approval gates, and resolutions that are journaled and cannot be given twice.

use crate::harness::{Env, erp_config, events, failure, invoice, load, open_escalations, output};
use tollgate::ledger::{EffectStatus, EscalationReason, Resolution, RunStatus};
use tollgate::{Decision, EscalationError, FailureClass, Runtime, SettleError};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

/// A run whose posting the ERP books but answers too late, to a downstream that ignores
/// keys: the outcome is unknown and the run ends in doubt.
pub async fn in_doubt_run(runtime: &Runtime, erp: &Erp, id: &str) -> String {
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let tool = load(runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice(id)).await.unwrap();
    assert_eq!(failure(&report).class, FailureClass::InDoubt);
    assert_eq!(report.status, RunStatus::InDoubt);
    report.run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_effect_is_escalated_then_marked_succeeded_and_resumed_without_dispatch() {
    let erp = Erp::start(false).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), false, 300));
    let run_id = in_doubt_run(&runtime, &erp, "INV-E1").await;
    let open = open_escalations(&runtime, &run_id);
    assert_eq!(open.len(), 1);
    let esc = &open[0];
    assert_eq!(esc.reason, EscalationReason::InDoubt);
    assert_eq!(esc.effect_key.as_deref(), Some("post-invoice:INV-E1"));
    assert_eq!(esc.evidence["effects"][0]["status"], "in_doubt");
    assert_eq!(esc.evidence["effects"][0]["dispatches"], 1);
    assert_eq!(esc.evidence["action"]["payload"]["invoice_id"], "INV-E1");
    assert_eq!(erp.stats().postings, 1);

    // A human checks the ERP, finds the posting, and records what it returned.
    let outcome = r#"{"posting_id":"ERP-000001","invoice_id":"INV-E1","status":"posted"}"#;
    let settled = runtime
        .settle(
            esc.id,
            Decision::MarkSucceeded(outcome.into()),
            "found ERP-000001 in the ERP",
            "alice",
        )
        .await
        .unwrap();
    let report = settled.report.expect("the run resumed");
    assert_eq!(output(&report)["erp"]["posting_id"], "ERP-000001");
    assert_eq!(output(&report)["replayed"], true);
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(erp.stats().requests, 1, "resumed without a dispatch");
    assert_eq!(erp.stats().postings, 1);
    let effect = runtime
        .ledger()
        .effect("erp.post-invoice", "post-invoice:INV-E1")
        .unwrap()
        .unwrap();
    assert_eq!(effect.status, EffectStatus::Succeeded);
    assert_eq!(effect.dispatches, 1);
    let esc = runtime.escalation(esc.id).await.unwrap().unwrap();
    assert_eq!(esc.resolution, Some(Resolution::MarkSucceeded));
    assert_eq!(esc.resolved_by.as_deref(), Some("alice"));
    let journal = events(&runtime, &run_id);
    for event in [
        "escalation.opened",
        "effect.settled",
        "escalation.resolved",
        "effect.replayed",
    ] {
        assert!(
            journal.contains(&event.to_owned()),
            "{event} in {journal:?}"
        );
    }
    // Settling twice is refused.
    let again = runtime
        .settle(esc.id, Decision::Abandon, "changed my mind", "bob")
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            SettleError::Escalation(EscalationError::AlreadyResolved { .. })
        ),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_an_escalation_ends_the_run_and_needs_a_reason() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        reject: 1,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let report = runtime.run(&tool, &invoice("INV-E2")).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let esc = open_escalations(&runtime, &report.run_id).remove(0);
    assert_eq!(esc.reason, EscalationReason::NonRetryable);
    let no_reason = runtime
        .settle(esc.id, Decision::Abandon, " ", "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(
            no_reason,
            SettleError::Escalation(EscalationError::NoReason)
        ),
        "{no_reason}"
    );
    let approve = runtime
        .settle(esc.id, Decision::Approve, "ok", "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(
            approve,
            SettleError::Escalation(EscalationError::NotApproval { .. })
        ),
        "{approve}"
    );
    let settled = runtime
        .settle(esc.id, Decision::Abandon, "customer cancelled", "alice")
        .await
        .unwrap();
    assert!(settled.report.is_none());
    assert!(open_escalations(&runtime, &report.run_id).is_empty());
    assert_eq!(
        runtime
            .ledger()
            .run(&report.run_id)
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Failed
    );
    assert_eq!(erp.stats().postings, 0);
}

/// The invoice tool on `erp`, every posting approved by a human first.
pub fn approval_config(erp: &Erp) -> String {
    format!(
        "{}\n[tools.invoice.approval]\n\"erp.post-invoice\" = \"required\"\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gate_pauses_before_dispatch_and_approval_dispatches_once() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&approval_config(&erp));
    let tool = load(&runtime, INVOICE).await;
    let paused = runtime.run(&tool, &invoice("INV-A1")).await.unwrap();
    assert_eq!(paused.status, RunStatus::WaitingApproval);
    assert!(failure(&paused).message.contains("waiting for approval"));
    assert_eq!(
        erp.stats().requests,
        0,
        "nothing dispatched before approval"
    );
    assert!(runtime.story(&paused.run_id).unwrap().effects.is_empty());
    let esc = open_escalations(&runtime, &paused.run_id).remove(0);
    assert_eq!(esc.reason, EscalationReason::Approval);
    assert_eq!(esc.effect_kind.as_deref(), Some("erp.post-invoice"));
    assert_eq!(esc.evidence["action"]["payload"]["invoice_id"], "INV-A1");
    // While it waits, a plain resume is refused and nothing moves.
    assert!(runtime.resume(&paused.run_id, Some(&tool)).await.is_err());
    let retry = runtime
        .settle(esc.id, Decision::Retry, "go", "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(
            retry,
            SettleError::Escalation(EscalationError::IsApproval { .. })
        ),
        "{retry}"
    );

    let settled = runtime
        .settle(esc.id, Decision::Approve, "customer confirmed", "alice")
        .await
        .unwrap();
    let report = settled.report.expect("resumed");
    assert_eq!(output(&report)["posted"], true);
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(erp.stats().postings, 1);
    assert_eq!(erp.stats().requests, 1, "dispatched exactly once");
    // A new run for the same invoice replays the approved, recorded posting.
    let again = runtime.run(&tool, &invoice("INV-A1")).await.unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(erp.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_approval_ends_the_run_without_dispatch() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&approval_config(&erp));
    let tool = load(&runtime, INVOICE).await;
    let paused = runtime.run(&tool, &invoice("INV-A2")).await.unwrap();
    let esc = open_escalations(&runtime, &paused.run_id).remove(0);
    let settled = runtime
        .settle(esc.id, Decision::Reject, "wrong customer", "bob")
        .await
        .unwrap();
    assert!(settled.report.is_none());
    let run = runtime.ledger().run(&paused.run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error_message
            .unwrap()
            .contains("rejected by bob: wrong customer")
    );
    assert_eq!(erp.stats().requests, 0);
}
