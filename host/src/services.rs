//! What every run of one runtime shares: the engine and its linker, the precompiled cache, the
//! ledger (metered), the effect engine, the operator config, its meters, this process's holder identity, and time,
//! waiting and chance as injected dependencies.
//!
//! Built once by [`crate::RuntimeBuilder`] and never changed after; runs, locks and
//! escalations reach it only through these methods, so what they depend on is visible here.

use crate::capabilities::ToolState;
use crate::clock::{Clock, Millis, Random, Sleeper};
use crate::config::Config;
use crate::effects::EffectEngine;
use crate::engine::loaded::Loaded;
use crate::engine::{ArtifactCache, EngineHandle};
use crate::ledger::Ledger;
use crate::meters::Meters;
use crate::policy::Policy;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;

/// See the module docs; fields are reached through methods only.
pub(crate) struct Services {
    parts: Parts,
    loaded: Loaded,
    /// Set when the ledger refused the record of a run recorded after its answer; cleared
    /// when a run's record is written again.
    records_refused: Arc<AtomicBool>,
    /// One permit per run answered and not yet written, at most [`MAX_UNWRITTEN`].
    unwritten: Arc<Semaphore>,
}

/// How many answered runs may wait to be written at once. Past that, a run recorded `async`
/// is written before its answer: the backlog, and what a crash can take, stay bounded.
const MAX_UNWRITTEN: u32 = 256;

/// The parts [`Services`] is built from.
pub(crate) struct Parts {
    pub engine: EngineHandle,
    pub linker: Linker<ToolState>,
    pub cache: Option<ArtifactCache>,
    pub ledger: Arc<dyn Ledger>,
    pub effects: Arc<EffectEngine>,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
    pub ticker: Arc<dyn Sleeper>,
    pub random: Arc<dyn Random>,
    pub holder: String,
    pub lease_ttl_ms: Millis,
    pub meters: Meters,
}

impl Services {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            loaded: Loaded::default(),
            records_refused: Arc::new(AtomicBool::new(false)),
            unwritten: Arc::new(Semaphore::new(MAX_UNWRITTEN as usize)),
        }
    }

    /// A place for one more run answered before it is written; `None` while
    /// [`MAX_UNWRITTEN`] wait already.
    pub fn unwritten_permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.unwritten).try_acquire_owned().ok()
    }

    /// Waits until every run answered before it was written is written (or refused).
    pub async fn records_written(&self) {
        // Only the waits of runs answered before this call are waited for: all permits at
        // once are free only when none of those holds one.
        if let Ok(all) = self.unwritten.acquire_many(MAX_UNWRITTEN).await {
            drop(all);
        }
    }

    /// Whether a run recorded `async` may be answered before it is written: not while the
    /// ledger refuses writes, so its callers hear of that instead of losing records.
    pub fn defers_records(&self) -> bool {
        !self.records_refused.load(Ordering::Relaxed)
    }

    /// The flag a refused deferred record sets, for the writer that hears of it.
    pub fn records_refused(&self) -> &Arc<AtomicBool> {
        &self.records_refused
    }

    /// The tools this runtime has loaded, by file, for loading them again without work.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.parts.engine.engine()
    }

    pub fn linker(&self) -> &Linker<ToolState> {
        &self.parts.linker
    }

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.parts.cache.as_ref()
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.parts.ledger
    }

    /// What this runtime counts as it works.
    pub fn meters(&self) -> &Meters {
        &self.parts.meters
    }

    pub fn effects(&self) -> &Arc<EffectEngine> {
        &self.parts.effects
    }

    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// The policy of `tool`: its table in the config, or deny-by-default.
    pub fn policy_for(&self, tool: &str) -> Policy {
        self.parts.config.policy_for(tool)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.parts.clock
    }

    pub fn now(&self) -> Millis {
        self.parts.clock.now_ms()
    }

    /// How retry backoff and lock polls wait.
    pub fn sleeper(&self) -> &Arc<dyn Sleeper> {
        &self.parts.sleeper
    }

    /// How background lease renewal paces itself (real time unless a test says otherwise).
    pub fn ticker(&self) -> &Arc<dyn Sleeper> {
        &self.parts.ticker
    }

    pub fn random(&self) -> &dyn Random {
        self.parts.random.as_ref()
    }

    /// Who this process is, as recorded on the attempts and locks it holds.
    pub fn holder(&self) -> &str {
        &self.parts.holder
    }

    /// How long an attempt's lease lasts without renewal.
    pub fn lease_ttl_ms(&self) -> Millis {
        self.parts.lease_ttl_ms
    }
}
