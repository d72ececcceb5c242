//! What the runtime measures as it works: attempts, effects and ledger writes, counted and
//! timed where they happen, for a server to expose at `/metrics` ([`Meters::register`]).
//! Always on: a count is an atomic add and a label lookup, next to calls that cost a ledger
//! commit each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ledger::{
    Applied, Attempt, BreakerRecord, CallKeyRecord, Checkpoint, Done, Durability, EffectRecord,
    Escalation, EscalationFilter, EscalationStatus, Holdings, JournalEntry, Ledger, LedgerError,
    LockRecord, NewJournalEntry, NodeRecord, Op, Run, RunFilter, StrandedFilter, Unsent,
};

/// A metric's labels, as `prometheus-client` encodes them.
pub(crate) type Labels = Vec<(&'static str, String)>;
type Timings = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets from 1 ms to about 65 s: calls, attempts, effects, scrapes.
pub(crate) fn slow() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Buckets from 50 µs to about 3 s: one ledger commit.
fn fast() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The runtime's counters. Clones share them.
#[derive(Clone)]
pub struct Meters {
    attempts: Family<Labels, Counter>,
    attempt_seconds: Timings,
    effects: Family<Labels, Counter>,
    effect_seconds: Timings,
    ledger_writes: Family<Labels, Counter>,
    ledger_write_seconds: Histogram,
}

impl Default for Meters {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            attempt_seconds: Timings::new_with_constructor(slow),
            effects: Family::default(),
            effect_seconds: Timings::new_with_constructor(slow),
            ledger_writes: Family::default(),
            ledger_write_seconds: fast(),
        }
    }
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

