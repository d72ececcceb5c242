//! The SQLite ledger: one file, one writer thread doing group commit, one reader connection.
//!
//! Invariant: only the writer thread ever writes the file (plus migrations at open, before it
//! starts), every write commits before its caller is answered (with `synchronous=FULL`,
//! unless every request of its batch asked for [`Durability::Unsynced`]), and a
//! file is written only after it has been recognised as a Tollgate ledger. A new ledger is
//! made beside its path and linked into place complete, so the path holds nothing or a whole
//! ledger: an empty file there is never one of ours, and is refused rather than taken for a
//! new ledger.

mod error;
mod migrations;
mod rows;
mod tx;
mod writer;

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::contract::{Done, Ledger, Unsent};
use crate::error::LedgerError;
use crate::records::{
    Applied, Attempt, BreakerRecord, CallKeyRecord, Checkpoint, Durability, EffectRecord,
    Escalation, EscalationFilter, EscalationStatus, Holdings, JournalEntry, LockRecord,
    NewJournalEntry, NodeRecord, Op, Run, RunFilter, StrandedFilter,
};
// Also the pg module's, for the SQLite file `ledger copy` reads.
pub(crate) use error::SqlContext;
use writer::{Counters, Request, Writer};

/// Files up to this size get a full `PRAGMA quick_check` at open; larger ones would make
/// startup slow, so they rely on SQLite's own page checks as they are read.
const QUICK_CHECK_MAX_BYTES: u64 = 64 * 1024 * 1024;

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// When opening may make a new ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Create {
    /// Where no file exists (commands that record runs).
    #[default]
    IfAbsent,
    /// Never: open only an existing ledger (commands that read or settle what is recorded).
    Never,
    /// Where no file exists, or over an empty file, which is otherwise refused (an
    /// operator's explicit initialisation).
    IfAbsentOrEmpty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    /// When opening may make a new ledger.
    pub create: Create,
    /// How long a write waits for another process's lock before failing with `Busy`.
    pub busy_timeout: Duration,
    /// Commit every request queued at the same moment in one transaction (one fsync). Off
    /// gives each request its own transaction: only useful as a benchmark baseline.
    pub group_commit: bool,
    /// Most requests (apply calls and queued journal entries) in one group commit.
    pub max_batch: usize,
    /// How long queued journal entries with no write beside them wait for one, so that a
    /// run's log lines go into the commit that ends it rather than into commits of their
    /// own. A reader of the journal flushes them first, so only a crash can lose what waits:
    /// at most this long of journal entries, never a run, attempt or effect. Zero commits
    /// them at once. Used with group commit only.
    pub journal_linger: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            create: Create::IfAbsent,
            busy_timeout: Duration::from_secs(5),
            group_commit: true,
            max_batch: 256,
            journal_linger: Duration::from_millis(20),
        }
    }
}

/// Counters since open: how many `apply` requests were answered from how many commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStats {
    pub commits: u64,
    /// Of the commits, those synced to stable storage before they returned (all but the
    /// batches that held only [`Durability::Unsynced`] requests and journal entries).
    pub synced_commits: u64,
    /// Syncs of unsynced commits when nothing synced came within a second.
    pub tail_syncs: u64,
    pub requests: u64,
}

/// A [`Ledger`] in one SQLite file. Cheap to share behind an `Arc`; dropping the last handle
/// commits queued journal entries and stops the writer thread.
pub struct SqliteLedger {
    path: PathBuf,
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    reader: Mutex<Connection>,
    // Declared last so it is dropped after `reader` closes: it deletes the file.
    _scratch: Option<ScratchFile>,
}

