//! The PostgreSQL ledger: one database shared by every Tollgate process of a fleet.
//!
//! Driver: `postgres`, the blocking face of `tokio-postgres`, on a fixed set of connection
//! threads ([`pool`]). The ledger contract is synchronous because its rules
//! ([`crate::rules`]) are plain functions over rows read inside one transaction, and SQLite,
//! the default, is synchronous; async callers already reach the ledger through
//! `spawn_blocking`. `sqlx` would bring a second async runtime layer and its own migration
//! tool for no gain here; `deadpool` pools async clients, which these threads do not need.
//!
//! Invariant: every `apply` is one `READ COMMITTED` transaction that locks each row a rule
//! decides on as it reads it ([`tx`] says how). Deadlocks and racing inserts of one key are
//! retried inside the backend, a bounded number of times, so they never surface as a wrong
//! answer; a lost connection is [`LedgerError::Unavailable`] and never a half-applied batch.

mod error;
mod import;
mod migrations;
mod pool;
mod rows;
mod tx;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use postgres::{Config, IsolationLevel};

pub use self::import::{CopyReport, verify_copy};

use self::error::{
    Class, PgContext, classify, is_refused_value, is_stale_statement, is_unique_violation, refine,
    unavailable,
};
use self::pool::{Conn, Pool};
use self::rows::Hold;
use self::tx::PgTx;
use crate::contract::Ledger;
use crate::error::LedgerError;
use crate::records::{
    Applied, Attempt, BreakerRecord, CallKeyRecord, Checkpoint, Durability, EffectRecord,
    Escalation, EscalationFilter, EscalationStatus, Holdings, JournalEntry, LockRecord,
    NewJournalEntry, NodeRecord, Op, Run, RunFilter, StrandedFilter,
};
use crate::rules;
use crate::sqlite::Create;

/// How many times one `apply` runs again after a conflict with another transaction.
const MAX_CONFLICT_RETRIES: u32 = 64;

/// Of those, how many may be a unique key another transaction inserted first.
const MAX_DUPLICATE_RETRIES: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// When opening may create the ledger's tables ([`Create::IfAbsentOrEmpty`] behaves like
    /// [`Create::IfAbsent`]: an empty database is where nothing was ever recorded).
    pub create: Create,
    /// Connections (and connection threads) this process opens.
    pub connections: usize,
    /// How long a connection attempt waits before the database counts as unavailable.
    pub connect_timeout: Duration,
    /// The longest a statement may run, or an answer be awaited, before the database counts
    /// as unavailable.
    pub io_timeout: Duration,
    /// How long queued journal entries wait for a write to carry them before a transaction
    /// of their own writes them (as SQLite's `journal_linger`): a run's log lines then go
    /// into the commit that ends it. A reader of the journal writes them first, so only a
    /// crash can lose what waits. Zero writes them at once.
    pub journal_linger: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            create: Create::IfAbsent,
            connections: 8,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            journal_linger: Duration::from_millis(20),
        }
    }
}

/// A [`Ledger`] in a PostgreSQL database. Cheap to share behind an `Arc`; dropping it
/// commits queued journal entries and closes its connections.
pub struct PgLedger {
    location: Arc<str>,
    /// Journal entries queued by [`Ledger::journal`], written by the next `apply` (in its
    /// transaction) or by a flush job, whichever comes first.
    pending: Arc<Queue>,
    /// Transactions rolled back for a conflict with another one and run again.
    conflicts: Arc<AtomicU64>,
    /// Wakes the thread that writes queued journal entries a linger after they are queued.
    flusher: Option<Flusher>,
    // Declared after the queue: dropped after it, it runs the queued flushes first.
    pool: Pool,
    // Declared last so it is dropped after the connections close: it drops the schema.
    _scratch: Option<crate::scratch::PgScratch>,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `url` without its password (in the user part or as a `password=` parameter), for
/// messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(name, _)| name == "password") {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(name, value)| {
                        let value = if name == "password" {
                            "***".into()
                        } else {
                            value
                        };
                        (name.into_owned(), value.into_owned())
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "the PostgreSQL URL given".to_owned(),
    }
}

