//! The PostgreSQL side of [`Tx`]: every INSERT and UPDATE of the PostgreSQL ledger; the rules
//! that decide them live in [`crate::rules`].
//!
//! Invariant: called inside one `READ COMMITTED` transaction per request, in which every row
//! a rule reads and then decides on is locked as it is read ([`Hold::Row`]). So a rule's check
//! and its write cannot race another writer of the same rows: the second waits for the first
//! and then reads what it committed. Rows nobody else writes are not locked, and a request
//! never waits on one that touches other keys, which is what lets a fleet's nodes write side
//! by side. (`SERIALIZABLE` gave the same answers but tracked every read as a predicate, and
//! rolled back independent runs whose keys shared an index page.)
//!
//! - A run's attempts and checkpoints are guarded by the run's row: reading one locks the
//!   run first, in a statement of its own, so that the read that follows, a new snapshot,
//!   sees what the previous holder committed. Locks are always taken run first, then the
//!   run's other rows, so two requests on one run cannot deadlock.
//! - A row read as absent cannot be locked. The rules then insert it, and a plain `INSERT`
//!   of a key another transaction inserted first fails as a unique violation, which is
//!   retried whole and then reads the winner's row. The `put_*` upserts therefore insert
//!   without `ON CONFLICT` when this transaction read the key as absent.
//! - A deadlock the order above does not rule out (requests on several keys) is detected by
//!   the server and retried like any conflict.

use std::borrow::Cow;
use std::collections::HashSet;

use postgres::{GenericClient, Transaction};

use super::error::PgContext;
use super::rows::{self, Hold};
use crate::error::LedgerError;
use crate::records::{
    Attempt, BreakerRecord, CallKeyRecord, EffectRecord, Escalation, LockRecord, Millis,
    NewEscalation, NewJournalEntry, NewRun, NodeRecord, Run,
};
use crate::rules::Tx;

pub(super) struct PgTx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    /// Runs whose row this transaction has locked.
    held_runs: HashSet<String>,
    /// Keys this transaction read and found absent, as (table, key).
    absent: HashSet<(&'static str, String)>,
}

impl<'a, 'b> PgTx<'a, 'b> {
    pub(super) fn new(tx: &'a mut Transaction<'b>) -> Self {
        Self {
            tx,
            held_runs: HashSet::new(),
            absent: HashSet::new(),
        }
    }
}

fn n(v: u32) -> i64 {
    i64::from(v)
}

/// Free text as PostgreSQL can store it: a `TEXT` value cannot hold U+0000, which SQLite
/// and a tool's error message can, so it becomes U+FFFD (the replacement character). Only
/// text read as a whole goes through here (messages, summaries, recorded answers and
/// outputs, which the host already hands over this way); an identifier with U+0000 is
/// refused instead ([`super::error`]), because changing it could make two keys one.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

fn big(v: u64) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Internal(format!("{v} does not fit the ledger")))
}

impl PgTx<'_, '_> {
    /// Locks the run's row, once per transaction, so the run's other rows read next are
    /// read as the run's previous writer left them.
    fn hold_run(&mut self, run_id: &str) -> Result<(), LedgerError> {
        if self.held_runs.contains(run_id) {
            return Ok(());
        }
        let what = "locking a run";
        let statement = rows::prepared(
            self.tx,
            "SELECT 1 FROM runs WHERE run_id = $1 FOR NO KEY UPDATE",
        )
        .context(what)?;
        if self
            .tx
            .query_opt(&statement, &[&run_id])
            .context(what)?
            .is_some()
        {
            self.held_runs.insert(run_id.to_owned());
        }
        Ok(())
    }

    /// Notes whether a key was read as absent, for the `put_*` that may follow.
    fn noted<T>(&mut self, table: &'static str, key: String, found: Option<T>) -> Option<T> {
        if found.is_none() {
            self.absent.insert((table, key));
        } else {
            self.absent.remove(&(table, key));
        }
        found
    }

