//! Reading records back out of SQLite: the SELECTs and the row → record mapping.
//!
//! Invariant: a stored value that does not map back to its record type (unknown status,
//! out-of-range number, bad JSON) surfaces as an error, never as a panic or a default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::SqlContext;
use crate::error::LedgerError;
use crate::records::{
    Attempt, AttemptStatus, BreakerRecord, BreakerState, CallKeyRecord, Checkpoint, EffectRecord,
    EffectStatus, Escalation, EscalationFilter, EscalationReason, EscalationStatus, Holdings,
    JournalEntry, LockRecord, NodeRecord, Resolution, Run, RunFilter, RunLock, RunStatus,
    StrandedFilter,
};

macro_rules! sql_status {
    ($name:ident) => {
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} `{text}`", stringify!($name)).into())
                })
            }
        }
    };
}

sql_status!(RunStatus);
sql_status!(AttemptStatus);
sql_status!(EffectStatus);
sql_status!(EscalationReason);
sql_status!(EscalationStatus);
sql_status!(Resolution);
sql_status!(BreakerState);

// Column lists as macros so every query is one literal: `prepare_cached` then costs no
// allocation on the hot read path.
macro_rules! run_select {
    () => {
        "SELECT run_id, tool, input, status, output, error_class, error_message, attempts, \
         created_at, updated_at, component, lock_key, lock_wait_ms, lock_ttl_ms FROM runs"
    };
}
macro_rules! attempt_select {
    () => {
        "SELECT run_id, attempt, component_digest, holder, status, started_at, lease_until, \
         ended_at, error_class, error_message, cpu_ms FROM attempts"
    };
}
macro_rules! effect_select {
    () => {
        "SELECT kind, key, payload_digest, payload, run_id, attempt, status, response, \
         error_class, error_message, dispatches, created_at, updated_at FROM effects"
    };
}
macro_rules! checkpoint_select {
    () => {
        "SELECT seq, run_id, attempt, name, state, created_at FROM checkpoints"
    };
}

macro_rules! escalation_select {
    () => {
        "SELECT id, run_id, reason, summary, effect_kind, effect_key, evidence, status, \
         resolution, resolution_reason, resolved_by, created_at, resolved_at, payload_digest \
         FROM escalations"
    };
}
macro_rules! lock_select {
    () => {
        "SELECT lock_key, run_id, holder, fence, acquired_at, lease_until, released FROM locks"
    };
}

/// A JSON text column, parsed; bad JSON is a conversion error naming the column.
fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        run_id: row.get(0)?,
        tool: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        output: row.get(4)?,
        error_class: row.get(5)?,
        error_message: row.get(6)?,
        attempts: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        component: row.get(10)?,
        lock: match row.get::<_, Option<String>>(11)? {
            Some(key) => Some(RunLock {
                key,
                wait_ms: row.get::<_, Option<u64>>(12)?.unwrap_or(0),
                ttl_ms: row.get::<_, Option<u64>>(13)?.unwrap_or(15_000),
            }),
            None => None,
        },
    })
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        run_id: row.get(0)?,
        attempt: row.get(1)?,
        component_digest: row.get(2)?,
        holder: row.get(3)?,
        status: row.get(4)?,
        started_at: row.get(5)?,
        lease_until: row.get(6)?,
        ended_at: row.get(7)?,
        error_class: row.get(8)?,
        error_message: row.get(9)?,
        cpu_ms: row.get(10)?,
    })
}

