//! The SQLite schema history: numbered migrations and the code that applies them.
//!
//! Invariant: `PRAGMA user_version` equals the number of migrations applied, and each migration
//! commits in one transaction together with its version bump, so a crash never leaves a
//! half-migrated file. Released migrations are never edited; a change is a new entry.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{LedgerError, SqlContext};

/// Marks a SQLite file as a Tollgate ledger (`PRAGMA application_id`): ASCII "TLGT".
pub(super) const APPLICATION_ID: i32 = 0x544C_4754;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
pub(super) const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

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
}