impl PgLedger {
    /// Opens the ledger in the database at `url` (`postgres://…`), creating its tables first
    /// if `options.create` allows, and migrates it to the current schema.
    pub fn open(url: &str, options: PgOptions) -> Result<Self, LedgerError> {
        let location: Arc<str> = redact(url).into();
        let mut config = Config::from_str(url).map_err(|err| LedgerError::BadLocation {
            ledger: location.to_string(),
            detail: err.to_string(),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        // Past the connect, a server that stops answering must not hang a connection thread
        // (and the journal queue's order with it): the kernel gives up on a silent peer, and
        // the server ends a statement or an idle transaction that runs too long. A URL's own
        // settings win.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.io_timeout);
        }
        config.keepalives(true);
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(10));
        }
        let ms = options.io_timeout.as_millis();
        let mut settings = config.get_options().unwrap_or_default().to_owned();
        for setting in ["statement_timeout", "idle_in_transaction_session_timeout"] {
            if !settings.contains(setting) {
                settings.push_str(&format!(" -c {setting}={ms}"));
            }
        }
        config.options(settings.trim_start());
        // On a connection thread like every other call: the caller may be an async task.
        let pool = Pool::start(options.connections, &config, &location)?;
        let create = options.create != Create::Never;
        let shown = Arc::clone(&location);
        pool.call(move |conn| {
            migrations::migrate(conn.client()?, create, &shown).map_err(|err| {
                match classify(&err) {
                    Class::Connection => unavailable(&shown, &err),
                    _ => err,
                }
            })
        })?;
        let pending = Arc::new(Queue::default());
        let flusher = Flusher::start(&pool, &pending, options.journal_linger)?;
        Ok(Self {
            pool,
            pending,
            conflicts: Arc::new(AtomicU64::new(0)),
            flusher: Some(flusher),
            location,
            _scratch: None,
        })
    }

    /// A private throwaway ledger for tests: a schema of its own on the test server
    /// ([`crate::scratch`]), dropped with the ledger.
    pub fn open_scratch() -> Result<Self, LedgerError> {
        let scratch = crate::scratch::PgScratch::new();
        let mut ledger = Self::open(&scratch.url(), PgOptions::default())?;
        ledger._scratch = Some(scratch);
        Ok(ledger)
    }

    /// The database, as a URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// How many transactions this handle has rolled back for a conflict with another
    /// transaction (a deadlock, or a key inserted by another first) and run again.
    pub fn conflict_retries(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// A read on a connection thread, run once more on a fresh connection if the first
    /// one turns out to be lost (a restarted server, an idle connection cut).
    fn read<T: Send + 'static>(
        &self,
        read: impl Fn(&mut postgres::Client) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.pool.call(move |conn| {
            let mut tries = 0;
            loop {
                tries += 1;
                let result = read(conn.client()?);
                match &result {
                    Err(err) if classify(err) == Class::Connection => {
                        conn.reset();
                        if tries < 2 {
                            continue;
                        }
                        return Err(unavailable(conn.location(), err));
                    }
                    Err(err) if tries < 2 && is_stale_statement(err) => rows::forget_prepared(),
                    Err(_) => return result.map_err(|err| refine(err, conn.location())),
                    Ok(_) => return result,
                }
            }
        })
    }
}

/// Journal entries queued by [`Ledger::journal`] and not yet written.
///
/// Two rules keep the contract's promise that an `apply` which returns `Ok` has made durable
/// everything queued before it was called, whoever wrote it:
/// - A flush takes `order`, then the entries, and holds `order` until they are committed; an
///   `apply` takes `order` to take entries, so it starts after a flush in progress.
/// - An `apply` takes its entries under a ticket, and before it returns waits until every
///   batch taken under an earlier ticket is committed or put back (its write failed). It
///   waits after its own commit, holding no row lock, so the batches still commit side by
///   side; only the answers come back in the order the entries were taken. Tickets only ever
///   wait for smaller tickets, so the waits cannot form a cycle. Entries put back are then
///   written by the waiting `apply` itself, so an `Ok` still means they are durable.
/// - An unsynced `apply` takes no entries: a synced one that waited for its commit could
///   otherwise return before that commit's WAL record is flushed.
///
/// Every statement is bounded by the connection's timeouts, so each wait is bounded too.
struct Queue {
    order: Mutex<()>,
    state: Mutex<Pending>,
    /// Signalled when a batch taken under a ticket is settled.
    settled: Condvar,
    /// Prefix of this queue's entry keys: unique per process and ledger.
    nonce: String,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Queued>,
    /// A flush job is queued and has not yet taken the entries.
    flush_queued: bool,
    next_key: u64,
    next_ticket: u64,
    /// Tickets of batches taken by an `apply` and not yet committed or put back.
    in_flight: BTreeSet<u64>,
}

/// Entries an `apply` took, and the ticket that orders its answer after earlier batches'.
/// Dropping it settles the ticket, so a panic cannot leave later answers waiting.
struct Taken<'q> {
    queue: &'q Queue,
    ticket: u64,
    entries: Vec<Queued>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.queue.settle(self.ticket);
    }
}

/// A journal entry and the key that makes writing it twice harmless.
struct Queued {
    key: String,
    entry: NewJournalEntry,
    /// Writes it went into that failed.
    failed: u32,
}

/// Failed writes after which a queued journal entry is dropped: an entry every write fails
/// on, for a reason no retry fixes, must not fail every later request with it.
const MAX_JOURNAL_FAILURES: u32 = 5;

/// The longest an `apply` waits for batches taken before its own to commit.
const SETTLE_WAIT_LIMIT: Duration = Duration::from_secs(60);

