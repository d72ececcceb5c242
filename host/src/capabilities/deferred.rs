//! The record of a run written after its caller has the answer (`record = "async"`): the
//! run's start, its attempt's begin and the journal entries the attempt makes wait here, and
//! go into the ledger in one batch with the run's end, which nobody waits for.
//!
//! Only a run that can change nothing is deferred: its tool has no effects, no writable
//! directory and no HTTP writes (the policy check refuses `async` otherwise), and the run
//! holds no lock and claims no call key. So what a crash can take is the record of a read,
//! and never part of one: a run is written whole or not at all. An attempt that writes before
//! its end (a checkpoint; a failure, which is written and synced before its caller hears of
//! it) first writes what is waiting, so no row of the run is ever written before the run
//! itself.

use crate::clock::{Clock, Millis};
use crate::ledger::{self, Applied, Durability, Ledger, LedgerError, NewJournalEntry, Op};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Journals `entry` of a run without waiting: with the run's rows while `deferred` holds
/// them unwritten, else as [`Ledger::journal`] does.
pub fn journal(deferred: Option<&Deferred>, ledger: &dyn Ledger, entry: NewJournalEntry) {
    match deferred {
        Some(deferred) => deferred.journal(ledger, entry),
        None => ledger.journal(entry),
    }
}

/// What of a run is not written yet.
pub struct Deferred {
    state: Arc<Mutex<State>>,
    /// Held by the one write that carries the waiting rows, until its outcome is settled.
    writing: Arc<tokio::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    lease_ttl_ms: Millis,
}

enum State {
    /// Nothing of the run is written; these ops, in order, are what it has so far.
    Waiting(Vec<Op>),
    /// A write carrying the waiting ops is in flight; journal entries made meanwhile wait
    /// for its outcome.
    Writing(Vec<NewJournalEntry>),
    /// The run is in the ledger: everything goes there directly.
    Written,
}

