//! The hostile-tool suite: real components under `plugins/hostile-*` (and two WAT fixtures)
//! each try one attack on the sandbox. Every attack must end in a classified failure or a
//! harmless success, with the host alive, nothing outside the grants touched, and a
//! neighbouring run unaffected. Tests are named for the attack they try.

use crate::harness::{Env, closed_port, denial, failure, load, output};
use std::path::PathBuf;
use tollgate::engine::EngineOptions;
use tollgate::{FailureClass, LoadError, RunReport, Runtime};
use tollgate_tests::plugins::{
    HELLO, HOSTILE_COMPUTE, HOSTILE_EFFECTS, HOSTILE_FS, HOSTILE_INSTANCES, HOSTILE_NET,
    HOSTILE_TABLE,
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
    let written = output(&report)["written"].as_u64().unwrap();
    assert!(written <= 16384, "stdout accepted {written} bytes");
    let story = runtime.story(&report.run_id).unwrap();
    let captured: usize = story
        .journal
        .iter()
        .filter(|e| e.event == "tool.stdout")
        .map(|e| e.message.len())
        .sum();
    assert!(
        captured <= 16384,
        "journal holds {captured} bytes of stdout"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn attacks_leave_a_concurrent_neighbour_unaffected() {
    let env = Env::new();
    let runtime = env.runtime(
        "[tools.hostile-compute.limits]\ncpu_ms = 500\nmax_log_bytes = 4096\nmax_resources = 500\n",
    );
    let hostile = load(&runtime, HOSTILE_COMPUTE).await;
    let hello = load(&runtime, HELLO).await;
    let attacks = [
        "infinite-loop",
        "memory-grow",
        "log-flood",
        "resource-flood",
        "deep-recursion",
    ];
    let mut tasks = Vec::new();
    for name in attacks {
        let (runtime, tool) = (runtime.clone(), hostile.clone());
        tasks.push(tokio::spawn(async move {
            let input = serde_json::json!({ "attack": name }).to_string();
            runtime.run(&tool, &input).await.unwrap()
        }));
    }
    for i in 0..20 {
        let message = format!("neighbour {i}");
        let report = runtime
            .run(
                &hello,
                &serde_json::json!({ "message": message }).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(output(&report)["echo"], message.as_str());
    }
    for (task, name) in tasks.into_iter().zip(attacks) {
        let report = task.await.unwrap();
        if name != "log-flood" {
            failure(&report);
        }
    }
    hello_still_runs(&runtime).await;
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
    assert!(text.contains("--no-cache"), "{text}");
    // Without the cache the host still runs tools.
    let runtime = env.builder("").without_cache().build().unwrap();
    hello_still_runs(&runtime).await;
}