impl Default for Queue {
    fn default() -> Self {
        Self {
            order: Mutex::new(()),
            state: Mutex::new(Pending::default()),
            settled: Condvar::new(),
            nonce: format!("{:016x}{:04x}", rand_u64(), std::process::id() & 0xffff),
        }
    }
}

impl Queue {
    /// Queues `entry`; `true` if the caller should queue a flush job for it.
    fn push(&self, entry: NewJournalEntry) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        state.next_key += 1;
        let key = format!("{}-{}", self.nonce, state.next_key);
        state.entries.push(Queued {
            key,
            entry,
            failed: 0,
        });
        !std::mem::replace(&mut state.flush_queued, true)
    }

    /// Everything queued, for a flush. A flush job queued later still runs, and finds nothing.
    fn take_for_flush(&self) -> Vec<Queued> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        state.flush_queued = false;
        std::mem::take(&mut state.entries)
    }

    /// The next ticket, for an `apply`, with everything queued if `entries` (an `apply` that
    /// takes none still answers after the batches taken before it).
    fn take(&self, entries: bool) -> Taken<'_> {
        // Waits for a flush in progress, whose entries come before these.
        let _order = entries.then(|| self.order.lock());
        let mut taken = Taken {
            queue: self,
            ticket: 0,
            entries: Vec::new(),
        };
        if let Ok(mut state) = self.state.lock() {
            state.next_ticket += 1;
            taken.ticket = state.next_ticket;
            if entries {
                taken.entries = std::mem::take(&mut state.entries);
            }
            if !taken.entries.is_empty() {
                state.in_flight.insert(taken.ticket);
            }
        }
        taken
    }

    /// Whether entries a failed write put back are waiting to be written again.
    fn has_put_back(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| state.entries.iter().any(|queued| queued.failed > 0))
    }

    fn settle(&self, ticket: u64) {
        if let Ok(mut state) = self.state.lock()
            && state.in_flight.remove(&ticket)
        {
            self.settled.notify_all();
        }
    }

    /// Waits until every batch taken before `ticket` is settled.
    fn wait_for_earlier(&self, ticket: u64) {
        let Ok(state) = self.state.lock() else {
            return;
        };
        let earlier_in_flight =
            |state: &mut Pending| state.in_flight.first().is_some_and(|&first| first < ticket);
        // A batch's write is bounded by the connection's timeouts; this bound only keeps a
        // defect elsewhere from hanging every later answer.
        let waited = self
            .settled
            .wait_timeout_while(state, SETTLE_WAIT_LIMIT, earlier_in_flight);
        if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
            tracing::warn!(
                "ledger: journal entries queued before a write were still not committed after \
                 {SETTLE_WAIT_LIMIT:?}; answering without them"
            );
        }
    }

    /// Puts entries that could not be written back in front of any queued since. The next
    /// [`Queue::push`] queues a flush for them, and the next `apply` writes them.
    fn put_back(&self, taken: Vec<Queued>) {
        let mut taken: Vec<Queued> = taken
            .into_iter()
            .filter_map(|mut queued| {
                queued.failed += 1;
                if queued.failed < MAX_JOURNAL_FAILURES {
                    return Some(queued);
                }
                tracing::warn!(
                    run_id = %queued.entry.run_id,
                    event = %queued.entry.event,
                    "ledger: dropped a journal entry after {MAX_JOURNAL_FAILURES} failed writes"
                );
                None
            })
            .collect();
        if taken.is_empty() {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            taken.append(&mut state.entries);
            state.entries = taken;
        }
    }

    /// Writes whatever is queued, in its own transaction.
    fn flush(&self, conn: &mut Conn) -> Result<(), LedgerError> {
        let _order = self.order.lock();
        let taken = self.take_for_flush();
        if taken.is_empty() {
            return Ok(());
        }
        let result = conn.client().and_then(|client| {
            let mut tx = client.transaction().context("starting a transaction")?;
            write_journal(&mut tx, &taken)?;
            tx.commit().context("committing journal entries")
        });
        if result.is_err() {
            self.put_back(taken);
        }
        result
    }
}

