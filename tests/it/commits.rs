//! What a run costs the ledger in commits (each one an fsync on the SQLite default): its
//! start, one per effect intent and one per effect outcome, one per checkpoint the tool
//! saves (it asked for that state to be durable before it goes on), and its end. Log lines
//! and other journal entries ride in those commits instead of adding their own.

use crate::harness::{Env, erp_config, invoice, load, output};
use std::sync::Arc;
use tollgate::ledger::{Durability, Ledger, LedgerOptions, SqliteLedger};
use tollgate::{LoadedTool, Runtime};
use tollgate_tests::erp::Erp;
use tollgate_tests::plugins::{HELLO, HOSTILE_LEDGER, INVOICE};

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

/// Returns once every request made so far is written: requests are written in order, so an
/// empty one returns after them (committed, without a sync of its own).
fn written_so_far(ledger: &SqliteLedger) {
    ledger.apply_with(Vec::new(), Durability::Unsynced).unwrap();
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
    let warm_up = runtime.run(tool, inputs[0]).await.unwrap();
    output(&warm_up);
    written_so_far(ledger);
    let before = ledger.stats();
    let report = runtime.run(tool, inputs[1]).await.unwrap();
    output(&report);
    written_so_far(ledger);
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
async fn a_run_of_a_tool_recorded_async_is_written_in_one_commit_without_a_sync() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, ASYNC_HELLO);
    let tool = load(&runtime, HELLO).await;
    let input = r#"{"message":"hi"}"#;
    let (commits, synced) = commits_of_one_run(&runtime, &ledger, &tool, [input, input]).await;
    assert_eq!(commits, 1, "start and end together, after the answer");
    assert_eq!(synced, 0, "nothing waited for the disk");
}

/// The events of the run's journal, in order.
fn events(ledger: &SqliteLedger, run_id: &str) -> Vec<String> {
    let entries = ledger.journal_entries(run_id).unwrap();
    entries.into_iter().map(|e| e.event).collect()
}

const ASYNC_HELLO: &str = "[tools.hello]\nrecord = \"async\"\n";

/// A run recorded async is written whole after its caller has the answer: its rows, and the
/// journal entries its attempt made, in the order they happened.
#[tokio::test]
async fn a_run_recorded_async_is_written_whole_with_its_journal_in_order() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, ASYNC_HELLO);
    let tool = load(&runtime, HELLO).await;
    let report = runtime.run(&tool, r#"{"message":"whole"}"#).await.unwrap();
    assert_eq!(output(&report)["echo"], "whole");
    written_so_far(&ledger);
    let run = ledger
        .run(&report.run_id)
        .unwrap()
        .expect("the run is written");
    assert_eq!(run.status, tollgate::ledger::RunStatus::Succeeded);
    assert_eq!(ledger.attempts(&report.run_id).unwrap().len(), 1);
    let events = events(&ledger, &report.run_id);
    assert_eq!(events.first().map(String::as_str), Some("run.created"));
    assert_eq!(events.get(1).map(String::as_str), Some("attempt.started"));
    assert_eq!(events.last().map(String::as_str), Some("attempt.succeeded"));
    assert!(events.iter().any(|e| e == "log"), "{events:?}");
}

/// A run recorded async that writes before its end (a checkpoint) is written from then on
/// like any run: the checkpoint's commit carries the run's start first.
#[tokio::test]
async fn a_run_recorded_async_that_saves_a_checkpoint_is_written_before_it() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, "[tools.hostile-ledger]\nrecord = \"async\"\n");
    let tool = load(&runtime, HOSTILE_LEDGER).await;
    let report = runtime
        .run(&tool, r#"{"attack":"checkpoints","count":2,"bytes":8}"#)
        .await
        .unwrap();
    assert_eq!(output(&report)["saved"], 2);
    // Written before the answer: readable at once.
    let run = ledger.run(&report.run_id).unwrap().expect("written");
    assert_eq!(run.status, tollgate::ledger::RunStatus::Succeeded);
    assert_eq!(ledger.checkpoints(&report.run_id).unwrap().len(), 1);
    let events = events(&ledger, &report.run_id);
    assert_eq!(
        &events[..3],
        ["run.created", "attempt.started", "checkpoint.saved"]
    );
}

/// When the ledger refuses a record written after the answer, runs recorded async are
/// written before their answers again (their callers hear of a refusal) until one is
/// written; then they are deferred again.
#[tokio::test]
async fn after_a_refused_async_record_runs_are_written_before_their_answers_until_one_is() {
    let env = Env::new();
    let (runtime, ledger) = runtime(&env, ASYNC_HELLO);
    let tool = load(&runtime, HELLO).await;
    let input = r#"{"message":"hi"}"#;
    let first = runtime.run(&tool, input).await.unwrap();
    written_so_far(&ledger);
    // A run under an ID that is taken: answered, and its record refused whole.
    let taken = tollgate::RunOptions {
        run_id: Some(first.run_id.clone()),
        ..Default::default()
    };
    let refused = runtime.run_with_options(&tool, input, &taken, false).await;
    assert!(refused.is_ok(), "{refused:?}");
    written_so_far(&ledger);
    assert_eq!(
        ledger.attempts(&first.run_id).unwrap().len(),
        1,
        "nothing of it written"
    );
    let commits = || async {
        let before = ledger.stats().commits;
        runtime.run(&tool, input).await.unwrap();
        written_so_far(&ledger);
        ledger.stats().commits - before
    };
    assert_eq!(
        commits().await,
        2,
        "written before its answer: start, then end"
    );
    assert_eq!(commits().await, 1, "deferred again once a run was written");
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
