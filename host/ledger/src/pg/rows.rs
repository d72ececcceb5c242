//! Reading records back out of PostgreSQL: the SELECTs and the row → record mapping.
//!
//! Invariant: a stored value that does not map back to its record type (unknown status,
//! out-of-range number, bad JSON) surfaces as an error, never as a panic or a default.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::{GenericClient, Row, Statement};

use super::error::PgContext;
use crate::error::LedgerError;
use crate::records::{
    Attempt, AttemptStatus, BreakerRecord, BreakerState, CallKeyRecord, Checkpoint, EffectRecord,
    EffectStatus, Escalation, EscalationFilter, EscalationReason, EscalationStatus, Holdings,
    JournalEntry, LockRecord, NodeRecord, Resolution, Run, RunFilter, RunLock, RunStatus,
    StrandedFilter,
};

thread_local! {
    /// This connection thread's prepared statements, by SQL text. Each connection thread
    /// owns exactly one connection ([`super::pool`]), so the thread's cache is that
    /// connection's; it is emptied whenever the connection is dropped. Preparing once saves a
    /// round trip on every later statement.
    static PREPARED: RefCell<HashMap<String, Statement>> = RefCell::new(HashMap::new());
}

/// `sql` prepared on this thread's connection, once.
pub(super) fn prepared(
    client: &mut impl GenericClient,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = PREPARED.with(|p| p.borrow().get(sql).cloned()) {
        return Ok(statement);
    }
    let statement = client.prepare(sql)?;
    PREPARED.with(|p| p.borrow_mut().insert(sql.to_owned(), statement.clone()));
    Ok(statement)
}

/// Forgets this thread's prepared statements: its connection is gone.
pub(super) fn forget_prepared() {
    PREPARED.with(|p| p.borrow_mut().clear());
}

pub(super) const RUN_COLUMNS: &str = "run_id, tool, input, status, output, error_class, \
     error_message, attempts, created_at, updated_at, component, lock_key, lock_wait_ms, \
     lock_ttl_ms";
pub(super) const ATTEMPT_COLUMNS: &str = "run_id, attempt, component_digest, holder, status, \
     started_at, lease_until, ended_at, error_class, error_message, cpu_ms";
pub(super) const EFFECT_COLUMNS: &str = "kind, key, payload_digest, payload, run_id, attempt, \
     status, response, error_class, error_message, dispatches, created_at, updated_at";
const CHECKPOINT_COLUMNS: &str = "seq, run_id, attempt, name, state, created_at";
const ESCALATION_COLUMNS: &str = "id, run_id, reason, summary, effect_kind, effect_key, \
     evidence, status, resolution, resolution_reason, resolved_by, created_at, resolved_at, \
     payload_digest";
const LOCK_COLUMNS: &str = "lock_key, run_id, holder, fence, acquired_at, lease_until, released";
const BREAKER_COLUMNS: &str =
    "connector, tool, state, consecutive_failures, open_until, updated_at";