    /// `INSERT` alone when this transaction last read the key as absent (a racing insert
    /// must fail, not be overwritten); otherwise the upsert, over a row locked when it was
    /// read. After either, the row exists.
    fn upsert(
        &mut self,
        table: &'static str,
        key: String,
        insert: &str,
        on_conflict: &str,
    ) -> String {
        if self.absent.remove(&(table, key)) {
            insert.to_owned()
        } else {
            format!("{insert} {on_conflict}")
        }
    }

    fn exec(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<u64, LedgerError> {
        let statement = rows::prepared(self.tx, sql).context(what)?;
        self.tx.execute(&statement, params).context(what)
    }
}

impl Tx for PgTx<'_, '_> {
    fn run(&mut self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        let run = rows::run(self.tx, run_id, Hold::Row)?;
        if run.is_some() {
            self.held_runs.insert(run_id.to_owned());
        }
        Ok(run)
    }

    fn insert_run(&mut self, run: &NewRun) -> Result<(), LedgerError> {
        let lock = run.lock.as_ref();
        let wait = lock.map(|l| big(l.wait_ms)).transpose()?;
        let ttl = lock.map(|l| big(l.ttl_ms)).transpose()?;
        self.exec(
            "INSERT INTO runs (run_id, tool, input, status, attempts, created_at, updated_at, \
             component, lock_key, lock_wait_ms, lock_ttl_ms) \
             VALUES ($1, $2, $3, 'running', 0, $4, $4, $5, $6, $7, $8)",
            &[
                &run.run_id,
                &run.tool,
                &run.input,
                &run.now,
                &run.component,
                &lock.map(|l| &l.key),
                &wait,
                &ttl,
            ],
            "creating a run",
        )
        .map(drop)
    }

