//! `tollgate runs list` and `tollgate runs show`: what the ledger recorded.

use super::{ExitStatus, Global, LedgerUse, print_json};
use anyhow::{Result, anyhow};
use tollgate::ledger::{RunFilter, RunStatus};
use tollgate::text::Escaped;

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs with this status (running, succeeded, failed, in_doubt, escalated,
        /// waiting_approval).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A run's attempts, effects, checkpoints and journal.
    Show {
        /// The run to show.
        run_id: String,
    },
}

pub fn runs(global: &Global, command: RunsCommand) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Reads)?;
    match command {
        RunsCommand::List { status, limit } => {
            let status = status.as_deref().map(parse_status).transpose()?;
            let runs = runtime.ledger().runs(&RunFilter { status, limit })?;
            if global.json() {
                print_json(&runs)?;
            } else {
                println!(
                    "{:<58} {:<16} {:<16} {:>8}  updated",
                    "run", "tool", "status", "attempts"
                );
                for run in runs {
                    println!(
                        "{:<58} {:<16} {:<16} {:>8}  {}",
                        Escaped(&run.run_id),
                        Escaped(&run.tool),
                        run.status.to_string(),
                        run.attempts,
                        tollgate::clock::format_ms(run.updated_at)
                    );
                }
            }
        }
        RunsCommand::Show { run_id } => {
            let story = runtime.story(&run_id)?;
            if global.json() {
                print_json(&story)?;
            } else {
                // Escapes what it shows itself (see `RunStory`'s `Display`).
                print!("{story}");
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// A status as `RunStatus` names it; `-` may stand for `_`.
fn parse_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(&s.replace('-', "_")).ok_or_else(|| {
        anyhow!(
            "unknown status `{}`: use running, succeeded, failed, in_doubt, escalated or waiting_approval",
            Escaped(s)
        )
    })
}
