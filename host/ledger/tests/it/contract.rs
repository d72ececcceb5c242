//! The contract modules, run again on PostgreSQL: this test starts this very test binary
//! with `TOLLGATE_TEST_LEDGER=postgres` and requires every contract test it lists to pass
//! there.

use crate::LEDGER_ENV;

/// The modules that hold any backend to the ledger's contract.
const CONTRACT: &[&str] = &[
    "breakers::",
    "call_keys::",
    "checkpoints::",
    "effects::",
    "escalations::",
    "journal::",
    "locks::",
    "nodes::",
    "runs::",
    "typed_facts::",
];

#[test]
fn postgres_passes_the_contract_suite() {
    if std::env::var(LEDGER_ENV).is_ok() {
        return; // this is the re-run itself
    }
    let passed = tollgate_ledger::scratch::rerun_tests(LEDGER_ENV, "postgres", CONTRACT, &[]);
    assert!(passed >= 60, "only {passed} contract tests ran");
}
