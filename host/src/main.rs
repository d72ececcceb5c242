//! The `tollgate` command line: parsing, and handing each command to its module in
//! `commands/`; the work is in the library.
//!
//! Everything printed for a human that a tool or a caller chose (descriptor, names, keys,
//! messages, errors, output) goes through `tollgate::text`, so no line of it can drive the
//! terminal or pose as a line of ours. JSON (`--json`, and the pretty JSON shown to humans)
//! is written with `text::to_json_pretty`: valid JSON holding the exact values.

mod commands;

use clap::{Parser, Subcommand};
use commands::{ExitStatus, Global, OutputFormat};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate::text;

/// A WebAssembly plugin host for sandboxed AI-agent tools, with exactly-once effects.
#[derive(Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    /// Operator config (connectors, tool policies). Default: ./tollgate.toml if present.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Ledger: a SQLite file, or a postgres:// URL. Default: the config's `ledger`, else
    /// .tollgate/ledger.db.
    #[arg(long, global = true, env = "TOLLGATE_LEDGER")]
    ledger: Option<PathBuf>,
    /// Cache of precompiled components. Default: .tollgate/cache.
    #[arg(long, global = true, env = "TOLLGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components on every load instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Start a new ledger in the empty file at the ledger path. An empty file is otherwise
    /// refused: it is what a truncated ledger looks like.
    #[arg(long, global = true)]
    init: bool,
    /// What a command prints on stdout: text for people, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output_format: OutputFormat,
    /// Print JSON for scripts instead of text (`--output-format json`).
    #[arg(long, global = true)]
    json: bool,
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
    Run(commands::run::RunArgs),
    /// Start the next attempt of an unfinished run, from its last checkpoint.
    Resume(commands::run::ResumeArgs),
    /// Show what a tool is, what it imports, and the policy it would need.
    Inspect(commands::inspect::InspectArgs),
    /// Validate an operator config (connectors and tool policies), naming the line of each
    /// problem.
    Policy {
        #[command(subcommand)]
        command: commands::policy::PolicyCommand,
    },
    /// List or show runs recorded in the ledger.
    Runs {
        #[command(subcommand)]
        command: commands::runs::RunsCommand,
    },
    /// The human queue: runs stopped for a decision, with their evidence.
    Escalations {
        #[command(subcommand)]
        command: commands::escalations::EscalationsCommand,
    },
    /// Approve the effect a run is waiting on (an approval escalation), and resume the run.
    Approve(commands::escalations::ApproveArgs),
    /// Reject the effect a run is waiting on; the run ends failed and nothing is dispatched.
    Reject(commands::escalations::RejectArgs),
    /// Serve the config's tools (each `[tools.<name>]` with a `component`) over MCP: on
    /// stdio, or on streamable HTTP at http://<ADDR>/mcp with --listen. Each tools/call is a
    /// recorded run. The config is read once; restart to change it.
    Mcp(commands::mcp::McpArgs),
    /// Run a long-lived node: MCP at http://<ADDR>/mcp, /healthz, /readyz and /metrics, and a
    /// recovery loop that resumes runs whose host died. Many nodes may share one PostgreSQL
    /// ledger. SIGTERM or Ctrl-C drains it.
    Serve(commands::serve::ServeArgs),
    /// The nodes serving this ledger (`tollgate serve` processes): live, stopped or dead,
    /// with their last heartbeat and the attempts and locks each holds.
    Nodes,
    /// Move a ledger: `ledger copy --from FILE --to postgres://…` copies a SQLite ledger's
    /// history into an empty PostgreSQL one and verifies the copy.
    Ledger {
        #[command(subcommand)]
        command: commands::ledger::LedgerCommand,
    },
    /// Build every plugin (Rust, Python, JavaScript) into a wasm32-wasip2 component; Python and
    /// JavaScript ones only when their sources changed. Needs plugins/setup.sh for those two.
    BuildPlugins(commands::build::BuildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = match init_tracing(cli.verbose, cli.log_format) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::Error.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Error.into();
        }
    };
    let status = match runtime.block_on(dispatch(cli)) {
        Ok(status) => status.into(),
        Err(e) => {
            commands::report_error(&e);
            ExitStatus::Error.into()
        }
    };
    // Outside the runtime: the exporter's last send blocks this thread, bounded.
    drop(runtime);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    status
}

/// Logs on stderr, filtered by -v or RUST_LOG; and, when an OTLP endpoint is configured,
/// the host's spans exported as traces, whatever the log level.
fn init_tracing(
    verbose: u8,
    format: LogFormat,
) -> Result<Option<tollgate::telemetry::Traces>, tollgate::telemetry::TelemetryError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match verbose {
        0 => "warn",
        1 => "info,tollgate=info",
        _ => "debug,wasmtime=info,cranelift=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        // Colours only on a terminal (and not under NO_COLOR): a log file or pipe gets no
        // escape sequences at all, not even ours.
        LogFormat::Text => logs
            .fmt_fields(text::LogFields)
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .boxed(),
        // JSON escapes every control inside its strings itself.
        LogFormat::Json => logs.json().boxed(),
    };
    let (traces, handle) = match tollgate::telemetry::otlp()? {
        Some((layer, handle)) => (Some(layer), Some(handle)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    Ok(handle)
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitStatus> {
    let global = Global {
        config: cli.config,
        ledger: cli.ledger,
        cache_dir: cli.cache_dir,
        no_cache: cli.no_cache,
        init: cli.init,
        output: if cli.json {
            OutputFormat::Json
        } else {
            cli.output_format
        },
    };
    match cli.command {
        Command::Run(args) => commands::run::run(&global, args).await,
        Command::Resume(args) => commands::run::resume(&global, args).await,
        Command::Inspect(args) => commands::inspect::inspect(&global, args).await,
        Command::Policy { command } => commands::policy::policy(command),
        Command::Runs { command } => commands::runs::runs(&global, command),
        Command::Escalations { command } => {
            commands::escalations::escalations(&global, command).await
        }
        Command::Approve(args) => commands::escalations::approve(&global, args).await,
        Command::Reject(args) => commands::escalations::reject(&global, args).await,
        Command::Mcp(args) => commands::mcp::mcp(&global, args).await,
        Command::Serve(args) => commands::serve::serve(&global, args).await,
        Command::Nodes => commands::nodes::nodes(&global).await,
        Command::Ledger { command } => commands::ledger::ledger(&global, command).await,
        Command::BuildPlugins(args) => commands::build::build_plugins(args),
    }
}