fn bad(what: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Internal(format!("the ledger holds a bad {what}: {detail}"))
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, LedgerError> {
    row.try_get(i).map_err(|err| bad("column", err))
}

fn u32_at(row: &Row, i: usize) -> Result<u32, LedgerError> {
    let v: i64 = get(row, i)?;
    u32::try_from(v).map_err(|_| bad("count", v))
}

fn u64_at(row: &Row, i: usize) -> Result<u64, LedgerError> {
    let v: i64 = get(row, i)?;
    u64::try_from(v).map_err(|_| bad("count", v))
}

macro_rules! status_at {
    ($fn:ident, $ty:ident) => {
        fn $fn(row: &Row, i: usize) -> Result<$ty, LedgerError> {
            let text: String = get(row, i)?;
            $ty::parse(&text).ok_or_else(|| bad(stringify!($ty), text))
        }
    };
}
status_at!(run_status, RunStatus);
status_at!(attempt_status, AttemptStatus);
status_at!(effect_status, EffectStatus);
status_at!(escalation_reason, EscalationReason);
status_at!(escalation_status, EscalationStatus);
status_at!(breaker_state, BreakerState);

fn json_at(row: &Row, i: usize) -> Result<serde_json::Value, LedgerError> {
    let text: String = get(row, i)?;
    serde_json::from_str(&text).map_err(|err| bad("JSON column", err))
}

pub(super) fn run_from_row(row: &Row) -> Result<Run, LedgerError> {
    let lock_key: Option<String> = get(row, 11)?;
    Ok(Run {
        run_id: get(row, 0)?,
        tool: get(row, 1)?,
        input: get(row, 2)?,
        status: run_status(row, 3)?,
        output: get(row, 4)?,
        error_class: get(row, 5)?,
        error_message: get(row, 6)?,
        attempts: u32_at(row, 7)?,
        created_at: get(row, 8)?,
        updated_at: get(row, 9)?,
        component: get(row, 10)?,
        lock: match lock_key {
            Some(key) => Some(RunLock {
                key,
                wait_ms: get::<Option<i64>>(row, 12)?
                    .map_or(Ok(0), u64::try_from)
                    .map_err(|_| bad("lock wait", "negative"))?,
                ttl_ms: get::<Option<i64>>(row, 13)?
                    .map_or(Ok(15_000), u64::try_from)
                    .map_err(|_| bad("lock ttl", "negative"))?,
            }),
            None => None,
        },
    })
}

pub(super) fn attempt_from_row(row: &Row) -> Result<Attempt, LedgerError> {
    Ok(Attempt {
        run_id: get(row, 0)?,
        attempt: u32_at(row, 1)?,
        component_digest: get(row, 2)?,
        holder: get(row, 3)?,
        status: attempt_status(row, 4)?,
        started_at: get(row, 5)?,
        lease_until: get(row, 6)?,
        ended_at: get(row, 7)?,
        error_class: get(row, 8)?,
        error_message: get(row, 9)?,
        cpu_ms: u64_at(row, 10)?,
    })
}

pub(super) fn effect_from_row(row: &Row) -> Result<EffectRecord, LedgerError> {
    Ok(EffectRecord {
        kind: get(row, 0)?,
        key: get(row, 1)?,
        payload_digest: get(row, 2)?,
        payload: get(row, 3)?,
        run_id: get(row, 4)?,
        attempt: u32_at(row, 5)?,
        status: effect_status(row, 6)?,
        response: get(row, 7)?,
        error_class: get(row, 8)?,
        error_message: get(row, 9)?,
        dispatches: u32_at(row, 10)?,
        created_at: get(row, 11)?,
        updated_at: get(row, 12)?,
    })
}

fn checkpoint_from_row(row: &Row) -> Result<Checkpoint, LedgerError> {
    Ok(Checkpoint {
        seq: get(row, 0)?,
        run_id: get(row, 1)?,
        attempt: u32_at(row, 2)?,
        name: get(row, 3)?,
        state: get(row, 4)?,
        created_at: get(row, 5)?,
    })
}

fn journal_from_row(row: &Row) -> Result<JournalEntry, LedgerError> {
    Ok(JournalEntry {
        seq: get(row, 0)?,
        run_id: get(row, 1)?,
        attempt: get::<Option<i64>>(row, 2)?
            .map(|a| u32::try_from(a).map_err(|_| bad("attempt", a)))
            .transpose()?,
        at: get(row, 3)?,
        level: get(row, 4)?,
        event: get(row, 5)?,
        message: get(row, 6)?,
        fields: json_at(row, 7)?,
    })
}

pub(super) fn escalation_from_row(row: &Row) -> Result<Escalation, LedgerError> {
    let resolution: Option<String> = get(row, 8)?;
    Ok(Escalation {
        id: get(row, 0)?,
        run_id: get(row, 1)?,
        reason: escalation_reason(row, 2)?,
        summary: get(row, 3)?,
        effect_kind: get(row, 4)?,
        effect_key: get(row, 5)?,
        evidence: json_at(row, 6)?,
        status: escalation_status(row, 7)?,
        resolution: resolution
            .map(|r| Resolution::parse(&r).ok_or_else(|| bad("Resolution", r)))
            .transpose()?,
        resolution_reason: get(row, 9)?,
        resolved_by: get(row, 10)?,
        created_at: get(row, 11)?,
        resolved_at: get(row, 12)?,
        payload_digest: get(row, 13)?,
    })
}

fn lock_from_row(row: &Row) -> Result<LockRecord, LedgerError> {
    Ok(LockRecord {
        key: get(row, 0)?,
        run_id: get(row, 1)?,
        holder: get(row, 2)?,
        fence: get(row, 3)?,
        acquired_at: get(row, 4)?,
        lease_until: get(row, 5)?,
        released: get(row, 6)?,
    })
}

fn breaker_from_row(row: &Row) -> Result<BreakerRecord, LedgerError> {
    Ok(BreakerRecord {
        connector: get(row, 0)?,
        tool: get(row, 1)?,
        state: breaker_state(row, 2)?,
        consecutive_failures: u32_at(row, 3)?,
        open_until: get(row, 4)?,
        updated_at: get(row, 5)?,
    })
}

fn one<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    map: fn(&Row) -> Result<T, LedgerError>,
    what: &str,
) -> Result<Option<T>, LedgerError> {
    let statement = prepared(client, sql).context(what)?;
    client
        .query_opt(&statement, params)
        .context(what)?
        .as_ref()
        .map(map)
        .transpose()
}

