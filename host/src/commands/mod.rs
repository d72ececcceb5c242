//! The CLI's commands, one module per command group (as uv's `commands/`), and what they
//! share: the global options, the exit status, the output format, and the hints the binary
//! adds to library errors (the library never names a flag or a command).

pub mod build;
pub mod escalations;
pub mod inspect;
pub mod ledger;
pub mod mcp;
pub mod nodes;
pub mod policy;
pub mod run;
pub mod runs;
pub mod serve;

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tollgate::ledger::{Create, LedgerError, LedgerOptions, SqliteLedger};
use tollgate::text;
use tollgate::{Config, EscalationError, LoadError, RunError, Runtime};

/// How `tollgate` exits. Scripts and supervisors branch on these codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked; a run succeeded.
    Success,
    /// Bad usage or input, or an error before or around the run: one line on stderr says
    /// what and how to fix it.
    Error,
    /// The run failed for good.
    RunFailed,
    /// The attempt failed and the run may be resumed.
    Resumable,
    /// An effect is in doubt and needs a human.
    InDoubt,
    /// The run waits for a human decision (escalated, or waiting for approval).
    WaitsForHuman,
    /// An effect was sent downstream but its outcome could not be recorded; the run is
    /// resumed once the ledger is writable again.
    OutcomeUnrecorded,
}

impl ExitStatus {
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Error => 1,
            Self::RunFailed => 3,
            Self::Resumable => 4,
            Self::InDoubt => 5,
            Self::WaitsForHuman => 6,
            Self::OutcomeUnrecorded => 7,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// What a command prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: tool-controlled text escaped.
    Text,
    /// For scripts: exact JSON.
    Json,
}

/// The options every command shares.
#[derive(Debug)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub ledger: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
    pub output: OutputFormat,
    /// Initialise an empty file at the ledger path as a new ledger (`--init`).
    pub init: bool,
}

/// What a command needs of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerUse {
    /// It records runs: the ledger is made if there is none yet.
    Records,
    /// It reads or settles what is recorded: with no ledger there is nothing to read, and
    /// making one would show an empty ledger instead of saying the path is wrong.
    Reads,
    /// It never touches the ledger (`inspect`): a private scratch ledger stands in.
    Ignores,
}

impl Global {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// The operator config: `--config`, else `./tollgate.toml` if present, else none.
    pub fn config(&self) -> Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::load(path)?,
            None if Path::new("tollgate.toml").exists() => {
                Config::load(Path::new("tollgate.toml"))?
            }
            None => Config::default(),
        })
    }

    /// The directory relative component paths in the config are taken from.
    pub fn config_dir(&self) -> PathBuf {
        self.config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub fn runtime(&self, ledger: LedgerUse) -> Result<Runtime> {
        let mut builder = Runtime::builder().config(self.config()?);
        if let Some(path) = &self.ledger {
            builder = builder.ledger_path(path);
        }
        let create = match (ledger, self.init) {
            (_, true) => Create::IfAbsentOrEmpty,
            (LedgerUse::Records, false) => Create::IfAbsent,
            (LedgerUse::Reads, false) => Create::Never,
            (LedgerUse::Ignores, false) => {
                builder = builder.ledger(Arc::new(SqliteLedger::open_in_memory()?));
                Create::Never
            }
        };
        builder = builder.ledger_options(LedgerOptions {
            create,
            ..LedgerOptions::default()
        });
        if let Some(dir) = &self.cache_dir {
            builder = builder.cache_dir(dir);
        }
        if self.no_cache {
            builder = builder.without_cache();
        }
        Ok(builder.build()?)
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", text::to_json_pretty(value)?);
    Ok(())
}

/// Prints a failed command's error on stderr, with a hint naming the command or flag that
/// fixes it when there is one.
pub fn report_error(error: &anyhow::Error) {
    // The errors that quote a tool's text escape it where they quote it (only there is a
    // tool's newline told apart from the error's own lines); this pass catches controls in
    // text from other crates and keeps the error's own lines.
    eprintln!(
        "error: {}",
        text::escape_keeping_newlines(&format!("{error:#}"))
    );
    if let Some(hint) = hint(error) {
        eprintln!("hint: {hint}");
    }
}

/// The CLI's way out of a library error, for the errors that have one.
fn hint(error: &anyhow::Error) -> Option<String> {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<LedgerError>() {
            return ledger_hint(e);
        }
        // Transparent variants forward `source()` past the error they wrap, so the chain
        // never shows it: unwrap them here.
        if let Some(tollgate::RuntimeError::Ledger(e)) = cause.downcast_ref() {
            return ledger_hint(e);
        }
        if let Some(e) = cause.downcast_ref::<EscalationError>() {
            return escalation_hint(e);
        }
        if let Some(e) = cause.downcast_ref::<tollgate::SettleError>() {
            return match e {
                tollgate::SettleError::Escalation(e) => escalation_hint(e),
                tollgate::SettleError::Resume { escalation, error } => {
                    run_hint(error).or_else(|| {
                        Some(format!(
                            "the run stays resumable: `tollgate resume {}`",
                            tollgate::text::Escaped(&escalation.run_id)
                        ))
                    })
                }
            };
        }
        if let Some(e) = cause.downcast_ref::<RunError>() {
            return run_hint(e);
        }
        if let Some(e) = cause.downcast_ref::<LoadError>() {
            return match e {
                LoadError::NotFound(_) => {
                    Some("`tollgate build-plugins` builds the bundled tools".into())
                }
                _ => None,
            };
        }
        if cause
            .downcast_ref::<tollgate::engine::CacheError>()
            .is_some()
        {
            return Some("pass --cache-dir <dir> to use another cache, or --no-cache".into());
        }
    }
    None
}

