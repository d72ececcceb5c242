//! The suites the ledger's guarantees rest on, run again with a PostgreSQL ledger: effects
//! (replay, conflict, in-doubt, probes), locks and fences across processes, escalations and
//! approvals, the races, and the `kill -9` crash campaigns.
//!
//! This test runs this very test binary again with `TOLLGATE_TEST_LEDGER=postgres`, so one
//! `cargo test` proves both backends; each re-run test gets a schema of its own on the test
//! server (see `tollgate::ledger::scratch`).

use tollgate::ledger::scratch::PgScratch;
use tollgate_tests::plugins::HELLO;

use crate::harness::{Env, LEDGER_ENV, on_postgres, tollgate_command};

/// The modules re-run on PostgreSQL.
const SUITES: &[&str] = &[
    "effects::",
    "locks::",
    "escalations::",
    "races::",
    "crash::",
    "serve::",
    "fleet::",
];

/// Tests of the SQLite file itself (a corrupt file, group commit into one file), which have
/// no PostgreSQL meaning; the PostgreSQL backend's own tests cover its equivalents.
const FILE_ONLY: &[&str] = &[
    "effects::corrupt_ledger_file_is_refused_and_left_untouched",
    "effects::concurrent_runs_share_commits",
];

#[test]
fn the_ledger_suites_pass_on_postgres() {
    if on_postgres() {
        return; // this is the re-run itself
    }
    let passed = tollgate::ledger::scratch::rerun_tests(LEDGER_ENV, "postgres", SUITES, FILE_ONLY);
    assert!(passed >= 30, "the filters matched only {passed} tests");
}

/// The CLI on a PostgreSQL ledger, named by URL in `--ledger`: a run is recorded, listed and
/// shown, and a read-only command on an empty database says no ledger is there.
#[test]
fn the_cli_runs_lists_and_shows_runs_on_a_postgres_ledger() {
    let env = Env::new();
    let schema = PgScratch::new();
    let url = schema.url();
    let cli = |args: &[&str]| {
        tollgate_command(&env)
            .arg("--ledger")
            .arg(&url)
            .args(args)
            .output()
            .expect("run tollgate")
    };
    let empty = cli(&["runs", "list"]);
    assert_eq!(empty.status.code(), Some(1));
    let said = String::from_utf8_lossy(&empty.stderr);
    assert!(said.contains("no ledger at postgres://"), "{said}");

    let ran = cli(&["run", HELLO, "--input", r#"{"message":"pg"}"#]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(report["echo"], "pg");
    let run_id = report["run_id"].as_str().unwrap();

    let listed = cli(&["--json", "runs", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], run_id, "{runs}");
    let shown = cli(&["runs", "show", run_id]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("succeeded"));
}

/// A database that is down: one error line naming the URL without its password, a hint,
/// and nothing run.
#[test]
fn a_postgres_ledger_that_is_down_gets_one_clear_line_without_the_password() {
    let env = Env::new();
    let out = tollgate_command(&env)
        .args(["--ledger", "postgres://tollgate:s3cret@127.0.0.1:1/ledger"])
        .args(["run", HELLO, "--input", r#"{"message":"x"}"#])
        .output()
        .expect("run tollgate");
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("postgres://tollgate:***@127.0.0.1:1/ledger"),
        "{said}"
    );
    assert!(said.contains("is unavailable"), "{said}");
    assert!(
        said.contains("pg_isready"),
        "the hint says what to check: {said}"
    );
    assert!(!said.contains("s3cret"), "the password leaked: {said}");
    assert!(out.stdout.is_empty());
}

/// `tollgate ledger copy`: a run recorded on the SQLite default moves to PostgreSQL, where
/// `runs show` finds it; a second copy into the same database is refused.
#[test]
fn the_cli_copies_a_sqlite_ledger_to_postgres_and_verifies_it() {
    if on_postgres() {
        return; // the source is a SQLite file by design
    }
    let env = Env::new();
    let file = env.ledger();
    let schema = PgScratch::new();
    let url = schema.url();
    let cli = |args: &[&str]| {
        tollgate_command(&env)
            .args(args)
            .output()
            .expect("run tollgate")
    };
    let ledger = file.to_str().unwrap();
    let ran = cli(&[
        "--ledger",
        ledger,
        "run",
        HELLO,
        "--input",
        r#"{"message":"moved"}"#,
    ]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let run_id = report["run_id"].as_str().unwrap();

    let copied = cli(&["ledger", "copy", "--from", ledger, "--to", &url]);
    let said = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(said.contains("verified: 1 run(s)"), "{said}");

    let shown = cli(&["--ledger", &url, "runs", "show", run_id]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("succeeded"));

    let again = cli(&["ledger", "copy", "--from", ledger, "--to", &url]);
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already holds"), "{said}");
}
