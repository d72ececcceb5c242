//! The hostile-tool suite: real components under `plugins/hostile-*` (and two WAT fixtures)
//! each try one attack on the sandbox. Every attack must end in a classified failure or a
//! harmless success, with the host alive, nothing outside the grants touched, and a
//! neighbouring run unaffected. Tests are named for the attack they try.

use crate::harness::{Env, closed_port, denial, failure, load, output, tollgate_with};
use std::path::PathBuf;
use std::process::Output;
use tollgate::engine::EngineOptions;
use tollgate::{FailureClass, LoadError, RunReport, Runtime};
use tollgate_tests::plugins::{
    HELLO, HOSTILE_COMPUTE, HOSTILE_EFFECTS, HOSTILE_FS, HOSTILE_INSTANCES, HOSTILE_NET,
    HOSTILE_TABLE, HOSTILE_TEXT, INVOICE,
};
use tollgate_tests::web::{DATA, Web};

async fn attack(runtime: &Runtime, plugin: &str, input: serde_json::Value) -> RunReport {
    let tool = load(runtime, plugin).await;
    runtime.run(&tool, &input.to_string()).await.unwrap()
}

async fn compute(runtime: &Runtime, attack_name: &str) -> RunReport {
    attack(
        runtime,
        HOSTILE_COMPUTE,
        serde_json::json!({ "attack": attack_name }),
    )
    .await
}

async fn hello_still_runs(runtime: &Runtime) {
    let hello = load(runtime, HELLO).await;
    let report = runtime
        .run(&hello, r#"{"message":"neighbour"}"#)
        .await
        .unwrap();
    assert_eq!(output(&report)["echo"], "neighbour");
}

// ---- compute, memory, stack, output, logs, handles -------------------------------------

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_cpu_limit() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\ncpu_ms = 200\n");
    let report = compute(&runtime, "infinite-loop").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Timeout, "{f}");
    assert!(f.message.contains("limits.cpu_ms"), "{f}");
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_wall_clock_limit() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\ntimeout_ms = 200\ncpu_ms = 60000\n");
    let report = compute(&runtime, "infinite-loop").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Timeout, "{f}");
    assert!(f.message.contains("limits.timeout_ms"), "{f}");
}

#[tokio::test]
async fn memory_grow_bomb_stops_at_the_memory_limit() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\nmemory_bytes = 8388608\n");
    let report = compute(&runtime, "memory-grow").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains("memory limit of 8388608 bytes"), "{f}");
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn table_grow_bomb_stops_at_the_table_limit() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-table.limits]\ntable_elements = 5000\n");
    let report = attack(&runtime, HOSTILE_TABLE, serde_json::json!({})).await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains("table limit of 5000 elements"), "{f}");
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn deep_recursion_is_a_classified_stack_overflow() {
    let env = Env::new();
    let runtime = env.runtime("");
    let report = compute(&runtime, "deep-recursion").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains("stack"), "{f}");
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn huge_output_is_refused_over_the_output_cap() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\nmemory_bytes = 67108864\n");
    let report = compute(&runtime, "huge-output").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains("over the cap of 1048576"), "{f}");
    let story = runtime.story(&report.run_id).unwrap();
    assert!(story.run.output.is_none(), "nothing of it recorded");
}

#[tokio::test]
async fn log_flood_is_cut_at_the_log_cap() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\nmax_log_bytes = 16384\n");
    let report = compute(&runtime, "log-flood").await;
    assert_eq!(output(&report)["logged"], 200_000, "harmless success");
    let story = runtime.story(&report.run_id).unwrap();
    let logged: usize = story
        .journal
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.message.len())
        .sum();
    assert!(logged <= 16384, "journal holds {logged} bytes of tool logs");
    assert_eq!(
        story
            .journal
            .iter()
            .filter(|e| e.event == "log.truncated")
            .count(),
        1,
        "the cut is journaled once"
    );
}

#[tokio::test]
async fn stdout_flood_is_cut_at_the_log_cap() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\nmax_log_bytes = 16384\n");
    let report = compute(&runtime, "stdout-flood").await;
    // The tool tried to write 64 MiB; the host let through no more than the cap.
    let written = output(&report)["written"].as_u64().unwrap();
    assert!(written <= 16384, "stdout accepted {written} bytes");
    let story = runtime.story(&report.run_id).unwrap();
    let stdout: Vec<_> = story
        .journal
        .iter()
        .filter(|e| e.event == "tool.stdout")
        .collect();
    // Not dropped: the journal holds the first 16384 bytes the tool wrote, cut exactly at
    // the cap, and says how many it kept.
    assert_eq!(
        stdout.len(),
        1,
        "stdout is journaled once, at the attempt's end"
    );
    let captured = &stdout[0];
    assert_eq!(
        captured.message.len(),
        16384,
        "journal holds {} bytes of stdout",
        captured.message.len()
    );
    assert!(
        captured.message.bytes().all(|b| b == b'x'),
        "the tool's own bytes"
    );
    assert_eq!(captured.fields["bytes"], 16384);
}

