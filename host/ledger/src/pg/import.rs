//! Moving up: copying a SQLite ledger's whole history into an empty PostgreSQL ledger, then
//! proving the copy reads back the same through the ledger contract.
//!
//! Invariant: the copy is one transaction on the PostgreSQL side, so a failed copy leaves the
//! target as empty as it was; the source file is only read. Rows keep their identities
//! (escalation ids, journal and checkpoint sequence numbers, the insertion order of runs and
//! effects), so ids a human wrote down and keys an agent will retry mean the same thing on
//! the new ledger.

use std::path::Path;

use postgres::types::ToSql;
use rusqlite::types::Value;

use super::PgLedger;
use super::error::{PgContext, refine};
use super::tx::text;
use crate::contract::Ledger;
use crate::error::LedgerError;
use crate::records::{
    Attempt, EffectRecord, Escalation, EscalationFilter, JournalEntry, Run, RunFilter,
};
use crate::sqlite::{Create, LedgerOptions, SqlContext, SqliteLedger};

/// How a column is typed on PostgreSQL, which decides how a SQLite value binds.
#[derive(Clone, Copy)]
enum Col {
    Int,
    /// Text kept exactly: keys, ids, names, JSON.
    Text,
    /// Free text, stored as the backend stores it ([`text`]): U+0000 becomes U+FFFD.
    Free,
    Bytes,
    Bool,
}

/// A table: its name, and each column with its type; `rowid` is read from SQLite's rowid
/// into the column PostgreSQL keeps the same order in.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    /// The SQLite expression that orders rows as they were inserted.
    order: &'static str,
}

use Col::{Bool, Bytes, Free, Int, Text};

