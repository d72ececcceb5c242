//! What an operator reads, pinned: the real binary's `runs show`, `escalations show`,
//! `inspect` and error output, and the evidence packets a human decides on, compared whole
//! against snapshots in `tests/it/snapshots/`. Run ids, times, digests, ports, durations and
//! temporary paths are filtered, so a snapshot changes only when the output does.
//!
//! After an intended change, review the new output with `INSTA_UPDATE=always cargo test
//! --release -p tollgate-tests --test it snapshots` and `git diff tests/it/snapshots`.

use crate::harness::{Env, erp_config, invoice, tollgate};
use std::process::Output;
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::{HELLO, INVOICE};

/// What a command printed, as a reader sees it: exit code, stdout, stderr.
fn shown(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The filters that make output comparable between runs and machines.
fn filters(env: &Env) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    let dir = env.dir.path().display().to_string();
    settings.add_filter(&regex_escape(&dir), "[dir]");
    let plugins = std::path::Path::new(INVOICE)
        .parent()
        .expect("in a directory");
    settings.add_filter(&regex_escape(&plugins.display().to_string()), "[plugins]");
    settings.add_filter(
        r"run-\d{4}-\d{2}-\d{2}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[run-id]",
    );
    settings.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", "[time]");
    settings.add_filter(r"(sha256:)?[0-9a-f]{64}", "[digest]");
    settings.add_filter(r"\b[0-9a-f]{12}\b", "[short-digest]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    // Epoch milliseconds in JSON (`created_at`, `at`, …).
    settings.add_filter(r"\b1[7-9]\d{11}\b", "[ms]");
    settings.add_filter(r"\b\d+(\.\d+)? ?ms\b", "[n] ms");
    // Measured, not configured: how long an attempt took and what it computed.
    settings.add_filter(r#""(duration_ms|cpu_ms)": (\d+)"#, r#""$1": [n]"#);
    settings.add_filter(r"stored \d+ bytes", "stored [n] bytes");
    settings.add_filter(r#""stored_bytes": \d+"#, r#""stored_bytes": [n]"#);
    settings.add_filter(r"holder [^\s,]+", "holder [holder]");
    settings.add_filter(r#""holder": "[^"]*""#, r#""holder": "[holder]""#);
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", shown(out)))
}

#[test]
fn runs_show_tells_a_succeeded_runs_story() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), true, 5_000));
    let config = config.to_str().unwrap();
    let out = tollgate(
        &env,
        &[
            "--config",
            config,
            "--json",
            "run",
            INVOICE,
            "--input",
            &invoice("INV-SNAP"),
        ],
    );
    let run_id = json(&out)["run_id"].as_str().unwrap().to_owned();
    filters(&env).bind(|| {
        insta::assert_snapshot!(
            "runs_show_succeeded",
            shown(&tollgate(&env, &["runs", "show", &run_id]))
        );
        insta::assert_json_snapshot!(
            "runs_show_succeeded_json",
            json(&tollgate(&env, &["runs", "show", &run_id, "--json"]))
        );
    });
}

#[test]
fn escalations_show_gives_an_approvals_evidence_packet() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&format!(
        "{}\n[tools.invoice.approval]\n\"erp.post-invoice\" = \"required\"\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    ));
    let config = config.to_str().unwrap();
    let paused = tollgate(
        &env,
        &[
            "--config",
            config,
            "run",
            INVOICE,
            "--input",
            &invoice("INV-SNAP-A"),
        ],
    );
    let listed = json(&tollgate(&env, &["escalations", "list", "--json"]));
    let id = listed[0]["id"].to_string();
    filters(&env).bind(|| {
        insta::assert_snapshot!("run_waiting_for_approval", shown(&paused));
        insta::assert_snapshot!(
            "escalations_show_approval",
            shown(&tollgate(&env, &["escalations", "show", &id]))
        );
    });
    assert_eq!(erp.stats().requests, 0, "nothing is sent before approval");
}

#[test]
fn an_in_doubt_runs_evidence_packet_shows_what_is_known() {
    let erp = Erp::start(false).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), false, 300));
    let config = config.to_str().unwrap();
    let stopped = tollgate(
        &env,
        &[
            "--config",
            config,
            "run",
            INVOICE,
            "--input",
            &invoice("INV-SNAP-D"),
        ],
    );
    let listed = json(&tollgate(&env, &["escalations", "list", "--json"]));
    let id = listed[0]["id"].to_string();
    filters(&env).bind(|| {
        insta::assert_snapshot!("run_in_doubt", shown(&stopped));
        insta::assert_snapshot!(
            "escalations_show_in_doubt",
            shown(&tollgate(&env, &["escalations", "show", &id]))
        );
    });
    assert_eq!(erp.stats().postings, 1, "booked once, never re-sent");
}

#[test]
fn inspect_describes_a_tool_and_the_policy_it_needs() {
    let env = Env::new();
    filters(&env).bind(|| {
        insta::assert_snapshot!(
            "inspect_invoice",
            shown(&tollgate(&env, &["inspect", INVOICE]))
        );
        insta::assert_json_snapshot!(
            "inspect_invoice_json",
            json(&tollgate(&env, &["--json", "inspect", INVOICE]))
        );
    });
}

#[test]
fn errors_say_what_was_wrong_and_how_to_fix_it() {
    let env = Env::new();
    // Not `tollgate.toml`, which every other case would then pick up from the directory.
    let bad_config = env.dir.path().join("bad.toml");
    std::fs::write(&bad_config, "[tools.hello]\nbogus = 1\n").unwrap();
    let bad_config = bad_config.to_str().unwrap();
    let bad_policy = env.dir.path().join("bad-policy.toml");
    std::fs::write(
        &bad_policy,
        "[tools.hello]\neffects = [\"Bad Kind\"]\n[tools.hello.limits]\nmemory_bytes = 0\n",
    )
    .unwrap();
    let bad_policy = bad_policy.to_str().unwrap();
    let missing = env.dir.path().join("missing.wasm");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("unknown run", vec!["runs", "show", "run-2020-01-01-nope"]),
        ("input not JSON", vec!["run", HELLO, "--input", "{not json"]),
        (
            "missing component",
            vec!["run", missing.to_str().unwrap(), "--input", "{}"],
        ),
        (
            "bad config",
            vec!["--config", bad_config, "run", HELLO, "--input", "{}"],
        ),
        ("policy problems", vec!["policy", "check", bad_policy]),
        ("unknown escalation", vec!["escalations", "show", "999"]),
        (
            "input against the schema",
            vec!["run", INVOICE, "--input", "{\"invoice_id\": 7}"],
        ),
    ];
    let mut all = String::new();
    all.push_str("=== no ledger yet: tollgate runs list\n");
    all.push_str(&shown(&tollgate(&env, &["runs", "list"])));
    let hello = tollgate(&env, &["run", HELLO, "--input", "{\"message\": \"snap\"}"]);
    assert!(hello.status.success(), "{}", shown(&hello));
    for (name, args) in cases {
        all.push_str(&format!("=== {name}: tollgate {}\n", args.join(" ")));
        all.push_str(&shown(&tollgate(&env, &args)));
    }
    filters(&env).bind(|| insta::assert_snapshot!("errors", all));
}
