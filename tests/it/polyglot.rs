//! The invoice tool written three times, in Rust (`plugins/invoice`), Python
//! (`plugins/py-invoice`, componentize-py) and JavaScript (`plugins/js-invoice`,
//! componentize-js), passes one behavioural suite: the WIT world is the contract, whatever the
//! language. Each case runs against a real ERP on 127.0.0.1; the crash case `kill -9`s the
//! real `tollgate` binary mid-effect.
//!
//! The Python and JavaScript components carry an interpreter (12–19 MB), so every test here
//! shares one precompiled cache: the first load of each compiles it, the rest load it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    Env, checkpoints_saved, denial, failure, invoice, invoice_with, load, output,
    tollgate_with_cache, wait_until,
};
use tollgate::ledger::{EffectStatus, RunStatus};
use tollgate::{FailureClass, LoadedTool, Runtime};
use tollgate_tests::erp::{Erp, Faults};

/// One precompiled cache for this module's tests (see the module docs).
fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("polyglot-cache")
}

/// Held while loading, so that concurrent tests wait for the first compile of a component
/// instead of all compiling it at once.
static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An ERP connector, granted to each of the tools `names` when `granted`.
fn config(names: &[&str], erp: &Erp, granted: bool) -> String {
    let effects = if granted {
        r#"["erp.post-invoice"]"#
    } else {
        "[]"
    };
    let mut toml = format!(
        r#"
[connectors."erp.post-invoice"]
type = "http"
url = "{url}"
timeout_ms = 5000
honours_idempotency_keys = true
"#,
        url = erp.invoices_url()
    );
    for name in names {
        toml.push_str(&format!("\n[tools.{name}]\neffects = {effects}\n"));
    }
    toml
}

async fn runtime_with(env: &Env, toml: &str, plugin: &str) -> (Runtime, Arc<LoadedTool>) {
    let runtime = env
        .builder(toml)
        .cache_dir(shared_cache())
        .build()
        .expect("runtime");
    let _loading = LOADING.lock().await;
    let tool = load(&runtime, plugin).await;
    (runtime, tool)
}

/// The names of the run's journal log events, with the attempt that logged each.
fn logged(runtime: &Runtime, run_id: &str) -> Vec<(String, Option<u32>)> {
    runtime
        .story(run_id)
        .unwrap()
        .journal
        .into_iter()
        .filter(|e| e.event == "log")
        .map(|e| (e.message, e.attempt))
        .collect()
}

/// Validates, checkpoints, posts once with the idempotency key and run ID downstream, and
/// returns the run's identity in its output.
pub(crate) async fn happy_path(plugin: &str, name: &str) {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let (runtime, tool) = runtime_with(&env, &config(&[name], &erp, true), plugin).await;
    assert_eq!(tool.descriptor.name, name);
    assert_eq!(tool.descriptor.effects, vec!["erp.post-invoice".to_owned()]);

    let report = runtime.run(&tool, &invoice("INV-2001")).await.unwrap();
    let out = output(&report);
    assert_eq!(out["invoice_id"], "INV-2001");
    assert_eq!(out["posted"], true);
    assert_eq!(out["replayed"], false);
    assert_eq!(out["erp"]["invoice_id"], "INV-2001");
    assert_eq!(out["run_id"], report.run_id.as_str());
    assert_eq!(out["attempt"], 1);
    assert_eq!(erp.postings_for("INV-2001"), 1);
    let stats = erp.stats();
    assert_eq!(stats.run_ids, vec![report.run_id.clone()]);
    assert_eq!(stats.without_key, 0, "Idempotency-Key reaches the ERP");

    let story = runtime.story(&report.run_id).unwrap();
    let effect = &story.effects[0];
    assert_eq!(effect.key, "post-invoice:INV-2001");
    assert_eq!(effect.status, EffectStatus::Succeeded);
    let names: Vec<_> = story.checkpoints.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["validated", "posted"]);
    assert_eq!(
        logged(&runtime, &report.run_id),
        [("validated".to_owned(), Some(1))]
    );

    // The total check the schema cannot express, with the Rust tool's message and details.
    let wrong = invoice("INV-2002").replace("\"total_cents\":4650", "\"total_cents\":4651");
    assert_ne!(wrong, invoice("INV-2002"), "the fixture's total moved");
    let report = runtime.run(&tool, &wrong).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Validation, "{f}");
    assert_eq!(
        f.message,
        "total_cents is 4651 but the lines add up to 4650"
    );
    assert_eq!(
        f.details,
        Some(serde_json::json!({"expected": 4650, "got": 4651}))
    );
    assert_eq!(erp.postings_for("INV-2002"), 0);
}