fn all<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    map: fn(&Row) -> Result<T, LedgerError>,
    what: &str,
) -> Result<Vec<T>, LedgerError> {
    let statement = prepared(client, sql).context(what)?;
    client
        .query(&statement, params)
        .context(what)?
        .iter()
        .map(map)
        .collect()
}

/// What a read holds until its transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Nothing: a read outside a write, or of rows no rule writes after reading.
    Nothing,
    /// The row read, as `FOR NO KEY UPDATE`: a writer that locked it first is waited for and
    /// the row is read as that writer committed it; later writers wait for this transaction.
    /// It is the lock an `UPDATE` takes, so a row inserted elsewhere that references this one
    /// (a journal entry of the run) is not held up by it.
    Row,
}

impl Hold {
    fn clause(self) -> &'static str {
        match self {
            Hold::Nothing => "",
            Hold::Row => " FOR NO KEY UPDATE",
        }
    }
}

/// `usize` limits as SQL's BIGINT: anything larger means "no limit".
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn run(
    c: &mut impl GenericClient,
    run_id: &str,
    hold: Hold,
) -> Result<Option<Run>, LedgerError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1{}",
        hold.clause()
    );
    one(c, &sql, &[&run_id], run_from_row, "reading a run")
}

pub(super) fn runs(
    c: &mut impl GenericClient,
    filter: &RunFilter,
) -> Result<Vec<Run>, LedgerError> {
    let n = limit(filter.limit);
    match filter.status {
        Some(status) => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 \
                 ORDER BY created_at DESC, seq DESC LIMIT $2"
            );
            all(
                c,
                &sql,
                &[&status.as_str(), &n],
                run_from_row,
                "listing runs",
            )
        }
        None => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, seq DESC LIMIT $1"
            );
            all(c, &sql, &[&n], run_from_row, "listing runs")
        }
    }
}

pub(super) fn attempt(
    c: &mut impl GenericClient,
    run_id: &str,
    attempt: u32,
) -> Result<Option<Attempt>, LedgerError> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 AND attempt = $2");
    let n = i64::from(attempt);
    one(
        c,
        &sql,
        &[&run_id, &n],
        attempt_from_row,
        "reading an attempt",
    )
}

pub(super) fn latest_attempt(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Option<Attempt>, LedgerError> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY attempt DESC LIMIT 1"
    );
    one(
        c,
        &sql,
        &[&run_id],
        attempt_from_row,
        "reading the latest attempt",
    )
}

pub(super) fn attempts(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Vec<Attempt>, LedgerError> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY attempt");
    all(c, &sql, &[&run_id], attempt_from_row, "listing attempts")
}

pub(super) fn effect(
    c: &mut impl GenericClient,
    kind: &str,
    key: &str,
    hold: Hold,
) -> Result<Option<EffectRecord>, LedgerError> {
    let sql = format!(
        "SELECT {EFFECT_COLUMNS} FROM effects WHERE kind = $1 AND key = $2{}",
        hold.clause()
    );
    one(
        c,
        &sql,
        &[&kind, &key],
        effect_from_row,
        "reading an effect",
    )
}

pub(super) fn effects_for_run(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Vec<EffectRecord>, LedgerError> {
    let sql = format!("SELECT {EFFECT_COLUMNS} FROM effects WHERE run_id = $1 ORDER BY seq");
    all(
        c,
        &sql,
        &[&run_id],
        effect_from_row,
        "listing a run's effects",
    )
}

pub(super) fn latest_checkpoint(
    c: &mut impl GenericClient,
    run_id: &str,
    name: Option<&str>,
) -> Result<Option<Checkpoint>, LedgerError> {
    let what = "reading the latest checkpoint";
    match name {
        Some(name) => {
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = $1 AND name = $2 \
                 ORDER BY seq DESC LIMIT 1"
            );
            one(c, &sql, &[&run_id, &name], checkpoint_from_row, what)
        }
        None => {
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = $1 \
                 ORDER BY seq DESC LIMIT 1"
            );
            one(c, &sql, &[&run_id], checkpoint_from_row, what)
        }
    }
}

