//! One test per plugin under `plugins/`, named after it (the build checks they exist).

use crate::harness::{self, Env, erp_config, events, failure, load, output};
use tollgate::FailureClass;
use tollgate::ledger::{EffectStatus, RunStatus};
use tollgate_tests::erp::Erp;
use tollgate_tests::plugins::{FIXTURE_TRAP, FIXTURE_UNGRANTED, HELLO, INVOICE};

/// hello: a round trip that echoes the input with the run's ID, and logs one event.
#[tokio::test]
pub(crate) async fn hello() {
    let env = Env::new();
    // The run ID's date is the runtime's clock's: a millisecond before midnight UTC.
    let clock = tollgate::ManualClock::new(LAST_MS_OF_2026_03_14);
    let runtime = env
        .builder("")
        .clock(std::sync::Arc::new(clock))
        .build()
        .unwrap();
    let tool = load(&runtime, HELLO).await;
    assert_eq!(tool.descriptor.name, "hello");
    assert!(tool.descriptor.effects.is_empty());
    let report = runtime
        .run(&tool, r#"{"message":"hi there"}"#)
        .await
        .unwrap();
    let out = output(&report);
    assert_eq!(out["echo"], "hi there");
    assert_eq!(
        out["run_id"],
        report.run_id.as_str(),
        "the tool sees the run ID the host assigned"
    );
    assert_eq!(out["attempt"], 1);
    assert!(
        report.run_id.starts_with("run-2026-03-14-"),
        "{}",
        report.run_id
    );
    assert_eq!(report.status, RunStatus::Succeeded);
    let story = runtime.story(&report.run_id).unwrap();
    let log = story
        .journal
        .iter()
        .find(|e| e.event == "log")
        .expect("a log event");
    assert_eq!(log.message, "echo");
    assert_eq!(log.attempt, Some(1));
    assert_eq!(
        story
            .run
            .output
            .as_deref()
            .map(|o| serde_json::from_str::<serde_json::Value>(o).unwrap()),
        Some(out.clone())
    );
}

/// invoice: validates, checkpoints, and posts once through the http connector, sending the
/// idempotency key and run ID downstream.
#[tokio::test]
pub(crate) async fn invoice() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    assert_eq!(tool.descriptor.effects, vec!["erp.post-invoice".to_owned()]);
    let report = runtime
        .run(&tool, &harness::invoice("INV-1001"))
        .await
        .unwrap();
    let out = output(&report);
    assert_eq!(out["posted"], true);
    assert_eq!(out["replayed"], false);
    assert_eq!(out["erp"]["invoice_id"], "INV-1001");
    assert_eq!(erp.postings_for("INV-1001"), 1);
    assert_eq!(
        erp.stats().run_ids,
        vec![report.run_id.clone()],
        "X-Tollgate-Run-Id reaches downstream"
    );
    assert_eq!(
        erp.stats().without_key,
        0,
        "every request carries Idempotency-Key"
    );
    let story = runtime.story(&report.run_id).unwrap();
    assert_eq!(story.effects.len(), 1);
    let effect = &story.effects[0];
    assert_eq!(
        (effect.kind.as_str(), effect.key.as_str()),
        ("erp.post-invoice", "post-invoice:INV-1001")
    );
    assert_eq!(effect.status, EffectStatus::Succeeded);
    assert_eq!(effect.dispatches, 1);
    let names: Vec<_> = story.checkpoints.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["validated", "posted"]);
    let ev = events(&runtime, &report.run_id);
    let intent = ev
        .iter()
        .position(|e| e == "effect.intent")
        .expect("intent journaled");
    let done = ev
        .iter()
        .position(|e| e == "effect.succeeded")
        .expect("outcome journaled");
    assert!(intent < done);
}

