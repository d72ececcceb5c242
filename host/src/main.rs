//! The `tollgate` command line: parsing and printing only; the work is in the library.
//!
//! Everything printed for a human that a tool or a caller chose (descriptor, names, keys,
//! messages, errors, output) goes through `tollgate::text`, so no line of it can drive the
//! terminal or pose as a line of ours. JSON (`--json`, and the pretty JSON shown to humans)
//! is written with `text::to_json_pretty`: valid JSON holding the exact values.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tollgate::ledger::{EscalationFilter, EscalationStatus, RunFilter, RunStatus};
use tollgate::text::{self, Escaped};
use tollgate::{Config, Decision, RunReport, Runtime};

/// A WebAssembly plugin host for sandboxed AI-agent tools, with exactly-once effects.
#[derive(Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    /// Operator config (connectors, tool policies). Default: ./tollgate.toml if present.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Ledger file. Default: the config's `ledger`, else .tollgate/ledger.db.
    #[arg(long, global = true, env = "TOLLGATE_LEDGER")]
    ledger: Option<PathBuf>,
    /// Cache of precompiled components. Default: .tollgate/cache.
    #[arg(long, global = true, env = "TOLLGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components on every load instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// More logging on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a tool on JSON input; prints its output and the run ID.
    Run {
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
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start the next attempt of an unfinished run, from its last checkpoint.
    Resume {
        /// The run to continue, as printed by `tollgate run`.
        run_id: String,
        /// The tool component; default: the file the run was started with.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what a tool is, what it imports, and the policy it would need.
    Inspect {
        /// The tool component (.wasm).
        plugin: PathBuf,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate an operator config (connectors and tool policies), naming the line of each
    /// problem.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List or show runs recorded in the ledger.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The human queue: runs stopped for a decision, with their evidence.
    Escalations {
        #[command(subcommand)]
        command: EscalationsCommand,
    },
    /// Approve the effect a run is waiting on (an approval escalation), and resume the run.
    Approve {
        id: i64,
        /// Why, journaled with the decision.
        #[arg(long, default_value = "approved")]
        reason: String,
        /// Who decides. Default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject the effect a run is waiting on; the run ends failed and nothing is dispatched.
    Reject {
        id: i64,
        /// Why, journaled with the decision.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Serve the config's tools (each `[tools.<name>]` with a `component`) over MCP: on
    /// stdio, or on streamable HTTP at http://<ADDR>/mcp with --listen. Each tools/call is a
    /// recorded run. The config is read once; restart to change it.
    Mcp {
        /// Serve streamable HTTP on this local address (e.g. 127.0.0.1:8765) instead of stdio.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Build every plugin (Rust, Python, JavaScript) into a wasm32-wasip2 component; Python and
    /// JavaScript ones only when their sources changed. Needs plugins/setup.sh for those two.
    BuildPlugins {
        /// The plugins directory: a cargo workspace of Rust plugins, plus Python (`app.py`)
        /// and JavaScript (`index.js`) plugin directories.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a config file: every problem with its line; exit 0 when it is valid.
    Check {
        /// The config file (tollgate.toml).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum EscalationsCommand {
    /// Escalations, oldest first (open ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
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
        /// Why, journaled with the decision.
        #[arg(long)]
        reason: String,
        /// Who decides. Default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs with this status (running, succeeded, failed, in_doubt).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A run's attempts, effects, checkpoints and journal.
    Show {
        /// The run to show.
        run_id: String,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Exit codes: 0 success; 1 error before or around the run; 3 the run failed for good;
/// 4 the attempt failed but the run can be resumed; 5 the run is in doubt (needs a human);
/// 6 the run waits for a human decision (escalated, or waiting for approval).
fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            // The errors that quote a tool's text escape it where they quote it (only there
            // is a tool's newline told apart from the error's own lines); this pass catches
            // controls in text from other crates and keeps the error's own lines.
            eprintln!(
                "error: {}",
                text::escape_keeping_newlines(&format!("{e:#}"))
            );
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info,tollgate=info",
        _ => "debug,wasmtime=info,cranelift=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only on a terminal (and not under NO_COLOR): a log file or pipe gets no
        // escape sequences at all, not even ours.
        LogFormat::Text => builder
            .fmt_fields(text::LogFields)
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .init(),
        // JSON escapes every control inside its strings itself.
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::BuildPlugins { dir } => build_plugins(&dir),
        Command::Policy {
            command: PolicyCommand::Check { ref file },
        } => {
            let config = tollgate::Config::load(file)?;
            let tools: Vec<&str> = config.tools.keys().map(String::as_str).collect();
            println!(
                "{}: valid ({} connector(s); policies for: {})",
                file.display(),
                config.connectors.len(),
                if tools.is_empty() {
                    "no tool".to_owned()
                } else {
                    tools.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { ref plugin, json } => {
            let runtime = runtime(&cli)?;
            let tool = runtime.inspect(plugin).await?;
            let policy = tool.policy_skeleton();
            let fits = tool
                .check_policy(&runtime.config().policy_for(&tool.descriptor.name))
                .err()
                .map(|e| e.to_string());
            if json {
                let value = serde_json::json!({
                    "path": tool.path,
                    "digest": tool.digest,
                    "descriptor": tool.descriptor,
                    "imports": tool.imports,
                    "exports": tool.exports,
                    "cache": tool.cache,
                    "policy_skeleton": policy,
                    "refused_by_current_policy": fits,
                });
                println!("{}", text::to_json_pretty(&value)?);
            } else {
                let d = &tool.descriptor;
                println!(
                    "{} {}  {}",
                    Escaped(&d.name),
                    Escaped(&d.version),
                    Escaped(&d.description)
                );
                println!("component  {}", Escaped(tool.path.display().to_string()));
                println!("sha256     {}", tool.digest);
                println!("exports    {}", Escaped(tool.exports.join(", ")));
                println!("imports");
                for import in &tool.imports {
                    println!("  {}", Escaped(import));
                }
                println!(
                    "effects    {}",
                    Escaped(if d.effects.is_empty() {
                        "(none)".to_owned()
                    } else {
                        d.effects.join(", ")
                    })
                );
                if !d.capabilities.is_empty() {
                    println!("asks for   {}", Escaped(d.capabilities.join(", ")));
                }
                println!("input schema\n{}", text::to_json_pretty(&d.input_schema)?);
                println!(
                    "\npolicy it needs (add to tollgate.toml, with a [connectors.\"<kind>\"] per effect):\n{}",
                    text::escape_keeping_newlines(&policy)
                );
                if let Some(refusal) = fits {
                    println!(
                        "the current policy refuses it: {}",
                        text::escape_keeping_newlines(&refusal)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            ref plugin,
            ref input,
            ref input_file,
            ref run_prefix,
            retry,
            ref lock,
            lock_wait_ms,
            json,
        } => {
            let input = read_input(input.as_deref(), input_file.as_deref())?;
            let runtime = runtime(&cli)?;
            let tool = runtime.load(plugin).await?;
            let options = tollgate::RunOptions {
                prefix: run_prefix.clone(),
                lock: lock.clone(),
                lock_wait_ms,
                ..tollgate::RunOptions::default()
            };
            let report = runtime
                .run_with_options(&tool, &input, &options, retry)
                .await?;
            print_report(&report, json)
        }
        Command::Escalations { ref command } => escalations(&runtime(&cli)?, command).await,
        Command::Mcp { listen } => {
            let config_dir = cli
                .config
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let server = tollgate::mcp::McpServer::load(runtime(&cli)?, &config_dir).await?;
            match listen {
                None => tollgate::mcp::serve_stdio(server).await?,
                Some(addr) => {
                    let names = server.tool_names().join(", ");
                    tollgate::mcp::serve_http(
                        server,
                        addr,
                        |bound| eprintln!("tollgate mcp: serving {names} on http://{bound}/mcp"),
                        async {
                            _ = tokio::signal::ctrl_c().await;
                        },
                    )
                    .await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            id,
            ref reason,
            ref by,
        } => {
            settle(
                &runtime(&cli)?,
                id,
                Decision::Approve,
                reason,
                by.as_deref(),
            )
            .await
        }
        Command::Reject {
            id,
            ref reason,
            ref by,
        } => settle(&runtime(&cli)?, id, Decision::Reject, reason, by.as_deref()).await,
        Command::Resume {
            ref run_id,
            ref plugin,
            json,
        } => {
            let runtime = runtime(&cli)?;
            let tool = match plugin {
                Some(path) => Some(runtime.load(path).await?),
                None => None,
            };
            let report = runtime.resume(run_id, tool.as_ref()).await?;
            print_report(&report, json)
        }
        Command::Runs {
            command:
                RunsCommand::List {
                    ref status,
                    limit,
                    json,
                },
        } => {
            let runtime = runtime(&cli)?;
            let status = status.as_deref().map(parse_status).transpose()?;
            let runs = runtime.ledger().runs(&RunFilter { status, limit })?;
            if json {
                println!("{}", text::to_json_pretty(&runs)?);
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            command: RunsCommand::Show { ref run_id, json },
        } => {
            let runtime = runtime(&cli)?;
            let story = runtime.story(run_id)?;
            if json {
                println!("{}", text::to_json_pretty(&story)?);
            } else {
                // Escapes what it shows itself (see `RunStory`'s `Display`).
                print!("{story}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn escalations(runtime: &Runtime, command: &EscalationsCommand) -> Result<ExitCode> {
    match command {
        EscalationsCommand::List { all, limit, json } => {
            let filter = EscalationFilter {
                status: (!all).then_some(EscalationStatus::Open),
                run_id: None,
                limit: *limit,
            };
            let list = runtime.escalations(&filter)?;
            if *json {
                println!("{}", text::to_json_pretty(&list)?);
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
            Ok(ExitCode::SUCCESS)
        }
        EscalationsCommand::Show { id } => {
            let e = runtime
                .escalation(*id)?
                .with_context(|| format!("escalation #{id} does not exist"))?;
            println!("{}", text::to_json_pretty(&e)?);
            Ok(ExitCode::SUCCESS)
        }
        EscalationsCommand::Resolve {
            id,
            retry,
            mark_succeeded,
            abandon,
            reason,
            by,
        } => {
            let decision = match (retry, mark_succeeded, abandon) {
                (true, None, false) => Decision::Retry,
                (false, Some(outcome), false) => Decision::MarkSucceeded(outcome.clone()),
                (false, None, true) => Decision::Abandon,
                _ => bail!("pass exactly one of --retry, --mark-succeeded '<outcome>', --abandon"),
            };
            settle(runtime, *id, decision, reason, by.as_deref()).await
        }
    }
}

async fn settle(
    runtime: &Runtime,
    id: i64,
    decision: Decision,
    reason: &str,
    by: Option<&str>,
) -> Result<ExitCode> {
    let by = by
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let settled = runtime.settle(id, decision, reason, &by).await?;
    let e = &settled.escalation;
    eprintln!(
        "escalation #{} resolved: {} by {} (run {})",
        e.id,
        e.resolution.map_or("?".into(), |r| r.to_string()),
        Escaped(&by),
        Escaped(&e.run_id)
    );
    match &settled.report {
        Some(report) => print_report(report, false),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn runtime(cli: &Cli) -> Result<Runtime> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if Path::new("tollgate.toml").exists() => Config::load(Path::new("tollgate.toml"))?,
        None => Config::default(),
    };
    let mut builder = Runtime::builder().config(config);
    if let Some(ledger) = &cli.ledger {
        builder = builder.ledger_path(ledger);
    }
    if let Some(dir) = &cli.cache_dir {
        builder = builder.cache_dir(dir);
    }
    if cli.no_cache {
        builder = builder.without_cache();
    }
    Ok(builder.build()?)
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

fn parse_status(s: &str) -> Result<RunStatus> {
    Ok(match s {
        "running" => RunStatus::Running,
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "in_doubt" | "in-doubt" => RunStatus::InDoubt,
        "escalated" => RunStatus::Escalated,
        "waiting_approval" | "waiting-approval" => RunStatus::WaitingApproval,
        other => bail!(
            "unknown status `{other}`: use running, succeeded, failed, in_doubt, escalated or waiting_approval"
        ),
    })
}

fn print_report(report: &RunReport, json: bool) -> Result<ExitCode> {
    if report.already_finished {
        eprintln!(
            "note: run {} had already finished as {}; nothing was started, this is its recorded ending",
            Escaped(&report.run_id),
            report.status
        );
    }
    let run_id = Escaped(&report.run_id);
    if json {
        println!("{}", text::to_json_pretty(report)?);
    } else {
        match &report.result {
            Ok(output) => {
                println!("{}", text::to_json_pretty(output)?);
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
                match report.status {
                    RunStatus::Running => {
                        eprintln!("the run can be resumed: tollgate resume {run_id}")
                    }
                    RunStatus::InDoubt => eprintln!(
                        "the run is in doubt: see `tollgate runs show {run_id}` and `tollgate escalations list`"
                    ),
                    RunStatus::Escalated | RunStatus::WaitingApproval => eprintln!(
                        "the run waits for a human ({}): `tollgate escalations list`",
                        report.status
                    ),
                    _ => {}
                }
            }
        }
    }
    Ok(match (&report.result, report.status) {
        (Ok(_), _) => ExitCode::SUCCESS,
        (Err(_), RunStatus::Running) => ExitCode::from(4),
        (Err(_), RunStatus::InDoubt) => ExitCode::from(5),
        (Err(_), RunStatus::Escalated | RunStatus::WaitingApproval) => ExitCode::from(6),
        (Err(_), _) => ExitCode::from(3),
    })
}

fn build_plugins(dir: &Path) -> Result<ExitCode> {
    let workspace = tollgate_plugin_build::Workspace::new(dir);
    let built = workspace.build_all(|source| {
        eprintln!(
            "building {} ({}, {})",
            source.name,
            source.language.as_str(),
            source.dir.display()
        );
    })?;
    if built.is_empty() {
        bail!(
            "{} holds no plugin (a Cargo.toml workspace, or directories with app.py or index.js): \
             pass --dir <plugins directory>",
            dir.display()
        );
    }
    for plugin in built {
        println!(
            "{:<11} {:<20} {}",
            plugin.language.as_str(),
            plugin.name,
            plugin.wasm.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