fn effect_from_row(row: &Row<'_>) -> rusqlite::Result<EffectRecord> {
    Ok(EffectRecord {
        kind: row.get(0)?,
        key: row.get(1)?,
        payload_digest: row.get(2)?,
        payload: row.get(3)?,
        run_id: row.get(4)?,
        attempt: row.get(5)?,
        status: row.get(6)?,
        response: row.get(7)?,
        error_class: row.get(8)?,
        error_message: row.get(9)?,
        dispatches: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: row.get(0)?,
        run_id: row.get(1)?,
        attempt: row.get(2)?,
        name: row.get(3)?,
        state: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn journal_from_row(row: &Row<'_>) -> rusqlite::Result<JournalEntry> {
    let fields = json_column(row, 7)?;
    Ok(JournalEntry {
        seq: row.get(0)?,
        run_id: row.get(1)?,
        attempt: row.get(2)?,
        at: row.get(3)?,
        level: row.get(4)?,
        event: row.get(5)?,
        message: row.get(6)?,
        fields,
    })
}

fn escalation_from_row(row: &Row<'_>) -> rusqlite::Result<Escalation> {
    Ok(Escalation {
        id: row.get(0)?,
        run_id: row.get(1)?,
        reason: row.get(2)?,
        summary: row.get(3)?,
        effect_kind: row.get(4)?,
        effect_key: row.get(5)?,
        evidence: json_column(row, 6)?,
        status: row.get(7)?,
        resolution: row.get(8)?,
        resolution_reason: row.get(9)?,
        resolved_by: row.get(10)?,
        created_at: row.get(11)?,
        resolved_at: row.get(12)?,
        payload_digest: row.get(13)?,
    })
}

fn lock_from_row(row: &Row<'_>) -> rusqlite::Result<LockRecord> {
    Ok(LockRecord {
        key: row.get(0)?,
        run_id: row.get(1)?,
        holder: row.get(2)?,
        fence: row.get(3)?,
        acquired_at: row.get(4)?,
        lease_until: row.get(5)?,
        released: row.get(6)?,
    })
}

fn breaker_from_row(row: &Row<'_>) -> rusqlite::Result<BreakerRecord> {
    Ok(BreakerRecord {
        connector: row.get(0)?,
        tool: row.get(1)?,
        state: row.get(2)?,
        consecutive_failures: row.get(3)?,
        open_until: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

pub(super) fn run(conn: &Connection, run_id: &str) -> Result<Option<Run>, LedgerError> {
    conn.prepare_cached(concat!(run_select!(), " WHERE run_id = ?1"))
        .and_then(|mut stmt| stmt.query_row([run_id], run_from_row).optional())
        .context("reading a run")
}

pub(super) fn runs(conn: &Connection, filter: &RunFilter) -> Result<Vec<Run>, LedgerError> {
    // SQLite's LIMIT is an i64; anything larger means "no limit".
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let result = match filter.status {
        Some(status) => conn
            .prepare_cached(concat!(
                run_select!(),
                " WHERE status = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![status, limit], run_from_row)?
                    .collect()
            }),
        None => conn
            .prepare_cached(concat!(
                run_select!(),
                " ORDER BY created_at DESC, rowid DESC LIMIT ?1"
            ))
            .and_then(|mut stmt| stmt.query_map([limit], run_from_row)?.collect()),
    };
    result.context("listing runs")
}

pub(super) fn attempt(
    conn: &Connection,
    run_id: &str,
    attempt: u32,
) -> Result<Option<Attempt>, LedgerError> {
    conn.prepare_cached(concat!(
        attempt_select!(),
        " WHERE run_id = ?1 AND attempt = ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![run_id, attempt], attempt_from_row)
            .optional()
    })
    .context("reading an attempt")
}

pub(super) fn latest_attempt(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<Attempt>, LedgerError> {
    conn.prepare_cached(concat!(
        attempt_select!(),
        " WHERE run_id = ?1 ORDER BY attempt DESC LIMIT 1"
    ))
    .and_then(|mut stmt| stmt.query_row([run_id], attempt_from_row).optional())
    .context("reading the latest attempt")
}

pub(super) fn attempts(conn: &Connection, run_id: &str) -> Result<Vec<Attempt>, LedgerError> {
    conn.prepare_cached(concat!(
        attempt_select!(),
        " WHERE run_id = ?1 ORDER BY attempt"
    ))
    .and_then(|mut stmt| stmt.query_map([run_id], attempt_from_row)?.collect())
    .context("listing attempts")
}

pub(super) fn effect(
    conn: &Connection,
    kind: &str,
    key: &str,
) -> Result<Option<EffectRecord>, LedgerError> {
    conn.prepare_cached(concat!(effect_select!(), " WHERE kind = ?1 AND key = ?2"))
        .and_then(|mut stmt| stmt.query_row([kind, key], effect_from_row).optional())
        .context("reading an effect")
}

pub(super) fn effects_for_run(
    conn: &Connection,
    run_id: &str,
) -> Result<Vec<EffectRecord>, LedgerError> {
    conn.prepare_cached(concat!(
        effect_select!(),
        " WHERE run_id = ?1 ORDER BY rowid"
    ))
    .and_then(|mut stmt| stmt.query_map([run_id], effect_from_row)?.collect())
    .context("listing a run's effects")
}

pub(super) fn latest_checkpoint(
    conn: &Connection,
    run_id: &str,
    name: Option<&str>,
) -> Result<Option<Checkpoint>, LedgerError> {
    let result = match name {
        Some(name) => conn
            .prepare_cached(concat!(
                checkpoint_select!(),
                " WHERE run_id = ?1 AND name = ?2 ORDER BY seq DESC LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row([run_id, name], checkpoint_from_row)
                    .optional()
            }),
        None => conn
            .prepare_cached(concat!(
                checkpoint_select!(),
                " WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1"
            ))
            .and_then(|mut stmt| stmt.query_row([run_id], checkpoint_from_row).optional()),
    };
    result.context("reading the latest checkpoint")
}

pub(super) fn checkpoints(conn: &Connection, run_id: &str) -> Result<Vec<Checkpoint>, LedgerError> {
    conn.prepare_cached(concat!(
        checkpoint_select!(),
        " WHERE run_id = ?1 ORDER BY seq"
    ))
    .and_then(|mut stmt| stmt.query_map([run_id], checkpoint_from_row)?.collect())
    .context("listing checkpoints")
}

/// The run's journal entries after `seq`.
pub(super) fn journal_entries(
    conn: &Connection,
    run_id: &str,
    seq: i64,
) -> Result<Vec<JournalEntry>, LedgerError> {
    conn.prepare_cached(
        "SELECT seq, run_id, attempt, at, level, event, message, fields FROM journal \
         WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![run_id, seq], journal_from_row)?
            .collect()
    })
    .context("reading the journal")
}

pub(super) fn escalation(conn: &Connection, id: i64) -> Result<Option<Escalation>, LedgerError> {
    conn.prepare_cached(concat!(escalation_select!(), " WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], escalation_from_row).optional())
        .context("reading an escalation")
}

/// The run's open escalation, if any (there is at most one).
pub(super) fn open_escalation(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<Escalation>, LedgerError> {
    conn.prepare_cached(concat!(
        escalation_select!(),
        " WHERE run_id = ?1 AND status = 'open'"
    ))
    .and_then(|mut stmt| stmt.query_row([run_id], escalation_from_row).optional())
    .context("reading a run's open escalation")
}

pub(super) fn escalations(
    conn: &Connection,
    filter: &EscalationFilter,
) -> Result<Vec<Escalation>, LedgerError> {
    // SQLite's LIMIT is an i64; anything larger means "no limit".
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    // One literal per filter shape, so each query can use its index.
    let result = match (filter.status, filter.run_id.as_deref()) {
        (Some(status), Some(run_id)) => conn
            .prepare_cached(concat!(
                escalation_select!(),
                " WHERE status = ?1 AND run_id = ?2 ORDER BY id LIMIT ?3"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![status, run_id, limit], escalation_from_row)?
                    .collect()
            }),
        (Some(status), None) => conn
            .prepare_cached(concat!(
                escalation_select!(),
                " WHERE status = ?1 ORDER BY id LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![status, limit], escalation_from_row)?
                    .collect()
            }),
        (None, Some(run_id)) => conn
            .prepare_cached(concat!(
                escalation_select!(),
                " WHERE run_id = ?1 ORDER BY id LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![run_id, limit], escalation_from_row)?
                    .collect()
            }),
        (None, None) => conn
            .prepare_cached(concat!(escalation_select!(), " ORDER BY id LIMIT ?1"))
            .and_then(|mut stmt| stmt.query_map([limit], escalation_from_row)?.collect()),
    };
    result.context("listing escalations")
}

pub(super) fn count_escalations(
    conn: &Connection,
    status: EscalationStatus,
) -> Result<u64, LedgerError> {
    conn.prepare_cached("SELECT count(*) FROM escalations WHERE status = ?1")
        .and_then(|mut stmt| stmt.query_row([status], |row| row.get(0)))
        .context("counting escalations")
}

pub(super) fn lock(conn: &Connection, key: &str) -> Result<Option<LockRecord>, LedgerError> {
    conn.prepare_cached(concat!(lock_select!(), " WHERE lock_key = ?1"))
        .and_then(|mut stmt| stmt.query_row([key], lock_from_row).optional())
        .context("reading a lock")
}

pub(super) fn call_key(conn: &Connection, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
    conn.prepare_cached(
        "SELECT idempotency_key, tool, args_digest, run_id, created_at FROM call_keys \
         WHERE idempotency_key = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([key], |row| {
            Ok(CallKeyRecord {
                key: row.get(0)?,
                tool: row.get(1)?,
                args_digest: row.get(2)?,
                run_id: row.get(3)?,
                created_at: row.get(4)?,
            })
        })
        .optional()
    })
    .context("reading a call key")
}

pub(super) fn stranded(
    conn: &Connection,
    filter: &StrandedFilter,
) -> Result<Vec<Run>, LedgerError> {
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    // `runs.attempts` is the number of the run's latest attempt (0: none yet).
    conn.prepare_cached(concat!(
        run_select!(),
        " WHERE status = 'running' AND tool = ?1 AND CASE WHEN attempts = 0 \
         THEN created_at <= ?4 ELSE EXISTS (SELECT 1 FROM attempts a \
         WHERE a.run_id = runs.run_id AND a.attempt = runs.attempts \
         AND ((a.status = 'running' AND a.lease_until <= ?2) \
         OR (a.status <> 'running' AND (a.ended_at IS NULL OR a.ended_at <= ?3)))) END \
         ORDER BY created_at, rowid LIMIT ?5"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(
            params![
                filter.tool,
                filter.now,
                filter.ended_by,
                filter.created_by,
                limit
            ],
            run_from_row,
        )?
        .collect()
    })
    .context("looking for stranded runs")
}

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: row.get(0)?,
        address: row.get(1)?,
        version: row.get(2)?,
        started_at: row.get(3)?,
        heartbeat_at: row.get(4)?,
        lease_ttl_ms: row.get(5)?,
        stopped_at: row.get(6)?,
    })
}

macro_rules! node_select {
    () => {
        "SELECT node_id, address, version, started_at, heartbeat_at, lease_ttl_ms, stopped_at \
         FROM nodes"
    };
}

pub(super) fn node(conn: &Connection, node_id: &str) -> Result<Option<NodeRecord>, LedgerError> {
    conn.prepare_cached(concat!(node_select!(), " WHERE node_id = ?1"))
        .and_then(|mut stmt| stmt.query_row([node_id], node_from_row).optional())
        .context("reading a node")
}

pub(super) fn nodes(conn: &Connection) -> Result<Vec<NodeRecord>, LedgerError> {
    conn.prepare_cached(concat!(
        node_select!(),
        " ORDER BY started_at DESC, node_id"
    ))
    .and_then(|mut stmt| stmt.query_map([], node_from_row)?.collect())
    .context("listing nodes")
}

pub(super) fn holdings(conn: &Connection, holder: &str) -> Result<Holdings, LedgerError> {
    let attempts = conn
        .prepare_cached(concat!(
            attempt_select!(),
            " WHERE status = 'running' AND holder = ?1 AND (run_id, attempt) IN \
             (SELECT run_id, attempts FROM runs WHERE status = 'running') \
             ORDER BY started_at, run_id"
        ))
        .and_then(|mut stmt| stmt.query_map([holder], attempt_from_row)?.collect())
        .context("reading the attempts a node holds")?;
    let locks = conn
        .prepare_cached(concat!(
            lock_select!(),
            " WHERE holder = ?1 AND released = 0 ORDER BY lock_key"
        ))
        .and_then(|mut stmt| stmt.query_map([holder], lock_from_row)?.collect())
        .context("reading the locks a node holds")?;
    Ok(Holdings { attempts, locks })
}

pub(super) fn breakers(conn: &Connection) -> Result<Vec<BreakerRecord>, LedgerError> {
    conn.prepare_cached(
        "SELECT connector, tool, state, consecutive_failures, open_until, updated_at \
         FROM breakers ORDER BY connector, tool",
    )
    .and_then(|mut stmt| stmt.query_map([], breaker_from_row)?.collect())
    .context("listing breakers")
}

pub(super) fn breaker(
    conn: &Connection,
    connector: &str,
    tool: &str,
) -> Result<Option<BreakerRecord>, LedgerError> {
    conn.prepare_cached(
        "SELECT connector, tool, state, consecutive_failures, open_until, updated_at \
         FROM breakers WHERE connector = ?1 AND tool = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row([connector, tool], breaker_from_row)
            .optional()
    })
    .context("reading a breaker")
}

/// The bytes a run's rows occupy; see [`crate::stored`] for how each row is counted (the
/// same per-row cost, and the byte length of every text and blob column).
pub(super) fn stored_bytes(conn: &Connection, run_id: &str) -> Result<Option<u64>, LedgerError> {
    let bytes: Option<i64> = conn
        .prepare_cached(
            "SELECT \
             (SELECT ?2 + octet_length(tool) + octet_length(input) \
                + coalesce(octet_length(output), 0) + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0) FROM runs WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(component_digest) + octet_length(holder) \
                + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0)), 0) FROM attempts WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(kind) + octet_length(key) \
                + octet_length(payload_digest) + octet_length(payload) \
                + coalesce(octet_length(response), 0) + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0)), 0) FROM effects WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(name) + length(state)), 0) \
                FROM checkpoints WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(level) + octet_length(event) \
                + octet_length(message) + octet_length(fields)), 0) FROM journal WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(summary) + octet_length(evidence) \
                + coalesce(octet_length(effect_kind), 0) + coalesce(octet_length(effect_key), 0) \
                + coalesce(octet_length(resolution_reason), 0) \
                + coalesce(octet_length(resolved_by), 0)), 0) FROM escalations WHERE run_id = ?1) \
             + (SELECT coalesce(sum(?2 + octet_length(idempotency_key) + octet_length(tool) \
                + octet_length(args_digest)), 0) FROM call_keys WHERE run_id = ?1)",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![run_id, i64::try_from(crate::stored::ROW_COST).unwrap_or(i64::MAX)],
                |row| row.get(0),
            )
        })
        .context("measuring a run's storage")?;
    bytes
        .map(|b| {
            u64::try_from(b)
                .map_err(|_| LedgerError::Internal(format!("run storage of {b} bytes is negative")))
        })
        .transpose()
}