/// Parents before children, so foreign keys hold as rows go in. `nodes` is not copied: it
/// says which processes serve the old ledger, and nodes started on the new one record
/// themselves.
const TABLES: &[Table] = &[
    Table {
        name: "runs",
        columns: &[
            ("seq", Int),
            ("run_id", Text),
            ("tool", Text),
            ("input", Text),
            ("status", Text),
            ("output", Free),
            ("error_class", Text),
            ("error_message", Free),
            ("attempts", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("component", Text),
            ("lock_key", Text),
            ("lock_wait_ms", Int),
            ("lock_ttl_ms", Int),
        ],
        order: "rowid",
    },
    Table {
        name: "attempts",
        columns: &[
            ("run_id", Text),
            ("attempt", Int),
            ("component_digest", Text),
            ("holder", Text),
            ("status", Text),
            ("started_at", Int),
            ("lease_until", Int),
            ("ended_at", Int),
            ("error_class", Text),
            ("error_message", Free),
            ("cpu_ms", Int),
        ],
        order: "run_id, attempt",
    },
    Table {
        name: "effects",
        columns: &[
            ("seq", Int),
            ("kind", Text),
            ("key", Text),
            ("payload_digest", Text),
            ("payload", Text),
            ("run_id", Text),
            ("attempt", Int),
            ("status", Text),
            ("response", Free),
            ("error_class", Text),
            ("error_message", Free),
            ("dispatches", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        order: "rowid",
    },
    Table {
        name: "checkpoints",
        columns: &[
            ("seq", Int),
            ("run_id", Text),
            ("attempt", Int),
            ("name", Text),
            ("state", Bytes),
            ("created_at", Int),
        ],
        order: "seq",
    },
    Table {
        name: "journal",
        columns: &[
            ("seq", Int),
            ("run_id", Text),
            ("attempt", Int),
            ("at", Int),
            ("level", Free),
            ("event", Free),
            ("message", Free),
            ("fields", Text),
        ],
        order: "seq",
    },
    Table {
        name: "locks",
        columns: &[
            ("lock_key", Text),
            ("run_id", Text),
            ("holder", Text),
            ("fence", Int),
            ("acquired_at", Int),
            ("lease_until", Int),
            ("released", Bool),
        ],
        order: "lock_key",
    },
    Table {
        name: "escalations",
        columns: &[
            ("id", Int),
            ("run_id", Text),
            ("reason", Text),
            ("summary", Free),
            ("effect_kind", Text),
            ("effect_key", Text),
            ("evidence", Text),
            ("status", Text),
            ("resolution", Text),
            ("resolution_reason", Free),
            ("resolved_by", Free),
            ("created_at", Int),
            ("resolved_at", Int),
            ("payload_digest", Text),
        ],
        order: "id",
    },
    Table {
        name: "call_keys",
        columns: &[
            ("idempotency_key", Text),
            ("tool", Text),
            ("args_digest", Text),
            ("run_id", Text),
            ("created_at", Int),
        ],
        order: "idempotency_key",
    },
    Table {
        name: "breakers",
        columns: &[
            ("connector", Text),
            ("tool", Text),
            ("state", Text),
            ("consecutive_failures", Int),
            ("open_until", Int),
            ("updated_at", Int),
        ],
        order: "connector, tool",
    },
];

/// Columns PostgreSQL fills from a sequence, set past the copied values afterwards.
const SERIALS: &[(&str, &str)] = &[
    ("runs", "seq"),
    ("effects", "seq"),
    ("checkpoints", "seq"),
    ("journal", "seq"),
    ("escalations", "id"),
];

/// What a copy moved, table by table, and what its verification compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub rows: Vec<(&'static str, u64)>,
    /// Runs whose record, attempts, effects, checkpoints and journal read back identically.
    pub runs_verified: usize,
    /// Effect keys that look up to the same record (so they replay the same).
    pub effects_verified: usize,
}

impl PgLedger {
    /// Copies the SQLite ledger at `from` into this ledger, which must hold nothing yet, then
    /// verifies the copy (see [`verify_copy`]). The source is migrated to the current schema
    /// first, as any open would, and otherwise only read.
    pub fn copy_from_sqlite(&self, from: &Path) -> Result<CopyReport, LedgerError> {
        let options = LedgerOptions {
            create: Create::Never,
            ..LedgerOptions::default()
        };
        let busy_timeout = options.busy_timeout;
        let source = SqliteLedger::open(from, options)?;
        // The source's write lock, held until the copy is verified: what is copied is what
        // is verified, and no process records anything in the source that the copy would
        // miss. A process still writing waits, or the copy says the source is busy.
        let reader = crate::sqlite::open_connection(from, busy_timeout)?;
        reader
            .execute_batch("BEGIN IMMEDIATE")
            .context("locking the source against writes")
            .map_err(|err| crate::sqlite::refine(err, from))?;
        let mut tables = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            tables.push((table, read_table(&reader, table)?));
        }
        let counts: Vec<(&'static str, u64)> = tables
            .iter()
            .map(|(table, rows)| (table.name, rows.len() as u64))
            .collect();
        let location = self.location.to_string();
        self.pool.call(move |conn| {
            let client = conn.client()?;
            write_tables(client, &tables).map_err(|err| refine(err, &location))
        })?;
        let lock_keys = column(&reader, "SELECT lock_key FROM locks ORDER BY lock_key")?;
        let call_keys = column(
            &reader,
            "SELECT idempotency_key FROM call_keys ORDER BY idempotency_key",
        )?;
        let (runs_verified, effects_verified) = verify_copy(&source, self, &lock_keys, &call_keys)?;
        Ok(CopyReport {
            rows: counts,
            runs_verified,
            effects_verified,
        })
    }
}

fn read_table(
    reader: &rusqlite::Connection,
    table: &Table,
) -> Result<Vec<Vec<Value>>, LedgerError> {
    let columns: Vec<&str> = table
        .columns
        .iter()
        .map(|(name, _)| match *name {
            // SQLite keeps these tables' insertion order in the rowid.
            "seq" if table.order == "rowid" => "rowid",
            name => name,
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        table.name,
        table.order
    );
    let what = format!("reading {}", table.name);
    let mut statement = reader.prepare(&sql).context(&what)?;
    let rows = statement
        .query_map([], |row| {
            (0..table.columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .context(&what)?;
    rows.collect::<Result<Vec<_>, _>>().context(&what)
}

fn column(reader: &rusqlite::Connection, sql: &str) -> Result<Vec<String>, LedgerError> {
    let mut statement = reader.prepare(sql).context("reading keys")?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .context("reading keys")?;
    rows.collect::<Result<Vec<_>, _>>().context("reading keys")
}

/// One SQLite value as a parameter of the PostgreSQL column's type.
fn param(value: &Value, col: Col, table: &str) -> Result<Box<dyn ToSql + Sync>, LedgerError> {
    let mismatch = || LedgerError::Corrupt {
        path: table.into(),
        detail: format!("table {table} holds {value:?} where the schema allows none"),
    };
    Ok(match (col, value) {
        (Int, Value::Integer(v)) => Box::new(*v),
        (Int, Value::Null) => Box::new(None::<i64>),
        (Text, Value::Text(v)) => Box::new(v.clone()),
        (Free, Value::Text(v)) => Box::new(text(v).into_owned()),
        (Text | Free, Value::Null) => Box::new(None::<String>),
        (Bytes, Value::Blob(v)) => Box::new(v.clone()),
        (Bool, Value::Integer(v)) => Box::new(*v != 0),
        _ => return Err(mismatch()),
    })
}

fn write_tables(
    client: &mut postgres::Client,
    tables: &[(&Table, Vec<Vec<Value>>)],
) -> Result<(), LedgerError> {
    let mut tx = client.transaction().context("starting the copy")?;
    // Readers may go on; writers wait for the copy, so nothing is recorded beside it after
    // the tables were found empty.
    let names: Vec<&str> = TABLES.iter().map(|table| table.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .context("locking the target's tables")?;
    for table in TABLES {
        let held: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .and_then(|row| row.try_get(0))
            .context("checking that the target is empty")?;
        if held > 0 {
            return Err(LedgerError::NotEmpty {
                table: table.name.to_owned(),
                rows: held,
            });
        }
    }
    for (table, rows) in tables {
        let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let slots: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            names.join(", "),
            slots.join(", ")
        );
        let what = format!("copying {}", table.name);
        let insert = tx.prepare(&sql).context(&what)?;
        for row in rows {
            let params = row
                .iter()
                .zip(table.columns)
                .map(|(value, (_, col))| param(value, *col, table.name))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
            tx.execute(&insert, &refs).context(&what)?;
        }
    }
    for (table, column) in SERIALS {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )
        .context("moving the sequences past the copied rows")?;
    }
    tx.commit().context("committing the copy")
}

/// A record as a PostgreSQL ledger stores it: free text holding U+0000 holds U+FFFD there
/// (the columns [`Col::Free`] marks, as [`text`] writes them).
trait Stored: Sized {
    fn stored(self) -> Self;
}

impl<T: Stored> Stored for Vec<T> {
    fn stored(self) -> Self {
        self.into_iter().map(Stored::stored).collect()
    }
}

impl<T: Stored> Stored for Option<T> {
    fn stored(self) -> Self {
        self.map(Stored::stored)
    }
}

fn free(value: &mut String) {
    if value.contains('\0') {
        *value = text(value).into_owned();
    }
}

fn free_opt(value: &mut Option<String>) {
    if let Some(value) = value {
        free(value);
    }
}

impl Stored for Run {
    fn stored(mut self) -> Self {
        free_opt(&mut self.output);
        free_opt(&mut self.error_message);
        self
    }
}

impl Stored for Attempt {
    fn stored(mut self) -> Self {
        free_opt(&mut self.error_message);
        self
    }
}

impl Stored for EffectRecord {
    fn stored(mut self) -> Self {
        free_opt(&mut self.response);
        free_opt(&mut self.error_message);
        self
    }
}

impl Stored for JournalEntry {
    fn stored(mut self) -> Self {
        free(&mut self.level);
        free(&mut self.event);
        free(&mut self.message);
        self
    }
}

impl Stored for Escalation {
    fn stored(mut self) -> Self {
        free(&mut self.summary);
        free_opt(&mut self.resolution_reason);
        free_opt(&mut self.resolved_by);
        self
    }
}

/// Compares `copy` with `source` through the ledger contract: every run with its attempts,
/// effects, checkpoints and journal; every escalation and breaker; the locks and call keys
/// named. Returns how many runs and effects compared equal, or says what differs.
pub fn verify_copy(
    source: &dyn Ledger,
    copy: &dyn Ledger,
    lock_keys: &[String],
    call_keys: &[String],
) -> Result<(usize, usize), LedgerError> {
    fn same<T: PartialEq + std::fmt::Debug>(what: &str, a: T, b: T) -> Result<(), LedgerError> {
        if a == b {
            Ok(())
        } else {
            // Whole tables can differ: the start of each side is enough to see how.
            let clip = |v: &T| {
                let shown = format!("{v:?}");
                match shown.char_indices().nth(600) {
                    Some((end, _)) => format!("{}…", &shown[..end]),
                    None => shown,
                }
            };
            Err(LedgerError::CopyDiffers {
                what: what.to_owned(),
                detail: format!("source {}, copy {}", clip(&a), clip(&b)),
            })
        }
    }
    let all = RunFilter {
        status: None,
        limit: usize::MAX,
    };
    let runs = source.runs(&all)?.stored();
    same("the list of runs", &runs, &copy.runs(&all)?)?;
    let mut effects = 0;
    for run in &runs {
        let id = &run.run_id;
        same(
            &format!("run {id}"),
            source.run(id)?.stored(),
            copy.run(id)?,
        )?;
        same(
            &format!("run {id}'s attempts"),
            source.attempts(id)?.stored(),
            copy.attempts(id)?,
        )?;
        let run_effects = source.effects_for_run(id)?.stored();
        same(
            &format!("run {id}'s effects"),
            &run_effects,
            &copy.effects_for_run(id)?,
        )?;
        for effect in &run_effects {
            same(
                &format!("effect {}/{}", effect.kind, effect.key),
                source.effect(&effect.kind, &effect.key)?.stored(),
                copy.effect(&effect.kind, &effect.key)?,
            )?;
            effects += 1;
        }
        same(
            &format!("run {id}'s checkpoints"),
            source.checkpoints(id)?,
            copy.checkpoints(id)?,
        )?;
        same(
            &format!("run {id}'s journal"),
            source.journal_entries(id)?.stored(),
            copy.journal_entries(id)?,
        )?;
    }
    let escalations = EscalationFilter {
        status: None,
        run_id: None,
        limit: usize::MAX,
    };
    same(
        "the escalations",
        source.escalations(&escalations)?.stored(),
        copy.escalations(&escalations)?,
    )?;
    same("the breakers", source.breakers()?, copy.breakers()?)?;
    for key in lock_keys {
        same(&format!("lock {key}"), source.lock(key)?, copy.lock(key)?)?;
    }
    for key in call_keys {
        same(
            &format!("call key {key}"),
            source.call_key(key)?,
            copy.call_key(key)?,
        )?;
    }
    Ok((runs.len(), effects))
}