impl Deferred {
    /// A run whose rows so far are `ops` (its start and its first attempt's begin).
    pub fn new(ops: Vec<Op>, clock: Arc<dyn Clock>, lease_ttl_ms: Millis) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::Waiting(ops))),
            writing: Arc::new(tokio::sync::Mutex::new(())),
            clock,
            lease_ttl_ms,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every transition is one assignment: a panic elsewhere leaves no half state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the run is in the ledger (its lease is worth renewing).
    pub fn is_written(&self) -> bool {
        matches!(*self.state(), State::Written)
    }

    /// Journals `entry` of this run: with the run's other rows while they wait, else as
    /// [`Ledger::journal`] does.
    pub fn journal(&self, ledger: &dyn Ledger, entry: NewJournalEntry) {
        let mut state = self.state();
        match &mut *state {
            State::Waiting(ops) => ops.push(Op::Journal(entry)),
            State::Writing(entries) => entries.push(entry),
            State::Written => {
                drop(state);
                ledger.journal(entry);
            }
        }
    }

    /// Applies `ops` of this run, preceded by what of the run is still waiting (its begun
    /// attempt's lease counted from now). Once this succeeds the run is in the ledger; if it
    /// fails, nothing is, and everything still waits.
    pub async fn apply(
        &self,
        ledger: &Arc<dyn Ledger>,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Result<Vec<Applied>, LedgerError> {
        let writing = Arc::clone(&self.writing).lock_owned().await;
        let waiting = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Writing(Vec::new())) {
                State::Waiting(waiting) => Some(waiting),
                // Only the holder of `writing` leaves `Writing`, and this caller holds it.
                State::Written | State::Writing(_) => {
                    *state = State::Written;
                    None
                }
            }
        };
        let Some(mut waiting) = waiting else {
            drop(writing);
            return ledger::apply_with(ledger, ops, durability).await;
        };
        let lease_until = self.clock.now_ms().saturating_add(self.lease_ttl_ms);
        for op in &mut waiting {
            if let Op::BeginAttempt {
                lease_until: until, ..
            } = op
            {
                *until = lease_until;
            }
        }
        let carried = waiting.len();
        let batch: Vec<Op> = waiting.iter().cloned().chain(ops).collect();
        // Kept here too, for the one case the task cannot settle the state itself: a panic.
        let retained = waiting.clone();
        let (state, ledger) = (Arc::clone(&self.state), Arc::clone(ledger));
        // A task of its own: if the attempt is cancelled mid-write, the write's outcome still
        // decides whether the run's rows are written or still waiting.
        let write = tokio::spawn(async move {
            let result = ledger::apply_with(&ledger, batch, durability).await;
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let held = match std::mem::replace(&mut *state, State::Written) {
                State::Writing(held) => held,
                State::Waiting(_) | State::Written => Vec::new(),
            };
            match result {
                Ok(mut applied) => {
                    // Queued before the lock is let go, so that they stay ahead of any entry
                    // journaled from now on.
                    for entry in held {
                        ledger.journal(entry);
                    }
                    drop(state);
                    drop(writing);
                    Ok(applied.split_off(carried.min(applied.len())))
                }
                Err(e) => {
                    let mut waiting = waiting;
                    waiting.extend(held.into_iter().map(Op::Journal));
                    *state = State::Waiting(waiting);
                    drop(state);
                    drop(writing);
                    Err(e)
                }
            }
        });
        write.await.unwrap_or_else(|e| {
            // The write's outcome is unknown: everything waits again, so the run's end
            // carries its start (a refusal of a start already written is logged, as any).
            let mut state = self.state();
            if let State::Writing(held) = std::mem::replace(&mut *state, State::Written) {
                let mut waiting = retained;
                waiting.extend(held.into_iter().map(Op::Journal));
                *state = State::Waiting(waiting);
            }
            Err(LedgerError::Internal(format!("ledger task failed: {e}")))
        })
    }

    /// Takes what of the run still waits, for the batch that ends it; `None` once the run is
    /// in the ledger. Waits for a write in flight to settle first.
    pub async fn take(&self) -> Option<Vec<Op>> {
        let _writing = self.writing.lock().await;
        match std::mem::replace(&mut *self.state(), State::Written) {
            State::Waiting(ops) => Some(ops),
            State::Writing(_) | State::Written => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::journal::{self, Event};
    use tollgate_ledger::{NewRun, SqliteLedger};

    const RUN: &str = "run-deferred";

    fn start() -> Vec<Op> {
        vec![
            Op::CreateRun(NewRun {
                run_id: RUN.into(),
                tool: "t".into(),
                input: "{}".into(),
                now: 1,
                component: None,
                lock: None,
            }),
            Op::BeginAttempt {
                run_id: RUN.into(),
                component_digest: "d".into(),
                holder: "h".into(),
                lease_until: 2,
                take_over: false,
                now: 1,
            },
        ]
    }

    fn line(text: &str) -> NewJournalEntry {
        let at = journal::At {
            run_id: RUN,
            attempt: Some(1),
            at: 1,
        };
        journal::entry(at, Event::Log(Default::default()), text.to_owned())
    }

    /// A ledger in a new directory, and a run of it waiting to be written.
    fn waiting_run() -> (tempfile::TempDir, Arc<dyn Ledger>, Deferred) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let ledger = Arc::new(SqliteLedger::open(&path, Default::default()).unwrap());
        let deferred = Deferred::new(start(), Arc::new(SystemClock), 30_000);
        (dir, ledger, deferred)
    }

    #[tokio::test]
    async fn journal_entries_wait_with_the_run_and_are_taken_with_it() {
        let (_dir, ledger, deferred) = waiting_run();
        deferred.journal(ledger.as_ref(), line("one"));
        ledger.apply(Vec::new()).unwrap();
        assert!(ledger.run(RUN).unwrap().is_none(), "nothing written yet");
        let ops = deferred.take().await.expect("still waiting");
        assert_eq!(ops.len(), 3);
        assert!(matches!(&ops[2], Op::Journal(e) if e.message == "one"));
        assert!(deferred.take().await.is_none(), "taken once");
    }

    #[tokio::test]
    async fn a_write_carries_the_waiting_rows_first_and_then_the_run_is_written() {
        let (_dir, ledger, deferred) = waiting_run();
        deferred.journal(ledger.as_ref(), line("before"));
        let applied = deferred
            .apply(&ledger, vec![Op::Journal(line("with"))], Durability::Synced)
            .await
            .unwrap();
        assert_eq!(applied.len(), 1, "only the caller's ops are answered");
        assert!(deferred.is_written());
        // The begun attempt's lease counts from the write, not from when it began.
        let attempt = &ledger.attempts(RUN).unwrap()[0];
        assert!(attempt.lease_until > 30_000, "{}", attempt.lease_until);
        deferred.journal(ledger.as_ref(), line("after"));
        ledger.apply(Vec::new()).unwrap();
        let messages: Vec<String> = ledger
            .journal_entries(RUN)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["before", "with", "after"]);
        assert!(deferred.take().await.is_none());
    }

    #[tokio::test]
    async fn a_refused_write_leaves_every_row_waiting() {
        let (_dir, ledger, deferred) = waiting_run();
        // A checkpoint of another, unknown run: the whole batch is refused.
        let refused = Op::SaveCheckpoint {
            run_id: "no-such-run".into(),
            attempt: 1,
            name: "c".into(),
            state: Vec::new(),
            now: 1,
        };
        assert!(
            deferred
                .apply(&ledger, vec![refused], Durability::Synced)
                .await
                .is_err()
        );
        assert!(ledger.run(RUN).unwrap().is_none());
        assert!(!deferred.is_written());
        deferred.journal(ledger.as_ref(), line("later"));
        assert_eq!(deferred.take().await.map(|ops| ops.len()), Some(3));
    }
}