/// A second run of an invoice whose posting succeeded replays the recorded outcome: nothing
/// reaches the ERP again.
pub(crate) async fn replay(plugin: &str, name: &str) {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let (runtime, tool) = runtime_with(&env, &config(&[name], &erp, true), plugin).await;
    let first = runtime.run(&tool, &invoice("INV-2101")).await.unwrap();
    let second = runtime.run(&tool, &invoice("INV-2101")).await.unwrap();
    assert_ne!(first.run_id, second.run_id);
    let (a, b) = (output(&first), output(&second));
    assert_eq!(b["replayed"], true);
    assert_eq!(b["erp"], a["erp"], "the recorded outcome, byte for byte");
    assert_eq!(erp.stats().requests, 1, "one request in all");
    assert_eq!(erp.postings_for("INV-2101"), 1);
    let effects = runtime.story(&first.run_id).unwrap().effects;
    assert_eq!(effects[0].dispatches, 1, "dispatched by the first run only");
}

/// The same invoice ID with other lines is the same key with another payload: a conflict,
/// and the ERP never sees the second version.
pub(crate) async fn conflict(plugin: &str, name: &str) {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let (runtime, tool) = runtime_with(&env, &config(&[name], &erp, true), plugin).await;
    output(
        &runtime
            .run(&tool, &invoice_with("INV-2201", 3))
            .await
            .unwrap(),
    );
    let report = runtime
        .run(&tool, &invoice_with("INV-2201", 4))
        .await
        .unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Conflict, "{f}");
    assert!(f.message.contains("post-invoice:INV-2201"), "{f}");
    assert_eq!(erp.stats().requests, 1);
    assert_eq!(erp.postings_for("INV-2201"), 1);
}

/// `kill -9` of the real binary while the posting is in flight (the ERP booked it and holds
/// the answer); `tollgate resume` re-sends under the same key (the ERP honours keys), so the
/// invoice is posted once, and the new attempt continues from the `validated` checkpoint
/// instead of validating and logging again.
pub(crate) async fn crash_resume(plugin: &str, name: &str) {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let toml = config(&[name], &erp, true);
    // Compiles into the shared cache first, so the killed process is mid-effect, not
    // mid-compile.
    let (runtime, _tool) = runtime_with(&env, &toml, plugin).await;
    let config_path = env.config_file(&toml);
    let cli = |args: &[&str]| {
        let mut cmd = tollgate_with_cache(&env, &config_path, &shared_cache());
        cmd.args(args);
        cmd
    };

    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let input = invoice("INV-2301");
    let mut child = cli(&["run", plugin, "--input", &input])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), || {
        erp.postings_for("INV-2301") == 1
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let run_id = erp.stats().run_ids[0].clone();
    let story = runtime.story(&run_id).unwrap();
    assert_eq!(story.run.status, RunStatus::Running, "killed mid-run");
    assert_eq!(
        story.effects[0].status,
        EffectStatus::Pending,
        "outcome unknown"
    );

    let out = cli(&["resume", &run_id, "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run_id"], run_id.as_str());
    let resumed = &report["result"]["Ok"];
    assert_eq!(resumed["attempt"], 2, "{report}");
    assert_eq!(resumed["posted"], true);
    assert_eq!(erp.postings_for("INV-2301"), 1, "posted exactly once");
    assert_eq!(
        erp.stats().requests_by_key.get("post-invoice:INV-2301"),
        Some(&2),
        "re-sent under the same key"
    );

    assert_eq!(
        runtime.story(&run_id).unwrap().run.status,
        RunStatus::Succeeded
    );
    assert_eq!(
        checkpoints_saved(&runtime, &run_id),
        [("validated".to_owned(), 1), ("posted".to_owned(), 2)],
        "attempt 2 started from attempt 1's checkpoint"
    );
    assert_eq!(
        logged(&runtime, &run_id),
        [("validated".to_owned(), Some(1))],
        "validation ran once, before the crash"
    );
}

