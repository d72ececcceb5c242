//! The SQLite side of [`Tx`]: every INSERT and UPDATE the ledger issues lives here; the rules
//! that decide them live in [`crate::rules`].
//!
//! Invariant: the writer thread calls this inside its write transaction (one savepoint per
//! request), so an error rolls back the whole request and nothing else.

use rusqlite::{Connection, params};

use super::error::SqlContext;
use super::rows;
use crate::error::LedgerError;
use crate::records::{
    Attempt, BreakerRecord, CallKeyRecord, EffectRecord, Escalation, LockRecord, Millis,
    NewEscalation, NewJournalEntry, NewRun, NodeRecord, Run,
};
use crate::rules::Tx;

/// A write transaction the writer thread has open on `conn`.
pub(super) struct SqliteTx<'c> {
    pub(super) conn: &'c Connection,
}

impl SqliteTx<'_> {
    fn execute(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params,
        what: &str,
    ) -> Result<usize, LedgerError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params))
            .context(what)
    }
}

impl Tx for SqliteTx<'_> {
    fn run(&mut self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        rows::run(self.conn, run_id)
    }

    fn insert_run(&mut self, run: &NewRun) -> Result<(), LedgerError> {
        let lock = run.lock.as_ref();
        self.execute(
            "INSERT INTO runs (run_id, tool, input, status, attempts, created_at, updated_at, \
             component, lock_key, lock_wait_ms, lock_ttl_ms) \
             VALUES (?1, ?2, ?3, 'running', 0, ?4, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.run_id,
                run.tool,
                run.input,
                run.now,
                run.component,
                lock.map(|l| &l.key),
                lock.map(|l| l.wait_ms),
                lock.map(|l| l.ttl_ms),
            ],
            "creating a run",
        )
        .map(drop)
    }

    fn update_run(&mut self, run: &Run) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE runs SET status = ?2, output = ?3, error_class = ?4, error_message = ?5, \
             attempts = ?6, updated_at = ?7 WHERE run_id = ?1",
            params![
                run.run_id,
                run.status,
                run.output,
                run.error_class,
                run.error_message,
                run.attempts,
                run.updated_at
            ],
            "updating a run",
        )
        .map(drop)
    }

    fn touch_run(&mut self, run_id: &str, now: Millis) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE runs SET updated_at = ?2 WHERE run_id = ?1",
            params![run_id, now],
            "touching a run",
        )
        .map(drop)
    }

    fn attempt(&mut self, run_id: &str, attempt: u32) -> Result<Option<Attempt>, LedgerError> {
        rows::attempt(self.conn, run_id, attempt)
    }

    fn latest_attempt(&mut self, run_id: &str) -> Result<Option<Attempt>, LedgerError> {
        rows::latest_attempt(self.conn, run_id)
    }

    fn insert_attempt(&mut self, a: &Attempt) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO attempts (run_id, attempt, component_digest, holder, status, \
             started_at, lease_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.run_id,
                a.attempt,
                a.component_digest,
                a.holder,
                a.status,
                a.started_at,
                a.lease_until
            ],
            "starting an attempt",
        )
        .map(drop)
    }

    fn update_attempt(&mut self, a: &Attempt) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE attempts SET status = ?3, lease_until = ?4, ended_at = ?5, \
             error_class = ?6, error_message = ?7, cpu_ms = ?8 WHERE run_id = ?1 AND attempt = ?2",
            params![
                a.run_id,
                a.attempt,
                a.status,
                a.lease_until,
                a.ended_at,
                a.error_class,
                a.error_message,
                a.cpu_ms
            ],
            "updating an attempt",
        )
        .map(drop)
    }

    fn effect(&mut self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        rows::effect(self.conn, kind, key)
    }

    fn insert_effect(&mut self, e: &EffectRecord) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO effects (kind, key, payload_digest, payload, run_id, attempt, status, \
             dispatches, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                e.kind,
                e.key,
                e.payload_digest,
                e.payload,
                e.run_id,
                e.attempt,
                e.status,
                e.dispatches,
                e.created_at,
                e.updated_at
            ],
            "claiming an effect",
        )
        .map(drop)
    }

    fn update_effect(&mut self, e: &EffectRecord) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE effects SET run_id = ?3, attempt = ?4, status = ?5, response = ?6, \
             error_class = ?7, error_message = ?8, dispatches = ?9, updated_at = ?10 \
             WHERE kind = ?1 AND key = ?2",
            params![
                e.kind,
                e.key,
                e.run_id,
                e.attempt,
                e.status,
                e.response,
                e.error_class,
                e.error_message,
                e.dispatches,
                e.updated_at
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
        self.execute(
            "DELETE FROM checkpoints WHERE run_id = ?1 AND name = ?2",
            params![run_id, name],
            "replacing a checkpoint",
        )?;
        self.execute(
            "INSERT INTO checkpoints (run_id, attempt, name, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, attempt, name, state, now],
            "saving a checkpoint",
        )
        .map(drop)
    }

    fn insert_journal(&mut self, entry: &NewJournalEntry) -> Result<bool, LedgerError> {
        insert_journal(self.conn, entry)
    }

    fn escalation(&mut self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        rows::escalation(self.conn, id)
    }

    fn open_escalation(&mut self, run_id: &str) -> Result<Option<Escalation>, LedgerError> {
        rows::open_escalation(self.conn, run_id)
    }

    fn insert_escalation(&mut self, new: &NewEscalation) -> Result<i64, LedgerError> {
        let evidence = serde_json::to_string(&new.evidence).map_err(|err| {
            LedgerError::Internal(format!("escalation evidence does not serialize: {err}"))
        })?;
        self.execute(
            "INSERT INTO escalations (run_id, reason, summary, effect_kind, effect_key, \
             evidence, status, created_at, payload_digest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8)",
            params![
                new.run_id,
                new.reason,
                new.summary,
                new.effect_kind,
                new.effect_key,
                evidence,
                new.now,
                new.payload_digest
            ],
            "opening an escalation",
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn update_escalation(&mut self, e: &Escalation) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE escalations SET status = ?2, resolution = ?3, resolution_reason = ?4, \
             resolved_by = ?5, resolved_at = ?6 WHERE id = ?1",
            params![
                e.id,
                e.status,
                e.resolution,
                e.resolution_reason,
                e.resolved_by,
                e.resolved_at
            ],
            "resolving an escalation",
        )
        .map(drop)
    }

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        rows::lock(self.conn, key)
    }

    fn put_lock(&mut self, lock: &LockRecord) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO locks (lock_key, run_id, holder, fence, acquired_at, lease_until, \
             released) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (lock_key) DO UPDATE SET \
             run_id = excluded.run_id, holder = excluded.holder, fence = excluded.fence, \
             acquired_at = excluded.acquired_at, lease_until = excluded.lease_until, \
             released = excluded.released",
            params![
                lock.key,
                lock.run_id,
                lock.holder,
                lock.fence,
                lock.acquired_at,
                lock.lease_until,
                lock.released
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
        rows::breaker(self.conn, connector, tool)
    }

    fn put_breaker(&mut self, breaker: &BreakerRecord) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO breakers (connector, tool, state, consecutive_failures, open_until, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (connector, tool) DO UPDATE \
             SET state = excluded.state, consecutive_failures = excluded.consecutive_failures, \
             open_until = excluded.open_until, updated_at = excluded.updated_at",
            params![
                breaker.connector,
                breaker.tool,
                breaker.state,
                breaker.consecutive_failures,
                breaker.open_until,
                breaker.updated_at
            ],
            "saving a breaker",
        )
        .map(drop)
    }

    fn call_key(&mut self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        rows::call_key(self.conn, key)
    }

    fn insert_call_key(&mut self, r: &CallKeyRecord) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO call_keys (idempotency_key, tool, args_digest, run_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.key, r.tool, r.args_digest, r.run_id, r.created_at],
            "recording a call key",
        )
        .map(drop)
    }

    fn node(&mut self, node_id: &str) -> Result<Option<NodeRecord>, LedgerError> {
        rows::node(self.conn, node_id)
    }

    fn put_node(&mut self, node: &NodeRecord) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO nodes (node_id, address, version, started_at, heartbeat_at, \
             lease_ttl_ms, stopped_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
             version = excluded.version, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, lease_ttl_ms = excluded.lease_ttl_ms, \
             stopped_at = excluded.stopped_at",
            params![
                node.node_id,
                node.address,
                node.version,
                node.started_at,
                node.heartbeat_at,
                node.lease_ttl_ms,
                node.stopped_at
            ],
            "recording a node's heartbeat",
        )
        .map(drop)
    }

    fn forget_nodes(&mut self, before: Millis) -> Result<(), LedgerError> {
        self.execute(
            "DELETE FROM nodes WHERE heartbeat_at < ?1",
            [before],
            "forgetting silent nodes",
        )
        .map(drop)
    }
}

/// Appends a journal entry if its run exists, in one statement; `false` if it does not.
pub(super) fn insert_journal(
    conn: &Connection,
    entry: &NewJournalEntry,
) -> Result<bool, LedgerError> {
    let fields = serde_json::to_string(&entry.fields)
        .map_err(|err| LedgerError::Internal(format!("journal fields do not serialize: {err}")))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO journal (run_id, attempt, at, level, event, message, fields) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                entry.run_id,
                entry.attempt,
                entry.at,
                entry.level,
                entry.event,
                entry.message,
                fields
            ])
        })
        .context("appending to the journal")?;
    Ok(inserted == 1)
}