fn ledger_hint(e: &LedgerError) -> Option<String> {
    match e {
        LedgerError::NotALedger { .. }
        | LedgerError::Corrupt { .. }
        | LedgerError::NewerSchema { .. } => {
            Some("point --ledger (or TOLLGATE_LEDGER) at another file".into())
        }
        LedgerError::EmptyFile { .. } => Some(
            "restore the ledger, point --ledger (or TOLLGATE_LEDGER) at it, or pass --init to start a new ledger in this empty file"
                .into(),
        ),
        LedgerError::Missing { .. } => Some(
            "run from the directory that holds .tollgate/, or point --ledger (or TOLLGATE_LEDGER) at the ledger"
                .into(),
        ),
        LedgerError::ReadOnly { .. } => Some(
            "give this user write access to the ledger file, the -wal and -shm files beside it and their directory, or run tollgate as the user that owns them"
                .into(),
        ),
        LedgerError::DiskFull { .. } => Some(
            "free space on that disk, then resume the run; what was recorded before is intact"
                .into(),
        ),
        LedgerError::Unavailable { .. } => Some(
            "`pg_isready -d URL` checks the server; nothing is dispatched while the ledger cannot record it, so resume the run once the database answers"
                .into(),
        ),
        LedgerError::BadLocation { .. } => Some(
            "give --ledger (or TOLLGATE_LEDGER, or the config's `ledger`) a file path or a postgres:// URL"
                .into(),
        ),
        LedgerError::RunNotFound { .. } => {
            Some("`tollgate runs list` shows the runs this ledger knows".into())
        }
        LedgerError::RunParked { run_id, .. } => Some(format!(
            "`tollgate escalations list` shows what run {} waits on",
            text::Escaped(run_id)
        )),
        LedgerError::EscalationNotFound { .. } | LedgerError::EscalationResolved { .. } => {
            Some("`tollgate escalations list --all` shows every escalation".into())
        }
        _ => None,
    }
}

fn escalation_hint(e: &EscalationError) -> Option<String> {
    match e {
        EscalationError::NotFound(_) => {
            Some("`tollgate escalations list` shows the open ones".into())
        }
        EscalationError::IsApproval { id } => Some(format!(
            "answer it with `tollgate approve {id}` or `tollgate reject {id} --reason …`"
        )),
        EscalationError::NotApproval { id, .. } => Some(format!(
            "settle it with `tollgate escalations resolve {id} --retry|--mark-succeeded '<json>'|--abandon --reason …`"
        )),
        EscalationError::NoReason => Some("pass --reason '<why>'".into()),
        EscalationError::Ledger(e) => ledger_hint(e),
        EscalationError::AlreadyResolved { .. } | EscalationError::OutcomeNotJson(_) => None,
    }
}

fn run_hint(e: &RunError) -> Option<String> {
    match e {
        RunError::UnknownComponent(_) => Some("pass --plugin <file.wasm>".into()),
        RunError::LockKey(_) => Some("or name the lock with --lock <key>".into()),
        RunError::Parked {
            escalation: Some(id),
            ..
        } => Some(format!(
            "see `tollgate escalations show {id}`, then resolve it (`tollgate escalations resolve {id} …`, or `tollgate approve {id}` for an approval)"
        )),
        RunError::Parked { .. } => Some("`tollgate escalations list` shows the queue".into()),
        RunError::Ledger(e) => ledger_hint(e),
        RunError::Load(LoadError::NotFound(_)) => {
            Some("`tollgate build-plugins` builds the bundled tools".into())
        }
        _ => None,
    }
}

/// A `--listen` value: `ADDR:PORT`, or a bare `PORT` on 127.0.0.1, so that serving beyond
/// this machine is always spelled out.
pub fn listen_addr(value: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok((std::net::Ipv4Addr::LOCALHOST, port).into());
    }
    value.parse().map_err(|_| {
        format!("`{value}` is not PORT or ADDRESS:PORT (e.g. 8765, 127.0.0.1:8765, [::1]:8765)")
    })
}