/// Without an `effects` grant the posting is refused as `permission`, journaled as
/// `policy.denied`, and nothing reaches the ERP.
pub(crate) async fn denied(plugin: &str, name: &str) {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let (runtime, tool) = runtime_with(&env, &config(&[name], &erp, false), plugin).await;
    let report = runtime.run(&tool, &invoice("INV-2401")).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, FailureClass::Permission, "{f}");
    assert_eq!(report.status, RunStatus::Failed);
    let fields = denial(&runtime, &report.run_id);
    assert_eq!(fields["tool"], name);
    assert!(
        fields["asked"]
            .as_str()
            .unwrap()
            .contains("erp.post-invoice"),
        "{fields}"
    );
    assert_eq!(erp.stats().requests, 0);
}

/// The behavioural suite for one invoice tool, as one test per case.
macro_rules! invoice_suite {
    ($module:ident, $plugin:expr, $name:literal) => {
        pub(crate) mod $module {
            #[tokio::test]
            pub(crate) async fn happy_path() {
                super::happy_path($plugin, $name).await;
            }
            #[tokio::test]
            async fn replay_of_a_succeeded_key_posts_nothing() {
                super::replay($plugin, $name).await;
            }
            #[tokio::test]
            async fn same_key_other_payload_is_a_conflict() {
                super::conflict($plugin, $name).await;
            }
            #[tokio::test]
            async fn kill_9_mid_effect_then_resume_posts_once_from_the_checkpoint() {
                super::crash_resume($plugin, $name).await;
            }
            #[tokio::test]
            async fn ungranted_effect_is_denied_and_journaled() {
                super::denied($plugin, $name).await;
            }
        }
    };
}

invoice_suite!(rust, tollgate_tests::plugins::INVOICE, "invoice");
invoice_suite!(python, tollgate_tests::plugins::PY_INVOICE, "py-invoice");
invoice_suite!(
    javascript,
    tollgate_tests::plugins::JS_INVOICE,
    "js-invoice"
);

/// The three tools send the same payload bytes for the same invoice under the same key, so
/// whichever posts first, the other two replay its outcome: one posting in all.
#[tokio::test]
async fn rust_python_and_javascript_share_one_posting() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let toml = config(&["invoice", "py-invoice", "js-invoice"], &erp, true);
    let mut outcomes = Vec::new();
    for plugin in [
        tollgate_tests::plugins::PY_INVOICE,
        tollgate_tests::plugins::INVOICE,
        tollgate_tests::plugins::JS_INVOICE,
    ] {
        let (runtime, tool) = runtime_with(&env, &toml, plugin).await;
        let report = runtime.run(&tool, &invoice("INV-2501")).await.unwrap();
        outcomes.push(output(&report).clone());
    }
    let replayed: Vec<_> = outcomes.iter().map(|o| o["replayed"].clone()).collect();
    assert_eq!(replayed, [false, true, true]);
    assert!(outcomes.iter().all(|o| o["erp"] == outcomes[0]["erp"]));
    assert_eq!(erp.stats().requests, 1);
    assert_eq!(erp.postings_for("INV-2501"), 1);
}
