//! Retries in virtual time: a real ERP on 127.0.0.1 fails on purpose, the runtime's clock is
//! a `ManualClock` and its sleeper advances that clock instead of waiting, so backoff,
//! `Retry-After` and budgets are checked exactly and the tests take milliseconds.

use crate::harness::{Env, erp_config, events, failure, invoice, load, output};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate::ledger::RunStatus;
use tollgate::{FailureClass, ManualClock, Runtime, Sleeper};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

/// Sleeps by moving the manual clock, and remembers every wait.
struct VirtualSleeper {
    clock: ManualClock,
    waits: Mutex<Vec<u64>>,
}

impl Sleeper for VirtualSleeper {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.waits.lock().unwrap().push(ms);
        self.clock.advance(i64::try_from(ms).unwrap_or(i64::MAX));
        Box::pin(async {})
    }
}

fn runtime(env: &Env, erp: &Erp, retry: &str) -> (Runtime, Arc<VirtualSleeper>) {
    let clock = ManualClock::new(1_800_000_000_000);
    let sleeper = Arc::new(VirtualSleeper {
        clock: clock.clone(),
        waits: Mutex::default(),
    });
    let config = format!(
        "{}\n[tools.invoice.retry]\n{retry}",
        erp_config(&erp.invoices_url(), true, 5_000)
    );
    let runtime = env
        .builder(&config)
        .clock(Arc::new(clock))
        .sleeper(sleeper.clone())
        .build()
        .unwrap();
    (runtime, sleeper)
}

#[tokio::test]
async fn transient_failures_are_retried_with_jittered_backoff_and_post_once() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        unavailable: 2,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, sleeper) = runtime(
        &env,
        &erp,
        "initial_interval_ms = 1000\nbackoff_coefficient = 2.0\nmax_interval_ms = 10000\n",
    );
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R1"), "run")
        .await
        .unwrap();
    assert_eq!(output(&report)["posted"], true);
    assert_eq!(report.attempt, 3);
    let waits = sleeper.waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 2);
    assert!(
        waits[0] <= 1_000 && waits[1] <= 2_000,
        "full jitter bounds: {waits:?}"
    );
    let stats = erp.stats();
    assert_eq!(stats.postings, 1);
    assert_eq!(stats.requests_by_key["post-invoice:INV-R1"], 3);
    let scheduled = events(&runtime, &report.run_id)
        .iter()
        .filter(|e| *e == "retry.scheduled")
        .count();
    assert_eq!(scheduled, 2);
}

#[tokio::test]
async fn retry_after_from_a_429_is_honoured() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        throttle: 1,
        retry_after_s: 7,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, sleeper) = runtime(&env, &erp, "initial_interval_ms = 100\n");
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R2"), "run")
        .await
        .unwrap();
    assert_eq!(output(&report)["posted"], true);
    assert_eq!(*sleeper.waits.lock().unwrap(), vec![7_000]);
    assert_eq!(erp.stats().postings, 1);
}

#[tokio::test]
async fn exhausted_attempts_stop_the_run_resumable_with_the_reason_journaled() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        unavailable: 10,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, sleeper) = runtime(&env, &erp, "max_attempts = 3\ninitial_interval_ms = 10\n");
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R3"), "run")
        .await
        .unwrap();
    assert_eq!(failure(&report).class, FailureClass::Transient);
    assert_eq!(
        report.status,
        RunStatus::Running,
        "left for a human to resume"
    );
    assert_eq!(report.attempt, 3);
    assert_eq!(sleeper.waits.lock().unwrap().len(), 2);
    let story = runtime.story(&report.run_id).unwrap();
    let stopped = story
        .journal
        .iter()
        .find(|e| e.event == "retry.stopped")
        .expect("stop journaled");
    assert!(
        stopped.message.contains("retry.max_attempts"),
        "{}",
        stopped.message
    );
    assert_eq!(erp.stats().postings, 0);
}

#[tokio::test]
async fn non_retryable_failure_is_not_retried() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        reject: 1,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, sleeper) = runtime(&env, &erp, "");
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R4"), "run")
        .await
        .unwrap();
    assert_eq!(failure(&report).class, FailureClass::Validation);
    assert_eq!(report.attempt, 1);
    assert!(sleeper.waits.lock().unwrap().is_empty());
    assert_eq!(erp.stats().requests, 1);
}

#[tokio::test]
async fn retry_policy_time_budget_stops_retries() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        throttle: 5,
        retry_after_s: 60,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, sleeper) = runtime(&env, &erp, "max_run_ms = 90000\n");
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R5"), "run")
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Running);
    assert_eq!(
        *sleeper.waits.lock().unwrap(),
        vec![60_000],
        "the second wait would pass 90 s"
    );
    assert!(events(&runtime, &report.run_id).contains(&"retry.stopped".to_owned()));
}