impl Meters {
    /// Adds every meter to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "attempts",
            "Attempts ended on this host, by tool and outcome: `succeeded`, or the failure class",
            self.attempts.clone(),
        );
        registry.register(
            "attempt_seconds",
            "Time from an attempt's start to its recorded end, by tool",
            self.attempt_seconds.clone(),
        );
        registry.register(
            "effects",
            "Effect dispatches whose outcome this host recorded, by effect kind and status \
             (succeeded, failed, in_doubt)",
            self.effects.clone(),
        );
        registry.register(
            "effect_seconds",
            "Time from sending an effect downstream to its recorded outcome, by effect kind",
            self.effect_seconds.clone(),
        );
        registry.register(
            "ledger_writes",
            "Ledger write transactions by outcome: `committed`, `refused` (a rule said no, e.g. \
             a lease held elsewhere), or the storage error that failed it",
            self.ledger_writes.clone(),
        );
        registry.register(
            "ledger_write_seconds",
            "Time a ledger write transaction took, from request to durable commit or error",
            self.ledger_write_seconds.clone(),
        );
    }

    pub(crate) fn attempt_ended(&self, tool: &str, outcome: &str, took: Duration) {
        self.attempts
            .get_or_create(&vec![
                ("tool", tool.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.attempt_seconds
            .get_or_create(&vec![("tool", tool.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// An effect's dispatch ended as `status`; `took` from its send, when it was timed.
    pub(crate) fn effect_ended(&self, kind: &str, status: &str, took: Option<Duration>) {
        self.effects
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("status", status.to_owned()),
            ])
            .inc();
        if let Some(took) = took {
            self.effect_seconds
                .get_or_create(&vec![("kind", kind.to_owned())])
                .observe(took.as_secs_f64());
        }
    }

    fn ledger_write(&self, took: Duration, result: Result<(), &LedgerError>) {
        let outcome = match result {
            Ok(()) => "committed",
            Err(e) => write_error(e),
        };
        self.ledger_writes
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        self.ledger_write_seconds.observe(took.as_secs_f64());
    }
}

/// A failed write's label: `refused` for a rule's verdict, which is the ledger working; the
/// storage failure's name otherwise. Exhaustive, so a new error is placed deliberately.
fn write_error(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::RunNotFound { .. }
        | LedgerError::RunExists { .. }
        | LedgerError::RunFinished { .. }
        | LedgerError::RunParked { .. }
        | LedgerError::AttemptLive { .. }
        | LedgerError::LeaseLost { .. }
        | LedgerError::OwnershipLost { .. }
        | LedgerError::EffectNotFound { .. }
        | LedgerError::EscalationNotFound { .. }
        | LedgerError::EscalationResolved { .. }
        | LedgerError::LockHeld { .. }
        | LedgerError::LockLost { .. }
        | LedgerError::CallKeyUsed { .. }
        | LedgerError::RunMoved { .. }
        | LedgerError::InvalidTransition { .. } => "refused",
        LedgerError::Busy { .. } => "busy",
        LedgerError::Unavailable { .. } => "unavailable",
        LedgerError::ReadOnly { .. } => "read_only",
        LedgerError::DiskFull { .. } => "disk_full",
        LedgerError::Corrupt { .. }
        | LedgerError::NotALedger { .. }
        | LedgerError::EmptyFile { .. }
        | LedgerError::Missing { .. }
        | LedgerError::NewerSchema { .. } => "bad_ledger",
        LedgerError::Unstorable { .. } => "unstorable",
        LedgerError::Io { .. } | LedgerError::Storage { .. } => "storage",
        LedgerError::WriterGone => "writer_gone",
        LedgerError::BadLocation { .. }
        | LedgerError::NotEmpty { .. }
        | LedgerError::CopyDiffers { .. }
        | LedgerError::Internal(_) => "internal",
    }
}

/// A ledger that times and counts its write transactions into [`Meters`]; reads pass
/// through untouched.
pub(crate) struct MeteredLedger {
    inner: Arc<dyn Ledger>,
    meters: Meters,
}

impl MeteredLedger {
    pub(crate) fn wrap(inner: Arc<dyn Ledger>, meters: Meters) -> Arc<dyn Ledger> {
        Arc::new(Self { inner, meters })
    }
}

impl Ledger for MeteredLedger {
    fn apply_with(
        &self,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Result<Vec<Applied>, LedgerError> {
        let started = Instant::now();
        let result = self.inner.apply_with(ops, durability);
        self.meters
            .ledger_write(started.elapsed(), result.as_ref().map(drop));
        result
    }

    fn submit(&self, ops: Vec<Op>, durability: Durability, done: Done) -> Result<(), Unsent> {
        let started = Instant::now();
        let meters = self.meters.clone();
        self.inner.submit(
            ops,
            durability,
            Box::new(move |result| {
                meters.ledger_write(started.elapsed(), result.as_ref().map(drop));
                done(result);
            }),
        )
    }

    fn journal(&self, entry: NewJournalEntry) {
        self.inner.journal(entry);
    }

    fn run(&self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        self.inner.run(run_id)
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, LedgerError> {
        self.inner.runs(filter)
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<Attempt>, LedgerError> {
        self.inner.attempts(run_id)
    }

    fn effect(&self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        self.inner.effect(kind, key)
    }

    fn effects_for_run(&self, run_id: &str) -> Result<Vec<EffectRecord>, LedgerError> {
        self.inner.effects_for_run(run_id)
    }

    fn latest_checkpoint(
        &self,
        run_id: &str,
        name: Option<&str>,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        self.inner.latest_checkpoint(run_id, name)
    }

    fn checkpoints(&self, run_id: &str) -> Result<Vec<Checkpoint>, LedgerError> {
        self.inner.checkpoints(run_id)
    }

    fn journal_entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        self.inner.journal_entries(run_id)
    }

    fn journal_since(&self, run_id: &str, seq: i64) -> Result<Vec<JournalEntry>, LedgerError> {
        self.inner.journal_since(run_id, seq)
    }

    fn escalation(&self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        self.inner.escalation(id)
    }

    fn escalations(&self, filter: &EscalationFilter) -> Result<Vec<Escalation>, LedgerError> {
        self.inner.escalations(filter)
    }

    fn count_escalations(&self, status: EscalationStatus) -> Result<u64, LedgerError> {
        self.inner.count_escalations(status)
    }

    fn lock(&self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        self.inner.lock(key)
    }

    fn breakers(&self) -> Result<Vec<BreakerRecord>, LedgerError> {
        self.inner.breakers()
    }

    fn breaker(&self, connector: &str, tool: &str) -> Result<Option<BreakerRecord>, LedgerError> {
        self.inner.breaker(connector, tool)
    }

    fn stored_bytes(&self, run_id: &str) -> Result<u64, LedgerError> {
        self.inner.stored_bytes(run_id)
    }

    fn call_key(&self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        self.inner.call_key(key)
    }

    fn stranded(&self, filter: &StrandedFilter) -> Result<Vec<Run>, LedgerError> {
        self.inner.stranded(filter)
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, LedgerError> {
        self.inner.nodes()
    }

    fn holdings(&self, holder: &str) -> Result<Holdings, LedgerError> {
        self.inner.holdings(holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn a_metered_ledger_counts_commits_and_refusals_apart() {
        let meters = Meters::default();
        let ledger = MeteredLedger::wrap(
            Arc::new(crate::ledger::SqliteLedger::open_in_memory().unwrap()),
            meters.clone(),
        );
        ledger.apply(Vec::new()).unwrap();
        let refused = ledger.apply(vec![Op::ReopenRun {
            run_id: "nope".into(),
            now: 0,
        }]);
        assert!(matches!(refused, Err(LedgerError::RunNotFound { .. })));
        let mut registry = Registry::with_prefix("tollgate");
        meters.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("tollgate_ledger_writes_total{outcome=\"committed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_ledger_writes_total{outcome=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_ledger_write_seconds_count 2"),
            "{text}"
        );
    }
}