impl fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Opens the ledger at `path`, making it first if `options.create` allows, and migrates
    /// it to the current schema.
    pub fn open(path: &Path, options: LedgerOptions) -> Result<Self, LedgerError> {
        Self::open_inner(path, options, None)
    }

    /// A private throwaway ledger for tests: a fresh file in the system temp directory,
    /// deleted on drop. It is a real file (not `:memory:`) so the writer thread and the reader
    /// connection share it through WAL exactly as in production.
    pub fn open_in_memory() -> Result<Self, LedgerError> {
        let scratch = ScratchFile::create(&std::env::temp_dir(), "tollgate-ledger")?;
        let path = scratch.path.clone();
        let options = LedgerOptions {
            create: Create::IfAbsentOrEmpty,
            ..LedgerOptions::default()
        };
        Self::open_inner(&path, options, Some(scratch))
    }

    fn open_inner(
        path: &Path,
        options: LedgerOptions,
        scratch: Option<ScratchFile>,
    ) -> Result<Self, LedgerError> {
        let io_error = |source: std::io::Error| LedgerError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        };
        match (check_header(path)?, options.create) {
            (Found::Ledger, _) => {}
            (Found::Nothing, Create::Never) => {
                return Err(LedgerError::Missing {
                    path: path.to_owned(),
                });
            }
            (Found::Empty, Create::Never | Create::IfAbsent) => {
                return Err(LedgerError::EmptyFile {
                    path: path.to_owned(),
                });
            }
            (Found::Nothing, _) => create_ledger(path, options.busy_timeout, Place::IfAbsent)?,
            (Found::Empty, Create::IfAbsentOrEmpty) => {
                create_ledger(path, options.busy_timeout, Place::OverEmpty)?;
            }
        }
        let existing_len = fs::metadata(path).map(|m| m.len()).map_err(io_error)?;

        let mut conn = open_connection(path, options.busy_timeout)?;
        let version = recognise(&conn, path)?;
        if existing_len <= QUICK_CHECK_MAX_BYTES {
            quick_check(&conn, path)?;
        }
        configure_writer(&conn, path)?;
        if version < migrations::LATEST_VERSION {
            migrations::migrate_to(&mut conn, migrations::LATEST_VERSION)
                .map_err(|err| refine(err, path))?;
        }

        let reader = open_connection(path, options.busy_timeout)?;
        reader
            .pragma_update(None, "query_only", true)
            .context("configuring the read connection")
            .map_err(|err| refine(err, path))?;

        let (requests, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            conn,
            requests: receiver,
            path: path.to_owned(),
            group_commit: options.group_commit,
            max_batch: options.max_batch,
            journal_linger: options.journal_linger,
            counters: Arc::clone(&counters),
            synced: true,
            unsynced_since: None,
            retry_sync_at: None,
        };
        let handle = std::thread::Builder::new()
            .name("tollgate-ledger-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(io_error)?;
        Ok(Self {
            path: path.to_owned(),
            requests: Some(requests),
            writer: Some(handle),
            counters,
            reader: Mutex::new(reader),
            _scratch: scratch,
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commit and request counts since open; `commits < requests` means group commit batched.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            synced_commits: self.counters.synced_commits.load(Ordering::Relaxed),
            tail_syncs: self.counters.tail_syncs.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let conn: MutexGuard<'_, Connection> = self
            .reader
            .lock()
            .map_err(|_| LedgerError::Internal("the ledger read connection is poisoned".into()))?;
        query(&conn).map_err(|err| refine(err, &self.path))
    }
}

impl Drop for SqliteLedger {
    fn drop(&mut self) {
        // Closing the channel lets the writer commit what is queued and then exit.
        drop(self.requests.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "ledger writer thread panicked");
        }
    }
}

impl Ledger for SqliteLedger {
    fn apply_with(
        &self,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Result<Vec<Applied>, LedgerError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let done: Done = Box::new(move |result| {
            // Fails only if the caller is gone (its thread died); nobody is left to tell.
            let _ = reply.send(result);
        });
        self.submit(ops, durability, done)
            .map_err(|_| LedgerError::WriterGone)?;
        answer.recv().map_err(|_| LedgerError::WriterGone)?
    }

