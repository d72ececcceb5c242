//! Retries in virtual time: a real ERP on 127.0.0.1 fails on purpose, the runtime's clock is
//! a `ManualClock` and its sleeper advances that clock instead of waiting, so backoff,
//! `Retry-After` and budgets are checked exactly and the tests take milliseconds.

use crate::harness::{Env, erp_config, events, failure, invoice, load, output};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate::ledger::{BreakerState, Escalation, EscalationReason, RunStatus};
use tollgate::{Clock as _, FailureClass, ManualClock, Random, Runtime, Sleeper};
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

/// Randomness that always draws the same value, so a jittered wait is known exactly.
struct FixedRandom(f64);

impl Random for FixedRandom {
    fn unit(&self) -> f64 {
        self.0
    }
    fn uuid_bytes(&self) -> [u8; 10] {
        // Run IDs must still differ: their random part comes from the OS.
        tollgate::ThreadRandom.uuid_bytes()
    }
}

fn runtime(env: &Env, erp: &Erp, retry: &str) -> (Runtime, Arc<VirtualSleeper>) {
    runtime_with(env, erp, retry, |builder| builder)
}

fn runtime_with(
    env: &Env,
    erp: &Erp,
    retry: &str,
    more: impl FnOnce(tollgate::RuntimeBuilder) -> tollgate::RuntimeBuilder,
) -> (Runtime, Arc<VirtualSleeper>) {
    let clock = ManualClock::new(1_800_000_000_000);
    let sleeper = Arc::new(VirtualSleeper {
        clock: clock.clone(),
        waits: Mutex::default(),
    });
    let config = format!(
        "{}\n[tools.invoice.retry]\n{retry}",
        erp_config(&erp.invoices_url(), true, 5_000)
    );
    let runtime = more(
        env.builder(&config)
            .clock(Arc::new(clock))
            .sleeper(sleeper.clone()),
    )
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
    // Every jitter draw is 0.75: full jitter waits three quarters of each backoff, neither
    // the whole backoff nor nothing.
    let (runtime, sleeper) = runtime_with(
        &env,
        &erp,
        "initial_interval_ms = 1000\nbackoff_coefficient = 2.0\nmax_interval_ms = 10000\n",
        |builder| builder.random(Arc::new(FixedRandom(0.75))),
    );
    let tool = load(&runtime, INVOICE).await;
    let report = runtime
        .run_with_retries(&tool, &invoice("INV-R1"), "run")
        .await
        .unwrap();
    assert_eq!(output(&report)["posted"], true);
    assert_eq!(report.attempt, 3);
    let waits = sleeper.waits.lock().unwrap().clone();
    assert_eq!(
        waits,
        [750, 1_500],
        "the draw's share of backoffs of 1 s and 2 s"
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

/// The run's one open escalation.
fn open_escalation(runtime: &Runtime, run_id: &str) -> Escalation {
    let open = crate::harness::open_escalations(runtime, run_id);
    assert_eq!(open.len(), 1, "one open escalation: {open:?}");
    open.into_iter().next().unwrap()
}

#[tokio::test]
async fn exhausted_attempts_escalate_with_every_attempt_in_the_evidence() {
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
        RunStatus::Escalated,
        "parked for a human to decide"
    );
    assert_eq!(report.attempt, 3);
    assert_eq!(sleeper.waits.lock().unwrap().len(), 2);
    let esc = open_escalation(&runtime, &report.run_id);
    assert_eq!(esc.reason, EscalationReason::RetriesExhausted);
    let evidence = &esc.evidence;
    assert_eq!(evidence["run_id"], report.run_id.as_str());
    assert_eq!(evidence["tool"], "invoice");
    assert_eq!(evidence["input"]["invoice_id"], "INV-R3");
    assert_eq!(evidence["component_digest"], tool.digest.as_str());
    let attempts = evidence["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts.iter().all(|a| a["class"] == "transient"),
        "{attempts:?}"
    );
    assert_eq!(evidence["effects"][0]["key"], "post-invoice:INV-R3");
    assert_eq!(evidence["effects"][0]["status"], "failed");
    assert_eq!(evidence["policy"]["retry"]["max_attempts"], 3);
    assert_eq!(evidence["action"]["kind"], "erp.post-invoice");
    // Parked: a plain resume is refused until a human resolves it.
    let refused = runtime
        .resume(&report.run_id, Some(&tool))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            tollgate::RunError::Parked {
                status: RunStatus::Escalated,
                escalation: Some(_),
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("on escalation #"), "{refused}");
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
async fn non_retryable_failure_escalates_at_once() {
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
    assert_eq!(report.status, RunStatus::Failed);
    assert!(sleeper.waits.lock().unwrap().is_empty());
    assert_eq!(erp.stats().requests, 1);
    let esc = open_escalation(&runtime, &report.run_id);
    assert_eq!(esc.reason, EscalationReason::NonRetryable);
    assert_eq!(esc.evidence["attempts"][0]["class"], "validation");
    assert_eq!(esc.evidence["failure"]["class"], "validation");
}

#[tokio::test]
async fn time_budget_exhaustion_escalates() {
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
    assert_eq!(report.status, RunStatus::Escalated);
    assert_eq!(
        *sleeper.waits.lock().unwrap(),
        vec![60_000],
        "the second wait would pass 90 s"
    );
    assert!(events(&runtime, &report.run_id).contains(&"retry.stopped".to_owned()));
    let esc = open_escalation(&runtime, &report.run_id);
    assert_eq!(esc.reason, EscalationReason::RetriesExhausted);
    assert!(esc.summary.contains("transient"), "{}", esc.summary);
}

/// A runtime on a manual clock whose circuits open after 2 failures for 30 s, posting to
/// `erp` (keys honoured, 5 s timeout).
fn breaker_runtime(env: &Env, erp: &Erp) -> (Runtime, ManualClock) {
    let clock = ManualClock::new(1_800_000_000_000);
    let config = format!(
        "{}\n[breaker]\nfailures = 2\ncooldown_ms = 30000\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    );
    let runtime = env
        .builder(&config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (runtime, clock)
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_fails_fast_then_closes_after_cooldown() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        unavailable: 2,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, clock) = breaker_runtime(&env, &erp);
    let tool = load(&runtime, INVOICE).await;
    for id in ["INV-B1", "INV-B2"] {
        let report = runtime.run(&tool, &invoice(id)).await.unwrap();
        assert_eq!(failure(&report).class, FailureClass::Transient);
    }
    assert_eq!(erp.stats().requests, 2);
    // Open: the third run fails fast, and downstream never hears of it.
    let fast = runtime.run(&tool, &invoice("INV-B3")).await.unwrap();
    let f = failure(&fast);
    assert_eq!(f.class, FailureClass::Transient);
    assert!(f.message.contains("circuit"), "{f}");
    assert_eq!(erp.stats().requests, 2, "no request while open");
    let story = runtime.story(&fast.run_id).unwrap();
    assert!(story.effects.is_empty(), "nothing claimed while open");
    let shown = runtime.story(&runtime_run_id(&runtime, "INV-B2")).unwrap();
    assert_eq!(shown.circuits.len(), 1);
    assert_eq!(shown.circuits[0].state, BreakerState::Open);
    assert!(
        shown.to_string().contains("circuit erp.post-invoice open"),
        "{shown}"
    );
    // After the cool-down one probe goes through; it succeeds and closes the circuit.
    clock.advance(30_000);
    let probe = runtime.resume(&fast.run_id, Some(&tool)).await.unwrap();
    assert_eq!(output(&probe)["posted"], true);
    assert_eq!(erp.stats().postings, 1);
    let circuit = runtime.ledger().breakers().unwrap();
    assert_eq!(circuit[0].state, BreakerState::Closed);
    assert_eq!(circuit[0].consecutive_failures, 0);
}

/// The run whose input names `invoice_id`.
fn runtime_run_id(runtime: &Runtime, invoice_id: &str) -> String {
    runtime
        .ledger()
        .runs(&tollgate::ledger::RunFilter::default())
        .unwrap()
        .into_iter()
        .find(|r| r.input.contains(invoice_id))
        .unwrap()
        .run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_downstream_with_5xx_and_timeouts_after_success_posts_every_invoice_once() {
    let erp = Erp::start(true).unwrap();
    // Seeded: the runs are sequential, so the same requests meet the same faults every time.
    erp.inject(Faults {
        flaky_unavailable_pct: 15,
        flaky_timeout_pct: 15,
        hold_ms: 400,
        seed: Some(23),
        ..Faults::default()
    });
    let env = Env::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let sleeper = Arc::new(VirtualSleeper {
        clock: clock.clone(),
        waits: Mutex::default(),
    });
    // The connector gives up after 150 ms, so a held answer is a timeout after success.
    let config = format!(
        "{}\n[tools.invoice.retry]\nmax_attempts = 12\ninitial_interval_ms = 10\n",
        erp_config(&erp.invoices_url(), true, 150)
    );
    let runtime = env
        .builder(&config)
        .clock(Arc::new(clock))
        .sleeper(sleeper)
        .build()
        .unwrap();
    let tool = load(&runtime, INVOICE).await;
    const RUNS: usize = 30;
    for n in 0..RUNS {
        let id = format!("INV-F{n}");
        let report = runtime
            .run_with_retries(&tool, &invoice(&id), "run")
            .await
            .unwrap();
        assert_eq!(output(&report)["posted"], true, "{id}");
    }
    let stats = erp.stats();
    assert_eq!(stats.by_invoice.len(), RUNS);
    assert!(
        stats.by_invoice.values().all(|&n| n == 1),
        "0 duplicates: {:?}",
        stats.by_invoice
    );
    assert_eq!(stats.postings, RUNS as u64);
    let unavailable = stats.requests - stats.postings - stats.replays;
    println!(
        "{RUNS} invoices: {} requests, {unavailable} answered 503, {} booked then held past the timeout, {} replayed",
        stats.requests, stats.held, stats.replays
    );
    assert!(unavailable > 0, "no 5xx was met: {stats:?}");
    assert!(
        stats.held > 0,
        "no timeout after success was met: {stats:?}"
    );
    // An invoice whose booking timed out can only have succeeded on a re-send that the ERP
    // answered from its idempotency store: re-sent under the same key, not booked again.
    assert!(
        stats.replays >= stats.held,
        "{} timeouts after success but {} replays: {stats:?}",
        stats.held,
        stats.replays
    );
}

#[tokio::test]
async fn cpu_budget_over_all_attempts_stops_retries_and_escalates() {
    let env = Env::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let sleeper = Arc::new(VirtualSleeper {
        clock: clock.clone(),
        waits: Mutex::default(),
    });
    // Each attempt spins until its 200 ms CPU limit (a retryable timeout); the run as a
    // whole may burn 500 ms, so the third attempt is the last.
    let runtime = env
        .builder(
            "[tools.hostile-compute.limits]\ncpu_ms = 200\n[tools.hostile-compute.retry]\nmax_attempts = 10\ninitial_interval_ms = 10\nmax_cpu_ms = 500\n",
        )
        .clock(Arc::new(clock))
        .sleeper(sleeper)
        .build()
        .unwrap();
    let tool = load(&runtime, tollgate_tests::plugins::HOSTILE_COMPUTE).await;
    let report = runtime
        .run_with_retries(&tool, r#"{"attack":"infinite-loop"}"#, "run")
        .await
        .unwrap();
    assert_eq!(failure(&report).class, FailureClass::Timeout);
    assert_eq!(report.attempt, 3);
    assert_eq!(report.status, RunStatus::Escalated);
    let story = runtime.story(&report.run_id).unwrap();
    let stopped = story
        .journal
        .iter()
        .find(|e| e.event == "retry.stopped")
        .unwrap();
    assert!(
        stopped.message.contains("retry.max_cpu_ms"),
        "{}",
        stopped.message
    );
    let cpu: Vec<u64> = story
        .journal
        .iter()
        .filter(|e| e.event == "attempt.failed")
        .map(|e| e.fields["cpu_ms"].as_u64().unwrap())
        .collect();
    // CPU is counted in epoch ticks while the tool's own code runs, and an attempt is
    // stopped at the first tick past its limit: each one is charged exactly that.
    let tick = u64::try_from(tollgate::engine::EPOCH_TICK.as_millis()).unwrap();
    let charged = (200_u64.div_ceil(tick) + 1) * tick;
    assert_eq!(
        cpu, [charged; 3],
        "each attempt stopped one tick past 200 ms"
    );
    assert!(
        cpu[..2].iter().sum::<u64>() < 500 && cpu.iter().sum::<u64>() >= 500,
        "the third attempt is the one that spends the 500 ms budget: {cpu:?}"
    );
}

/// Two runs whose calls fail at the same time: both count, so the circuit opens at two
/// failures. (Counting by read-then-write, each saw 0 and wrote 1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_all_count_towards_opening_the_circuit() {
    let erp = Erp::start(true).unwrap();
    // Both requests are booked and answered past the client's timeout: two timeouts.
    erp.inject(Faults {
        timeout_after_success: 2,
        hold_ms: 1_000,
        ..Faults::default()
    });
    let env = Env::new();
    let config = format!(
        "{}\n[breaker]\nfailures = 2\ncooldown_ms = 30000\n",
        erp_config(&erp.invoices_url(), true, 400)
    );
    let runtime = env.runtime(&config);
    let tool = load(&runtime, INVOICE).await;
    let (first, second) = (invoice("INV-C1"), invoice("INV-C2"));
    let (a, b) = tokio::join!(runtime.run(&tool, &first), runtime.run(&tool, &second));
    for report in [a.unwrap(), b.unwrap()] {
        assert_eq!(failure(&report).class, FailureClass::Timeout, "{report:?}");
    }
    assert_eq!(erp.stats().requests, 2);
    assert_eq!(erp.stats().max_in_flight, 2, "both were in flight together");
    let circuits = runtime.ledger().breakers().unwrap();
    assert_eq!(circuits.len(), 1, "{circuits:?}");
    assert_eq!(circuits[0].consecutive_failures, 2, "{circuits:?}");
    assert_eq!(circuits[0].state, BreakerState::Open, "{circuits:?}");
}

/// After the cool-down, a half-open circuit lets exactly one trial call through; a second
/// caller arriving while the trial is in flight fails fast instead of probing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_circuit_admits_one_probe_at_a_time() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        delay_ms: 500,
        ..Faults::default()
    });
    let env = Env::new();
    let (runtime, clock) = breaker_runtime(&env, &erp);
    let tool = load(&runtime, INVOICE).await;
    // The circuit opened a cool-down ago: the next call is a probe.
    runtime
        .ledger()
        .apply(vec![tollgate::ledger::Op::SetBreaker(
            tollgate::ledger::BreakerRecord {
                connector: "erp.post-invoice".into(),
                tool: "invoice".into(),
                state: BreakerState::Open,
                consecutive_failures: 2,
                open_until: Some(clock.now_ms() - 1),
                updated_at: clock.now_ms() - 30_001,
            },
        )])
        .unwrap();
    let (first, second) = (invoice("INV-H1"), invoice("INV-H2"));
    let (a, b) = tokio::join!(runtime.run(&tool, &first), runtime.run(&tool, &second));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (probe, refused) = if a.result.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(output(&probe)["posted"], true, "{probe:?}");
    let f = failure(&refused);
    assert_eq!(f.class, FailureClass::Transient, "{f}");
    assert!(f.message.contains("trial call"), "{f}");
    assert_eq!(erp.stats().requests, 1, "one probe reached downstream");
    let circuits = runtime.ledger().breakers().unwrap();
    assert_eq!(
        circuits[0].state,
        BreakerState::Closed,
        "the probe closed it"
    );
}
