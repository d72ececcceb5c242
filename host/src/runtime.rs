//! The embedding API: a [`Runtime`] loads tools and runs them against one ledger.
//! The CLI, the MCP server and library users all go through it.

use crate::capabilities;
use crate::clock::{Clock, Random, Sleeper, SystemClock, ThreadRandom, TokioSleeper};
use crate::config::Config;
use crate::effects::EffectEngine;
use crate::effects::connector::{Connector, ConnectorSetupError};
use crate::engine::loaded::Stamp;
use crate::engine::{ArtifactCache, CacheError, EngineHandle, EngineOptions};
use crate::escalation::{self, Decision, EscalationError, NextStep};
use crate::failure::Failure;
use crate::ledger::{
    self, Escalation, EscalationFilter, Ledger, LedgerError, LedgerOptions, Location,
};
use crate::meters::{MeteredLedger, Meters};
use crate::runs::{self, RunError, RunOptions, RunReport};
use crate::services::{Parts, Services};
use crate::story::RunStory;
use crate::tool::{self, LoadError, LoadedTool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument as _;

/// Where the ledger lives unless configured otherwise.
pub const DEFAULT_LEDGER: &str = ".tollgate/ledger.db";
/// Where precompiled components are cached unless configured otherwise.
pub const DEFAULT_CACHE_DIR: &str = ".tollgate/cache";
const DEFAULT_LEASE_TTL_MS: u64 = 15_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Connector(#[from] ConnectorSetupError),
}

/// Loads and runs tools. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Runtime {
    services: Arc<Services>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("holder", &self.services.holder())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Runtime`].
#[must_use]
pub struct RuntimeBuilder {
    config: Config,
    ledger: Option<Arc<dyn Ledger>>,
    ledger_path: Option<PathBuf>,
    ledger_options: LedgerOptions,
    cache_dir: Option<PathBuf>,
    cache: bool,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    ticker: Arc<dyn Sleeper>,
    random: Arc<dyn Random>,
    engine: EngineOptions,
    connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self {
            config: Config::default(),
            ledger: None,
            ledger_path: None,
            ledger_options: LedgerOptions::default(),
            cache_dir: None,
            cache: true,
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
            ticker: Arc::new(TokioSleeper),
            random: Arc::new(ThreadRandom),
            engine: EngineOptions::default(),
            connectors: BTreeMap::new(),
        }
    }
}

impl RuntimeBuilder {
    /// The operator config: connectors, tool policies, and defaults for paths.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// The ledger file (overrides the config's `ledger`).
    pub fn ledger_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ledger_path = Some(path.into());
        self
    }
    pub fn ledger_options(mut self, options: LedgerOptions) -> Self {
        self.ledger_options = options;
        self
    }
    /// Use an already-open ledger (any implementation of the storage trait).
    pub fn ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
    /// Compile every component on load instead of using the precompiled cache.
    pub fn without_cache(mut self) -> Self {
        self.cache = false;
        self
    }
    /// How retry backoff waits; tests pass one that advances a [`crate::ManualClock`].
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// How background lease renewal paces itself; real time by default.
    pub fn lease_ticker(mut self, ticker: Arc<dyn Sleeper>) -> Self {
        self.ticker = ticker;
        self
    }
    /// Where jitter and the random part of run IDs come from; seed it for reproducible tests.
    pub fn random(mut self, random: Arc<dyn Random>) -> Self {
        self.random = random;
        self
    }
    pub fn engine_options(mut self, options: EngineOptions) -> Self {
        self.engine = options;
        self
    }
    /// Adds (or replaces) the connector for an effect kind, in code rather than config.
    pub fn connector(mut self, kind: impl Into<String>, connector: Arc<dyn Connector>) -> Self {
        self.connectors.insert(kind.into(), connector);
        self
    }

    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let engine =
            EngineHandle::new(&self.engine).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let linker = capabilities::linker(engine.engine())
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = if self.cache {
            let dir = self
                .cache_dir
                .or_else(|| self.config.cache_dir.clone())
                .unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
            Some(ArtifactCache::open(&dir, engine.engine())?)
        } else {
            None
        };
        let ledger: Arc<dyn Ledger> = match self.ledger {
            Some(ledger) => ledger,
            None => {
                let path = self
                    .ledger_path
                    .or_else(|| self.config.ledger.clone())
                    .unwrap_or_else(|| DEFAULT_LEDGER.into());
                Location::parse(&path).open(self.ledger_options)?
            }
        };
        // Every write is timed and counted, whoever makes it.
        let meters = Meters::default();
        let ledger = MeteredLedger::wrap(ledger, meters.clone());
        let mut connectors = BTreeMap::new();
        for (kind, config) in &self.config.connectors {
            connectors.insert(
                kind.clone(),
                Arc::from(crate::effects::connector_for(kind, config)?),
            );
        }
        connectors.extend(self.connectors);
        let effects = Arc::new(
            EffectEngine::new(ledger.clone(), connectors, self.clock.clone())
                .with_breaker(self.config.breaker.clone())
                .with_meters(meters.clone()),
        );
        let lease_ttl_ms = i64::try_from(self.config.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS))
            .unwrap_or(i64::MAX);
        Ok(Runtime {
            services: Arc::new(Services::new(Parts {
                engine,
                linker,
                cache,
                ledger,
                effects,
                config: self.config,
                clock: self.clock,
                sleeper: self.sleeper,
                ticker: self.ticker,
                random: self.random,
                holder: crate::holder::this_process().to_owned(),
                lease_ttl_ms,
                meters,
            })),
        })
    }
}

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Loads the tool component at `path`: compiles it (or loads it precompiled), checks its
    /// imports against what the host provides, calls its `describe`, and refuses it unless
    /// its policy fits (pinned digest, a grant for each optional import).
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Arc<LoadedTool>, LoadError> {
        let tool = self.inspect(path).await?;
        tool.check_policy(&self.services.policy_for(&tool.descriptor.name))?;
        Ok(tool)
    }

    /// Loads the tool component at `path` without holding it to its policy: for showing what
    /// a tool is and what it would need. It cannot run until [`Runtime::load`] accepts it.
    ///
    /// With the precompiled cache on, a file loaded before and unchanged since is not read
    /// again: the tool made of it then is returned ([`crate::engine::loaded`]). Without the
    /// cache, every load compiles, as `--no-cache` promises.
    pub async fn inspect(&self, path: impl AsRef<Path>) -> Result<Arc<LoadedTool>, LoadError> {
        let services = &self.services;
        let path = path.as_ref();
        let stamp = services.cache().and_then(|_| Stamp::of(path));
        if let Some(stamp) = stamp
            && let Some(tool) = services.loaded().get(path, stamp)
        {
            return Ok(tool);
        }
        let tool = Arc::new(
            tool::load(
                services.engine(),
                services.linker(),
                services.cache(),
                path,
                stamp,
            )
            .await?,
        );
        if let Some(stamp) = stamp {
            services.loaded().keep(path, stamp, &tool);
        }
        Ok(tool)
    }

    /// Starts a new run of `tool` on JSON `input`, with run IDs `run-<date>-<uuid>`.
    pub async fn run(&self, tool: &Arc<LoadedTool>, input: &str) -> Result<RunReport, RunError> {
        self.run_with_options(tool, input, &RunOptions::default(), false)
            .await
    }

    /// Starts a new run with `options` (run ID prefix, business-object lock); with `retry`,
    /// resumes it under the tool's retry policy as [`Runtime::run_with_retries`] does.
    pub async fn run_with_options(
        &self,
        tool: &Arc<LoadedTool>,
        input: &str,
        options: &RunOptions,
        retry: bool,
    ) -> Result<RunReport, RunError> {
        // Named before it starts, so its span (and every log line in it) carries its ID.
        let run_id = match &options.run_id {
            Some(id) => id.clone(),
            None => self.new_run_id(&options.prefix)?,
        };
        let options = RunOptions {
            run_id: Some(run_id.clone()),
            ..options.clone()
        };
        let drive = async {
            let first = runs::start(&self.services, tool, input, &options).await?;
            if retry {
                runs::retry(&self.services, tool, first).await
            } else {
                Ok(first)
            }
        };
        drive
            .instrument(runs::span(&tool.descriptor.name, &run_id))
            .await
    }

    /// Waits until every run this runtime answered before writing it (`record = "async"`) is
    /// written, or refused; a process calls it before it exits.
    pub async fn records_written(&self) {
        self.services.records_written().await;
    }

    /// Starts a new run whose ID begins with `prefix`.
    pub async fn run_with_prefix(
        &self,
        tool: &Arc<LoadedTool>,
        input: &str,
        prefix: &str,
    ) -> Result<RunReport, RunError> {
        let options = RunOptions {
            prefix: prefix.to_owned(),
            ..RunOptions::default()
        };
        self.run_with_options(tool, input, &options, false).await
    }

    /// Starts the next attempt of an unfinished run. Without `tool`, loads the component the
    /// run was started with.
    pub async fn resume(
        &self,
        run_id: &str,
        tool: Option<&Arc<LoadedTool>>,
    ) -> Result<RunReport, RunError> {
        self.resume_with_retry(run_id, tool, false).await
    }

    /// [`Runtime::resume`]; with `retry`, keeps resuming under the tool's retry policy as
    /// [`Runtime::run_with_retries`] does.
    pub async fn resume_with_retry(
        &self,
        run_id: &str,
        tool: Option<&Arc<LoadedTool>>,
        retry: bool,
    ) -> Result<RunReport, RunError> {
        let loaded;
        let tool = match tool {
            Some(tool) => tool,
            None => {
                let path = runs::component_path(&self.services, run_id).await?;
                loaded = self.load(&path).await?;
                &loaded
            }
        };
        let drive = async {
            let report = runs::resume(&self.services, tool, run_id).await?;
            if retry {
                runs::retry(&self.services, tool, report).await
            } else {
                Ok(report)
            }
        };
        drive
            .instrument(runs::span(&tool.descriptor.name, run_id))
            .await
    }

    /// Starts a run and, while its attempts fail retryably, resumes it under the tool's
    /// retry policy (backoff with full jitter, `Retry-After`, attempt/time/effect budgets).
    /// Returns the last attempt's report; a run the policy stops retrying is escalated
    /// (status `escalated`, with an evidence packet) and the journal says why
    /// (`retry.stopped`).
    pub async fn run_with_retries(
        &self,
        tool: &Arc<LoadedTool>,
        input: &str,
        prefix: &str,
    ) -> Result<RunReport, RunError> {
        let options = RunOptions {
            prefix: prefix.to_owned(),
            ..RunOptions::default()
        };
        self.run_with_options(tool, input, &options, true).await
    }

    /// Waits for a run another caller started, and returns how it ended; a run whose driver
    /// died is resumed (and retried under its policy) instead.
    pub async fn join(&self, tool: &Arc<LoadedTool>, run_id: &str) -> Result<RunReport, RunError> {
        runs::join(&self.services, tool, run_id)
            .instrument(runs::span(&tool.descriptor.name, run_id))
            .await
    }

    /// Up to `batch` running runs of `tools` that no live host drives (their attempt's
    /// lease lapsed, or their driver stopped between attempts), oldest first, as
    /// `(run id, tool name)`.
    pub async fn stranded_runs(
        &self,
        batch: usize,
        tools: &[String],
    ) -> Result<Vec<(String, String)>, LedgerError> {
        runs::stranded(&self.services, batch, tools).await
    }

    /// Records in the ledger that this host is alive and serves on `address`; see
    /// [`crate::nodes`]. A process's `first` beat also forgets long-silent nodes.
    pub async fn heartbeat(&self, address: &str, first: bool) -> Result<(), LedgerError> {
        crate::nodes::heartbeat(&self.services, address, first).await
    }

    /// Records in the ledger that this host shut down cleanly.
    pub async fn node_stopped(&self) -> Result<(), LedgerError> {
        crate::nodes::stopped(&self.services).await
    }

    /// Every node that heartbeats in this ledger, with its state and what it holds.
    pub async fn nodes(&self) -> Result<Vec<crate::nodes::NodeView>, LedgerError> {
        crate::nodes::list(&self.services).await
    }

    /// What this runtime counts as it works (attempts, effects, ledger writes), for a
    /// server's `/metrics`.
    pub fn meters(&self) -> &Meters {
        self.services.meters()
    }

    /// How long an attempt's lease lasts without renewal (`lease_ttl_ms`).
    pub fn lease_ttl_ms(&self) -> ledger::Millis {
        self.services.lease_ttl_ms()
    }

    /// This host's identity, recorded as the holder of the attempts it runs.
    pub fn holder(&self) -> &str {
        self.services.holder()
    }

    /// Claims and resumes `run_id` if no live host drives it, under `tool`'s retry policy;
    /// see [`runs::recover`] for how exactly one host wins the claim.
    pub async fn recover(
        &self,
        tool: &Arc<LoadedTool>,
        run_id: &str,
    ) -> Result<runs::Recovery, RunError> {
        runs::recover(&self.services, tool, run_id)
            .instrument(runs::span(&tool.descriptor.name, run_id))
            .await
    }

    /// Records that this host's running attempt of `run_id` was given up by its caller (its
    /// future dropped): the attempt ends `failed` with the reason, and the run stays resumable.
    pub async fn cancelled(&self, run_id: &str, why: &str) -> Result<(), RunError> {
        runs::cancelled(&self.services, run_id, why).await
    }

    /// Gives up this host's running attempt of `run_id` because the host is shutting down
    /// (its future dropped): the lease ends now and the lock is freed, so any host resumes
    /// the run at once; journaled as `attempt.released`. `false` if this host had no
    /// running attempt of it (it was between attempts).
    pub async fn released(&self, run_id: &str, why: &str) -> Result<bool, RunError> {
        runs::released(&self.services, run_id, why).await
    }

    /// A fresh run ID with `prefix`, for [`RunOptions::run_id`].
    pub fn new_run_id(&self, prefix: &str) -> Result<String, RunError> {
        runs::new_run_id(prefix, self.services.now(), self.services.random())
    }

    /// Escalations matching `filter`, oldest first: the human queue.
    pub async fn escalations(
        &self,
        filter: &EscalationFilter,
    ) -> Result<Vec<Escalation>, LedgerError> {
        let filter = filter.clone();
        ledger::read(self.services.ledger(), move |l| l.escalations(&filter)).await
    }

    pub async fn escalation(&self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        ledger::read(self.services.ledger(), move |l| l.escalation(id)).await
    }

    /// Records a human's decision on escalation `id` (with the reason and who decided, both
    /// journaled). When the decision reopens the run (retry, approve, or an in-doubt effect
    /// marked succeeded) the run is resumed here and its report returned.
    pub async fn settle(
        &self,
        id: i64,
        decision: Decision,
        reason: &str,
        by: &str,
    ) -> Result<Settled, SettleError> {
        let now = self.services.now();
        let (escalation, next) =
            escalation::settle(self.services.ledger(), id, decision, reason, by, now).await?;
        // Resumed under the tool's retry policy, so a run that fails again retryably is
        // retried and, if the policy gives up, escalated again rather than left undriven.
        let report = match next {
            NextStep::Resume => {
                let resume = async {
                    let path = runs::component_path(&self.services, &escalation.run_id).await?;
                    let tool = self.load(&path).await?;
                    let drive = async {
                        let first = runs::resume(&self.services, &tool, &escalation.run_id).await?;
                        runs::retry(&self.services, &tool, first).await
                    };
                    let span = runs::span(&tool.descriptor.name, &escalation.run_id);
                    drive.instrument(span).await
                };
                Some(resume.await.map_err(|e: RunError| SettleError::Resume {
                    escalation: Box::new(escalation.clone()),
                    error: Box::new(e),
                })?)
            }
            NextStep::Done => None,
        };
        Ok(Settled { escalation, report })
    }

    /// Calls a tool once outside any run: the input is checked as for a run, nothing is
    /// recorded, and the tool's effects and checkpoints are refused with a `permission` error.
    /// For dry runs of read-only tools, and for measuring the sandbox apart from the ledger.
    pub async fn call_unrecorded(
        &self,
        tool: &Arc<LoadedTool>,
        input: &str,
    ) -> Result<Result<serde_json::Value, Failure>, RunError> {
        runs::call_unrecorded(&self.services, tool, input).await
    }

    /// Everything the ledger knows about a run. Synchronous, for the CLI's read commands and
    /// tests; async code reads through [`ledger::read`].
    pub fn story(&self, run_id: &str) -> Result<RunStory, LedgerError> {
        RunStory::read(self.services.ledger().as_ref(), run_id)
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        self.services.ledger()
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.services.engine()
    }

    pub fn config(&self) -> &Config {
        self.services.config()
    }

    /// The connector configured for an effect kind.
    pub fn connector(&self, kind: &str) -> Option<&Arc<dyn Connector>> {
        self.services.effects().connector(kind)
    }
}

/// Why a human's decision could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The decision was refused, and nothing was recorded.
    #[error(transparent)]
    Escalation(#[from] EscalationError),
    /// The decision is recorded, but resuming the run it reopened failed; the run stays
    /// resumable.
    #[error("the decision on escalation #{} is recorded, but resuming run {} failed: {error}", .escalation.id, .escalation.run_id)]
    Resume {
        escalation: Box<Escalation>,
        error: Box<RunError>,
    },
}

/// A settled escalation, and the report of the resume it led to, if any.
#[derive(Debug, Clone)]
pub struct Settled {
    pub escalation: Escalation,
    pub report: Option<RunReport>,
}