    fn submit(&self, ops: Vec<Op>, durability: Durability, done: Done) -> Result<(), Unsent> {
        let requests = self.requests.as_ref().ok_or(Unsent::Closed)?;
        requests
            .send(Request::Apply {
                ops,
                durability,
                reply: done,
            })
            .map_err(|_| Unsent::Closed)
    }

    fn journal(&self, entry: NewJournalEntry) {
        let sent = match self.requests.as_ref() {
            Some(requests) => requests.send(Request::Journal(entry)).is_ok(),
            None => false,
        };
        if !sent {
            tracing::warn!(
                path = %self.path.display(),
                "ledger: dropped a journal entry because the writer thread has stopped"
            );
        }
    }

    fn run(&self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        self.read(|conn| rows::run(conn, run_id))
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, LedgerError> {
        self.read(|conn| rows::runs(conn, filter))
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<Attempt>, LedgerError> {
        self.read(|conn| rows::attempts(conn, run_id))
    }

    fn effect(&self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        self.read(|conn| rows::effect(conn, kind, key))
    }

    fn effects_for_run(&self, run_id: &str) -> Result<Vec<EffectRecord>, LedgerError> {
        self.read(|conn| rows::effects_for_run(conn, run_id))
    }

    fn latest_checkpoint(
        &self,
        run_id: &str,
        name: Option<&str>,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        self.read(|conn| rows::latest_checkpoint(conn, run_id, name))
    }

    fn checkpoints(&self, run_id: &str) -> Result<Vec<Checkpoint>, LedgerError> {
        self.read(|conn| rows::checkpoints(conn, run_id))
    }

    fn journal_entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        // What was queued before this read is part of what it must see: an empty request
        // commits whatever waits in the writer's queue ahead of it.
        self.apply(Vec::new())?;
        self.journal_since(run_id, 0)
    }

    fn journal_since(&self, run_id: &str, seq: i64) -> Result<Vec<JournalEntry>, LedgerError> {
        self.read(|conn| rows::journal_entries(conn, run_id, seq))
    }

    fn escalation(&self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        self.read(|conn| rows::escalation(conn, id))
    }

    fn escalations(&self, filter: &EscalationFilter) -> Result<Vec<Escalation>, LedgerError> {
        self.read(|conn| rows::escalations(conn, filter))
    }

    fn count_escalations(&self, status: EscalationStatus) -> Result<u64, LedgerError> {
        self.read(|conn| rows::count_escalations(conn, status))
    }

    fn lock(&self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        self.read(|conn| rows::lock(conn, key))
    }

    fn breakers(&self) -> Result<Vec<BreakerRecord>, LedgerError> {
        self.read(rows::breakers)
    }

    fn breaker(&self, connector: &str, tool: &str) -> Result<Option<BreakerRecord>, LedgerError> {
        self.read(|conn| rows::breaker(conn, connector, tool))
    }

    fn stored_bytes(&self, run_id: &str) -> Result<u64, LedgerError> {
        self.read(|conn| rows::stored_bytes(conn, run_id))?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: run_id.to_owned(),
            })
    }

    fn call_key(&self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        self.read(|conn| rows::call_key(conn, key))
    }

    fn stranded(&self, filter: &StrandedFilter) -> Result<Vec<Run>, LedgerError> {
        self.read(|conn| rows::stranded(conn, filter))
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, LedgerError> {
        self.read(rows::nodes)
    }

    fn holdings(&self, holder: &str) -> Result<Holdings, LedgerError> {
        self.read(|conn| rows::holdings(conn, holder))
    }
}

