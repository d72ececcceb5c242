//! The single writer thread: group commit of every mutation into the ledger file.
//!
//! Invariant (durable before return): no request is answered before the transaction holding
//! it has committed; if that commit fails, every request in the batch gets the error. Each
//! request runs in its own savepoint, so one failing request never fails the others. A batch
//! commits with `synchronous=FULL` (the WAL is synced before the commit returns) when any
//! request in it asks for [`Durability::Synced`] or it holds journal entries only, and with
//! `NORMAL` (written to the WAL, which survives the process but is synced only by the next
//! `FULL` commit or a checkpoint) when its writes all ask for [`Durability::Unsynced`]. No commit stays unsynced for longer than [`SYNC_WITHIN`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::error::SqlContext;
use super::refine;
use super::tx::SqliteTx;
use crate::error::LedgerError;
use crate::records::{Applied, Durability, NewJournalEntry, Op};
use crate::rules;

pub(super) type Reply = crate::contract::Done;

pub(super) enum Request {
    Apply {
        ops: Vec<Op>,
        durability: Durability,
        reply: Reply,
    },
    Journal(NewJournalEntry),
}

impl Request {
    fn is_journal(&self) -> bool {
        matches!(self, Request::Journal(_))
    }

    fn is_synced(&self) -> bool {
        matches!(
            self,
            Request::Apply {
                durability: Durability::Synced,
                ..
            }
        )
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    /// Of the commits, those synced to stable storage before they returned.
    pub(super) synced_commits: AtomicU64,
    /// Syncs of unsynced commits with nothing else to commit.
    pub(super) tail_syncs: AtomicU64,
    pub(super) requests: AtomicU64,
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) requests: Receiver<Request>,
    pub(super) path: PathBuf,
    pub(super) group_commit: bool,
    pub(super) max_batch: usize,
    pub(super) journal_linger: Duration,
    pub(super) counters: Arc<Counters>,
    /// The connection's `synchronous` setting is `FULL` (as `open` leaves it).
    pub(super) synced: bool,
    /// When the oldest commit not yet synced was made.
    pub(super) unsynced_since: Option<Instant>,
    /// When to try syncing them again after a checkpoint that could not.
    pub(super) retry_sync_at: Option<Instant>,
}

/// The longest a commit stays unsynced: the window of runs recorded `async` that a crash of
/// the machine can lose.
pub(super) const SYNC_WITHIN: Duration = Duration::from_secs(1);

/// How soon a sync that could not complete is tried again.
const SYNC_RETRY: Duration = Duration::from_millis(100);

/// Why a batch could not commit; every request in it gets this error.
struct BatchFailed(LedgerError);

impl Writer {
    /// Runs until every sender is gone. Requests queued before that are still committed,
    /// because the channel yields all queued messages before reporting disconnection.
    pub(super) fn run(mut self) {
        let max_batch = if self.group_commit {
            self.max_batch.max(1)
        } else {
            1
        };
        let linger = if self.group_commit {
            self.journal_linger
        } else {
            Duration::ZERO
        };
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = self.next_request() {
            batch.push(first);
            self.take_queued(&mut batch, max_batch);
            if !linger.is_zero() && batch.iter().all(Request::is_journal) {
                self.wait_for_a_write(&mut batch, max_batch, linger);
            }
            self.commit(&mut batch);
        }
        self.sync_tail();
        tracing::debug!(path = %self.path.display(), "ledger writer stopped");
    }