    fn update_run(&mut self, run: &Run) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE runs SET status = $2, output = $3, error_class = $4, error_message = $5, \
             attempts = $6, updated_at = $7 WHERE run_id = $1",
            &[
                &run.run_id,
                &run.status.as_str(),
                &opt_text(&run.output),
                &run.error_class,
                &opt_text(&run.error_message),
                &n(run.attempts),
                &run.updated_at,
            ],
            "updating a run",
        )
        .map(drop)
    }

    fn touch_run(&mut self, run_id: &str, now: Millis) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE runs SET updated_at = $2 WHERE run_id = $1",
            &[&run_id, &now],
            "touching a run",
        )
        .map(drop)
    }

    fn attempt(&mut self, run_id: &str, attempt: u32) -> Result<Option<Attempt>, LedgerError> {
        self.hold_run(run_id)?;
        rows::attempt(self.tx, run_id, attempt)
    }

    fn attempt_to_report(
        &mut self,
        run_id: &str,
        attempt: u32,
    ) -> Result<Option<Attempt>, LedgerError> {
        rows::attempt(self.tx, run_id, attempt)
    }

    fn latest_attempt(&mut self, run_id: &str) -> Result<Option<Attempt>, LedgerError> {
        self.hold_run(run_id)?;
        rows::latest_attempt(self.tx, run_id)
    }

    fn insert_attempt(&mut self, a: &Attempt) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO attempts (run_id, attempt, component_digest, holder, status, \
             started_at, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &a.run_id,
                &n(a.attempt),
                &a.component_digest,
                &a.holder,
                &a.status.as_str(),
                &a.started_at,
                &a.lease_until,
            ],
            "starting an attempt",
        )
        .map(drop)
    }

    fn update_attempt(&mut self, a: &Attempt) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE attempts SET status = $3, lease_until = $4, ended_at = $5, \
             error_class = $6, error_message = $7, cpu_ms = $8 WHERE run_id = $1 AND attempt = $2",
            &[
                &a.run_id,
                &n(a.attempt),
                &a.status.as_str(),
                &a.lease_until,
                &a.ended_at,
                &a.error_class,
                &opt_text(&a.error_message),
                &big(a.cpu_ms)?,
            ],
            "updating an attempt",
        )
        .map(drop)
    }

    fn effect(&mut self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        rows::effect(self.tx, kind, key, Hold::Row)
    }

    fn insert_effect(&mut self, e: &EffectRecord) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO effects (kind, key, payload_digest, payload, run_id, attempt, status, \
             dispatches, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &e.kind,
                &e.key,
                &e.payload_digest,
                &e.payload,
                &e.run_id,
                &n(e.attempt),
                &e.status.as_str(),
                &n(e.dispatches),
                &e.created_at,
                &e.updated_at,
            ],
            "claiming an effect",
        )
        .map(drop)
    }

    fn update_effect(&mut self, e: &EffectRecord) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE effects SET run_id = $3, attempt = $4, status = $5, response = $6, \
             error_class = $7, error_message = $8, dispatches = $9, updated_at = $10 \
             WHERE kind = $1 AND key = $2",
            &[
                &e.kind,
                &e.key,
                &e.run_id,
                &n(e.attempt),
                &e.status.as_str(),
                &opt_text(&e.response),
                &e.error_class,
                &opt_text(&e.error_message),
                &n(e.dispatches),
                &e.updated_at,
            ],
            "updating an effect",
        )
        .map(drop)
    }

    fn replace_checkpoint(
        &mut self,
        run_id: &str,
        attempt: u32,
        name: &str,
        state: &[u8],
        now: Millis,
    ) -> Result<(), LedgerError> {
        self.exec(
            "DELETE FROM checkpoints WHERE run_id = $1 AND name = $2",
            &[&run_id, &name],
            "replacing a checkpoint",
        )?;
        self.exec(
            "INSERT INTO checkpoints (run_id, attempt, name, state, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&run_id, &n(attempt), &name, &state, &now],
            "saving a checkpoint",
        )
        .map(drop)
    }

    fn insert_journal(&mut self, entry: &NewJournalEntry) -> Result<bool, LedgerError> {
        insert_journal(self.tx, entry, None)
    }

    fn escalation(&mut self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        rows::escalation(self.tx, id, Hold::Row)
    }

    fn open_escalation(&mut self, run_id: &str) -> Result<Option<Escalation>, LedgerError> {
        // Guarded by the run's row: one open escalation per run is also a unique index.
        self.hold_run(run_id)?;
        rows::open_escalation(self.tx, run_id)
    }

    fn insert_escalation(&mut self, new: &NewEscalation) -> Result<i64, LedgerError> {
        let evidence = serde_json::to_string(&new.evidence).map_err(|err| {
            LedgerError::Internal(format!("escalation evidence does not serialize: {err}"))
        })?;
        let row = self
            .tx
            .query_one(
                "INSERT INTO escalations (run_id, reason, summary, effect_kind, effect_key, \
                 evidence, status, created_at, payload_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8) RETURNING id",
                &[
                    &new.run_id,
                    &new.reason.as_str(),
                    &text(&new.summary),
                    &new.effect_kind,
                    &new.effect_key,
                    &evidence,
                    &new.now,
                    &new.payload_digest,
                ],
            )
            .context("opening an escalation")?;
        row.try_get(0).context("reading a new escalation's id")
    }

    fn update_escalation(&mut self, e: &Escalation) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE escalations SET status = $2, resolution = $3, resolution_reason = $4, \
             resolved_by = $5, resolved_at = $6 WHERE id = $1",
            &[
                &e.id,
                &e.status.as_str(),
                &e.resolution.map(|r| r.as_str()),
                &opt_text(&e.resolution_reason),
                &opt_text(&e.resolved_by),
                &e.resolved_at,
            ],
            "resolving an escalation",
        )
        .map(drop)
    }

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        let found = rows::lock(self.tx, key, Hold::Row)?;
        Ok(self.noted("locks", key.to_owned(), found))
    }

    fn put_lock(&mut self, lock: &LockRecord) -> Result<(), LedgerError> {
        let sql = self.upsert(
            "locks",
            lock.key.clone(),
            "INSERT INTO locks (lock_key, run_id, holder, fence, acquired_at, lease_until, \
             released) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            "ON CONFLICT (lock_key) DO UPDATE SET \
             run_id = excluded.run_id, holder = excluded.holder, fence = excluded.fence, \
             acquired_at = excluded.acquired_at, lease_until = excluded.lease_until, \
             released = excluded.released",
        );
        self.exec(
            &sql,
            &[
                &lock.key,
                &lock.run_id,
                &lock.holder,
                &lock.fence,
                &lock.acquired_at,
                &lock.lease_until,
                &lock.released,
            ],
            "writing a lock",
        )
        .map(drop)
    }

    fn breaker(
        &mut self,
        connector: &str,
        tool: &str,
    ) -> Result<Option<BreakerRecord>, LedgerError> {
        let found = rows::breaker(self.tx, connector, tool, Hold::Row)?;
        Ok(self.noted("breakers", format!("{connector}\0{tool}"), found))
    }

    fn put_breaker(&mut self, b: &BreakerRecord) -> Result<(), LedgerError> {
        let sql = self.upsert(
            "breakers",
            format!("{}\0{}", b.connector, b.tool),
            "INSERT INTO breakers (connector, tool, state, consecutive_failures, open_until, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            "ON CONFLICT (connector, tool) DO UPDATE \
             SET state = excluded.state, consecutive_failures = excluded.consecutive_failures, \
             open_until = excluded.open_until, updated_at = excluded.updated_at",
        );
        self.exec(
            &sql,
            &[
                &b.connector,
                &b.tool,
                &b.state.as_str(),
                &n(b.consecutive_failures),
                &b.open_until,
                &b.updated_at,
            ],
            "saving a breaker",
        )
        .map(drop)
    }

    fn call_key(&mut self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        rows::call_key(self.tx, key)
    }

    fn insert_call_key(&mut self, r: &CallKeyRecord) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO call_keys (idempotency_key, tool, args_digest, run_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&r.key, &r.tool, &r.args_digest, &r.run_id, &r.created_at],
            "recording a call key",
        )
        .map(drop)
    }

    fn node(&mut self, node_id: &str) -> Result<Option<NodeRecord>, LedgerError> {
        let found = rows::node(self.tx, node_id, Hold::Row)?;
        Ok(self.noted("nodes", node_id.to_owned(), found))
    }

    fn put_node(&mut self, node: &NodeRecord) -> Result<(), LedgerError> {
        let sql = self.upsert(
            "nodes",
            node.node_id.clone(),
            "INSERT INTO nodes (node_id, address, version, started_at, heartbeat_at, \
             lease_ttl_ms, stopped_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            "ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
             version = excluded.version, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, lease_ttl_ms = excluded.lease_ttl_ms, \
             stopped_at = excluded.stopped_at",
        );
        self.exec(
            &sql,
            &[
                &node.node_id,
                &text(&node.address),
                &text(&node.version),
                &node.started_at,
                &node.heartbeat_at,
                &node.lease_ttl_ms,
                &node.stopped_at,
            ],
            "recording a node's heartbeat",
        )
        .map(drop)
    }

    fn forget_nodes(&mut self, before: Millis) -> Result<(), LedgerError> {
        self.exec(
            "DELETE FROM nodes WHERE heartbeat_at < $1",
            &[&before],
            "forgetting silent nodes",
        )
        .map(drop)
    }
}

/// Appends a journal entry if its run exists, in one statement; `false` if it does not, or if
/// an entry with the same `entry_key` was written before (a queued entry written again after
/// a commit whose answer was lost).
pub(super) fn insert_journal(
    client: &mut impl GenericClient,
    entry: &NewJournalEntry,
    entry_key: Option<&str>,
) -> Result<bool, LedgerError> {
    let fields = serde_json::to_string(&entry.fields)
        .map_err(|err| LedgerError::Internal(format!("journal fields do not serialize: {err}")))?;
    let statement = rows::prepared(
        client,
        "INSERT INTO journal (run_id, attempt, at, level, event, message, fields, entry_key) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
         WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $1) \
         ON CONFLICT (entry_key) DO NOTHING",
    )
    .context("appending to the journal")?;
    let inserted = client
        .execute(
            &statement,
            &[
                &entry.run_id,
                &entry.attempt.map(i64::from),
                &entry.at,
                &text(&entry.level),
                &text(&entry.event),
                &text(&entry.message),
                &fields,
                &entry_key,
            ],
        )
        .context("appending to the journal")?;
    Ok(inserted == 1)
}