/// The thread that hands a flush of the queued journal entries to a connection thread, a
/// linger after the first of them was queued. It sleeps on its own thread so that no
/// connection thread is held waiting.
struct Flusher {
    wake: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn start(pool: &Pool, pending: &Arc<Queue>, linger: Duration) -> Result<Self, LedgerError> {
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let jobs = pool.handle().ok_or(LedgerError::WriterGone)?;
        let pending = Arc::clone(pending);
        let thread = std::thread::Builder::new()
            .name("tollgate-pg-journal".to_owned())
            .spawn(move || {
                while woken.recv().is_ok() {
                    let deadline = std::time::Instant::now() + linger;
                    // Later wakes within the linger are for the same flush.
                    loop {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        match woken.recv_timeout(left) {
                            Ok(()) => continue,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                            // The ledger is closing; its drop writes what is queued.
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let pending = Arc::clone(&pending);
                    let flush: pool::Job = Box::new(move |conn| {
                        if let Err(err) = pending.flush(conn) {
                            tracing::warn!(error = %err, "ledger: could not write queued journal entries yet");
                            if classify(&err) == Class::Connection {
                                conn.reset();
                            }
                        }
                    });
                    if jobs.send(flush).is_err() {
                        return;
                    }
                }
            })
            .map_err(|err| {
                LedgerError::Internal(format!("cannot start the journal flush thread: {err}"))
            })?;
        Ok(Self { wake, thread })
    }

    fn wake(&self) {
        let _ = self.wake.send(());
    }

    fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

/// Writes queued journal entries inside `tx`. An entry the database refuses for its values
/// ([`is_refused_value`]) is dropped with a warning, so that one bad entry cannot keep every
/// later request from committing. Any other failure (a timeout, a lock not granted, a lost
/// connection) is returned, and the caller keeps the entries for the next try.
fn write_journal(
    tx: &mut postgres::Transaction<'_>,
    entries: &[Queued],
) -> Result<(), LedgerError> {
    if entries.is_empty() {
        return Ok(());
    }
    // The usual case costs one savepoint for the batch; entry by entry only after a refusal.
    let mut batch = tx.savepoint("journal").context("opening a savepoint")?;
    match insert_all(&mut batch, entries) {
        Ok(()) => return batch.commit().context("releasing a savepoint"),
        Err(err) if !is_refused_value(&err) => return Err(err),
        Err(_) => batch.rollback().context("rolling back a savepoint")?,
    }
    for queued in entries {
        let mut one = tx
            .savepoint("journal_entry")
            .context("opening a savepoint")?;
        match insert_one(&mut one, queued) {
            Ok(()) => one.commit().context("releasing a savepoint")?,
            Err(err) if !is_refused_value(&err) => return Err(err),
            Err(err) => {
                one.rollback().context("rolling back a savepoint")?;
                tracing::warn!(
                    run_id = %queued.entry.run_id,
                    event = %queued.entry.event,
                    error = %err,
                    "ledger: dropped a journal entry the database refused"
                );
            }
        }
    }
    Ok(())
}

fn insert_all(
    client: &mut impl postgres::GenericClient,
    entries: &[Queued],
) -> Result<(), LedgerError> {
    entries
        .iter()
        .try_for_each(|queued| insert_one(client, queued))
}

fn insert_one(
    client: &mut impl postgres::GenericClient,
    queued: &Queued,
) -> Result<(), LedgerError> {
    if !tx::insert_journal(client, &queued.entry, Some(&queued.key))? {
        let written_before = client
            .query_opt("SELECT 1 FROM journal WHERE entry_key = $1", &[&queued.key])
            .context("looking up a journal entry")?
            .is_some();
        if !written_before {
            tracing::warn!(
                run_id = %queued.entry.run_id,
                event = %queued.entry.event,
                "ledger: dropped a journal entry whose run does not exist"
            );
        }
    }
    Ok(())
}

/// What one `apply` writes: the journal entries it took, then its ops.
#[derive(Clone, Copy)]
struct Request<'a> {
    journal: &'a [Queued],
    ops: &'a [Op],
    durability: Durability,
}

/// One try of a request: the queued journal, then the ops. With journal entries to keep, the
/// ops run inside a savepoint, so that a rule's refusal undoes them but keeps the journal;
/// without, a refusal rolls the transaction back (one round trip fewer each way).
/// `Ok(Err(_))` is that refusal.
fn try_apply(
    conn: &mut Conn,
    request: &Request<'_>,
) -> Result<Result<Vec<Applied>, LedgerError>, LedgerError> {
    let Request {
        journal,
        ops,
        durability,
    } = *request;
    if journal.is_empty() && ops.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let client = conn.client()?;
    // READ COMMITTED, with the rows a rule decides on locked as it reads them ([`tx`]).
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .context("starting a transaction")?;
    if durability == Durability::Unsynced {
        // The commit returns before its WAL record is flushed; the server's WAL writer
        // flushes it within a few hundred milliseconds, in order.
        tx.batch_execute("SET LOCAL synchronous_commit TO off")
            .context("asking for an unsynced commit")?;
    }
    if journal.is_empty() {
        return match run_rules(&mut tx, ops)? {
            Ok(applied) => {
                tx.commit().context("committing a transaction")?;
                Ok(Ok(applied))
            }
            Err(refusal) => {
                tx.rollback().context("rolling back a refused request")?;
                Ok(Err(refusal))
            }
        };
    }
    write_journal(&mut tx, journal)?;
    let mut request = tx.savepoint("request").context("opening a savepoint")?;
    match run_rules(&mut request, ops)? {
        Ok(applied) => {
            request.commit().context("releasing a savepoint")?;
            tx.commit().context("committing a transaction")?;
            Ok(Ok(applied))
        }
        Err(refusal) => {
            request
                .rollback()
                .context("rolling back a refused request")?;
            tx.commit().context("committing a transaction")?;
            Ok(Err(refusal))
        }
    }
}

/// The ops through the rules inside `tx`. A storage error (the outer `Err`) leaves the
/// transaction unusable and the caller decides; a rule's refusal is the inner `Err`.
fn run_rules(
    tx: &mut postgres::Transaction<'_>,
    ops: &[Op],
) -> Result<Result<Vec<Applied>, LedgerError>, LedgerError> {
    let mut rows = PgTx::new(tx);
    let mut applied = Vec::with_capacity(ops.len());
    for op in ops {
        match rules::apply(&mut rows, op.clone()) {
            Ok(one) => applied.push(one),
            Err(err @ LedgerError::Storage { .. }) => return Err(err),
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    Ok(Ok(applied))
}

/// What a request came to: `Ok(_)` means its journal entries are written, even when the
/// inner result is a rule's refusal.
type Written = Result<Result<Vec<Applied>, LedgerError>, LedgerError>;

/// Runs a request until it commits, is refused by a rule, or fails for a reason a retry
/// cannot fix (see [`Written`]).
fn apply_with_retries(conn: &mut Conn, request: &Request<'_>, retried: &AtomicU64) -> Written {
    let mut conflicts = 0;
    let mut duplicates = 0;
    let mut reconnected = false;
    let mut prepared_again = false;
    loop {
        let err = match try_apply(conn, request) {
            Ok(result) => return Ok(result),
            Err(err) => err,
        };
        match classify(&err) {
            // A unique key two transactions inserted at once: the retry reads the winner's
            // row. One that happens again is not a race but a statement the rules let
            // through, which no retry fixes.
            Class::Conflict if is_unique_violation(&err) && duplicates >= MAX_DUPLICATE_RETRIES => {
                return Err(err);
            }
            Class::Conflict if conflicts < MAX_CONFLICT_RETRIES => {
                conflicts += 1;
                retried.fetch_add(1, Ordering::Relaxed);
                if is_unique_violation(&err) {
                    duplicates += 1;
                }
                // Spread the retries of transactions that collided.
                let jitter = u64::from(conflicts.min(10)) * 500 + u64::from(rand_u16()) % 1_000;
                std::thread::sleep(Duration::from_micros(jitter));
            }
            // A connection found dead before anything was sent is safe to remake once; one
            // lost mid-request may have committed, so it is reported.
            Class::Connection if !reconnected && is_stale(&err) => {
                conn.reset();
                reconnected = true;
            }
            Class::Connection => {
                conn.reset();
                return Err(unavailable(conn.location(), &err));
            }
            Class::Conflict => {
                return Err(LedgerError::Internal(format!(
                    "a ledger transaction still conflicted after {MAX_CONFLICT_RETRIES} \
                     retries: {err}"
                )));
            }
            // Nothing committed; the statements are prepared afresh on the retry.
            Class::Other if !prepared_again && is_stale_statement(&err) => {
                rows::forget_prepared();
                prepared_again = true;
            }
            Class::Other => return Err(refine(err, conn.location())),
        }
    }
}

impl PgLedger {
    /// Writes `ops` in one transaction on a connection thread, with the queued journal
    /// entries if `entries` (put back if they were not written). The write's ticket, and its
    /// outcome as [`apply_with_retries`] gives it.
    fn write(
        &self,
        ops: Vec<Op>,
        durability: Durability,
        entries: bool,
    ) -> Result<(u64, Written), LedgerError> {
        let pending = Arc::clone(&self.pending);
        let conflicts = Arc::clone(&self.conflicts);
        self.pool.call(move |conn| {
            let mut taken = pending.take(entries);
            let request = Request {
                journal: &taken.entries,
                ops: &ops,
                durability,
            };
            let result = apply_with_retries(conn, &request, &conflicts);
            if result.is_err() {
                pending.put_back(std::mem::take(&mut taken.entries));
            }
            Ok((taken.ticket, result))
        })
    }
}

impl Ledger for PgLedger {
    fn apply_with(
        &self,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Result<Vec<Applied>, LedgerError> {
        // An unsynced commit carries no one else's journal entries: a synced write that
        // waited for it to settle could return before its WAL record is flushed.
        let synced = durability == Durability::Synced;
        let (ticket, result) = self.write(ops, durability, synced)?;
        // Entries queued before this call may ride in an earlier batch still committing.
        self.pending.wait_for_earlier(ticket);
        let applied = result?;
        // One of those batches failed and put its entries back: they are not durable yet, so
        // this write carries them now (or reports why it cannot).
        if synced && self.pending.has_put_back() {
            self.write(Vec::new(), durability, true)?.1??;
        }
        applied
    }

    fn journal(&self, entry: NewJournalEntry) {
        // One flush per batch of queued entries, a linger later; an `apply` that comes first
        // takes them into its own transaction.
        if self.pending.push(entry)
            && let Some(flusher) = &self.flusher
        {
            flusher.wake();
        }
    }

    fn run(&self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        let run_id = run_id.to_owned();
        self.read(move |c| rows::run(c, &run_id, Hold::Nothing))
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, LedgerError> {
        let filter = filter.clone();
        self.read(move |c| rows::runs(c, &filter))
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<Attempt>, LedgerError> {
        let run_id = run_id.to_owned();
        self.read(move |c| rows::attempts(c, &run_id))
    }

    fn effect(&self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.read(move |c| rows::effect(c, &kind, &key, Hold::Nothing))
    }

    fn effects_for_run(&self, run_id: &str) -> Result<Vec<EffectRecord>, LedgerError> {
        let run_id = run_id.to_owned();
        self.read(move |c| rows::effects_for_run(c, &run_id))
    }

    fn latest_checkpoint(
        &self,
        run_id: &str,
        name: Option<&str>,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        let (run_id, name) = (run_id.to_owned(), name.map(str::to_owned));
        self.read(move |c| rows::latest_checkpoint(c, &run_id, name.as_deref()))
    }

    fn checkpoints(&self, run_id: &str) -> Result<Vec<Checkpoint>, LedgerError> {
        let run_id = run_id.to_owned();
        self.read(move |c| rows::checkpoints(c, &run_id))
    }

    fn journal_entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        // What was queued before this read is part of what it must see.
        self.apply(Vec::new())?;
        self.journal_since(run_id, 0)
    }

    fn journal_since(&self, run_id: &str, seq: i64) -> Result<Vec<JournalEntry>, LedgerError> {
        let run_id = run_id.to_owned();
        self.read(move |c| rows::journal_entries(c, &run_id, seq))
    }

    fn escalation(&self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        self.read(move |c| rows::escalation(c, id, Hold::Nothing))
    }

    fn escalations(&self, filter: &EscalationFilter) -> Result<Vec<Escalation>, LedgerError> {
        let filter = filter.clone();
        self.read(move |c| rows::escalations(c, &filter))
    }

    fn count_escalations(&self, status: EscalationStatus) -> Result<u64, LedgerError> {
        self.read(move |c| rows::count_escalations(c, status))
    }

    fn lock(&self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        let key = key.to_owned();
        self.read(move |c| rows::lock(c, &key, Hold::Nothing))
    }

    fn breakers(&self) -> Result<Vec<BreakerRecord>, LedgerError> {
        self.read(rows::breakers)
    }

    fn breaker(&self, connector: &str, tool: &str) -> Result<Option<BreakerRecord>, LedgerError> {
        let (connector, tool) = (connector.to_owned(), tool.to_owned());
        self.read(move |c| rows::breaker(c, &connector, &tool, Hold::Nothing))
    }

    fn stored_bytes(&self, run_id: &str) -> Result<u64, LedgerError> {
        let id = run_id.to_owned();
        self.read(move |c| rows::stored_bytes(c, &id))?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: run_id.to_owned(),
            })
    }

    fn call_key(&self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        let key = key.to_owned();
        self.read(move |c| rows::call_key(c, &key))
    }

    fn stranded(&self, filter: &StrandedFilter) -> Result<Vec<Run>, LedgerError> {
        let filter = filter.clone();
        self.read(move |c| rows::stranded(c, &filter))
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, LedgerError> {
        self.read(rows::nodes)
    }

    fn holdings(&self, holder: &str) -> Result<Holdings, LedgerError> {
        let holder = holder.to_owned();
        self.read(move |c| rows::holdings(c, &holder))
    }
}

impl Drop for PgLedger {
    fn drop(&mut self) {
        // Stopped first: it holds a handle that keeps the connection threads alive.
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        // Whatever is still queued goes in before the connections close.
        if let Err(err) = self.apply(Vec::new()) {
            tracing::warn!(error = %err, "ledger: queued journal entries were not written");
        }
    }
}

/// Whether a connection error came from a connection that was already dead when the
/// request began (the server restarted, or cut an idle connection): nothing was sent.
fn is_stale(err: &LedgerError) -> bool {
    matches!(err, LedgerError::Storage { context, .. } if context == "starting a transaction")
}

/// A little randomness (retry jitter, key prefixes), without a generator to share between
/// threads: each `RandomState` is seeded afresh.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

fn rand_u16() -> u16 {
    rand_u64() as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LedgerExt;
    use crate::records::NewRun;

    fn entry(run_id: &str, event: &str) -> NewJournalEntry {
        NewJournalEntry {
            run_id: run_id.to_owned(),
            attempt: None,
            at: 1,
            level: "info".to_owned(),
            event: event.to_owned(),
            message: String::new(),
            fields: serde_json::json!({}),
        }
    }

    fn new_run(run_id: &str) -> NewRun {
        NewRun {
            run_id: run_id.to_owned(),
            tool: "echo".to_owned(),
            input: "{}".to_owned(),
            now: 1,
            component: None,
            lock: None,
        }
    }

    fn events(ledger: &PgLedger, run_id: &str) -> Vec<String> {
        ledger
            .journal_entries(run_id)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    /// A scratch ledger whose statements give up on a lock after 200 ms (the URL's own
    /// `lock_timeout`, SQLSTATE 55P03, which says nothing against what was written), and
    /// the scratch database's plain URL.
    fn with_lock_timeout() -> (PgLedger, String) {
        let scratch = crate::scratch::PgScratch::new();
        let plain = scratch.url();
        let mut ledger = PgLedger::open(
            &format!("{plain}%20-clock_timeout%3D200"),
            PgOptions::default(),
        )
        .expect("open a scratch ledger");
        ledger._scratch = Some(scratch);
        (ledger, plain)
    }

    /// How many journal entries of `event` the database at `url` has committed, read on a
    /// connection of its own.
    fn committed(url: &str, event: &str) -> i64 {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client
            .query_one("SELECT count(*) FROM journal WHERE event = $1", &[&event])
            .unwrap()
            .get(0)
    }

    /// A session of its own holding the journal table against every other, until it sends
    /// `ROLLBACK`.
    fn journal_locked(url: &str) -> postgres::Client {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client
            .batch_execute("BEGIN; LOCK TABLE journal IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        client
    }

    #[test]
    fn a_journal_entry_that_waits_out_a_lock_is_kept_for_the_next_write() {
        let (ledger, plain) = with_lock_timeout();
        ledger.create_run(new_run("r1")).unwrap();
        let mut holder = journal_locked(&plain);
        ledger.pending.push(entry("r1", "kept"));
        let err = ledger
            .apply(Vec::new())
            .expect_err("the journal is locked past the lock timeout");
        assert!(err.to_string().contains("lock"), "{err}");
        holder.batch_execute("ROLLBACK").unwrap();
        assert_eq!(
            events(&ledger, "r1"),
            ["kept"],
            "written by the next write, not dropped"
        );
    }

    #[test]
    fn an_apply_returns_only_once_entries_queued_before_it_are_committed_by_another() {
        let ledger = Arc::new(PgLedger::open_scratch().expect("open a scratch ledger"));
        ledger.create_run(new_run("r1")).unwrap();
        let url = ledger._scratch.as_ref().unwrap().url();
        // Another session holds `runs` against inserts until told to let go.
        let (locked_tx, locked) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let url = url.clone();
            move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut tx = client.transaction().unwrap();
                tx.batch_execute("LOCK TABLE runs IN SHARE MODE").unwrap();
                locked_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                tx.rollback().unwrap();
            }
        });
        locked.recv().unwrap();
        ledger.pending.push(entry("r1", "queued"));
        // This write takes the queued entry and then waits for the lock on `runs`.
        let carrier = std::thread::spawn({
            let ledger = Arc::clone(&ledger);
            move || ledger.create_run(new_run("r2"))
        });
        while ledger.pending.state.lock().unwrap().in_flight.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        go.send(()).unwrap();
        ledger.apply(Vec::new()).unwrap();
        assert_eq!(
            committed(&url, "queued"),
            1,
            "the entry queued before the apply is committed when it returns"
        );
        carrier.join().unwrap().unwrap();
        holder.join().unwrap();
    }

    #[test]
    fn an_apply_after_a_failed_carrier_writes_the_entries_it_put_back_or_fails() {
        let (ledger, plain) = with_lock_timeout();
        let ledger = Arc::new(ledger);
        ledger.create_run(new_run("r1")).unwrap();
        let mut holder = journal_locked(&plain);
        ledger.pending.push(entry("r1", "queued"));
        // This write takes the entry, cannot insert it, and puts it back.
        let carrier = std::thread::spawn({
            let ledger = Arc::clone(&ledger);
            move || ledger.apply(Vec::new())
        });
        while ledger.pending.state.lock().unwrap().in_flight.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = ledger.apply(Vec::new());
        assert!(
            carrier.join().unwrap().is_err(),
            "the carrier's write failed"
        );
        match after {
            // The journal is still locked, so writing the entry itself failed too.
            Err(err) => assert!(err.to_string().contains("lock"), "{err}"),
            Ok(_) => panic!("answered Ok while the entry queued before it was not written"),
        }
        holder.batch_execute("ROLLBACK").unwrap();
        ledger.apply(Vec::new()).unwrap();
        assert_eq!(
            committed(&plain, "queued"),
            1,
            "written once the lock is gone"
        );
    }

    #[test]
    fn journal_entries_a_refused_request_committed_are_not_queued_again() {
        let ledger = PgLedger::open_scratch().expect("open a scratch ledger");
        ledger.create_run(new_run("r1")).unwrap();
        ledger.pending.push(entry("r1", "before the refusal"));
        let refused = ledger.create_run(new_run("r1"));
        assert!(
            matches!(refused, Err(LedgerError::RunExists { .. })),
            "{refused:?}"
        );
        assert!(
            ledger.pending.take_for_flush().is_empty(),
            "the refusal's transaction committed the entry; nothing is left to write"
        );
        assert_eq!(events(&ledger, "r1"), ["before the refusal"]);
    }

    /// A ledger on one connection, so every call meets the statements the last one prepared.
    fn one_connection() -> PgLedger {
        let scratch = crate::scratch::PgScratch::new();
        let options = PgOptions {
            connections: 1,
            ..PgOptions::default()
        };
        let mut ledger = PgLedger::open(&scratch.url(), options).expect("open a scratch ledger");
        ledger._scratch = Some(scratch);
        ledger
    }

    #[test]
    fn statements_deallocated_under_the_connection_are_prepared_again() {
        let ledger = one_connection();
        ledger.create_run(new_run("r1")).unwrap();
        assert!(ledger.run("r1").unwrap().is_some());
        // What a pooler's DISCARD ALL does to a connection it hands on.
        ledger
            .read(|c| c.batch_execute("DEALLOCATE ALL").context("deallocating"))
            .unwrap();
        assert!(ledger.run("r1").unwrap().is_some(), "a read prepares again");
        ledger
            .read(|c| c.batch_execute("DEALLOCATE ALL").context("deallocating"))
            .unwrap();
        ledger
            .create_run(new_run("r2"))
            .expect("a write prepares again");
    }

    #[test]
    fn statements_whose_tables_changed_type_are_prepared_again() {
        let ledger = one_connection();
        ledger.create_run(new_run("r1")).unwrap();
        assert!(ledger.run("r1").unwrap().is_some());
        // A newer process's migration changes a column's type under this one's statements.
        ledger
            .read(|c| {
                c.batch_execute("ALTER TABLE runs ALTER COLUMN tool TYPE VARCHAR")
                    .context("altering")
            })
            .unwrap();
        assert_eq!(ledger.run("r1").unwrap().unwrap().tool, "echo");
        ledger
            .read(|c| {
                c.batch_execute("ALTER TABLE runs ALTER COLUMN tool TYPE TEXT")
                    .context("altering")
            })
            .unwrap();
        ledger
            .create_run(new_run("r2"))
            .expect("a write prepares again");
    }

    #[test]
    fn an_entry_every_write_fails_on_is_dropped_after_a_bound() {
        let queue = Queue::default();
        queue.push(entry("r1", "stuck"));
        for failure in 1..MAX_JOURNAL_FAILURES {
            let taken = queue.take_for_flush();
            assert_eq!(taken.len(), 1, "kept after {failure} failed write(s)");
            queue.put_back(taken);
        }
        queue.put_back(queue.take_for_flush());
        assert!(
            queue.take_for_flush().is_empty(),
            "dropped after {MAX_JOURNAL_FAILURES} failed writes"
        );
    }

    #[test]
    fn a_push_after_a_failed_flush_queues_a_flush_again() {
        let queue = Queue::default();
        assert!(
            queue.push(entry("r1", "a")),
            "the first entry queues a flush"
        );
        assert!(!queue.push(entry("r1", "b")), "one flush serves a batch");
        let taken = queue.take_for_flush();
        queue.put_back(taken); // the flush failed
        assert!(
            queue.push(entry("r1", "c")),
            "entries put back by a failed flush need a flush of their own"
        );
        let events: Vec<String> = queue
            .take_for_flush()
            .into_iter()
            .map(|q| q.entry.event)
            .collect();
        assert_eq!(events, ["a", "b", "c"], "put back in front, in order");
    }

    #[test]
    fn a_queued_entry_written_again_after_a_lost_commit_is_stored_once() {
        let ledger = PgLedger::open_scratch().expect("open a scratch ledger");
        ledger.create_run(new_run("r1")).unwrap();
        let queued = vec![Queued {
            key: "k-1".to_owned(),
            entry: entry("r1", "twice"),
            failed: 0,
        }];
        // As after a commit whose answer was lost: the entries are put back and written again.
        ledger
            .pool
            .call(move |conn| {
                for _ in 0..2 {
                    let mut tx = conn.client()?.transaction().context("starting")?;
                    write_journal(&mut tx, &queued)?;
                    tx.commit().context("committing")?;
                }
                Ok(())
            })
            .unwrap();
        let twice = ledger
            .journal_entries("r1")
            .unwrap()
            .into_iter()
            .filter(|e| e.event == "twice")
            .count();
        assert_eq!(twice, 1);
    }

    #[test]
    fn connections_carry_a_statement_timeout_beside_the_urls_own_options() {
        let ledger = PgLedger::open_scratch().expect("open a scratch ledger");
        let timeout: String = ledger
            .read(|c| {
                c.query_one("SHOW statement_timeout", &[])
                    .and_then(|row| row.try_get(0))
                    .context("showing a setting")
            })
            .unwrap();
        assert_eq!(timeout, "30s");
        let search_path: String = ledger
            .read(|c| {
                c.query_one("SHOW search_path", &[])
                    .and_then(|row| row.try_get(0))
                    .context("showing a setting")
            })
            .unwrap();
        assert!(
            search_path.starts_with("t_"),
            "the URL's own search_path is kept: {search_path}"
        );
    }
}