    /// The next request; `None` once every sender is gone. While unsynced commits wait for a
    /// sync, it waits no longer than [`SYNC_WITHIN`] after the first of them, and syncs them
    /// itself if no request came.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let Some(since) = self.unsynced_since else {
                return self.requests.recv().ok();
            };
            let due = (since + SYNC_WITHIN).max(self.retry_sync_at.unwrap_or(since));
            match self
                .requests
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Timeout) => self.sync_tail(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Syncs unsynced commits with a passive checkpoint: it syncs the WAL before it copies
    /// any of it into the database. A checkpoint that could not copy every frame (a reader,
    /// here or in another process, still needs an older one) may not have synced anything,
    /// so it counts only when it copied them all; otherwise it is tried again shortly.
    fn sync_tail(&mut self) {
        if self.unsynced_since.is_none() {
            return;
        }
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .context("syncing unsynced commits");
        match checkpoint {
            Ok((0, frames, copied)) if frames >= 0 && copied == frames => {
                self.unsynced_since = None;
                self.retry_sync_at = None;
                self.counters.tail_syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => self.retry_sync_at = Some(Instant::now() + SYNC_RETRY),
            Err(err) => {
                tracing::warn!(error = %err, "ledger: could not sync unsynced commits yet");
                self.retry_sync_at = Some(Instant::now() + SYNC_RETRY);
            }
        }
    }

    /// Adds what is queued already, up to `max_batch` requests.
    fn take_queued(&self, batch: &mut Vec<Request>, max_batch: usize) {
        while batch.len() < max_batch {
            match self.requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
    }

    /// Holds a batch of journal entries alone for up to `linger`, until a write comes to
    /// commit them with: a run's log lines then cost no commit of their own. Every sender
    /// gone ends the wait too, and the entries are committed on the way out.
    fn wait_for_a_write(&self, batch: &mut Vec<Request>, max_batch: usize, linger: Duration) {
        let deadline = Instant::now() + linger;
        while batch.len() < max_batch {
            match self
                .requests
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(next) => {
                    let write = !next.is_journal();
                    batch.push(next);
                    if write {
                        self.take_queued(batch, max_batch);
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Commits `batch` in one transaction, then answers it; leaves `batch` empty.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        // Empty requests (a reader's flush) with nothing queued ahead: nothing to commit, and
        // no reason to wait for another process's write lock.
        if batch
            .iter()
            .all(|r| matches!(r, Request::Apply { ops, .. } if ops.is_empty()))
        {
            // A synced flush makes what went before it durable, unsynced commits included.
            if batch.iter().any(Request::is_synced) {
                self.sync_tail();
            }
            for request in batch.drain(..) {
                if let Request::Apply { reply, .. } = request {
                    reply(Ok(Vec::new()));
                }
            }
            return;
        }
        let mut replies: Vec<(Reply, Result<Vec<Applied>, LedgerError>)> =
            Vec::with_capacity(batch.len());
        let mut journaled = 0usize;
        let outcome = self.run_batch(batch, &mut replies, &mut journaled);
        let applies = replies.len() as u64;
        match outcome {
            Ok(()) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                if self.synced {
                    self.counters.synced_commits.fetch_add(1, Ordering::Relaxed);
                    self.unsynced_since = None;
                } else if self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
                self.counters.requests.fetch_add(applies, Ordering::Relaxed);
                for (reply, result) in replies {
                    reply(result);
                }
            }
            Err(BatchFailed(err)) => {
                let err = refine(err, &self.path);
                if !self.conn.is_autocommit()
                    && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::error!(error = %rollback, "ledger: rollback after failed batch failed");
                }
                if journaled > 0 {
                    tracing::warn!(
                        entries = journaled,
                        error = %err,
                        "ledger: dropped queued journal entries because their batch failed to commit"
                    );
                }
                for (reply, _) in replies {
                    reply(Err(err.clone()));
                }
            }
        }
    }

    /// Applies every request inside one transaction and commits it. Every apply request in
    /// `batch` ends up in `replies`, whatever happens.
    fn run_batch(
        &mut self,
        batch: &mut Vec<Request>,
        replies: &mut Vec<(Reply, Result<Vec<Applied>, LedgerError>)>,
        journaled: &mut usize,
    ) -> Result<(), BatchFailed> {
        // Unsynced commits stay so for at most `SYNC_WITHIN`: under steady load, a batch
        // after that syncs them with its own. Journal entries alone are synced as before:
        // only those riding in an unsynced write share its durability.
        let synced = self
            .unsynced_since
            .is_some_and(|since| since.elapsed() >= SYNC_WITHIN)
            || batch.iter().any(Request::is_synced)
            || batch.iter().all(Request::is_journal);
        let mut failure = None;
        if synced != self.synced {
            let setting = if synced { "FULL" } else { "NORMAL" };
            match self
                .conn
                .pragma_update(None, "synchronous", setting)
                .context("setting how commits are synced")
            {
                Ok(()) => self.synced = synced,
                // Unable to relax it: this batch is synced, which is only slower.
                Err(_) if !synced => {}
                Err(err) => failure = Some(err),
            }
        }
        if failure.is_none() {
            failure = self
                .conn
                .prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut stmt| stmt.execute([]))
                .context("starting a write transaction")
                .err();
        }
        for request in batch.drain(..) {
            match request {
                Request::Apply { ops, reply, .. } => {
                    let result = match failure {
                        Some(_) => Err(LedgerError::Internal("batch already failed".to_owned())),
                        None => match self.apply_request(ops) {
                            Ok(result) => result,
                            Err(BatchFailed(err)) => {
                                failure = Some(err);
                                Err(LedgerError::Internal("batch failed".to_owned()))
                            }
                        },
                    };
                    replies.push((reply, result));
                }
                Request::Journal(entry) => {
                    if failure.is_some() {
                        *journaled += 1;
                        continue;
                    }
                    let mut tx = SqliteTx { conn: &self.conn };
                    match rules::journal(&mut tx, &entry) {
                        Ok(()) => *journaled += 1,
                        // A single INSERT failing undoes only itself; the batch carries on.
                        Err(err) => tracing::warn!(
                            run_id = %entry.run_id,
                            event = %entry.event,
                            error = %err,
                            "ledger: dropped a journal entry that could not be stored"
                        ),
                    }
                    if self.conn.is_autocommit() {
                        failure = Some(LedgerError::Internal(
                            "the write transaction was rolled back by the storage engine"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        if let Some(err) = failure {
            return Err(BatchFailed(err));
        }
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut stmt| stmt.execute([]))
            .context("committing a write transaction")
            .map(drop)
            .map_err(BatchFailed)
    }

    /// One request inside a savepoint. `Ok(Err(_))` is that request's own failure, already
    /// rolled back; `Err(_)` means the whole transaction is unusable.
    fn apply_request(
        &mut self,
        request_ops: Vec<Op>,
    ) -> Result<Result<Vec<Applied>, LedgerError>, BatchFailed> {
        self.exec("SAVEPOINT request", "opening a request savepoint")?;
        let mut applied = Vec::with_capacity(request_ops.len());
        let mut result = Ok(());
        let mut tx = SqliteTx { conn: &self.conn };
        for op in request_ops {
            match rules::apply(&mut tx, op) {
                Ok(one) => applied.push(one),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        if self.conn.is_autocommit() {
            // The engine rolled the whole transaction back (e.g. disk full, I/O error).
            let cause = result.err().unwrap_or_else(|| {
                LedgerError::Internal(
                    "the write transaction was rolled back by the storage engine".to_owned(),
                )
            });
            return Err(BatchFailed(cause));
        }
        match result {
            Ok(()) => {
                self.exec("RELEASE request", "releasing a request savepoint")?;
                Ok(Ok(applied))
            }
            Err(err) => {
                self.exec("ROLLBACK TO request", "rolling back a failed request")?;
                self.exec("RELEASE request", "releasing a request savepoint")?;
                Ok(Err(refine(err, &self.path)))
            }
        }
    }

    fn exec(&self, sql: &str, what: &str) -> Result<(), BatchFailed> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .context(what)
            .map(drop)
            .map_err(BatchFailed)
    }
}
