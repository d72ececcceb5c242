//! What a run costs the ledger in commits (each one an fsync on the SQLite default): its
//! start, one per effect intent and one per effect outcome, one per checkpoint the tool
//! saves (it asked for that state to be durable before it goes on), and its end. Log lines
//! and other journal entries ride in those commits instead of adding their own.

use crate::harness::{Env, erp_config, invoice, load, output};
use std::sync::Arc;
use tollgate::ledger::{Durability, Ledger, LedgerOptions, SqliteLedger};
use tollgate::{LoadedTool, Runtime};
use tollgate_tests::erp::Erp;
use tollgate_tests::plugins::{HELLO, INVOICE};

/// A runtime on a SQLite ledger this test can read the commit counter of.
fn runtime(env: &Env, config: &str) -> (Runtime, Arc<SqliteLedger>) {
    let path = env.dir.path().join("counted.db");
    let ledger = Arc::new(SqliteLedger::open(&path, LedgerOptions::default()).unwrap());
    let runtime = env
        .builder(config)
        .ledger(Arc::clone(&ledger) as Arc<dyn Ledger>)
        .build()
        .unwrap();
    (runtime, ledger)
}

/// The commits (all, and those synced) made by one run of `tool` on `input`, after one run
/// to warm up. What the run queued and is still waiting in the ledger is committed and
/// counted too, without a sync of its own.
async fn commits_of_one_run(
    runtime: &Runtime,
    ledger: &SqliteLedger,
    tool: &Arc<LoadedTool>,
    inputs: [&str; 2],
) -> (u64, u64) {
    let flush = || ledger.apply_with(Vec::new(), Durability::Unsynced).unwrap();
    let warm_up = runtime.run(tool, inputs[0]).await.unwrap();
    output(&warm_up);
    flush();
    let before = ledger.stats();
    let report = runtime.run(tool, inputs[1]).await.unwrap();
    output(&report);
    flush();
    let after = ledger.stats();
    (
        after.commits - before.commits,
        after.synced_commits - before.synced_commits,
    )
}

#[tokio::test]
async fn a_run_with_no_effects_commits_its_start_and_its_end_only() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, "");
    let tool = load(&runtime, HELLO).await;
    let input = r#"{"message":"hi"}"#;
    let (commits, synced) = commits_of_one_run(&runtime, &ledger, &tool, [input, input]).await;
    assert_eq!(commits, 2, "start and end");
    assert_eq!(synced, 2);
}

#[tokio::test]
async fn a_run_of_a_tool_recorded_async_commits_its_start_and_end_without_a_sync() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, "[tools.hello]\nrecord = \"async\"\n");
    let tool = load(&runtime, HELLO).await;
    let input = r#"{"message":"hi"}"#;
    let (commits, synced) = commits_of_one_run(&runtime, &ledger, &tool, [input, input]).await;
    assert_eq!(commits, 2, "start and end");
    assert_eq!(synced, 0, "neither waited for the disk");
}

#[tokio::test]
async fn a_run_with_one_effect_commits_start_intent_outcome_its_checkpoints_and_end() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, &erp_config(&erp.invoices_url(), true, 5_000));
    let tool = load(&runtime, INVOICE).await;
    let (commits, synced) = commits_of_one_run(
        &runtime,
        &ledger,
        &tool,
        [&invoice("INV-1"), &invoice("INV-2")],
    )
    .await;
    assert_eq!(erp.stats().postings, 2);
    // The invoice tool checkpoints once before its effect and once after.
    assert_eq!(
        commits, 6,
        "start, checkpoint, intent, outcome, checkpoint and end"
    );
    assert_eq!(synced, 6);
}
