//! `tollgate ledger copy`: moving a team's history from the SQLite file to a shared
//! PostgreSQL ledger.

use std::path::PathBuf;

use super::{ExitStatus, Global, print_json};
use anyhow::{Context, Result, bail};
use tollgate::ledger::{Location, PgLedger, PgOptions};

#[derive(clap::Subcommand)]
pub enum LedgerCommand {
    /// Copy a SQLite ledger's whole history (runs, attempts, effects, checkpoints, journal,
    /// locks, escalations, call keys and breakers) into an empty PostgreSQL ledger, in one
    /// transaction, then verify that the copy reads back the same: every effect key replays
    /// there as it does here. The source is only read (after migrating it, as any open does).
    Copy {
        /// The SQLite ledger file to copy.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL ledger to copy into, empty:
        /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
        #[arg(long)]
        to: String,
    },
}

pub async fn ledger(global: &Global, command: LedgerCommand) -> Result<ExitStatus> {
    match command {
        LedgerCommand::Copy { from, to } => {
            if !matches!(Location::parse(&from), Location::File(_)) {
                bail!("--from must be a SQLite ledger file, not a URL; --to takes the URL");
            }
            if !matches!(
                Location::parse(std::path::Path::new(&to)),
                Location::Postgres(_)
            ) {
                bail!(
                    "--to must be a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
                );
            }
            // Both ledgers block on their own threads; the copy itself reads the file here.
            let report = tokio::task::spawn_blocking(move || {
                let target = PgLedger::open(&to, PgOptions::default())?;
                target.copy_from_sqlite(&from)
            })
            .await
            .context("the copy task failed")??;
            if global.json() {
                let rows: serde_json::Map<String, serde_json::Value> = report
                    .rows
                    .iter()
                    .map(|(table, n)| ((*table).to_owned(), (*n).into()))
                    .collect();
                print_json(&serde_json::json!({
                    "rows": rows,
                    "runs_verified": report.runs_verified,
                    "effects_verified": report.effects_verified,
                }))?;
            } else {
                for (table, n) in &report.rows {
                    println!("{table:<12} {n:>10} row(s) copied");
                }
                println!(
                    "verified: {} run(s) and {} effect key(s) read back identically",
                    report.runs_verified, report.effects_verified
                );
            }
            Ok(ExitStatus::Success)
        }
    }
}
