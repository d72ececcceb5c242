//! Behaviour tests for the ledger: one binary, one module per area.
//!
//! The contract modules (everything but `open`, `concurrency` and `pg`, which test one
//! backend's own storage) take their ledger from [`ledger`]: a scratch SQLite file, or, with
//! `TOLLGATE_TEST_LEDGER=postgres`, a scratch PostgreSQL schema. `contract::` runs them again
//! that way, so one `cargo test` holds both backends to the same contract.

mod breakers;
mod call_keys;
mod checkpoints;
mod concurrency;
mod contract;
mod copy;
mod effects;
mod escalations;
mod journal;
mod locks;
mod model;
mod nodes;
mod open;
mod pg;
mod runs;
mod typed_facts;

use tollgate_ledger::{Attempt, Ledger, LedgerExt, NewRun, PgLedger, SqliteLedger};

pub const T0: i64 = 1_700_000_000_000;

/// Set to `postgres` to run the contract modules on PostgreSQL.
pub const LEDGER_ENV: &str = "TOLLGATE_TEST_LEDGER";

/// A scratch ledger of the backend under test.
pub fn ledger() -> Box<dyn Ledger> {
    if std::env::var(LEDGER_ENV).is_ok_and(|v| v == "postgres") {
        Box::new(PgLedger::open_scratch().expect("open scratch ledger"))
    } else {
        Box::new(SqliteLedger::open_in_memory().expect("open scratch ledger"))
    }
}

pub fn new_run(ledger: &dyn Ledger, run_id: &str) {
    ledger
        .create_run(NewRun {
            run_id: run_id.to_owned(),
            tool: "echo".to_owned(),
            input: r#"{"x":1}"#.to_owned(),
            now: T0,
            component: None,
            lock: None,
        })
        .expect("create run");
}

/// A tool's log line, number `n`.
pub fn log_line(run_id: &str, n: u32) -> tollgate_ledger::NewJournalEntry {
    tollgate_ledger::NewJournalEntry {
        run_id: run_id.to_owned(),
        attempt: None,
        at: T0,
        level: "info".to_owned(),
        event: "tool.log".to_owned(),
        message: format!("line {n}"),
        fields: serde_json::json!({}),
    }
}

/// What a tool's run journals as it works: five log lines, 2 ms apart.
pub fn queue_log_lines(ledger: &dyn Ledger, run_id: &str) {
    for n in 0..5 {
        ledger.journal(log_line(run_id, n));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A write that ends a run's attempt, as the host's would.
pub fn park(ledger: &dyn Ledger, run_id: &str) {
    ledger
        .apply(vec![tollgate_ledger::Op::ParkRun {
            run_id: run_id.to_owned(),
            status: tollgate_ledger::RunStatus::Escalated,
            now: T0,
        }])
        .expect("park the run");
}

/// A run with one live attempt (lease until T0 + 30 s), held by "h1".
pub fn running(ledger: &dyn Ledger, run_id: &str) -> Attempt {
    new_run(ledger, run_id);
    ledger
        .begin_attempt(run_id, "sha256:c0ffee", "h1", T0 + 30_000, false, T0)
        .expect("begin attempt")
}