pub(super) fn checkpoints(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Vec<Checkpoint>, LedgerError> {
    let sql =
        format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = $1 ORDER BY seq");
    all(
        c,
        &sql,
        &[&run_id],
        checkpoint_from_row,
        "listing checkpoints",
    )
}

/// The run's journal entries after `seq`.
pub(super) fn journal_entries(
    c: &mut impl GenericClient,
    run_id: &str,
    seq: i64,
) -> Result<Vec<JournalEntry>, LedgerError> {
    all(
        c,
        "SELECT seq, run_id, attempt, at, level, event, message, fields FROM journal \
         WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        &[&run_id, &seq],
        journal_from_row,
        "reading the journal",
    )
}

pub(super) fn escalation(
    c: &mut impl GenericClient,
    id: i64,
    hold: Hold,
) -> Result<Option<Escalation>, LedgerError> {
    let sql = format!(
        "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE id = $1{}",
        hold.clause()
    );
    one(
        c,
        &sql,
        &[&id],
        escalation_from_row,
        "reading an escalation",
    )
}

pub(super) fn open_escalation(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Option<Escalation>, LedgerError> {
    let sql = format!(
        "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE run_id = $1 AND status = 'open'"
    );
    one(
        c,
        &sql,
        &[&run_id],
        escalation_from_row,
        "reading a run's open escalation",
    )
}

pub(super) fn escalations(
    c: &mut impl GenericClient,
    filter: &EscalationFilter,
) -> Result<Vec<Escalation>, LedgerError> {
    let n = limit(filter.limit);
    let status = filter.status.map(|s| s.as_str());
    // NULL means "any": one statement for every filter shape.
    let sql = format!(
        "SELECT {ESCALATION_COLUMNS} FROM escalations \
         WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR run_id = $2) \
         ORDER BY id LIMIT $3"
    );
    all(
        c,
        &sql,
        &[&status, &filter.run_id, &n],
        escalation_from_row,
        "listing escalations",
    )
}

pub(super) fn lock(
    c: &mut impl GenericClient,
    key: &str,
    hold: Hold,
) -> Result<Option<LockRecord>, LedgerError> {
    let sql = format!(
        "SELECT {LOCK_COLUMNS} FROM locks WHERE lock_key = $1{}",
        hold.clause()
    );
    one(c, &sql, &[&key], lock_from_row, "reading a lock")
}

pub(super) fn call_key(
    c: &mut impl GenericClient,
    key: &str,
) -> Result<Option<CallKeyRecord>, LedgerError> {
    one(
        c,
        "SELECT idempotency_key, tool, args_digest, run_id, created_at FROM call_keys \
         WHERE idempotency_key = $1",
        &[&key],
        |row| {
            Ok(CallKeyRecord {
                key: get(row, 0)?,
                tool: get(row, 1)?,
                args_digest: get(row, 2)?,
                run_id: get(row, 3)?,
                created_at: get(row, 4)?,
            })
        },
        "reading a call key",
    )
}

pub(super) fn count_escalations(
    c: &mut impl GenericClient,
    status: EscalationStatus,
) -> Result<u64, LedgerError> {
    let what = "counting escalations";
    let statement =
        prepared(c, "SELECT count(*) FROM escalations WHERE status = $1").context(what)?;
    let row = c.query_one(&statement, &[&status.as_str()]).context(what)?;
    u64_at(&row, 0)
}

pub(super) fn stranded(
    c: &mut impl GenericClient,
    filter: &StrandedFilter,
) -> Result<Vec<Run>, LedgerError> {
    // `runs.attempts` is the number of the run's latest attempt (0: none yet).
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND tool = $1 AND CASE \
         WHEN attempts = 0 THEN created_at <= $4 ELSE EXISTS (SELECT 1 FROM attempts a \
         WHERE a.run_id = runs.run_id AND a.attempt = runs.attempts \
         AND ((a.status = 'running' AND a.lease_until <= $2) \
         OR (a.status <> 'running' AND (a.ended_at IS NULL OR a.ended_at <= $3)))) END \
         ORDER BY created_at, seq LIMIT $5"
    );
    all(
        c,
        &sql,
        &[
            &filter.tool,
            &filter.now,
            &filter.ended_by,
            &filter.created_by,
            &limit(filter.limit),
        ],
        run_from_row,
        "looking for stranded runs",
    )
}

const NODE_COLUMNS: &str =
    "node_id, address, version, started_at, heartbeat_at, lease_ttl_ms, stopped_at";

fn node_from_row(row: &Row) -> Result<NodeRecord, LedgerError> {
    Ok(NodeRecord {
        node_id: get(row, 0)?,
        address: get(row, 1)?,
        version: get(row, 2)?,
        started_at: get(row, 3)?,
        heartbeat_at: get(row, 4)?,
        lease_ttl_ms: get(row, 5)?,
        stopped_at: get(row, 6)?,
    })
}

pub(super) fn node(
    c: &mut impl GenericClient,
    node_id: &str,
    hold: Hold,
) -> Result<Option<NodeRecord>, LedgerError> {
    let sql = format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1{}",
        hold.clause()
    );
    one(c, &sql, &[&node_id], node_from_row, "reading a node")
}

