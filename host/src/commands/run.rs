//! `tollgate run` and `tollgate resume`: one run of a tool, and what its report says.

use super::{ExitStatus, Global, LedgerUse, print_json};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tollgate::ledger::RunStatus;
use tollgate::text::{self, Escaped};
use tollgate::{RunError, RunReport};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The tool component (.wasm).
    plugin: PathBuf,
    /// JSON input.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the JSON input from a file (`-` for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Prefix of the run ID.
    #[arg(long, default_value = "run")]
    run_prefix: String,
    /// Retry failed attempts in-process under the tool's retry policy
    /// ([tools.<name>.retry]): backoff with jitter, Retry-After, budgets.
    #[arg(long)]
    retry: bool,
    /// Hold this business-object lock (e.g. `invoice:INV-1`) while the run acts,
    /// instead of the policy's `lock.key`. Effects carry its fencing token downstream.
    #[arg(long)]
    lock: Option<String>,
    /// How long to wait for the lock if another run holds it (0: fail at once).
    #[arg(long)]
    lock_wait_ms: Option<u64>,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The run to continue, as printed by `tollgate run`.
    run_id: String,
    /// The tool component; default: the file the run was started with.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Retry failed attempts in-process under the tool's retry policy, as `run --retry`
    /// does: an open circuit or a busy downstream is waited out, not failed on.
    #[arg(long)]
    retry: bool,
}

pub async fn run(global: &Global, args: RunArgs) -> Result<ExitStatus> {
    let input = read_input(args.input.as_deref(), args.input_file.as_deref())?;
    let runtime = global.runtime(LedgerUse::Records)?;
    let tool = runtime.load(&args.plugin).await?;
    let options = tollgate::RunOptions {
        prefix: args.run_prefix,
        lock: args.lock,
        lock_wait_ms: args.lock_wait_ms,
        ..tollgate::RunOptions::default()
    };
    let report = runtime
        .run_with_options(&tool, &input, &options, args.retry)
        .await;
    runtime.records_written().await;
    print_outcome(report, global.json())
}

pub async fn resume(global: &Global, args: ResumeArgs) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Reads)?;
    let tool = match &args.plugin {
        Some(path) => Some(runtime.load(path).await?),
        None => None,
    };
    let report = runtime
        .resume_with_retry(&args.run_id, tool.as_ref(), args.retry)
        .await;
    print_outcome(report, global.json())
}

/// A run's report, or the one run error that is not a usage error: an effect that went out
/// unrecorded gets its own exit code, and the run id and recovery, on stderr and in `--json`.
fn print_outcome(report: Result<RunReport, RunError>, json: bool) -> Result<ExitStatus> {
    match report {
        Ok(report) => print_report(&report, json),
        Err(RunError::OutcomeUnrecorded {
            run_id,
            attempt,
            effect,
            recovery,
        }) => {
            let message = format!("{effect}");
            if json {
                print_json(&serde_json::json!({
                    "run_id": run_id,
                    "attempt": attempt,
                    "status": "outcome_unrecorded",
                    "effect": effect.details(),
                    "error": message,
                    "recovery": recovery,
                }))?;
            }
            eprintln!(
                "error: run {} (attempt {attempt}): {}",
                Escaped(&run_id),
                Escaped(&message)
            );
            eprintln!(
                "the effect went out and its intent is recorded, so it is not lost: {}",
                Escaped(&recovery)
            );
            Ok(ExitStatus::OutcomeUnrecorded)
        }
        Err(e) => Err(e.into()),
    }
}

fn read_input(input: Option<&str>, file: Option<&Path>) -> Result<String> {
    match (input, file) {
        (Some(text), _) => Ok(text.to_owned()),
        (None, Some(path)) if path == Path::new("-") => {
            std::io::read_to_string(std::io::stdin()).context("reading input from stdin")
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading input file {}", path.display())),
        (None, None) => bail!("no input: pass --input '<json>' or --input-file <file>"),
    }
}

/// Prints a run's report (its output on stdout, what happened on stderr) and says how the
/// process exits.
pub fn print_report(report: &RunReport, json: bool) -> Result<ExitStatus> {
    if report.already_finished {
        eprintln!(
            "note: run {} had already finished as {}; nothing was started, this is its recorded ending",
            Escaped(&report.run_id),
            report.status
        );
    }
    let run_id = Escaped(&report.run_id);
    if json {
        print_json(report)?;
    } else {
        match &report.result {
            Ok(output) => {
                print_json(output)?;
                eprintln!(
                    "run {run_id} attempt {} succeeded in {} ms",
                    report.attempt, report.duration_ms
                );
            }
            Err(failure) => {
                eprintln!(
                    "error: {}: {} (run {run_id}, attempt {})",
                    failure.class,
                    Escaped(&failure.message),
                    report.attempt
                );
                if let Some(details) = &failure.details {
                    eprintln!("details: {}", text::to_json(details)?);
                }
                next_step(report, &run_id.to_string());
            }
        }
    }
    Ok(exit_status(report))
}

/// What a person does next about a run that did not succeed.
fn next_step(report: &RunReport, run_id: &str) {
    let escalation = report
        .result
        .as_ref()
        .err()
        .and_then(|f| f.details.as_ref())
        .and_then(|d| d.get("escalation_id"))
        .and_then(serde_json::Value::as_i64);
    match (report.status, escalation) {
        (RunStatus::Running, _) => {
            eprintln!("the run can be resumed: tollgate resume {run_id}")
        }
        (RunStatus::InDoubt, _) => eprintln!(
            "the run is in doubt: see `tollgate runs show {run_id}` and `tollgate escalations list`"
        ),
        (RunStatus::WaitingApproval, Some(id)) => eprintln!(
            "the run waits for approval: `tollgate approve {id}` or `tollgate reject {id} --reason …`"
        ),
        (RunStatus::Escalated | RunStatus::WaitingApproval, _) => eprintln!(
            "the run waits for a human ({}): `tollgate escalations list`",
            report.status
        ),
        _ => {}
    }
}

fn exit_status(report: &RunReport) -> ExitStatus {
    match (&report.result, report.status) {
        (Ok(_), _) => ExitStatus::Success,
        (Err(_), RunStatus::Running) => ExitStatus::Resumable,
        (Err(_), RunStatus::InDoubt) => ExitStatus::InDoubt,
        (Err(_), RunStatus::Escalated | RunStatus::WaitingApproval) => ExitStatus::WaitsForHuman,
        (Err(_), _) => ExitStatus::RunFailed,
    }
}
