//! The contract modules, run again on PostgreSQL: this test starts this very test binary
//! with `TOLLGATE_TEST_LEDGER=postgres` and requires every contract test to pass there.

use std::process::Command;

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
    "runs::",
    "typed_facts::",
];

#[test]
fn postgres_passes_the_contract_suite() {
    if std::env::var(LEDGER_ENV).is_ok() {
        return; // this is the re-run itself
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .env(LEDGER_ENV, "postgres")
        .args(CONTRACT)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the contract suite failed on PostgreSQL:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    println!("{passed} contract tests passed on PostgreSQL");
    assert!(passed >= 60, "only {passed} contract tests ran:\n{stdout}");
}
