//! The human queue from the command line: `escalations list|show|resolve`, `approve`,
//! `reject`.

use super::run::print_report;
use super::{ExitStatus, Global, LedgerUse, print_json};
use anyhow::{Result, bail};
use tollgate::Decision;
use tollgate::ledger::{EscalationFilter, EscalationStatus};
use tollgate::text::Escaped;

#[derive(clap::Subcommand)]
pub enum EscalationsCommand {
    /// Escalations, oldest first (open ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One escalation with its evidence packet (JSON).
    Show { id: i64 },
    /// Settle an escalation: exactly one of --retry, --mark-succeeded, --abandon.
    Resolve {
        id: i64,
        /// Resume the run. For an in-doubt effect: you checked downstream and it did NOT
        /// happen, so it is sent again under its key.
        #[arg(long, group = "decision")]
        retry: bool,
        /// The outcome (JSON) you verified downstream. For an in-doubt effect it is recorded
        /// as the effect's outcome and the run resumes, replaying it; otherwise it becomes
        /// the run's output.
        #[arg(long, group = "decision", value_name = "OUTCOME")]
        mark_succeeded: Option<String>,
        /// End the run as failed.
        #[arg(long, group = "decision")]
        abandon: bool,
        #[command(flatten)]
        decider: Decider,
    },
}

/// Why, and who.
#[derive(clap::Args)]
pub struct Decider {
    /// Why, journaled with the decision.
    #[arg(long)]
    reason: String,
    /// Who decides. Default: $USER.
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    id: i64,
    /// Why, journaled with the decision.
    #[arg(long, default_value = "approved")]
    reason: String,
    /// Who decides. Default: $USER.
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct RejectArgs {
    id: i64,
    #[command(flatten)]
    decider: Decider,
}

pub async fn escalations(global: &Global, command: EscalationsCommand) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Reads)?;
    match command {
        EscalationsCommand::List { all, limit } => {
            let filter = EscalationFilter {
                status: (!all).then_some(EscalationStatus::Open),
                run_id: None,
                limit,
            };
            let list = runtime.escalations(&filter).await?;
            if global.json() {
                print_json(&list)?;
            } else {
                for e in &list {
                    println!(
                        "#{:<5} {:<8} {:<17} {}  {}",
                        e.id,
                        e.status,
                        e.reason,
                        tollgate::clock::format_ms(e.created_at),
                        Escaped(&e.summary)
                    );
                }
                if list.is_empty() {
                    eprintln!("no escalations");
                }
            }
            Ok(ExitStatus::Success)
        }
        EscalationsCommand::Show { id } => {
            let e = runtime
                .escalation(id)
                .await?
                .ok_or(tollgate::EscalationError::NotFound(id))?;
            print_json(&e)?;
            Ok(ExitStatus::Success)
        }
        EscalationsCommand::Resolve {
            id,
            retry,
            mark_succeeded,
            abandon,
            decider,
        } => {
            let decision = match (retry, mark_succeeded, abandon) {
                (true, None, false) => Decision::Retry,
                (false, Some(outcome), false) => Decision::MarkSucceeded(outcome),
                (false, None, true) => Decision::Abandon,
                _ => bail!("pass exactly one of --retry, --mark-succeeded '<outcome>', --abandon"),
            };
            settle(global, id, decision, decider).await
        }
    }
}

pub async fn approve(global: &Global, args: ApproveArgs) -> Result<ExitStatus> {
    let decider = Decider {
        reason: args.reason,
        by: args.by,
    };
    settle(global, args.id, Decision::Approve, decider).await
}

pub async fn reject(global: &Global, args: RejectArgs) -> Result<ExitStatus> {
    settle(global, args.id, Decision::Reject, args.decider).await
}

async fn settle(
    global: &Global,
    id: i64,
    decision: Decision,
    decider: Decider,
) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Reads)?;
    let by = decider
        .by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let settled = runtime.settle(id, decision, &decider.reason, &by).await?;
    let e = &settled.escalation;
    eprintln!(
        "escalation #{} resolved: {} by {} (run {})",
        e.id,
        e.resolution.map_or("?".into(), |r| r.to_string()),
        Escaped(&by),
        Escaped(&e.run_id)
    );
    match &settled.report {
        Some(report) => print_report(report, global.json()),
        None => Ok(ExitStatus::Success),
    }
}