/// fixture-trap: each way a guest can die is a classified failure with the run ID, and the
/// host keeps serving.
#[tokio::test]
pub(crate) async fn fixture_trap() {
    let env = Env::new();
    let runtime =
        env.runtime("[tools.fixture-trap.limits]\ntimeout_ms = 400\nmemory_bytes = 16777216\n");
    let tool = load(&runtime, FIXTURE_TRAP).await;
    let cases = [
        ("panic", FailureClass::Fatal),
        ("unreachable", FailureClass::Fatal),
        ("loop", FailureClass::Timeout),
        ("recursion", FailureClass::ResourceExhausted),
        ("oom", FailureClass::ResourceExhausted),
    ];
    for (mode, class) in cases {
        let report = runtime
            .run(&tool, &format!(r#"{{"mode":"{mode}"}}"#))
            .await
            .unwrap();
        let f = failure(&report);
        assert_eq!(f.class, class, "{mode}: {f}");
        assert!(report.run_id.starts_with("run-"), "{mode}: run ID reported");
        let story = runtime.story(&report.run_id).unwrap();
        assert_eq!(
            story.attempts[0].error_class.as_deref(),
            Some(class.as_str()),
            "{mode}: recorded"
        );
    }
    let hello = load(&runtime, HELLO).await;
    let after = runtime
        .run(&hello, r#"{"message":"still alive"}"#)
        .await
        .unwrap();
    assert_eq!(output(&after)["echo"], "still alive");
}

/// fixture-ungranted: a TCP connect, a UDP send and a name lookup without any grant. Sockets
/// are linked (interpreters import them all) but never granted: each is refused as
/// `permission`, journaled as `policy.denied`, and nothing reaches the port.
#[tokio::test]
pub(crate) async fn fixture_ungranted() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let env = Env::new();
    let runtime = env.runtime("[tools.fixture-ungranted]\n");
    let tool = load(&runtime, FIXTURE_UNGRANTED).await;
    for (mode, port, asked) in [
        ("tcp", tcp.local_addr().unwrap().port(), "TCP socket"),
        ("udp", udp.local_addr().unwrap().port(), "UDP socket"),
        ("lookup", 80, "resolve \"example.com\""),
    ] {
        let input = serde_json::json!({ "mode": mode, "port": port }).to_string();
        let report = runtime.run(&tool, &input).await.unwrap();
        let failure = failure(&report);
        assert_eq!(
            failure.class,
            FailureClass::Permission,
            "{mode}: {failure:?}"
        );
        assert_eq!(report.status, RunStatus::Failed, "{mode}");
        let denied = harness::denial(&runtime, &report.run_id);
        assert_eq!(denied["tool"], "fixture-ungranted", "{mode}");
        assert!(
            denied["asked"].as_str().unwrap().contains(asked),
            "{mode}: {denied}"
        );
        assert!(
            denied["rule"].as_str().unwrap().contains("never granted"),
            "{mode}: {denied}"
        );
    }
    assert!(tcp.accept().is_err(), "no TCP connection reached the port");
    assert!(
        udp.recv_from(&mut [0; 8]).is_err(),
        "no datagram reached the port"
    );
}

/// 2026-03-14T23:59:59.999Z.
const LAST_MS_OF_2026_03_14: i64 = 1_773_532_799_999;

// The hostile plugins are each tested attack by attack in `hostile.rs`; these names tie each
// plugin to one of its tests for `foreach_plugin!`.
pub(crate) use crate::hostile::{
    a_flooding_run_stays_within_the_documented_storage_bound as hostile_ledger,
    attacks_leave_a_concurrent_neighbour_unaffected as hostile_compute,
    dotdot_traversal_out_of_a_grant_is_denied as hostile_fs,
    effect_kind_not_granted_is_denied_and_journaled as hostile_effects,
    http_to_a_host_not_granted_is_denied_and_journaled as hostile_net,
};

// The Python and JavaScript invoice tools run the same behavioural suite as the Rust one, in
// `polyglot.rs`; its happy path stands for each here.
pub(crate) use crate::polyglot::{
    javascript::happy_path as js_invoice, python::happy_path as py_invoice,
};

// hostile-text: its control sequences never reach the terminal (the others in `hostile.rs`).
pub(crate) use crate::hostile::control_sequences_in_a_descriptor_cannot_forge_inspect_lines as hostile_text;

// The hostile WAT fixtures below are attacked in `hostile.rs`; these tests run each one under
// limits that fit it, so a refusal there is the limit's doing, not a broken fixture.

/// hostile-memories: with room for all four memories (64 MiB), each grows to 15 MiB.
#[tokio::test]
async fn hostile_memories() {
    use tollgate_tests::plugins::HOSTILE_MEMORIES;
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-memories.limits]\nmemory_bytes = 67108864\n");
    let tool = load(&runtime, HOSTILE_MEMORIES).await;
    assert_eq!(tool.descriptor.name, "hostile-memories");
    let report = runtime.run(&tool, "{}").await.unwrap();
    assert_eq!(output(&report)["grown"], true);
}

/// hostile-gc: with room for both heaps (64 MiB), 11 MiB of memory and 6 MiB of GC arrays.
#[tokio::test]
async fn hostile_gc() {
    use tollgate_tests::plugins::HOSTILE_GC;
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-gc.limits]\nmemory_bytes = 67108864\n");
    let tool = load(&runtime, HOSTILE_GC).await;
    assert_eq!(tool.descriptor.name, "hostile-gc");
    let report = runtime.run(&tool, "{}").await.unwrap();
    assert_eq!(output(&report)["allocated"], true);
}

/// hostile-tables: with room for all four tables (20000 elements), each grows to 4000.
#[tokio::test]
async fn hostile_tables() {
    use tollgate_tests::plugins::HOSTILE_TABLES;
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-tables.limits]\ntable_elements = 20000\n");
    let tool = load(&runtime, HOSTILE_TABLES).await;
    assert_eq!(tool.descriptor.name, "hostile-tables");
    let report = runtime.run(&tool, "{}").await.unwrap();
    assert_eq!(output(&report)["grown"], true);
}

// hostile-schema is refused at load (its input schema loops); the test in `hostile.rs` that
// proves it stands for it here.
pub(crate) use crate::hostile::ref_loop_in_the_input_schema_is_refused_at_load as hostile_schema;
