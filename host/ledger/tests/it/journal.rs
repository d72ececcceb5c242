use serde_json::json;
use tollgate_ledger::{Ledger, LedgerError, NewJournalEntry, Op};

use crate::{T0, ledger, new_run};

fn entry(run_id: &str, event: &str, message: &str) -> NewJournalEntry {
    NewJournalEntry {
        run_id: run_id.to_owned(),
        attempt: Some(1),
        at: T0,
        level: "info".to_owned(),
        event: event.to_owned(),
        message: message.to_owned(),
        fields: json!({ "n": message }),
    }
}

fn messages(ledger: &(impl Ledger + ?Sized), run_id: &str) -> Vec<String> {
    ledger
        .journal_entries(run_id)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn journal_entries_read_back_in_order_with_their_fields() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger
        .apply(vec![
            Op::Journal(entry("r1", "attempt.started", "one")),
            Op::Journal(entry("r1", "log", "two")),
        ])
        .unwrap();
    let entries = ledger.journal_entries("r1").unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0].seq < entries[1].seq);
    assert_eq!(entries[0].event, "attempt.started");
    assert_eq!(entries[1].fields, json!({ "n": "two" }));
    assert_eq!(entries[1].attempt, Some(1));
}

#[test]
fn queued_journal_entries_are_durable_when_a_later_apply_returns() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger.journal(entry("r1", "effect.replayed", "a"));
    ledger.journal(entry("r1", "effect.replayed", "b"));
    ledger
        .apply(vec![Op::Journal(entry("r1", "log", "c"))])
        .unwrap();
    ledger.journal(entry("r1", "log", "d"));
    // An empty apply is a flush barrier.
    ledger.apply(vec![]).unwrap();
    assert_eq!(messages(&*ledger, "r1"), ["a", "b", "c", "d"]);
}

#[test]
fn queued_journal_entry_for_an_unknown_run_is_dropped_without_failing_others() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    ledger.journal(entry("r1", "log", "before"));
    ledger.journal(entry("ghost", "log", "lost"));
    ledger.journal(entry("r1", "log", "after"));
    ledger
        .apply(vec![Op::Journal(entry("r1", "log", "applied"))])
        .unwrap();
    assert_eq!(messages(&*ledger, "r1"), ["before", "after", "applied"]);
    assert_eq!(messages(&*ledger, "ghost"), Vec::<String>::new());
}

#[test]
fn applied_journal_entry_for_an_unknown_run_is_run_not_found() {
    let ledger = ledger();
    let err = ledger
        .apply(vec![Op::Journal(entry("ghost", "log", "x"))])
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { run_id } if run_id == "ghost"));
}

#[test]
fn a_follower_reads_only_the_entries_after_the_last_it_saw() {
    let ledger = ledger();
    new_run(&*ledger, "r1");
    new_run(&*ledger, "r2");
    ledger
        .apply(vec![
            Op::Journal(entry("r1", "log", "one")),
            Op::Journal(entry("r2", "log", "other run")),
            Op::Journal(entry("r1", "log", "two")),
            Op::Journal(entry("r1", "log", "three")),
        ])
        .unwrap();
    let all = ledger.journal_since("r1", 0).unwrap();
    let messages = |entries: &[tollgate_ledger::JournalEntry]| -> Vec<String> {
        entries.iter().map(|e| e.message.clone()).collect()
    };
    assert_eq!(messages(&all), ["one", "two", "three"]);
    let after_first = ledger.journal_since("r1", all[0].seq).unwrap();
    assert_eq!(messages(&after_first), ["two", "three"]);
    assert!(ledger.journal_since("r1", all[2].seq).unwrap().is_empty());
}