pub(super) fn nodes(c: &mut impl GenericClient) -> Result<Vec<NodeRecord>, LedgerError> {
    let sql =
        format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY started_at DESC, node_id COLLATE \"C\"");
    all(c, &sql, &[], node_from_row, "listing nodes")
}

pub(super) fn holdings(c: &mut impl GenericClient, holder: &str) -> Result<Holdings, LedgerError> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE status = 'running' AND holder = $1 \
         AND (run_id, attempt) IN (SELECT run_id, attempts FROM runs WHERE status = 'running') \
         ORDER BY started_at, run_id COLLATE \"C\""
    );
    let attempts = all(
        c,
        &sql,
        &[&holder],
        attempt_from_row,
        "reading the attempts a node holds",
    )?;
    let sql = format!(
        "SELECT {LOCK_COLUMNS} FROM locks WHERE holder = $1 AND NOT released \
         ORDER BY lock_key COLLATE \"C\""
    );
    let locks = all(
        c,
        &sql,
        &[&holder],
        lock_from_row,
        "reading the locks a node holds",
    )?;
    Ok(Holdings { attempts, locks })
}

pub(super) fn breakers(c: &mut impl GenericClient) -> Result<Vec<BreakerRecord>, LedgerError> {
    let sql = format!(
        "SELECT {BREAKER_COLUMNS} FROM breakers ORDER BY connector COLLATE \"C\", tool COLLATE \"C\""
    );
    all(c, &sql, &[], breaker_from_row, "listing breakers")
}

pub(super) fn breaker(
    c: &mut impl GenericClient,
    connector: &str,
    tool: &str,
    hold: Hold,
) -> Result<Option<BreakerRecord>, LedgerError> {
    let sql = format!(
        "SELECT {BREAKER_COLUMNS} FROM breakers WHERE connector = $1 AND tool = $2{}",
        hold.clause()
    );
    one(
        c,
        &sql,
        &[&connector, &tool],
        breaker_from_row,
        "reading a breaker",
    )
}

/// The bytes a run's rows occupy, counted exactly as the SQLite backend counts them (see
/// [`crate::stored`]).
pub(super) fn stored_bytes(
    c: &mut impl GenericClient,
    run_id: &str,
) -> Result<Option<u64>, LedgerError> {
    let row_cost = i64::try_from(crate::stored::ROW_COST).unwrap_or(i64::MAX);
    let row = c
        .query_one(
            "SELECT CAST(\
             (SELECT $2::BIGINT + octet_length(tool) + octet_length(input) \
                + coalesce(octet_length(output), 0) + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0) FROM runs WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(component_digest) + octet_length(holder) \
                + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0)), 0) FROM attempts WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(kind) + octet_length(key) \
                + octet_length(payload_digest) + octet_length(payload) \
                + coalesce(octet_length(response), 0) + coalesce(octet_length(error_class), 0) \
                + coalesce(octet_length(error_message), 0)), 0) FROM effects WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(name) + octet_length(state)), 0) \
                FROM checkpoints WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(level) + octet_length(event) \
                + octet_length(message) + octet_length(fields)), 0) FROM journal WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(summary) + octet_length(evidence) \
                + coalesce(octet_length(effect_kind), 0) + coalesce(octet_length(effect_key), 0) \
                + coalesce(octet_length(resolution_reason), 0) \
                + coalesce(octet_length(resolved_by), 0)), 0) FROM escalations WHERE run_id = $1) \
             + (SELECT coalesce(sum($2 + octet_length(idempotency_key) + octet_length(tool) \
                + octet_length(args_digest)), 0) FROM call_keys WHERE run_id = $1) AS BIGINT)",
            &[&run_id, &row_cost],
        )
        .context("measuring a run's storage")?;
    // sum() over BIGINT is NUMERIC in PostgreSQL, hence the cast; NULL: no such run.
    let bytes: Option<i64> = get(&row, 0)?;
    bytes
        .map(|b| u64::try_from(b).map_err(|_| bad("run storage", b)))
        .transpose()
}