/// Turns storage errors that mean something to a user (busy, corrupt, read-only, full, not a
/// database) into
/// their own variants; everything else passes through.
pub(crate) fn refine(err: LedgerError, path: &Path) -> LedgerError {
    let LedgerError::Storage {
        cause: source,
        context,
    } = &err
    else {
        return err;
    };
    let Some(source) = source.downcast_ref::<rusqlite::Error>() else {
        return err;
    };
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LedgerError::Busy {
            path: path.to_owned(),
        },
        Some(ErrorCode::DatabaseCorrupt) => LedgerError::Corrupt {
            path: path.to_owned(),
            detail: format!("{source} while {context}"),
        },
        Some(ErrorCode::ReadOnly) => LedgerError::ReadOnly {
            path: path.to_owned(),
        },
        Some(ErrorCode::DiskFull) => LedgerError::DiskFull {
            path: path.to_owned(),
        },
        Some(ErrorCode::NotADatabase) => LedgerError::NotALedger {
            path: path.to_owned(),
            reason: format!("SQLite says: {source}"),
        },
        _ => err,
    }
}

/// Where a made ledger goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Only if nothing is at the path; a ledger another process placed first wins.
    IfAbsent,
    /// Over the empty file at the path.
    OverEmpty,
}

/// Makes a ledger at the latest schema beside `path` and moves it into place whole, so no
/// process ever sees a half-made ledger (or an empty file it might take for one). The file
/// is owner-only: the ledger holds tool inputs, effect payloads and responses, and SQLite
/// gives the -wal and -shm files it creates the database file's mode.
fn create_ledger(path: &Path, busy_timeout: Duration, place: Place) -> Result<(), LedgerError> {
    let io_error = |source: std::io::Error| LedgerError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_error)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".to_owned());
    let made = ScratchFile::create(parent, &format!(".{name}.new"))?;
    {
        let mut conn = open_connection(&made.path, busy_timeout)?;
        configure_writer(&conn, &made.path)?;
        migrations::migrate_to(&mut conn, migrations::LATEST_VERSION)
            .map_err(|err| refine(err, &made.path))?;
        // Everything into the main file, so the file alone is the ledger once moved.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .context("checkpointing the new ledger")
            .map_err(|err| refine(err, &made.path))?;
    }
    fs::File::open(&made.path)
        .and_then(|file| file.sync_all())
        .map_err(io_error)?;
    match place {
        // A link fails if anything is at the path: the first of several processes making
        // the same ledger places it, and the others open that one.
        Place::IfAbsent => match fs::hard_link(&made.path, path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error(err)),
        },
        Place::OverEmpty => fs::rename(&made.path, path).map_err(io_error)?,
    }
    // The new name must survive a crash as well as the file's content.
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error)
}

/// What is at a ledger's path before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Nothing,
    Empty,
    /// A file that starts as a SQLite database does (recognised as ours once open).
    Ledger,
}

/// Rejects a non-empty file that does not start with the SQLite header, before SQLite touches
/// it.
fn check_header(path: &Path) -> Result<Found, LedgerError> {
    let not_ours = |reason: String| LedgerError::NotALedger {
        path: path.to_owned(),
        reason,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(err) => {
            return Err(LedgerError::Io {
                path: path.to_owned(),
                source: Arc::new(err),
            });
        }
    };
    if meta.is_dir() {
        return Err(not_ours("it is a directory".to_owned()));
    }
    if meta.len() == 0 {
        return Ok(Found::Empty);
    }
    let mut header = [0u8; 16];
    let read = fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .map(|()| true)
        .or_else(|err| match err.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(false),
            _ => Err(err),
        })
        .map_err(|source| LedgerError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
    if !read || &header != SQLITE_HEADER {
        return Err(not_ours(
            "it is not a SQLite database: the file does not start with the SQLite header".into(),
        ));
    }
    Ok(Found::Ledger)
}

