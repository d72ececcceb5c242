//! The SQLite schema history: numbered migrations and the code that applies them.
//!
//! Invariant: `PRAGMA user_version` equals the number of migrations applied, and each migration
//! commits in one transaction together with its version bump, so a crash never leaves a
//! half-migrated file. Released migrations are never edited; a change is a new entry.

use rusqlite::{Connection, TransactionBehavior};

use super::error::SqlContext;
use crate::error::LedgerError;

/// Marks a SQLite file as a Tollgate ledger (`PRAGMA application_id`): ASCII "TLGT".
pub(super) const APPLICATION_ID: i32 = 0x544C_4754;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_locks.sql"),
    include_str!("migrations/0003_escalations.sql"),
    include_str!("migrations/0004_breakers.sql"),
    include_str!("migrations/0005_call_keys.sql"),
    include_str!("migrations/0006_breakers_per_tool.sql"),
    include_str!("migrations/0007_typed_run_facts.sql"),
    include_str!("migrations/0008_nodes.sql"),
];

/// The schema version this build writes and understands.
pub(super) const LATEST_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn user_version(conn: &Connection) -> Result<u32, LedgerError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .context("reading the schema version")?;
    u32::try_from(version)
        .map_err(|_| LedgerError::Internal(format!("schema version {version} is out of range")))
}

/// Applies migrations until the file is at `target`, one transaction per migration.
pub(super) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), LedgerError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a schema migration")?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let current = user_version(&tx)?;
        if current >= target {
            tx.commit().context("ending a schema migration")?;
            return Ok(());
        }
        let next = current + 1;
        let sql = usize::try_from(current)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
            .ok_or_else(|| LedgerError::Internal(format!("no migration {next}")))?;
        tx.execute_batch(sql)
            .context(&format!("applying schema migration {next}"))?;
        if current == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .context("marking the file as a Tollgate ledger")?;
        }
        tx.pragma_update(None, "user_version", next)
            .context("recording the schema version")?;
        tx.commit()
            .context(&format!("committing schema migration {next}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_version_counts_every_migration() {
        assert_eq!(LATEST_VERSION as usize, MIGRATIONS.len());
        const { assert!(LATEST_VERSION >= 1) };
    }

    #[test]
    fn migrating_an_empty_database_reaches_latest_and_marks_it_ours() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, LATEST_VERSION).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .unwrap();
        assert_eq!(app_id, APPLICATION_ID);
        // Migrating again is a no-op.
        migrate_to(&mut conn, LATEST_VERSION).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
    }

    #[test]
    fn migrating_stops_at_the_target_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        for target in 1..=LATEST_VERSION {
            migrate_to(&mut conn, target).unwrap();
            assert_eq!(user_version(&conn).unwrap(), target);
        }
    }

    fn insert_run(conn: &Connection, run_id: &str, status: &str) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO runs (run_id, tool, input, status, created_at, updated_at) \
             VALUES (?1, 't', '{}', ?2, 1, 1)",
            [run_id, status],
        )
    }

    #[test]
    fn runs_accept_the_parked_statuses_only_from_migration_3() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 2).unwrap();
        assert!(insert_run(&conn, "early", "escalated").is_err());
        migrate_to(&mut conn, 3).unwrap();
        insert_run(&conn, "a", "escalated").unwrap();
        insert_run(&conn, "b", "waiting_approval").unwrap();
        assert!(insert_run(&conn, "c", "parked").is_err());
        // The rebuilt table keeps its indexes under their original names.
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'runs' \
                 AND sql IS NOT NULL ORDER BY name",
            )
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .unwrap();
        assert_eq!(indexes, ["runs_by_created", "runs_by_status_created"]);
    }

    #[test]
    fn a_run_has_at_most_one_open_escalation_in_the_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, LATEST_VERSION).unwrap();
        insert_run(&conn, "r", "running").unwrap();
        let open = |conn: &Connection| {
            conn.execute(
                "INSERT INTO escalations (run_id, reason, summary, evidence, status, created_at) \
                 VALUES ('r', 'approval', 's', '{}', 'open', 1)",
                [],
            )
        };
        open(&conn).unwrap();
        assert!(open(&conn).is_err());
        conn.execute(
            "UPDATE escalations SET status = 'resolved', resolution = 'approved'",
            [],
        )
        .unwrap();
        open(&conn).unwrap();
        // A resolution and the open status exclude each other.
        assert!(
            conn.execute(
                "UPDATE escalations SET resolution = 'retry' WHERE status = 'open'",
                []
            )
            .is_err()
        );
    }
}