#[tokio::test]
async fn resource_handle_flood_stops_at_the_resource_limit() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-compute.limits]\nmax_resources = 500\n");
    let report = compute(&runtime, "resource-flood").await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains("limits.max_resources"), "{f}");
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn instance_flood_is_refused() {
    let env = Env::new();
    let runtime = env.runtime("");
    let err = runtime.load(HOSTILE_INSTANCES).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("instance"), "{text}");
    hello_still_runs(&runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_run_in_the_same_pooled_slot_sees_zeroed_memory() {
    let env = Env::new();
    // One slot: every instantiation reuses the memory the previous run left behind.
    let runtime = env
        .builder("[tools.hostile-compute.limits]\nmemory_bytes = 67108864\n")
        .engine_options(EngineOptions {
            max_instances: 1,
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        let wrote = compute(&runtime, "residue-write").await;
        let base = output(&wrote)["base"].as_u64().unwrap();
        let read = compute(&runtime, "residue-read").await;
        let out = output(&read);
        assert!(
            out["base"].as_u64().unwrap() <= base,
            "the scan covers the written region: {out}"
        );
        assert_eq!(
            out["nonzero_bytes"], 0,
            "memory left behind is visible: {out}"
        );
    }
}

#[tokio::test]
async fn environment_not_granted_is_invisible() {
    let env = Env::new();
    let host_home = std::env::var("HOME").expect("HOME is set for the test process");
    let ungranted = env.runtime("");
    let report = compute(&ungranted, "env").await;
    let out = output(&report);
    assert_eq!(out["vars"], serde_json::json!({}), "{out}");
    assert_eq!(out["args"], serde_json::json!([]), "{out}");

    let granted = env.runtime("[tools.hostile-compute]\nenv = [\"HOME\"]\n");
    let report = compute(&granted, "env").await;
    let out = output(&report);
    assert_eq!(
        out["vars"],
        serde_json::json!({ "HOME": host_home }),
        "only the named variable: {out}"
    );
}

// ---- filesystem ------------------------------------------------------------------------

/// `ro/` (granted read-only at /ro, holding `notes.txt` and a symlink `escape` to a file
/// outside every grant), `rw/` (granted read-write at /rw) and `outside/secret.txt`.
struct Tree {
    root: PathBuf,
}

const SECRET: &str = "outside every grant";

impl Tree {
    fn new(env: &Env) -> Self {
        let root = env.dir.path().join("tree");
        for dir in ["ro", "rw", "outside"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("ro/notes.txt"), "read-only notes").unwrap();
        std::fs::write(root.join("outside/secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("ro/escape"))
            .unwrap();
        Self { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn policy(&self) -> String {
        format!(
            "[[tools.hostile-fs.fs]]\nhost = {:?}\nguest = \"/ro\"\n\n[[tools.hostile-fs.fs]]\nhost = {:?}\nguest = \"/rw\"\nmode = \"rw\"\n",
            self.path("ro").display().to_string(),
            self.path("rw").display().to_string()
        )
    }
}

async fn fs(runtime: &Runtime, input: serde_json::Value) -> RunReport {
    attack(runtime, HOSTILE_FS, input).await
}

/// The run's journal names the fs grants as the rule that refused, and what was asked.
fn fs_denial_journaled(runtime: &Runtime, report: &RunReport, asked: &str) {
    let fields = denial(runtime, &report.run_id);
    assert_eq!(fields["rule"], "tools.hostile-fs.fs", "{fields}");
    assert_eq!(fields["tool"], "hostile-fs", "{fields}");
    assert!(
        fields["asked"].as_str().unwrap().contains(asked),
        "asked should mention {asked}: {fields}"
    );
}

/// The attack failed as a classified denial and leaked nothing of the secret.
fn refused(report: &RunReport) {
    let f = failure(report);
    assert!(
        matches!(f.class, FailureClass::Permission | FailureClass::Validation),
        "{f}"
    );
    assert!(!f.to_string().contains(SECRET), "{f}");
}

#[tokio::test]
async fn reading_and_writing_inside_the_grants_works() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    let read = fs(
        &runtime,
        serde_json::json!({"attack": "read", "path": "/ro/notes.txt"}),
    )
    .await;
    assert_eq!(output(&read)["content"], "read-only notes");
    let write = fs(
        &runtime,
        serde_json::json!({"attack": "write", "path": "/rw/out.txt", "content": "ok"}),
    )
    .await;
    assert_eq!(output(&write)["written"], 2);
    assert_eq!(
        std::fs::read_to_string(tree.path("rw/out.txt")).unwrap(),
        "ok"
    );
}

#[tokio::test]
pub(crate) async fn dotdot_traversal_out_of_a_grant_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    for path in [
        "/ro/../outside/secret.txt",
        "/ro/../../../../etc/passwd",
        "../outside/secret.txt",
    ] {
        let report = fs(
            &runtime,
            serde_json::json!({"attack": "read", "path": path}),
        )
        .await;
        refused(&report);
        if path.starts_with("/ro/") {
            fs_denial_journaled(&runtime, &report, path.trim_start_matches("/ro/"));
        }
    }
}

#[tokio::test]
async fn absolute_path_outside_every_grant_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    let secret = tree.path("outside/secret.txt").display().to_string();
    for path in [secret.as_str(), "/etc/passwd"] {
        let report = fs(
            &runtime,
            serde_json::json!({"attack": "read", "path": path}),
        )
        .await;
        refused(&report);
    }
}

#[tokio::test]
async fn symlink_pointing_outside_a_grant_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    let report = fs(
        &runtime,
        serde_json::json!({"attack": "read", "path": "/ro/escape"}),
    )
    .await;
    refused(&report);
    fs_denial_journaled(&runtime, &report, "escape");
}

#[tokio::test]
async fn write_into_a_read_only_grant_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    for path in ["/ro/new.txt", "/ro/notes.txt"] {
        let report = fs(
            &runtime,
            serde_json::json!({"attack": "write", "path": path, "content": "pwned"}),
        )
        .await;
        assert_eq!(failure(&report).class, FailureClass::Permission);
        fs_denial_journaled(&runtime, &report, path.trim_start_matches("/ro/"));
    }
    assert!(!tree.path("ro/new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(tree.path("ro/notes.txt")).unwrap(),
        "read-only notes"
    );
}

#[tokio::test]
async fn hard_link_from_a_read_only_grant_into_a_writable_one_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    let report = fs(
        &runtime,
        serde_json::json!({"attack": "hard-link", "path": "/ro/notes.txt", "to": "/rw/stolen.txt"}),
    )
    .await;
    assert_eq!(failure(&report).class, FailureClass::Permission);
    fs_denial_journaled(&runtime, &report, "hard-link");
    assert!(!tree.path("rw/stolen.txt").exists());
}

#[tokio::test]
async fn rename_from_a_read_only_grant_into_a_writable_one_is_denied() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    let report = fs(
        &runtime,
        serde_json::json!({"attack": "rename", "path": "/ro/notes.txt", "to": "/rw/moved.txt"}),
    )
    .await;
    assert_eq!(failure(&report).class, FailureClass::Permission);
    fs_denial_journaled(&runtime, &report, "rename");
    assert!(tree.path("ro/notes.txt").exists());
    assert!(!tree.path("rw/moved.txt").exists());
}

#[tokio::test]
async fn missing_granted_directory_fails_the_run_clearly() {
    let env = Env::new();
    let tree = Tree::new(&env);
    let runtime = env.runtime(&tree.policy());
    std::fs::remove_dir_all(tree.path("rw")).unwrap();
    let report = fs(
        &runtime,
        serde_json::json!({"attack": "list", "path": "/ro"}),
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Fatal, "{f}");
    assert!(f.message.contains("cannot be opened"), "{f}");
}

// ---- network ---------------------------------------------------------------------------

fn net_policy(web: &Web) -> String {
    format!("[[tools.hostile-net.http]]\nhost = \"{}\"\n", web.addr())
}

async fn net(runtime: &Runtime, input: serde_json::Value) -> RunReport {
    attack(runtime, HOSTILE_NET, input).await
}

#[tokio::test]
async fn http_get_within_a_grant_works() {
    let web = Web::start().unwrap();
    let env = Env::new();
    let runtime = env.runtime(&net_policy(&web));
    let report = net(&runtime, serde_json::json!({"url": web.url("/data")})).await;
    let out = output(&report);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], DATA);
    assert_eq!(web.seen(), vec!["GET /data"]);
}

#[tokio::test]
pub(crate) async fn http_to_a_host_not_granted_is_denied_and_journaled() {
    let web = Web::start().unwrap();
    let other = Web::start().unwrap();
    let env = Env::new();
    let runtime = env.runtime(&net_policy(&web));
    let report = net(&runtime, serde_json::json!({"url": other.url("/data")})).await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert!(other.seen().is_empty(), "the request never left the host");
    let fields = denial(&runtime, &report.run_id);
    assert_eq!(fields["rule"], "tools.hostile-net.http");
    assert_eq!(fields["tool"], "hostile-net");
    assert!(
        fields["asked"]
            .as_str()
            .unwrap()
            .contains(&other.url("/data")),
        "{fields}"
    );
    // A port with nothing behind it is denied the same way, before any connect.
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    let report = net(&runtime, serde_json::json!({"url": closed})).await;
    assert_eq!(failure(&report).class, FailureClass::Permission);
}