pub(crate) fn open_connection(
    path: &Path,
    busy_timeout: Duration,
) -> Result<Connection, LedgerError> {
    // Never SQLITE_OPEN_CREATE: a ledger is made only by `create_ledger`, and a file that
    // vanished since it was checked is an error, not a new empty database.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .context("opening the ledger file")
        .map_err(|err| refine(err, path))?;
    conn.busy_timeout(busy_timeout)
        .context("setting the busy timeout")
        .map_err(|err| refine(err, path))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Decides whether the open file is a Tollgate ledger without writing to it, and returns its
/// schema version. Every ledger is marked before it is placed, so an unmarked database is
/// never ours, even one without tables.
fn recognise(conn: &Connection, path: &Path) -> Result<u32, LedgerError> {
    let not_ours = |reason: String| LedgerError::NotALedger {
        path: path.to_owned(),
        reason,
    };
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .context("reading the application id")
        .map_err(|err| refine(err, path))?;
    let version = migrations::user_version(conn).map_err(|err| refine(err, path))?;
    if application_id == migrations::APPLICATION_ID {
        if version > migrations::LATEST_VERSION {
            return Err(LedgerError::NewerSchema {
                found: version,
                supported: migrations::LATEST_VERSION,
            });
        }
        return Ok(version);
    }
    if application_id != 0 {
        return Err(not_ours(format!(
            "it is a SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name LIMIT 5")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .context("listing tables")
        .map_err(|err| refine(err, path))?;
    Err(not_ours(format!(
        "it is a SQLite database without the Tollgate mark (tables: {})",
        if tables.is_empty() {
            "none".to_owned()
        } else {
            tables.join(", ")
        }
    )))
}

fn quick_check(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .context("checking the ledger's integrity")
        .map_err(|err| refine(err, path))?;
    if problems.len() == 1 && problems.first().is_some_and(|p| p == "ok") {
        return Ok(());
    }
    Err(LedgerError::Corrupt {
        path: path.to_owned(),
        detail: format!("quick_check: {}", problems.join("; ")),
    })
}

fn configure_writer(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .context("switching to WAL mode")
        .map_err(|err| refine(err, path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Io {
            path: path.to_owned(),
            source: Arc::new(std::io::Error::other(format!(
                "the file system refused write-ahead logging (journal mode stayed `{mode}`)"
            ))),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .and_then(|()| conn.pragma_update(None, "foreign_keys", true))
        .context("configuring the write connection")
        .map_err(|err| refine(err, path))
}

/// A uniquely named file, removed (with its WAL files) on drop: a scratch ledger, or a new
/// ledger until it is placed.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// A new owner-only file `<prefix>-<pid>-<n>.db` in `dir`.
    fn create(dir: &Path, prefix: &str) -> Result<Self, LedgerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let mut last_error = None;
        // A leftover file from an earlier process with the same pid just moves us on.
        for _ in 0..1000 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}-{pid}-{n}.db"));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(Self { path }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    last_error = Some(err);
                }
                Err(err) => {
                    return Err(LedgerError::Io {
                        path,
                        source: Arc::new(err),
                    });
                }
            }
        }
        Err(LedgerError::Io {
            path: dir.to_owned(),
            source: Arc::new(
                last_error.unwrap_or_else(|| std::io::Error::other("no free scratch file name")),
            ),
        })
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            // Best effort: the side files may legitimately not exist.
            let _ = fs::remove_file(PathBuf::from(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::LedgerExt;
    use crate::records::{
        BreakerRecord, BreakerState, Claim, EscalationReason, NewEscalation, NewRun, RunStatus,
    };

    /// Leaves a ledger file at schema `version` (0 = empty file), as an older build would.
    fn file_at_version(path: &Path, version: u32) {
        fs::write(path, b"").unwrap();
        if version > 0 {
            let mut conn = Connection::open(path).unwrap();
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
                .unwrap();
            migrations::migrate_to(&mut conn, version).unwrap();
        }
    }

    fn exercise(ledger: &SqliteLedger) {
        ledger
            .create_run(NewRun {
                run_id: "r".into(),
                tool: "t".into(),
                input: "{}".into(),
                now: 1,
                component: None,
                lock: None,
            })
            .unwrap();
        ledger.begin_attempt("r", "d", "h", 10, false, 1).unwrap();
        let claim = ledger.claim_effect("k", "1", "d", "{}", "r", 1, 1).unwrap();
        assert_eq!(claim, Claim::Fresh);
        // Every table a later migration added is usable too.
        assert_eq!(ledger.acquire_lock("l", "r", "h", 10, 1).unwrap().fence, 1);
        ledger.park_run("r", RunStatus::Escalated, 2).unwrap();
        let escalation = ledger
            .open_escalation(NewEscalation {
                run_id: "r".into(),
                reason: EscalationReason::NonRetryable,
                summary: "s".into(),
                effect_kind: None,
                effect_key: None,
                payload_digest: None,
                evidence: serde_json::json!({}),
                now: 2,
            })
            .unwrap();
        assert_eq!(ledger.escalation(escalation.id).unwrap(), Some(escalation));
        ledger
            .set_breaker(BreakerRecord {
                connector: "http".into(),
                tool: "t".into(),
                state: BreakerState::Closed,
                consecutive_failures: 0,
                open_until: None,
                updated_at: 2,
            })
            .unwrap();
        assert_eq!(ledger.breakers().unwrap().len(), 1);
        ledger.claim_call_key("c", "t", "d", "r", 3).unwrap();
        assert_eq!(ledger.call_key("c").unwrap().unwrap().run_id, "r");
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    }

    #[test]
    fn version_1_data_survives_the_runs_rebuild_with_foreign_keys_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        file_at_version(&path, 1);
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "foreign_keys", true).unwrap();
            // a and b share a creation time, so only their rowids order them.
            conn.execute_batch(
                "INSERT INTO runs (run_id, tool, input, status, output, error_class, \
                 error_message, attempts, created_at, updated_at) VALUES \
                 ('a', 't', '{\"n\":1}', 'running', NULL, NULL, NULL, 1, 5, 6), \
                 ('b', 't', '{}', 'failed', NULL, 'permanent', 'bad input', 1, 5, 7), \
                 ('c', 'u', '{}', 'succeeded', '{\"ok\":true}', NULL, NULL, 0, 4, 8); \
                 INSERT INTO attempts (run_id, attempt, component_digest, holder, status, \
                 started_at, lease_until) VALUES ('a', 1, 'd', 'h', 'running', 5, 99), \
                 ('b', 1, 'd', 'h', 'failed', 5, 99); \
                 INSERT INTO checkpoints (run_id, attempt, name, state, created_at) \
                 VALUES ('a', 1, 'c', x'0102', 6); \
                 INSERT INTO journal (run_id, attempt, at, level, event, message, fields) \
                 VALUES ('a', 1, 6, 'info', 'log', 'hello', '{\"k\":1}'), \
                 ('b', NULL, 7, 'warn', 'log', 'bye', 'null');",
            )
            .unwrap();
        }
        let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
        let ids: Vec<String> = ledger
            .runs(&RunFilter::default())
            .unwrap()
            .into_iter()
            .map(|run| run.run_id)
            .collect();
        assert_eq!(ids, ["b", "a", "c"]);
        let b = ledger.run("b").unwrap().unwrap();
        assert_eq!(b.status, RunStatus::Failed);
        assert_eq!(b.error_message.as_deref(), Some("bad input"));
        assert_eq!((b.attempts, b.created_at, b.updated_at), (1, 5, 7));
        let c = ledger.run("c").unwrap().unwrap();
        assert_eq!(c.output.as_deref(), Some(r#"{"ok":true}"#));
        assert_eq!(ledger.attempts("a").unwrap()[0].lease_until, 99);
        assert_eq!(
            ledger
                .latest_checkpoint("a", Some("c"))
                .unwrap()
                .unwrap()
                .state,
            [1, 2]
        );
        assert_eq!(ledger.journal_entries("a").unwrap()[0].message, "hello");
        assert_eq!(
            ledger.journal_entries("b").unwrap()[0].fields,
            serde_json::Value::Null
        );
        // The migrated runs table takes the parked statuses and still anchors new children.
        ledger
            .park_run("a", RunStatus::WaitingApproval, 10)
            .unwrap();
        ledger.save_checkpoint("a", 1, "d", b"x", 11).unwrap();
        drop(ledger);

        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrations::user_version(&conn).unwrap(),
            migrations::LATEST_VERSION
        );
        for (table, rows) in [
            ("runs", 3),
            ("attempts", 2),
            ("checkpoints", 2),
            ("journal", 2),
        ] {
            assert_eq!(count(&conn, table), rows, "{table}");
        }
        assert_eq!(count(&conn, "sqlite_schema WHERE name = 'runs_rebuild'"), 0);
        let violations: Vec<String> = conn
            .prepare("PRAGMA foreign_key_check")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .unwrap();
        assert_eq!(violations, Vec::<String>::new());
        // Children still point at `runs`, not at a scratch table from the rebuild.
        let orphan_check: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'attempts'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(
            orphan_check.contains("REFERENCES runs (run_id)"),
            "{orphan_check}"
        );
    }

    #[test]
    fn the_runs_rebuild_refuses_to_commit_if_a_run_would_be_lost() {
        // Guards the migration's own safety net: with foreign keys on, dropping runs without
        // putting every parent row back must fail at commit instead of orphaning children.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrations::migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, tool, input, status, created_at, updated_at) \
             VALUES ('a', 't', '{}', 'running', 1, 1); \
             INSERT INTO journal (run_id, at, level, event, message, fields) \
             VALUES ('a', 1, 'info', 'log', 'm', 'null');",
        )
        .unwrap();
        let lossy = migrations::MIGRATIONS[2].replace(
            "FROM runs_rebuild;",
            "FROM runs_rebuild WHERE run_id <> 'a';",
        );
        assert_ne!(lossy, migrations::MIGRATIONS[2]);
        let tx = conn.transaction().unwrap();
        tx.execute_batch(&lossy).unwrap();
        assert!(tx.commit().is_err());
        assert_eq!(count(&conn, "runs"), 1);
    }

    #[test]
    fn opening_a_missing_file_creates_a_current_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
        exercise(&ledger);
        drop(ledger);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrations::user_version(&conn).unwrap(),
            migrations::LATEST_VERSION
        );
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn opening_migrates_a_file_left_at_every_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        // Version 0 (no tables, no mark) was never a ledger: it is what a crash while
        // creating one used to leave, and is refused (`an_unmarked_database_is_not_a_ledger`).
        for version in 1..migrations::LATEST_VERSION {
            let path = dir.path().join(format!("v{version}.db"));
            file_at_version(&path, version);
            let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
            exercise(&ledger);
            drop(ledger);
            let conn = Connection::open(&path).unwrap();
            assert_eq!(
                migrations::user_version(&conn).unwrap(),
                migrations::LATEST_VERSION,
                "from version {version}"
            );
        }
    }

    #[test]
    fn reopening_a_current_ledger_keeps_its_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        exercise(&SqliteLedger::open(&path, LedgerOptions::default()).unwrap());
        let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
        assert!(ledger.run("r").unwrap().is_some());
    }

    #[test]
    fn a_new_ledger_and_its_wal_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| {
            format!(
                "{:04o}",
                fs::metadata(path).unwrap().permissions().mode() & 0o7777
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("state");
        let path = parent.join("ledger.db");
        let ledger = SqliteLedger::open(&path, LedgerOptions::default()).unwrap();
        exercise(&ledger);
        assert_eq!(mode(&path), "0600");
        assert_eq!(mode(&parent), "0700", "a directory the ledger created");
        // SQLite gives the -wal and -shm files the database file's mode.
        let wal = parent.join("ledger.db-wal");
        assert!(wal.exists(), "the ledger is open in WAL mode");
        assert_eq!(mode(&wal), "0600");
        let shm = parent.join("ledger.db-shm");
        if shm.exists() {
            assert_eq!(mode(&shm), "0600");
        }
        drop(ledger);
    }

    #[test]
    fn refine_maps_busy_codes_to_busy() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let err = refine(LedgerError::from(busy), Path::new("/x.db"));
        assert!(matches!(err, LedgerError::Busy { .. }), "{err:?}");
    }
}
