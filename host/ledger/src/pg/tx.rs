//! The PostgreSQL side of [`Tx`]: every INSERT and UPDATE of the PostgreSQL ledger; the rules
//! that decide them live in [`crate::rules`].
//!
//! Invariant: called inside one `SERIALIZABLE` transaction per request, so the rules' reads
//! and writes commit together or not at all, and a conflicting request is retried whole.

use std::borrow::Cow;

use postgres::{GenericClient, Transaction};

use super::error::PgContext;
use super::rows;
use crate::error::LedgerError;
use crate::records::{
    Attempt, BreakerRecord, CallKeyRecord, EffectRecord, Escalation, LockRecord, Millis,
    NewEscalation, NewJournalEntry, NewRun, NodeRecord, Run,
};
use crate::rules::Tx;

pub(super) struct PgTx<'a, 'b> {
    pub(super) tx: &'a mut Transaction<'b>,
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
        rows::run(self.tx, run_id)
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
        rows::attempt(self.tx, run_id, attempt)
    }

    fn latest_attempt(&mut self, run_id: &str) -> Result<Option<Attempt>, LedgerError> {
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
        rows::effect(self.tx, kind, key)
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
        rows::escalation(self.tx, id)
    }

    fn open_escalation(&mut self, run_id: &str) -> Result<Option<Escalation>, LedgerError> {
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
        rows::lock(self.tx, key)
    }

    fn put_lock(&mut self, lock: &LockRecord) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO locks (lock_key, run_id, holder, fence, acquired_at, lease_until, \
             released) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (lock_key) DO UPDATE SET \
             run_id = excluded.run_id, holder = excluded.holder, fence = excluded.fence, \
             acquired_at = excluded.acquired_at, lease_until = excluded.lease_until, \
             released = excluded.released",
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
        rows::breaker(self.tx, connector, tool)
    }

    fn put_breaker(&mut self, b: &BreakerRecord) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO breakers (connector, tool, state, consecutive_failures, open_until, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (connector, tool) DO UPDATE \
             SET state = excluded.state, consecutive_failures = excluded.consecutive_failures, \
             open_until = excluded.open_until, updated_at = excluded.updated_at",
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
        rows::node(self.tx, node_id)
    }

    fn put_node(&mut self, node: &NodeRecord) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO nodes (node_id, address, version, started_at, heartbeat_at, \
             lease_ttl_ms, stopped_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
             version = excluded.version, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, lease_ttl_ms = excluded.lease_ttl_ms, \
             stopped_at = excluded.stopped_at",
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
