//! What a server exposes at `/metrics`, in the Prometheus (OpenMetrics) text format, through
//! `prometheus-client`.
//!
//! Two kinds of figures: what this process saw (calls, their latency and outcome, the calls
//! in flight, recoveries, ledger reads that failed; and from its runtime's
//! [`crate::meters::Meters`], attempts, effects and ledger writes), counted as it happens; and what the
//! ledger holds (open escalations, breaker states), read when the endpoint is scraped, so
//! every node of a fleet reports the same shared truth.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Runtime;
use crate::ledger::{self, EscalationStatus};
use crate::meters::{Labels, slow};

/// The server's metrics. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    call_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    recoveries: Family<Labels, Counter>,
    ledger_errors: Family<Labels, Counter>,
    scrape_seconds: Histogram,
    open_escalations: Gauge,
    breakers: Family<Labels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The server's own metrics; [`Self::with_runtime`] adds what its runtime measures.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "Tool calls answered, by tool and the run's status: `refused` for a call turned away \
             before a run (a malformed _meta, a client gone), `error` for one whose run could \
             not be reported",
            calls.clone(),
        );
        let call_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(slow);
        registry.register(
            "call_seconds",
            "Time from a tool call's arrival to its answer, attempts and retries included",
            call_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Tool calls being answered now",
            in_flight.clone(),
        );
        let recoveries = Family::<Labels, Counter>::default();
        registry.register(
            "recoveries",
            "Runs the recovery loop found stranded, by tool and what it did (resumed, escalated, \
             failed)",
            recoveries.clone(),
        );
        let ledger_errors = Family::<Labels, Counter>::default();
        registry.register(
            "ledger_errors",
            "Ledger reads by this server's own loops and scrapes that failed, by what they read",
            ledger_errors.clone(),
        );
        let scrape_seconds = slow();
        registry.register(
            "ledger_scrape_seconds",
            "Time the ledger took to answer what a scrape reads from it",
            scrape_seconds.clone(),
        );
        let open_escalations = Gauge::default();
        registry.register(
            "open_escalations",
            "Escalations waiting for a human, in the shared ledger",
            open_escalations.clone(),
        );
        let breakers = Family::<Labels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breakers by connector, tool and state: 1 for the state each is in",
            breakers.clone(),
        );
        Self {
            registry,
            calls,
            call_seconds,
            in_flight,
            recoveries,
            ledger_errors,
            scrape_seconds,
            open_escalations,
            breakers,
        }
    }

    /// Adds what `runtime` measures (attempts, effects, ledger writes) to what is exposed.
    pub fn with_runtime(mut self, runtime: &Runtime) -> Self {
        runtime.meters().register(&mut self.registry);
        self
    }

    /// A call to `tool` has arrived; the guard counts it in flight until it is dropped.
    pub fn call(self: &Arc<Self>, tool: &str) -> CallTimer {
        self.in_flight.inc();
        CallTimer {
            metrics: Arc::clone(self),
            tool: tool.to_owned(),
            status: None,
            started: Instant::now(),
        }
    }

    /// The recovery loop acted on a run of `tool`: `outcome` is `resumed`, `escalated` or
    /// `failed`.
    pub fn recovered(&self, tool: &str, outcome: &str) {
        self.recoveries
            .get_or_create(&vec![
                ("tool", tool.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// A ledger read for `what` failed.
    pub fn ledger_error(&self, what: &str) {
        self.ledger_errors
            .get_or_create(&vec![("read", what.to_owned())])
            .inc();
    }

    /// The metrics as Prometheus text, after reading what the ledger holds now.
    pub async fn render(&self, runtime: &Runtime) -> String {
        self.read_ledger(runtime).await;
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        text
    }

    async fn read_ledger(&self, runtime: &Runtime) {
        let started = Instant::now();
        let open = ledger::read(runtime.ledger(), |l| {
            l.count_escalations(EscalationStatus::Open)
        })
        .await;
        match open {
            Ok(open) => {
                self.open_escalations
                    .set(i64::try_from(open).unwrap_or(i64::MAX));
            }
            Err(e) => {
                tracing::warn!("metrics: cannot read open escalations: {e}");
                self.ledger_error("escalations");
            }
        }
        match ledger::read(runtime.ledger(), |l| l.breakers()).await {
            Ok(breakers) => {
                self.breakers.clear();
                for b in breakers {
                    let labels = vec![
                        ("connector", b.connector),
                        ("tool", b.tool),
                        ("state", b.state.as_str().to_owned()),
                    ];
                    self.breakers.get_or_create(&labels).set(1);
                }
            }
            Err(e) => {
                tracing::warn!("metrics: cannot read breakers: {e}");
                self.ledger_error("breakers");
            }
        }
        self.scrape_seconds.observe(started.elapsed().as_secs_f64());
    }
}

/// One call in flight, from [`Metrics::call`]. Dropped without [`CallTimer::ended`] (an
/// invalid request, or a client that went away), it counts as `refused`.
pub struct CallTimer {
    metrics: Arc<Metrics>,
    tool: String,
    status: Option<String>,
    started: Instant,
}

impl CallTimer {
    /// The call was answered with a run whose status is `status`.
    pub fn ended(mut self, status: &str) {
        self.status = Some(status.to_owned());
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        let status = self.status.take().unwrap_or_else(|| "refused".to_owned());
        let tool = std::mem::take(&mut self.tool);
        self.metrics
            .call_seconds
            .get_or_create(&vec![("tool", tool.clone())])
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .calls
            .get_or_create(&vec![("tool", tool), ("status", status)])
            .inc();
    }
}
