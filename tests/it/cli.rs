//! The real `tollgate` binary: output, exit codes, and one-line errors for bad input.

use crate::harness::{Env, erp_config, invoice, tollgate, tollgate_command, tollgate_with};
use std::process::Output;
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::{CORE_MODULE, FIXTURE_TRAP, HELLO, HOSTILE_NET, INVOICE};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_prints_output_and_run_id() {
    let env = Env::new();
    let out = tollgate(&env, &["run", HELLO, "--input", r#"{"message":"cli"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("stdout is the output JSON");
    assert_eq!(json["echo"], "cli");
    let run_id = json["run_id"].as_str().unwrap();
    assert!(
        stderr(&out).contains(&format!("run {run_id} attempt 1 succeeded")),
        "{}",
        stderr(&out)
    );
}

/// A run recorded async is answered before it is written; the command still writes it
/// before it exits.
#[test]
fn a_run_recorded_async_is_written_before_the_command_exits() {
    let env = Env::new();
    let config = env.config_file("[tools.hello]\nrecord = \"async\"\n");
    let out = tollgate_with(&env, &config)
        .args(["run", HELLO, "--input", r#"{"message":"later"}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let run_id = json["run_id"].as_str().unwrap();
    let run = env.open_ledger().run(run_id).unwrap().expect("written");
    assert_eq!(run.status, tollgate::ledger::RunStatus::Succeeded);
}

#[test]
fn bad_input_gets_one_line_error_and_nonzero_exit() {
    let env = Env::new();
    let not_wasm = env.dir.path().join("readme.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let not_wasm = not_wasm.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["run", "missing.wasm", "--input", "{}"], "no such file"),
        (
            &["run", not_wasm, "--input", "{}"],
            "not a WebAssembly component",
        ),
        (
            &["run", CORE_MODULE, "--input", "{}"],
            "core WebAssembly module",
        ),
        (
            &["run", HELLO, "--input", "{oops"],
            "input is not valid JSON",
        ),
        (
            &["run", HELLO, "--input", r#"{"msg":"x"}"#],
            "does not match the schema",
        ),
        (&["run", HELLO], "no input"),
    ];
    for (args, expected) in cases {
        let out = tollgate(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn trap_exits_3_with_class_and_run_id() {
    let env = Env::new();
    let out = tollgate(
        &env,
        &["run", FIXTURE_TRAP, "--input", r#"{"mode":"panic"}"#],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("error: fatal: tool trapped"), "{err}");
    assert!(err.contains("(run run-"), "{err}");
}

#[test]
fn inspect_prints_imports_and_policy_skeleton() {
    let env = Env::new();
    let out = tollgate(&env, &["inspect", INVOICE]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tollgate:tool/effects@0.1.0"), "{text}");
    let out = tollgate(&env, &["inspect", INVOICE, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["descriptor"]["name"], "invoice");
    assert_eq!(json["cache"], "hit", "the second load came from the cache");
    let digest = json["digest"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "[tools.invoice]\ndigest = \"sha256:{digest}\"\neffects = [\"erp.post-invoice\"]"
        )),
        "{text}"
    );
    // The skeleton is a policy the host accepts as it stands (given a connector).
    let skeleton = json["policy_skeleton"].as_str().unwrap();
    let config = env.config_file(&format!(
        "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n\n{skeleton}"
    ));
    let out = tollgate(&env, &["policy", "check", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{skeleton}", stderr(&out));
}

#[test]
fn inspect_of_a_network_tool_prints_the_grant_it_needs() {
    let env = Env::new();
    let out = tollgate(&env, &["inspect", HOSTILE_NET]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("[[tools.hostile-net.http]]\nhost = "),
        "{text}"
    );
    assert!(
        text.contains("the current policy refuses it")
            && text.contains("wasi:http/outgoing-handler"),
        "{text}"
    );
}

#[test]
fn policy_check_names_the_line_of_each_problem() {
    let env = Env::new();
    let config = env.config_file(
        "[tools.reader]\nenv = [\"OK\"]\n\n[[tools.reader.fs]]\nhost = \"/no/such/dir\"\nguest = \"/data\"\n\n[[tools.reader.http]]\nhost = \"https://api.example.com\"\nmethods = [\"GET\", \"FETCH\"]\n",
    );
    let out = tollgate(&env, &["policy", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains(
            "line 5: tools.reader.fs[0].host: `/no/such/dir` is not an existing directory"
        ),
        "{err}"
    );
    assert!(
        err.contains("line 9: tools.reader.http[0].host: `https://api.example.com` is a URL"),
        "{err}"
    );
    assert!(
        err.contains("line 10: tools.reader.http[0].methods: `FETCH` is not an HTTP method"),
        "{err}"
    );
    let out = tollgate(&env, &["policy", "check", "nope.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
    let unknown = env.config_file("[tools.reader]\nefects = []\n");
    let out = tollgate(&env, &["policy", "check", unknown.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("efects") && err.contains("line 2"), "{err}");
}

#[test]
fn runs_list_show_and_resume_tell_the_story() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), true, 5_000));
    let config = config.to_str().unwrap();
    let input = invoice("INV-CLI");
    let out = tollgate(
        &env,
        &[
            "--config", config, "run", INVOICE, "--input", &input, "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    let out = tollgate(&env, &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "succeeded");

    let out = tollgate(&env, &["runs", "show", &run_id]);
    let text = stdout(&out);
    assert!(
        text.contains("erp.post-invoice key=post-invoice:INV-CLI status=Succeeded dispatches=1"),
        "{text}"
    );
    assert!(
        text.contains("validated") && text.contains("posted"),
        "{text}"
    );

    let out = tollgate(&env, &["runs", "show", &run_id, "--json"]);
    let story: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(story["effects"][0]["status"], "succeeded");

    // Resuming a finished run hands back its recorded output and starts nothing.
    let out = tollgate(&env, &["--config", config, "resume", &run_id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["run_id"], run_id.as_str());
    assert_eq!(erp.stats().requests, 1);
    let out = tollgate(&env, &["runs", "show", "run-2020-01-01-nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run-2020-01-01-nope"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_config_names_the_problem() {
    let env = Env::new();
    let config = env.config_file("[connectors.\"erp.post-invoice\"]\ntype = \"http\"\nurl = \"ftp://x\"\nhonours_idempotency_keys = true\nbogus = 1\n");
    let out = tollgate(
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            HELLO,
            "--input",
            "{}",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn approval_and_escalation_commands_drive_the_human_queue() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&format!(
        "{}\n[tools.invoice.approval]\n\"erp.post-invoice\" = \"required\"\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    ));
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        tollgate(&env, &all)
    };
    let paused = run(&["run", INVOICE, "--input", &invoice("INV-C1")]);
    assert_eq!(paused.status.code(), Some(6), "{}", stderr(&paused));
    assert!(
        stderr(&paused).contains("waiting for approval"),
        "{}",
        stderr(&paused)
    );
    let list = run(&["escalations", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["reason"], "approval");
    let id = list[0]["id"].to_string();
    let shown = run(&["escalations", "show", &id]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["evidence"]["action"]["key"], "post-invoice:INV-C1");
    // `resolve` refuses an approval and says what to use instead.
    let wrong = run(&["escalations", "resolve", &id, "--retry", "--reason", "go"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("tollgate approve"),
        "{}",
        stderr(&wrong)
    );
    assert_eq!(erp.stats().requests, 0);
    let approved = run(&["approve", &id, "--reason", "checked", "--by", "carol"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let output: serde_json::Value = serde_json::from_str(&stdout(&approved)).unwrap();
    assert_eq!(output["posted"], true);
    assert_eq!(erp.stats().postings, 1);
    let open = run(&["escalations", "list", "--json"]);
    assert_eq!(stdout(&open).trim(), "[]");
}

#[test]
fn read_only_commands_on_a_missing_ledger_say_so_and_create_nothing() {
    let env = Env::new();
    for args in [
        &["runs", "list"][..],
        &["runs", "show", "run-2020-01-01-nope"],
        &["escalations", "list"],
        &["resume", "run-2020-01-01-nope"],
        &["approve", "1"],
    ] {
        let out = tollgate(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no ledger at"), "{args:?}: {err}");
        assert!(
            err.contains("hint: run from the directory"),
            "{args:?}: {err}"
        );
        assert!(!env.ledger().exists(), "{args:?} created a ledger");
    }
    // `inspect` needs no ledger at all.
    let out = tollgate(&env, &["inspect", HELLO]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!env.ledger().exists(), "inspect created a ledger");
}

#[test]
fn a_truncated_ledger_is_refused_and_nothing_is_posted_again() {
    let erp = Erp::start(false).unwrap();
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), false, 5_000));
    let config = config.to_str().unwrap();
    let input = invoice("INV-TRUNC");
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", config];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["run", INVOICE, "--input", &input]);
        tollgate(&env, &args)
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(erp.postings_for("INV-TRUNC"), 1);

    // A bad restore leaves the ledger file empty.
    std::fs::File::create(env.ledger()).unwrap();
    let again = run(&[]);
    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(err.contains("is an empty file, not a ledger"), "{err}");
    assert!(err.contains("--init"), "the hint names the way out: {err}");
    assert_eq!(erp.postings_for("INV-TRUNC"), 1, "not posted a second time");
    let listed = tollgate(&env, &["runs", "list"]);
    assert_eq!(listed.status.code(), Some(1), "{}", stdout(&listed));
    assert_eq!(std::fs::metadata(env.ledger()).unwrap().len(), 0);

    // Only an explicit --init makes the empty file a ledger.
    let init = tollgate(&env, &["--init", "--json", "runs", "list"]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert_eq!(stdout(&init).trim(), "[]");
    assert!(std::fs::metadata(env.ledger()).unwrap().len() > 0);
}

#[test]
fn resume_retry_keeps_retrying_under_the_policy() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&format!(
        "{}\n[tools.invoice.retry]\nmax_attempts = 5\ninitial_interval_ms = 10\nmax_interval_ms = 20\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    ));
    let config = config.to_str().unwrap();
    // The downstream answers 503 to the first three requests.
    erp.inject(Faults {
        unavailable: 3,
        ..Faults::default()
    });
    let first = tollgate(
        &env,
        &[
            "--config",
            config,
            "--json",
            "run",
            INVOICE,
            "--input",
            &invoice("INV-R"),
        ],
    );
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));
    let run_id = serde_json::from_slice::<serde_json::Value>(&first.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Without --retry, one more attempt, which fails the same way.
    let once = tollgate(&env, &["--config", config, "resume", &run_id]);
    assert_eq!(once.status.code(), Some(4), "{}", stderr(&once));
    let retried = tollgate(
        &env,
        &["--config", config, "--json", "resume", &run_id, "--retry"],
    );
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    let report: serde_json::Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(report["attempt"], 4, "attempts 3 and 4 ran in one resume");
    assert_eq!(erp.postings_for("INV-R"), 1);
}

#[test]
fn a_second_run_takes_over_a_key_whose_holder_was_killed() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), true, 120_000));
    let config = config.to_str().unwrap();
    let input = invoice("INV-DEAD");
    let command = |extra: &[&str]| {
        let mut cmd = tollgate_command(&env);
        cmd.args(["--config", config, "--json"]).args(extra);
        cmd
    };
    // The ERP books the first request and holds its answer: the first run holds the key.
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let mut first = command(&["run", INVOICE, "--input", &input])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while erp.postings_for("INV-DEAD") == 0 {
        assert!(std::time::Instant::now() < deadline, "never booked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // While the holder lives, a duplicate submission waits (resumable), never fails for good.
    let waiting = command(&["run", INVOICE, "--input", &input])
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&waiting), stderr(&waiting));
    assert_eq!(waiting.status.code(), Some(4), "{said}");
    assert!(said.contains("in flight"), "{said}");

    first.kill().unwrap(); // SIGKILL, with its lease still running
    first.wait().unwrap();
    let second = command(&["run", INVOICE, "--input", &input])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["result"]["Ok"]["posted"], true);
    assert_eq!(erp.postings_for("INV-DEAD"), 1, "posted once");
    assert_eq!(
        erp.stats().requests_by_key.get("post-invoice:INV-DEAD"),
        Some(&2),
        "re-sent under the same key, which the ERP honours"
    );
}

/// A downstream that books each request and, on the first one, takes the ledger's write lock
/// for `hold` before answering: the host's outcome write then waits out its busy timeout
/// and fails, after the effect went out. Counts requests per `Idempotency-Key`.
struct LedgerLockingErp {
    server: tollgate_tests::server::Server,
    keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LedgerLockingErp {
    fn start(ledger: std::path::PathBuf, hold: std::time::Duration) -> Self {
        use axum::http::HeaderMap;
        let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = keys.clone();
        let app = axum::Router::new().route(
            "/invoices",
            axum::routing::post(move |headers: HeaderMap| {
                let seen = seen.clone();
                let ledger = ledger.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let first = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(key);
                        seen.len() == 1
                    };
                    if first {
                        let (locked, wait) = std::sync::mpsc::channel();
                        std::thread::spawn(move || {
                            let conn = rusqlite::Connection::open(&ledger).unwrap();
                            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                            locked.send(()).unwrap();
                            std::thread::sleep(hold);
                            conn.execute_batch("ROLLBACK").unwrap();
                        });
                        wait.recv().unwrap();
                    }
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(
                            serde_json::json!({ "posting_id": "ERP-1", "status": "posted" }),
                        ),
                    )
                }
            }),
        );
        Self {
            server: tollgate_tests::server::Server::start("locking-erp", app).unwrap(),
            keys,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/invoices", self.server.addr())
    }
}

/// An effect that went out while the ledger could not take its outcome: the run exits 7,
/// says the effect was sent, names the run and how it will be recovered, and `--json` says
/// the same on stdout. A resume then re-sends it under its key and the run succeeds. (Before,
/// this exited 1, documented as bad input, with no run id, and `--json` printed nothing.)
#[test]
fn an_outcome_the_ledger_cannot_record_exits_7_with_the_run_id_and_recovery() {
    let env = Env::new();
    // Held past the ledger's 5 s busy timeout.
    let erp = LedgerLockingErp::start(env.ledger(), std::time::Duration::from_secs(6));
    let config = env.config_file(&erp_config(&erp.url(), true, 20_000));
    let config = config.to_str().unwrap();
    // The ledger exists before the downstream locks it.
    let init = tollgate(&env, &["--init", "runs", "list"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let out = tollgate(
        &env,
        &[
            "--config",
            config,
            "--json",
            "run",
            INVOICE,
            "--input",
            &invoice("INV-UNREC"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("--json prints the report");
    assert_eq!(report["status"], "outcome_unrecorded", "{report}");
    assert_eq!(report["effect"]["key"], "post-invoice:INV-UNREC");
    assert_eq!(report["effect"]["sent"], true);
    let run_id = report["run_id"].as_str().expect("run id").to_owned();
    assert!(err.contains(&run_id), "{err}");
    assert!(err.contains("was sent downstream"), "{err}");
    assert!(err.contains("outcome could not be recorded"), "{err}");
    assert!(err.contains(&format!("tollgate resume {run_id}")), "{err}");
    assert!(
        err.contains("is busy"),
        "the ledger's fault is named: {err}"
    );

    // Once the lock is gone, resume re-sends under the same key and records the outcome.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let resumed = tollgate(&env, &["--config", config, "resume", &run_id]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let keys = erp.keys.lock().unwrap().clone();
    assert_eq!(keys, ["post-invoice:INV-UNREC"; 2], "one key, sent twice");
}

/// A ledger this user can read but not write: the write is refused with its own message,
/// not as a full disk or a failed read, and nothing is lost.
#[test]
fn a_read_only_ledger_gets_its_own_message() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let out = tollgate(&env, &["run", HELLO, "--input", r#"{"message":"one"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    };
    // Root writes through any file mode: the command runs as `nobody` instead, on files
    // it may read but not write.
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for dir in [env.dir.path(), &env.cache()] {
        mode(dir, 0o755);
    }
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            mode(&path, 0o444);
        }
    }
    let as_reader = |args: &[&str]| {
        let mut command = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(crate::harness::tollgate_bin());
            c
        } else {
            std::process::Command::new(crate::harness::tollgate_bin())
        };
        crate::harness::in_env(&mut command, &env)
            .arg("--no-cache")
            .args(args)
            .output()
            .expect("run tollgate")
    };
    let out = as_reader(&["run", HELLO, "--input", r#"{"message":"two"}"#]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is read-only to this process"), "{err}");
    assert!(!err.contains("full"), "not reported as a full disk: {err}");
    assert!(
        err.contains("write access"),
        "the hint says what to fix: {err}"
    );
    // Nothing was recorded, and the ledger is intact for its owner.
    let listed = tollgate(&env, &["--json", "runs", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)
            .unwrap()
            .len(),
        1
    );
}