#[tokio::test]
async fn post_to_an_allowed_host_under_a_get_only_grant_is_denied() {
    let web = Web::start().unwrap();
    let env = Env::new();
    let runtime = env.runtime(&net_policy(&web));
    let report = net(
        &runtime,
        serde_json::json!({"url": web.url("/data"), "method": "POST", "body": "{}"}),
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert!(web.seen().is_empty(), "no POST arrived: {:?}", web.seen());
    let asked = denial(&runtime, &report.run_id)["asked"].clone();
    assert!(asked.as_str().unwrap().starts_with("POST "), "{asked}");
}

#[tokio::test]
async fn redirect_to_a_host_not_granted_is_denied() {
    let web = Web::start().unwrap();
    let other = Web::start().unwrap();
    let env = Env::new();
    let runtime = env.runtime(&net_policy(&web));
    let url = web.url(&format!("/redirect?to={}", other.url("/data")));
    let report = net(&runtime, serde_json::json!({ "url": url })).await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert_eq!(
        web.seen(),
        vec!["GET /redirect"],
        "the first hop was allowed"
    );
    assert!(other.seen().is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn http_import_without_a_grant_is_refused_at_load_with_the_line_to_add() {
    let env = Env::new();
    let runtime = env.runtime("");
    let err = runtime.load(HOSTILE_NET).await.unwrap_err();
    assert!(matches!(err, LoadError::NotGranted { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("wasi:http/outgoing-handler@0.2"), "{text}");
    assert!(text.contains("[[tools.hostile-net.http]]"), "{text}");
}

// ---- effects ---------------------------------------------------------------------------

const NOOP: &str = "[connectors.\"audit.write\"]\ntype = \"noop\"\n";

async fn effects(runtime: &Runtime, kind: &str, count: u32, payload_bytes: u32) -> RunReport {
    attack(
        runtime,
        HOSTILE_EFFECTS,
        serde_json::json!({"kind": kind, "count": count, "payload_bytes": payload_bytes}),
    )
    .await
}

#[tokio::test]
pub(crate) async fn effect_kind_not_granted_is_denied_and_journaled() {
    let env = Env::new();
    let runtime = env.runtime(NOOP);
    let report = effects(&runtime, "audit.write", 1, 10).await;
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert_eq!(
        denial(&runtime, &report.run_id)["rule"],
        "tools.hostile-effects.effects"
    );
    assert!(runtime.story(&report.run_id).unwrap().effects.is_empty());
}

#[tokio::test]
async fn effect_payload_over_the_cap_is_denied() {
    let env = Env::new();
    let runtime = env.runtime(&format!(
        "{NOOP}[tools.hostile-effects]\neffects = [\"audit.write\"]\n[tools.hostile-effects.limits]\nmax_payload_bytes = 1024\n"
    ));
    let report = effects(&runtime, "audit.write", 1, 4096).await;
    assert_eq!(failure(&report).class, FailureClass::Permission);
    assert_eq!(
        denial(&runtime, &report.run_id)["rule"],
        "tools.hostile-effects.limits.max_payload_bytes"
    );
    assert!(runtime.story(&report.run_id).unwrap().effects.is_empty());
}

#[tokio::test]
async fn more_effects_than_the_cap_are_denied() {
    let env = Env::new();
    let runtime = env.runtime(&format!(
        "{NOOP}[tools.hostile-effects]\neffects = [\"audit.write\"]\n[tools.hostile-effects.limits]\nmax_effects_per_run = 3\n"
    ));
    let report = effects(&runtime, "audit.write", 5, 10).await;
    assert_eq!(failure(&report).class, FailureClass::Permission);
    assert_eq!(
        runtime.story(&report.run_id).unwrap().effects.len(),
        3,
        "the first three went through"
    );
    assert_eq!(
        denial(&runtime, &report.run_id)["rule"],
        "tools.hostile-effects.limits.max_effects_per_run"
    );
}

// ---- policy pins and neighbours ----------------------------------------------------------

#[tokio::test]
async fn policy_digest_pin_refuses_any_other_build() {
    let env = Env::new();
    let hello_digest = load(&env.runtime(""), HELLO).await.digest.clone();
    let wrong = "0".repeat(64);
    let runtime = env.runtime(&format!("[tools.hello]\ndigest = \"sha256:{wrong}\"\n"));
    let err = runtime.load(HELLO).await.unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&hello_digest), "{err}");
    let runtime = env.runtime(&format!("[tools.hello]\ndigest = \"{hello_digest}\"\n"));
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn async_recording_is_refused_at_load_for_a_tool_that_declares_effects() {
    let env = Env::new();
    // No effect granted, so the policy itself is valid: the tool's own declaration decides.
    let runtime = env.runtime("[tools.invoice]\nrecord = \"async\"\n");
    let err = runtime.load(INVOICE).await.unwrap_err();
    assert!(
        matches!(err, LoadError::AsyncRecordWithEffects { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("erp.post-invoice"), "{err}");
    let runtime = env.runtime("[tools.hello]\nrecord = \"async\"\n");
    hello_still_runs(&runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn attacks_leave_a_concurrent_neighbour_unaffected() {
    use std::time::{Duration, Instant};
    let env = Env::new();
    // CPU time is counted in wall-clock epoch ticks while guest code runs, so a loaded
    // machine charges the log flood (a harmless success) for time it was descheduled:
    // the limit leaves it room to succeed beside the neighbours and the other attacks.
    let runtime = env.runtime(
        "[tools.hostile-compute.limits]\ncpu_ms = 1500\nmax_log_bytes = 4096\nmax_resources = 500\n",
    );
    let hostile = load(&runtime, HOSTILE_COMPUTE).await;
    let hello = load(&runtime, HELLO).await;
    // Each attack and how it must end: stopped with its class and the rule it broke, or (the
    // log flood) a harmless success cut at the log cap.
    let attacks = [
        (
            "infinite-loop",
            Some((FailureClass::Timeout, "limits.cpu_ms")),
        ),
        (
            "memory-grow",
            Some((FailureClass::ResourceExhausted, "memory limit")),
        ),
        ("log-flood", None),
        (
            "resource-flood",
            Some((FailureClass::ResourceExhausted, "limits.max_resources")),
        ),
        (
            "deep-recursion",
            Some((FailureClass::ResourceExhausted, "stack")),
        ),
    ];
    let t0 = Instant::now();
    let since = move || t0.elapsed();
    // Neighbours run back to back from before the first attack starts until the last one
    // ends, so that every attack has neighbours running beside it.
    let mut neighbours: Vec<(Duration, Duration)> = Vec::new();
    let neighbour = async |i: usize, spans: &mut Vec<(Duration, Duration)>| {
        let message = format!("neighbour {i}");
        let start = since();
        let report = runtime
            .run(
                &hello,
                &serde_json::json!({ "message": message }).to_string(),
            )
            .await
            .unwrap();
        spans.push((start, since()));
        assert_eq!(output(&report)["echo"], message.as_str());
    };
    neighbour(0, &mut neighbours).await;
    let mut tasks = Vec::new();
    for (name, _) in attacks {
        let (runtime, tool) = (runtime.clone(), hostile.clone());
        tasks.push(tokio::spawn(async move {
            let input = serde_json::json!({ "attack": name }).to_string();
            let start = since();
            let report = runtime.run(&tool, &input).await.unwrap();
            (report, (start, since()))
        }));
    }
    while neighbours.len() < 20 || tasks.iter().any(|t| !t.is_finished()) {
        assert!(
            neighbours.len() < 100_000,
            "the attacks never ended: {} neighbours ran meanwhile",
            neighbours.len()
        );
        neighbour(neighbours.len(), &mut neighbours).await;
    }
    for (task, (name, expected)) in tasks.into_iter().zip(attacks) {
        let (report, (start, end)) = task.await.unwrap();
        match expected {
            Some((class, rule)) => {
                let f = failure(&report);
                assert_eq!(f.class, class, "{name}: {f}");
                assert!(f.message.contains(rule), "{name}: {f}");
            }
            None => {
                assert_eq!(
                    output(&report)["logged"],
                    200_000,
                    "{name}: harmless success"
                );
                let story = runtime.story(&report.run_id).unwrap();
                let logged: usize = story
                    .journal
                    .iter()
                    .filter(|e| e.event == "log")
                    .map(|e| e.message.len())
                    .sum();
                assert!(
                    (1..=4096).contains(&logged),
                    "{name}: journal holds {logged} bytes of tool logs"
                );
                let cuts = story
                    .journal
                    .iter()
                    .filter(|e| e.event == "log.truncated")
                    .count();
                assert_eq!(cuts, 1, "{name}: the cut is journaled once");
            }
        }
        let beside = neighbours
            .iter()
            .filter(|(s, e)| *s < end && *e > start)
            .count();
        println!(
            "{name}: {:?}, {beside} neighbours ran beside it",
            end - start
        );
        assert!(
            beside > 0,
            "{name} ran from {start:?} to {end:?} with no neighbour beside it"
        );
    }
    hello_still_runs(&runtime).await;
}

// ---- what a run stores, and what a human is asked to approve --------------------------

mod ledger_bounds {
    use crate::harness::{Env, events, failure, load, output};
    use tollgate::capabilities::budget::{ATTEMPT_OVERHEAD_BYTES, ESCALATION_OVERHEAD_BYTES};
    use tollgate::ledger::stored;
    use tollgate::{FailureClass, RunError, RunReport, Runtime};
    use tollgate_tests::erp::{Erp, Faults};
    use tollgate_tests::plugins::{HOSTILE_LEDGER, INVOICE};

    /// hostile-ledger with a small storage budget, its effects going to a noop connector.
    fn config(extra: &str) -> String {
        format!(
            r#"
[connectors."sink.write"]
type = "noop"

[tools.hostile-ledger]
effects = ["sink.write"]

[tools.hostile-ledger.limits]
max_stored_bytes = 1048576
memory_bytes = 67108864
{extra}
"#
        )
    }

    async fn attack(runtime: &Runtime, input: serde_json::Value) -> RunReport {
        let tool = load(runtime, HOSTILE_LEDGER).await;
        runtime.run(&tool, &input.to_string()).await.unwrap()
    }

    fn stored_bytes(runtime: &Runtime, run_id: &str) -> u64 {
        runtime.ledger().stored_bytes(run_id).unwrap()
    }

    /// Everything but the tool's own writes that one failed, escalated attempt may add.
    const HOST_SHARE: u64 = 1_048_576 + ATTEMPT_OVERHEAD_BYTES + ESCALATION_OVERHEAD_BYTES;

    #[tokio::test]
    async fn repeated_denials_of_a_huge_kind_store_a_clipped_form_within_the_budget() {
        let env = Env::new();
        let runtime = env.runtime(&config(""));
        let report = attack(
            &runtime,
            serde_json::json!({ "attack": "denials", "count": 250, "bytes": 65536 }),
        )
        .await;
        assert_eq!(
            output(&report)["refused"],
            250,
            "every denial still refused"
        );
        let story = runtime.story(&report.run_id).unwrap();
        let denials: Vec<_> = story
            .journal
            .iter()
            .filter(|e| e.event == "policy.denied")
            .collect();
        assert!(!denials.is_empty(), "denials are journaled");
        for d in &denials {
            let asked = d.fields["asked"].as_str().unwrap();
            assert!(asked.len() < 400, "asked is clipped: {} bytes", asked.len());
            assert!(
                d.message.len() < 700,
                "message is clipped: {}",
                d.message.len()
            );
        }
        let stored = stored_bytes(&runtime, &report.run_id);
        assert!(stored <= 1_048_576, "the run stored {stored} bytes");
    }

    #[tokio::test]
    async fn one_checkpoint_name_saved_over_and_over_keeps_one_copy() {
        let env = Env::new();
        let runtime = env.runtime(&config(""));
        let report = attack(
            &runtime,
            serde_json::json!({ "attack": "checkpoints", "count": 500, "bytes": 65536 }),
        )
        .await;
        assert_eq!(
            output(&report)["saved"],
            500,
            "replacing a name frees its bytes, so every save fits"
        );
        let story = runtime.story(&report.run_id).unwrap();
        assert_eq!(story.checkpoints.len(), 1);
        assert_eq!(story.checkpoints[0].bytes, 65536);
        let stored = stored_bytes(&runtime, &report.run_id);
        assert!(stored <= 1_048_576, "the run stored {stored} bytes");
    }

    #[tokio::test]
    async fn checkpoints_past_the_budget_are_refused_and_the_cut_noted_once() {
        let env = Env::new();
        let runtime = env.runtime(&config("max_checkpoint_bytes = 4194304"));
        let tool = load(&runtime, HOSTILE_LEDGER).await;
        // A state the checkpoint cap allows but the run's 1 MiB budget cannot hold.
        let report = runtime
            .run(
                &tool,
                &serde_json::json!({ "attack": "checkpoints", "count": 3, "bytes": 2_000_000 })
                    .to_string(),
            )
            .await
            .unwrap();
        assert_eq!(
            output(&report)["saved"],
            0,
            "a 2 MB state never fits in 1 MiB"
        );
        let story = runtime.story(&report.run_id).unwrap();
        assert!(story.checkpoints.is_empty());
        let noted = story
            .journal
            .iter()
            .filter(|e| e.event == "storage.budget_spent")
            .count();
        assert_eq!(noted, 1, "{:?}", events(&runtime, &report.run_id));
    }

    #[tokio::test]
    async fn empty_log_events_are_not_free() {
        let env = Env::new();
        let runtime = env.runtime(&config("max_log_bytes = 65536"));
        let report = attack(
            &runtime,
            serde_json::json!({ "attack": "empty-logs", "count": 200000 }),
        )
        .await;
        assert_eq!(output(&report)["logged"], 200_000, "harmless success");
        let story = runtime.story(&report.run_id).unwrap();
        let rows = story.journal.iter().filter(|e| e.event == "log").count();
        let most = 65536 / stored::ROW_COST as usize;
        assert!(
            rows <= most,
            "{rows} empty log rows stored, at most {most} fit"
        );
    }

    #[tokio::test]
    async fn log_fields_are_counted_at_their_stored_size() {
        let env = Env::new();
        let runtime = env.runtime(&config("max_log_bytes = 65536"));
        let report = attack(
            &runtime,
            serde_json::json!({ "attack": "log-fields", "count": 1000, "bytes": 1000 }),
        )
        .await;
        let story = runtime.story(&report.run_id).unwrap();
        let stored: usize = story
            .journal
            .iter()
            .filter(|e| e.event == "log")
            .map(|e| e.message.len() + e.fields.to_string().len())
            .sum();
        assert!(stored > 0, "some events fit");
        assert!(
            stored <= 65536,
            "{stored} bytes of log stored under a 64 KiB cap"
        );
    }

    #[tokio::test]
    async fn a_huge_tool_error_is_stored_and_reported_clipped() {
        let env = Env::new();
        let runtime = env.runtime(&config(""));
        let report = attack(
            &runtime,
            serde_json::json!({ "attack": "huge-error", "bytes": 4194304 }),
        )
        .await;
        let f = failure(&report);
        assert_eq!(f.class, FailureClass::Fatal);
        assert!(
            f.message.len() <= 4096 + 32,
            "message of {} bytes",
            f.message.len()
        );
        assert!(
            f.details.as_ref().unwrap().to_string().len() <= 16384 + 512,
            "details clipped"
        );
        let stored = stored_bytes(&runtime, &report.run_id);
        assert!(
            stored <= ATTEMPT_OVERHEAD_BYTES + ESCALATION_OVERHEAD_BYTES,
            "the failed, escalated run stored {stored} bytes"
        );
    }

    #[tokio::test]
    async fn an_input_over_the_input_cap_is_refused_before_a_run_exists() {
        let env = Env::new();
        let runtime = env.runtime(&config("max_input_bytes = 4096"));
        let tool = load(&runtime, HOSTILE_LEDGER).await;
        let input = serde_json::json!({ "attack": "stdout", "payload": "x".repeat(5000) });
        let err = runtime.run(&tool, &input.to_string()).await.unwrap_err();
        assert!(
            matches!(err, RunError::InputTooLarge { max: 4096, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("limits.max_input_bytes"), "{err}");
        let runs = runtime
            .ledger()
            .runs(&tollgate::ledger::RunFilter::default())
            .unwrap();
        assert!(runs.is_empty(), "nothing recorded");
    }

    /// The ledger file itself, every page written back from the WAL: what the run cost on disk.
    fn ledger_file_bytes(env: &Env) -> u64 {
        let conn = rusqlite::Connection::open(env.ledger()).unwrap();
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .unwrap();
        let pages: u64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        let size: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        pages * size
    }

    /// hostile-ledger (`bytes` 8 KiB, `count` 300): denials, checkpoints, empty logs, log
    /// fields, effects, stdout and a huge error, all in one attempt.
    #[tokio::test]
    pub(crate) async fn a_flooding_run_stays_within_the_documented_storage_bound() {
        let env = Env::new();
        {
            let runtime = env.runtime(&config(""));
            load(&runtime, HOSTILE_LEDGER).await;
        }
        let empty = ledger_file_bytes(&env);
        let run_id = {
            let runtime = env.runtime(&config(""));
            let report = attack(
                &runtime,
                serde_json::json!({ "attack": "flood", "kind": "sink.write", "count": 300, "bytes": 8192 }),
            )
            .await;
            assert_eq!(failure(&report).class, FailureClass::Fatal);
            let journal = events(&runtime, &report.run_id);
            assert!(
                journal.iter().any(|e| e == "storage.budget_spent"),
                "{journal:?}"
            );
            let stored = stored_bytes(&runtime, &report.run_id);
            assert!(
                stored <= HOST_SHARE,
                "the ledger counts {stored} bytes for the run"
            );
            report.run_id
        };
        let grown = ledger_file_bytes(&env) - empty;
        eprintln!("flood: the ledger file grew by {grown} bytes (bound {HOST_SHARE})");
        assert!(
            grown <= HOST_SHARE,
            "run {run_id} grew the ledger file by {grown} bytes, over the bound of {HOST_SHARE}"
        );
    }

    // ---- approval evidence -----------------------------------------------------------------

    fn approval_config() -> String {
        config("[tools.hostile-ledger.approval]\n\"sink.write\" = \"required\"\n")
    }

    async fn raw_effect(runtime: &Runtime, key: &str, payload: &str) -> RunReport {
        attack(
            runtime,
            serde_json::json!({ "attack": "raw-effect", "kind": "sink.write", "key": key, "payload": payload }),
        )
        .await
    }

    fn approvals(runtime: &Runtime) -> usize {
        runtime
            .ledger()
            .escalations(&tollgate::ledger::EscalationFilter::default())
            .unwrap()
            .iter()
            .filter(|e| e.reason == tollgate::ledger::EscalationReason::Approval)
            .count()
    }

    #[tokio::test]
    async fn a_payload_with_a_lone_surrogate_is_refused_before_anyone_is_asked_to_approve_it() {
        let env = Env::new();
        let runtime = env.runtime(&approval_config());
        let report = raw_effect(&runtime, "k-1", r#"{"memo":"\ud800","amount":1}"#).await;
        let f = failure(&report);
        assert_eq!(f.class, FailureClass::Validation, "{f}");
        assert!(f.message.contains("not valid JSON"), "{f}");
        assert_eq!(approvals(&runtime), 0, "nobody is asked to approve it");
        assert!(runtime.story(&report.run_id).unwrap().effects.is_empty());
    }

    #[tokio::test]
    async fn a_payload_naming_a_key_twice_is_refused() {
        let env = Env::new();
        let runtime = env.runtime(&approval_config());
        let report = raw_effect(&runtime, "k-1", r#"{"amount":9999999,"amount":1}"#).await;
        let f = failure(&report);
        assert_eq!(f.class, FailureClass::Validation, "{f}");
        assert!(f.message.contains("duplicate key `amount`"), "{f}");
        assert_eq!(approvals(&runtime), 0);
        assert!(runtime.story(&report.run_id).unwrap().effects.is_empty());
    }

    #[tokio::test]
    async fn an_approval_shows_the_exact_payload_that_would_be_sent() {
        let env = Env::new();
        let runtime = env.runtime(&approval_config());
        let payload = r#"{"amount":12345678901234567890123,"memo":"\u00e9"}"#;
        let report = raw_effect(&runtime, "k-1", payload).await;
        assert_eq!(
            report.status,
            tollgate::ledger::RunStatus::WaitingApproval,
            "{:?}",
            report.result
        );
        let escalation = runtime
            .escalations(&tollgate::ledger::EscalationFilter::default())
            .await
            .unwrap()
            .pop()
            .unwrap();
        let action = &escalation.evidence["action"];
        assert_eq!(action["payload_text"], payload, "the exact bytes");
        assert_eq!(action["payload"]["memo"], "é");
        assert_eq!(
            action["payload_digest"],
            tollgate::ledger::payload_digest(payload.as_bytes())
        );
    }

    // ---- keys and circuits ------------------------------------------------------------------

    fn erp_config(url: &str) -> String {
        format!(
            r#"
[connectors."erp.post-invoice"]
type = "http"
url = "{url}"
timeout_ms = 2000
honours_idempotency_keys = false

[tools.invoice]
effects = ["erp.post-invoice"]

[tools.hostile-ledger]
effects = ["erp.post-invoice"]
"#
        )
    }

    #[tokio::test]
    async fn a_key_no_header_can_carry_is_a_validation_error_never_in_doubt() {
        let erp = Erp::start(false).unwrap();
        let env = Env::new();
        let runtime = env.runtime(&erp_config(&erp.invoices_url()));
        let tool = load(&runtime, HOSTILE_LEDGER).await;
        for key in ["INV-1\nX-Injected: 1", "INV-1\r", "esc\u{1b}[2J"] {
            let input = serde_json::json!({ "attack": "raw-effect", "kind": "erp.post-invoice", "key": key, "payload": r#"{"invoice_id":"INV-1"}"# });
            let report = runtime.run(&tool, &input.to_string()).await.unwrap();
            let f = failure(&report);
            assert_eq!(f.class, FailureClass::Validation, "{key:?}: {f}");
            assert!(f.message.contains("control character"), "{f}");
            let story = runtime.story(&report.run_id).unwrap();
            assert!(story.effects.is_empty(), "nothing claimed for {key:?}");
            assert_ne!(report.status, tollgate::ledger::RunStatus::InDoubt);
        }
        assert_eq!(erp.stats().requests, 0, "nothing left the host");
        assert!(
            runtime.ledger().breakers().unwrap().is_empty(),
            "no circuit counted a failure"
        );
    }

    #[tokio::test]
    async fn one_tools_failures_never_open_the_circuit_for_another_tool() {
        let erp = Erp::start(true).unwrap();
        erp.inject(Faults {
            unavailable: 5,
            ..Faults::default()
        });
        let env = Env::new();
        let runtime = env.runtime(&erp_config(&erp.invoices_url()));
        let hostile = load(&runtime, HOSTILE_LEDGER).await;
        for i in 0..5 {
            let input = serde_json::json!({ "attack": "raw-effect", "kind": "erp.post-invoice", "key": format!("bad-{i}"), "payload": "{}" });
            let report = runtime.run(&hostile, &input.to_string()).await.unwrap();
            assert_eq!(failure(&report).class, FailureClass::Transient);
        }
        let circuits = runtime.ledger().breakers().unwrap();
        assert_eq!(circuits.len(), 1);
        assert_eq!(circuits[0].tool, "hostile-ledger");
        assert_eq!(circuits[0].state, tollgate::ledger::BreakerState::Open);
        // The invoice tool's own circuit on the same connector is closed: its effect goes out.
        let invoice = load(&runtime, INVOICE).await;
        let report = runtime
            .run(&invoice, &tollgate_tests::invoice("INV-7"))
            .await
            .unwrap();
        assert_eq!(output(&report)["posted"], true, "{:?}", report.result);
        assert_eq!(erp.postings_for("INV-7"), 1);
    }
}

pub(crate) use ledger_bounds::a_flooding_run_stays_within_the_documented_storage_bound;
// ---- text to the operator's terminal -----------------------------------------------------

/// What `hostile-text` puts in every string it hands the host (its `attack!`): OSC 52 (set the
/// clipboard), OSC 0 (set the window title), a CSI colour, the one-character CSI U+009B, a
/// bidi override, and two lines posing as `tollgate inspect`'s `sha256` and `component`.
const ATTACK: &str = concat!(
    "\x1b]52;c;cHduZWQ=\x07",
    "\x1b]0;pwned\x07",
    "\x1b[1;31m",
    "\u{9b}2J",
    "\u{202e}",
    "\nsha256     e3b0c44298fc1c149afbf4c8996fb924",
    "\ncomponent  /tmp/evil.wasm",
);

/// [`ATTACK`] as human output shows it.
const ATTACK_ESCAPED: &str = concat!(
    r"\u{1b}]52;c;cHduZWQ=\u{7}",
    r"\u{1b}]0;pwned\u{7}",
    r"\u{1b}[1;31m",
    r"\u{9b}2J",
    r"\u{202e}",
    r"\nsha256     e3b0c44298fc1c149afbf4c8996fb924",
    r"\ncomponent  /tmp/evil.wasm",
);

/// [`ATTACK`] inside a JSON string written for a terminal: C0 as serde_json writes it, the
/// one-character CSI and the bidi override as `\uXXXX` too.
const ATTACK_IN_JSON: &str = concat!(
    r"\u001b]52;c;cHduZWQ=\u0007",
    r"\u001b]0;pwned\u0007",
    r"\u001b[1;31m",
    r"\u009b2J",
    r"\u202e",
    r"\nsha256     e3b0c44298fc1c149afbf4c8996fb924",
    r"\ncomponent  /tmp/evil.wasm",
);

const TEXT_POLICY: &str = r#"
[connectors."text.echo"]
type = "noop"

[tools.hostile-text]
effects = ["text.echo"]
"#;

/// The real `tollgate` binary with the test's config, ledger and cache, its stdout and stderr
/// captured (so neither is a terminal).
fn text_cli(env: &Env, args: &[&str]) -> Output {
    let config = env.config_file(TEXT_POLICY);
    tollgate_with(env, &config)
        .args(args)
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .output()
        .expect("run tollgate")
}

/// Neither stream holds anything a terminal acts on or hides: no ESC, no BEL, no
/// one-character CSI, no bidi override; and no line of either is one of the tool's.
fn assert_inert(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!bytes.contains(&0x1b), "{what}: ESC on {stream}:\n{text}");
        assert!(!bytes.contains(&0x07), "{what}: BEL on {stream}:\n{text}");
        assert!(
            !text.contains('\u{9b}'),
            "{what}: U+009B on {stream}:\n{text}"
        );
        assert!(
            !text.contains('\u{202e}'),
            "{what}: U+202E on {stream}:\n{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("sha256     e3b0") || l.starts_with("component  /tmp/evil")),
            "{what}: a line of the tool's on {stream}:\n{text}"
        );
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(what: &str, out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}):\n{}",
            text_of(&out.stdout)
        )
    })
}

/// Runs `hostile-text` to its `fatal` failure; its run ID.
fn failed_text_run(env: &Env) -> String {
    let out = text_cli(
        env,
        &[
            "run",
            HOSTILE_TEXT,
            "--input",
            r#"{"mode":"fail"}"#,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out.stderr));
    let report = json_of("run --json", &out);
    report["run_id"].as_str().expect("a run ID").to_owned()
}

#[test]
pub(crate) fn control_sequences_in_a_descriptor_cannot_forge_inspect_lines() {
    let env = Env::new();
    let out = text_cli(&env, &["inspect", HOSTILE_TEXT]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("inspect", &out);
    let text = text_of(&out.stdout);
    let starting = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(starting("sha256"), 1, "{text}");
    assert_eq!(starting("component"), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "hostile-text 0.1.0{ATTACK_ESCAPED}  Hostile-tool suite: {ATTACK_ESCAPED}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nasks for   {ATTACK_ESCAPED}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"description\": \"{ATTACK_IN_JSON}\"")),
        "the input schema: {text}"
    );

    let out = text_cli(&env, &["inspect", HOSTILE_TEXT, "--json"]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("inspect --json", &out);
    let d = &json_of("inspect --json", &out)["descriptor"];
    assert_eq!(d["version"], format!("0.1.0{ATTACK}"));
    assert_eq!(d["description"], format!("Hostile-tool suite: {ATTACK}"));
    assert_eq!(d["capabilities"], serde_json::json!([ATTACK]));
    assert_eq!(d["input_schema"]["description"], ATTACK);
}

#[test]
fn control_sequences_in_a_failing_run_never_reach_the_terminal() {
    let env = Env::new();
    let out = text_cli(
        &env,
        &["run", HOSTILE_TEXT, "--input", r#"{"mode":"fail"}"#],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out.stderr));
    assert_inert("run", &out);
    let err = text_of(&out.stderr);
    assert!(
        err.contains(&format!("\nerror: fatal: {ATTACK_ESCAPED} (run run-")),
        "{err}"
    );
    assert!(
        err.contains(&format!(r#""text":"{ATTACK_IN_JSON}""#)) && err.contains("\ndetails: {"),
        "{err}"
    );
    // The tool's `warn` event is a host log line at the default level.
    assert!(
        err.lines()
            .any(|l| l.contains(" WARN ") && l.contains(&format!(": {ATTACK_ESCAPED} run_id="))),
        "{err}"
    );

    let out = text_cli(
        &env,
        &[
            "run",
            HOSTILE_TEXT,
            "--input",
            r#"{"mode":"fail"}"#,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out.stderr));
    assert_inert("run --json", &out);
    let report = json_of("run --json", &out);
    let failure = &report["result"]["Err"];
    assert_eq!(failure["class"], "fatal");
    assert_eq!(failure["message"], ATTACK);
    assert_eq!(failure["details"]["text"], ATTACK);
    assert_eq!(failure["details"][ATTACK], serde_json::json!([ATTACK]));
}

#[test]
fn control_sequences_in_tool_logs_are_escaped_in_host_log_lines() {
    let env = Env::new();
    let out = text_cli(
        &env,
        &["-v", "run", HOSTILE_TEXT, "--input", r#"{"mode":"fail"}"#],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out.stderr));
    assert_inert("run -v", &out);
    let err = text_of(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("attempt started") && l.contains("run{run_id=run-")),
        "info lines are on: {err}"
    );
    assert!(
        err.lines().any(|l| l.contains(" WARN ")
            && l.contains(&format!(": {ATTACK_ESCAPED} run_id=run-"))
            && l.ends_with(" tool=hostile-text")),
        "{err}"
    );
    // The effect's key is logged with its events, unless the host refused the key.
    let runs = json_of(
        "runs list --json",
        &text_cli(&env, &["runs", "list", "--json"]),
    );
    let run_id = runs[0]["run_id"].as_str().expect("a run");
    let story = json_of(
        "runs show --json",
        &text_cli(&env, &["runs", "show", run_id, "--json"]),
    );
    if story["effects"][0]["key"] == format!("key{ATTACK}") {
        assert!(
            err.contains(&format!(r#"key="key{ATTACK_ESCAPED}""#)),
            "{err}"
        );
    }
}

#[test]
fn control_sequences_in_a_run_record_never_reach_the_terminal() {
    let env = Env::new();
    let run_id = failed_text_run(&env);

    let out = text_cli(&env, &["runs", "list"]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("runs list", &out);
    assert!(text_of(&out.stdout).contains(&run_id));

    let out = text_cli(&env, &["runs", "show", &run_id]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("runs show", &out);
    let shown = text_of(&out.stdout);
    for expected in [
        format!("\n  error  fatal: {ATTACK_ESCAPED}\n"),
        format!("\n      fatal: {ATTACK_ESCAPED}\n"),
        format!("\n  cp{ATTACK_ESCAPED} ("),
        format!(" log                {ATTACK_ESCAPED}\n"),
        format!(" tool.stdout        {ATTACK_ESCAPED}\\n\n"),
        format!(" tool.stderr        {ATTACK_ESCAPED}\\n\n"),
        format!(" fatal failure: {ATTACK_ESCAPED}\ncheckpoints"),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in:\n{shown}");
    }

    let out = text_cli(&env, &["runs", "show", &run_id, "--json"]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("runs show --json", &out);
    let story = json_of("runs show --json", &out);
    assert_eq!(story["run"]["error_message"], ATTACK);
    assert_eq!(story["checkpoints"][0]["name"], format!("cp{ATTACK}"));
    let journal = story["journal"].as_array().expect("a journal");
    let log = journal
        .iter()
        .find(|e| e["event"] == "log")
        .expect("the tool's log event");
    assert_eq!(log["message"], ATTACK);
    assert_eq!(log["fields"], serde_json::json!({ ATTACK: ATTACK }));
    let stdout = journal
        .iter()
        .find(|e| e["event"] == "tool.stdout")
        .expect("the tool's stdout");
    assert_eq!(stdout["message"], format!("{ATTACK}\n"));
    // Someone may make such keys a `validation` error; a key the host took is shown escaped.
    if let Some(effect) = story["effects"].as_array().and_then(|e| e.first()) {
        assert_eq!(effect["key"], format!("key{ATTACK}"));
        assert!(
            shown.contains(&format!(" key=key{ATTACK_ESCAPED} status=")),
            "{shown}"
        );
    }

    let out = text_cli(&env, &["escalations", "list"]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("escalations list", &out);
    let listed = text_of(&out.stdout);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.ends_with(&format!(" fatal failure: {ATTACK_ESCAPED}\n")),
        "{listed}"
    );

    let out = text_cli(&env, &["escalations", "list", "--json"]);
    assert_inert("escalations list --json", &out);
    let list = json_of("escalations list --json", &out);
    let id = list[0]["id"].to_string();
    let summary = list[0]["summary"].as_str().expect("a summary");
    assert!(
        summary.ends_with(&format!(" fatal failure: {ATTACK}")),
        "{summary}"
    );

    let out = text_cli(&env, &["escalations", "show", &id]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("escalations show", &out);
    assert!(
        text_of(&out.stdout).contains(&format!(" fatal failure: {ATTACK_IN_JSON}\",")),
        "{}",
        text_of(&out.stdout)
    );
    let escalation = json_of("escalations show", &out);
    assert_eq!(escalation["summary"], summary);
    assert_eq!(escalation["run_id"], run_id.as_str());
}

#[test]
fn control_sequences_in_tool_output_are_escaped_in_pretty_json() {
    let env = Env::new();
    let out = text_cli(
        &env,
        &["run", HOSTILE_TEXT, "--input", r#"{"mode":"echo"}"#],
    );
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert_inert("run (output)", &out);
    assert!(
        text_of(&out.stdout).contains(&format!("\"text\": \"{ATTACK_IN_JSON}\"")),
        "{}",
        text_of(&out.stdout)
    );
    assert_eq!(
        json_of("run (output)", &out),
        serde_json::json!({ "text": ATTACK, ATTACK: [ATTACK] }),
        "the output shown is the exact output"
    );
}

#[test]
fn control_sequences_in_a_schema_cannot_forge_error_lines() {
    let env = Env::new();
    let out = text_cli(
        &env,
        &["run", HOSTILE_TEXT, "--input", r#"{"mode":"other"}"#],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out.stderr));
    assert_inert("schema violation", &out);
    let err = text_of(&out.stderr);
    assert!(
        err.starts_with("error: input does not match the schema of tool `hostile-text`:\n  - "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "one line per problem: {err}");
}

// ---- totals: all memories and the GC heap, all tables -------------------------------------

use tollgate_tests::plugins::{HOSTILE_GC, HOSTILE_MEMORIES, HOSTILE_TABLES};

/// The number right after `marker` in a limit failure (`asked for N`, `holding N`).
fn number_after(message: &str, marker: &str) -> Option<u64> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Asserts a limit failure names its rule and reports a total over `limit` asked for while
/// the tool held no more than `limit`.
fn stopped_at_the_total(report: &RunReport, rule: &str, limit: u64) {
    let f = failure(report);
    assert_eq!(f.class, FailureClass::ResourceExhausted, "{f}");
    assert!(f.message.contains(rule), "{f}");
    let asked = number_after(&f.message, "asked for ").unwrap_or_else(|| panic!("{f}"));
    let holding = number_after(&f.message, "holding ").unwrap_or_else(|| panic!("{f}"));
    assert!(asked > limit, "the refused total is over the limit: {f}");
    assert!(
        holding <= limit,
        "what the tool held stayed within the limit: {f}"
    );
}

#[tokio::test]
async fn memory_split_across_four_memories_stops_at_the_memory_total() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-memories.limits]\nmemory_bytes = 16777216\n");
    let report = attack(&runtime, HOSTILE_MEMORIES, serde_json::json!({})).await;
    stopped_at_the_total(&report, "limits.memory_bytes", 16 << 20);
    assert!(
        failure(&report)
            .message
            .contains("memory limit of 16777216 bytes"),
        "{}",
        failure(&report)
    );
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn gc_heap_beside_linear_memory_stops_at_the_memory_total() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-gc.limits]\nmemory_bytes = 16777216\n");
    let report = attack(&runtime, HOSTILE_GC, serde_json::json!({})).await;
    stopped_at_the_total(&report, "limits.memory_bytes", 16 << 20);
    hello_still_runs(&runtime).await;
}

#[tokio::test]
async fn table_split_across_four_tables_stops_at_the_table_total() {
    let env = Env::new();
    let runtime = env.runtime("[tools.hostile-tables.limits]\ntable_elements = 5000\n");
    let report = attack(&runtime, HOSTILE_TABLES, serde_json::json!({})).await;
    stopped_at_the_total(&report, "limits.table_elements", 5000);
    hello_still_runs(&runtime).await;
}

// ---- the precompiled cache ---------------------------------------------------------------

#[tokio::test]
async fn key_planted_in_a_cache_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let cache = env.cache();
    // A cache directory another local user made (or can write), holding a key they chose:
    // with it they could sign an artifact of their own native code.
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(cache.join("cache.key"), [7u8; 32]).unwrap();
    let Err(err) = env.builder("").build() else {
        panic!("a cache directory others can write was trusted");
    };
    let text = err.to_string();
    assert!(text.contains(&cache.display().to_string()), "{text}");
    assert!(text.contains("0777"), "{text}");
    assert!(
        text.contains(&format!("chmod 700 {}", cache.display())),
        "{text}"
    );
    assert!(text.contains("another cache directory, or none"), "{text}");
    // Without the cache the host still runs tools.
    let runtime = env.builder("").without_cache().build().unwrap();
    hello_still_runs(&runtime).await;
}

// ---- input schemas ---------------------------------------------------------------------
// The host validates every input against the schema a tool describes before the tool runs,
// so no tool limit applies there: the schema itself must be bounded at load.

/// The `hostile-schema` component describes `{"$ref":"#/$defs/a","$defs":{"a":{"$ref":
/// "#/$defs/b"},"b":{"$ref":"#/$defs/a"}}}`.
const LOOPING_SCHEMA: &str = tollgate_tests::plugins::HOSTILE_SCHEMA;

/// The refusal names every step of the loop and says how to break it, on one line.
fn assert_names_the_loop(message: &str) {
    assert!(
        message.contains("#/$defs/a") && message.contains("#/$defs/b"),
        "names the loop: {message}"
    );
    assert!(message.contains("$ref"), "names the keyword: {message}");
    assert!(
        message.contains("properties") && message.contains("items"),
        "says how to break the loop: {message}"
    );
    assert!(!message.trim_end().contains('\n'), "one line: {message}");
}

#[tokio::test]
pub(crate) async fn ref_loop_in_the_input_schema_is_refused_at_load() {
    let env = Env::new();
    let runtime = env.runtime("");
    let err = match runtime.load(LOOPING_SCHEMA).await {
        Err(err) => err,
        // Accepted, the attack goes on: every input is validated against the loop.
        Ok(tool) => {
            let run = runtime.run(&tool, "{}").await;
            panic!("the looping schema loaded, and a run returned {run:?}")
        }
    };
    assert!(
        matches!(&err, LoadError::BadInputSchema { tool, .. } if tool == "hostile-schema"),
        "{err}"
    );
    assert_names_the_loop(&err.to_string());
    hello_still_runs(&runtime).await;
}

#[test]
fn ref_loop_in_the_input_schema_makes_inspect_exit_1_with_the_refusal() {
    let env = Env::new();
    let out = std::process::Command::new(crate::harness::tollgate_bin())
        .args(["inspect", LOOPING_SCHEMA])
        .env("TOLLGATE_LEDGER", env.ledger())
        .env("TOLLGATE_CACHE_DIR", env.cache())
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .output()
        .expect("run tollgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.is_empty(), "no descriptor printed: {stdout}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_names_the_loop(&stderr);
}

#[test]
fn ref_loop_in_the_input_schema_stops_mcp_from_starting() {
    use std::io::Write;
    let env = Env::new();
    let config = env.config_file(&format!(
        "[tools.hello]\ncomponent = {HELLO:?}\n\n[tools.hostile-schema]\ncomponent = {LOOPING_SCHEMA:?}\n"
    ));
    let mut child = crate::harness::tollgate_with(&env, &config)
        .arg("mcp")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tollgate mcp");
    // What an agent would send: the handshake, then one call to the looping tool. A server
    // that refuses to start never reads it, so a failed write is expected.
    let call = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"hostile-suite","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"hostile-schema","arguments":{}}}"#,
    ];
    if let Some(mut stdin) = child.stdin.take() {
        for line in call {
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
    }
    let out = child.wait_with_output().expect("tollgate mcp exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("tool `hostile-schema`"),
        "names the tool: {stderr}"
    );
    assert_names_the_loop(&stderr);
}
