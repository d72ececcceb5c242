//! The PostgreSQL schema history: numbered migrations, applied at open under an advisory
//! lock so that many processes starting at once migrate once.
//!
//! Invariant: `tollgate_schema.version` equals the number of migrations applied; the
//! migrations one open applies commit in one transaction together with the version bump
//! (PostgreSQL's DDL is transactional). Released migrations are never edited; a change is a
//! new entry.

use postgres::Client;

use super::error::PgContext;
use crate::error::LedgerError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_journal_entry_key.sql"),
    include_str!("migrations/0003_nodes.sql"),
];

/// The schema version this build writes and understands.
pub(super) const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Every process takes this advisory lock (ASCII "TLGT" + "MIGR") before looking at the
/// schema, so the look and the migration are one exclusive step.
const MIGRATION_LOCK: i64 = 0x544C_4754_4D49_4752;

/// Brings the database to [`LATEST_VERSION`], creating the ledger if `create` allows; refuses
/// a schema newer than this build.
pub(super) fn migrate(client: &mut Client, create: bool, ledger: &str) -> Result<(), LedgerError> {
    let mut tx = client
        .transaction()
        .context("starting a schema migration")?;
    // A `lock_timeout` in the ledger's URL is for the ledger's own statements: waiting here
    // for another node to finish migrating is start-up, not contention, and must not fail
    // (the statement timeout still bounds it). The migration itself runs under the URL's.
    tx.batch_execute("SET LOCAL lock_timeout = 0")
        .context("starting a schema migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .context("waiting for the schema migration lock")?;
    tx.batch_execute("SET LOCAL lock_timeout TO DEFAULT")
        .context("starting a schema migration")?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('tollgate_schema') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .context("looking for the ledger's schema")?;
    let current: i64 = if exists {
        tx.query_one("SELECT version FROM tollgate_schema", &[])
            .and_then(|row| row.try_get(0))
            .context("reading the schema version")?
    } else if create {
        tx.batch_execute(
            "CREATE TABLE tollgate_schema (version BIGINT NOT NULL); \
             INSERT INTO tollgate_schema VALUES (0);",
        )
        .context("creating the schema version table")?;
        0
    } else {
        return Err(LedgerError::Missing {
            path: ledger.into(),
        });
    };
    if current > LATEST_VERSION {
        return Err(LedgerError::NewerSchema {
            found: u32::try_from(current).unwrap_or(u32::MAX),
            supported: u32::try_from(LATEST_VERSION).unwrap_or(u32::MAX),
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let next = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        tx.batch_execute(sql)
            .context(&format!("applying schema migration {next}"))?;
        tx.execute("UPDATE tollgate_schema SET version = $1", &[&next])
            .context("recording the schema version")?;
    }
    tx.commit().context("committing the schema migration")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{PgLedger, PgOptions};
    use std::time::Duration;

    /// A node whose URL sets a short `lock_timeout` still starts while another node holds
    /// the migration lock for longer than that: it waits its turn instead of failing.
    #[test]
    fn a_url_lock_timeout_does_not_cut_the_wait_for_another_nodes_migration() {
        let scratch = crate::scratch::PgScratch::new();
        let url = scratch.url();
        let mut holder = Client::connect(&url, postgres::NoTls).expect("connect");
        let mut tx = holder.transaction().expect("begin");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .expect("take the migration lock");
        std::thread::scope(|scope| {
            let short = format!("{url}%20-clock_timeout%3D100");
            let opening = scope.spawn(move || PgLedger::open(&short, PgOptions::default()));
            std::thread::sleep(Duration::from_millis(500));
            assert!(!opening.is_finished(), "the open waits for the lock");
            tx.commit().expect("release the lock");
            opening
                .join()
                .expect("no panic")
                .expect("the ledger opens once the lock is free");
        });
    }
}
