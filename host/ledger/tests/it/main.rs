//! Behaviour tests for the ledger against real SQLite files: one binary, one module per area.

mod breakers;
mod call_keys;
mod checkpoints;
mod concurrency;
mod effects;
mod escalations;
mod journal;
mod locks;
mod model;
mod open;
mod pg;
mod runs;
mod typed_facts;

use tollgate_ledger::{Attempt, LedgerExt, NewRun, SqliteLedger};

pub const T0: i64 = 1_700_000_000_000;

pub fn ledger() -> SqliteLedger {
    SqliteLedger::open_in_memory().expect("open scratch ledger")
}

pub fn new_run(ledger: &SqliteLedger, run_id: &str) {
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

/// A run with one live attempt (lease until T0 + 30 s), held by "h1".
pub fn running(ledger: &SqliteLedger, run_id: &str) -> Attempt {
    new_run(ledger, run_id);
    ledger
        .begin_attempt(run_id, "sha256:c0ffee", "h1", T0 + 30_000, false, T0)
        .expect("begin attempt")
}
