//! What a tool can reach. Each capability the host can grant lives in its own module and
//! owns its linker wiring and its checks; [`ToolState`] is the per-run store data they share.
//!
//! Deny by default: the linker provides only the Tollgate interfaces and the harmless part of
//! WASI (clocks, random, stdio captured into the journal, and a filesystem with nothing in
//! it). A component that imports anything else is refused at load.

pub mod budget;
pub mod checkpoints;
pub mod deferred;
pub mod effects;
pub mod fs;
pub mod http;
pub mod limiter;
pub mod log;
pub mod sockets;
#[cfg(test)]
pub(crate) mod testing;
pub mod wasi;

use crate::bindings::{Tool, types};
use crate::clock::Clock;
use crate::effects::EffectEngine;
use crate::policy::Policy;
use limiter::Limiter;
use std::sync::Arc;
use tollgate_ledger::Ledger;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::WasiCtx;

/// The attempt a store belongs to: shared, read-only facts for the capabilities.
pub struct AttemptContext {
    pub run_id: String,
    pub attempt: u32,
    pub tool: String,
    pub policy: Policy,
    pub ledger: Arc<dyn Ledger>,
    pub effects: Arc<EffectEngine>,
    pub clock: Arc<dyn Clock>,
    /// The fencing token of the business-object lock the run holds, if any.
    pub fence: Option<i64>,
    /// Set when the attempt stopped to wait for a human: the escalation's id.
    pub parked: std::sync::Mutex<Option<i64>>,
    /// What the run's tool may still make the ledger store.
    pub budget: budget::StorageBudget,
    /// The last effect (kind, key) that failed or aborted the attempt, unless a later effect
    /// succeeded: what the run was acting on if it stops.
    pub failed_effect: std::sync::Mutex<Option<(String, String)>>,
    /// An effect sent downstream whose outcome the ledger would not record: the attempt
    /// stopped there, and its caller must be told.
    pub unrecorded: std::sync::Mutex<Option<Box<crate::effects::Unrecorded>>>,
    /// The run's rows not yet written, for a run recorded after its caller is answered.
    pub deferred: Option<Arc<deferred::Deferred>>,
}

impl AttemptContext {
    /// Where a journal entry of this attempt belongs, stamped now.
    pub fn at(&self) -> crate::journal::At<'_> {
        crate::journal::At {
            run_id: &self.run_id,
            attempt: Some(self.attempt),
            at: self.clock.now_ms(),
        }
    }

    /// Journals `entry` of this attempt without waiting (see [`Ledger::journal`]); it waits
    /// with the run's other rows while they are not written.
    pub fn journal(&self, entry: tollgate_ledger::NewJournalEntry) {
        deferred::journal(self.deferred.as_deref(), self.ledger.as_ref(), entry);
    }

    /// Applies `ops` of this attempt durably, after the run's rows not yet written.
    pub async fn apply(
        &self,
        ops: Vec<tollgate_ledger::Op>,
    ) -> Result<Vec<tollgate_ledger::Applied>, tollgate_ledger::LedgerError> {
        match &self.deferred {
            Some(deferred) => {
                deferred
                    .apply(&self.ledger, ops, tollgate_ledger::Durability::Synced)
                    .await
            }
            None => crate::ledger::apply(&self.ledger, ops).await,
        }
    }

    /// Notes how an effect went, for [`AttemptContext::failed_effect`].
    pub fn note_effect_result(&self, kind: &str, key: &str, ok: bool) {
        if let Ok(mut failed) = self.failed_effect.lock() {
            *failed = (!ok).then(|| (kind.to_owned(), key.to_owned()));
        }
    }

    /// Journals an entry the tool caused, if the run's storage budget has room for it;
    /// otherwise drops it, and journals once per attempt that the budget is spent. Returns
    /// whether the entry was journaled.
    pub fn journal_charged(&self, entry: tollgate_ledger::NewJournalEntry) -> bool {
        let bytes = tollgate_ledger::stored::journal_entry(&entry);
        if self.budget.charge(bytes).is_ok() {
            self.journal(entry);
            return true;
        }
        self.note_budget_spent();
        false
    }

    /// Journals, once per attempt, that the run's storage budget is spent. The note is the
    /// host's own and bounded (one row per attempt), so it is not charged.
    pub fn note_budget_spent(&self) {
        if !self.budget.first_refusal() {
            return;
        }
        let limit = self.budget.limit();
        tracing::warn!(run_id = %self.run_id, tool = %self.tool, limit, "storage budget spent");
        self.journal(crate::journal::entry(
            self.at(),
            crate::journal::Event::StorageBudgetSpent {
                max_stored_bytes: limit,
            },
            format!(
                "the run's tool used its {limit} bytes of ledger storage (limits.max_stored_bytes); further logs and denials are dropped, checkpoints and effects refused"
            ),
        ));
    }
}

/// The data of one run's store.
pub struct ToolState {
    wasi: WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_gate: http::HttpGate,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) stdio: wasi::CapturedStdio,
    /// None while the host calls `describe` at load time: no run, so no effects.
    pub(crate) attempt: Option<Arc<AttemptContext>>,
    pub(crate) effects_performed: u32,
    pub(crate) log_bytes: u64,
    pub(crate) log_truncated: bool,
    /// The storage charged for each checkpoint name this attempt saved, refunded when the
    /// name is saved again (the ledger keeps one copy per name).
    pub(crate) checkpoint_bytes: std::collections::HashMap<String, u64>,
    /// Epoch ticks that passed while the tool's own code ran: its CPU time.
    pub(crate) cpu_ticks: u64,
}

impl ToolState {
    /// The store data for one call of `tool` under `policy`: its grants, its limits, and
    /// (for a recorded run) the attempt its effects and checkpoints belong to.
    pub fn new(
        policy: &Policy,
        tool: &str,
        attempt: Option<Arc<AttemptContext>>,
    ) -> Result<Self, wasi::GrantError> {
        let (wasi, stdio) = wasi::context(policy)?;
        let mut table = ResourceTable::new();
        // Bounds host-side handles (streams, requests, …) a tool can pile up.
        table.set_max_capacity(usize::try_from(policy.limits.max_resources).unwrap_or(usize::MAX));
        Ok(Self {
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_gate: http::HttpGate::new(
                Arc::new(policy.clone()),
                tool.to_owned(),
                attempt.clone(),
            ),
            table,
            limiter: Limiter::new(policy),
            stdio,
            attempt,
            effects_performed: 0,
            log_bytes: 0,
            log_truncated: false,
            checkpoint_bytes: std::collections::HashMap::new(),
            cpu_ticks: 0,
        })
    }
}

/// The bounds one call of a tool runs within, besides its limiter.
pub struct Deadlines {
    /// Wall time for the whole call, waiting on the host included.
    pub wall: std::time::Duration,
    /// The rule that sets `wall`, named in the failure (`limits.timeout_ms`).
    pub wall_rule: &'static str,
    /// The tool's own compute, in milliseconds; `None` for no CPU bound.
    pub cpu_ms: Option<u64>,
}

/// A store for one call of a tool, with the policy's memory, table and instance limiter and
/// epoch deadlines. The epoch ticks every `EPOCH_TICK` and the callback runs only while
/// guest code runs, so counting its calls measures the tool's own compute (waiting on the
/// host is free), while the wall deadline bounds everything; yielding each tick lets calls
/// share threads. Passing either bound ends the call with a `timeout` failure naming it.
pub fn guarded_store(
    engine: &Engine,
    state: ToolState,
    deadlines: &Deadlines,
) -> wasmtime::Store<ToolState> {
    use crate::engine::EPOCH_TICK;
    use crate::failure::{Failure, FailureClass};
    let mut store = wasmtime::Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    let wall = deadlines.wall;
    let wall_rule = deadlines.wall_rule;
    let deadline = std::time::Instant::now() + wall;
    let cpu_ms = deadlines.cpu_ms;
    let tick_ms = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(1).max(1);
    let cpu_ticks = cpu_ms.map(|ms| ms.div_ceil(tick_ms).max(1));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        ctx.data_mut().cpu_ticks += 1;
        let ticks = ctx.data().cpu_ticks;
        let over = if std::time::Instant::now() >= deadline {
            format!(
                "tool ran past its {} ms deadline ({wall_rule}) and was interrupted",
                wall.as_millis()
            )
        } else if cpu_ticks.is_some_and(|max| ticks > max) {
            format!(
                "tool computed for more than its {} ms of CPU (limits.cpu_ms) and was interrupted",
                cpu_ms.unwrap_or(0)
            )
        } else {
            return Ok(wasmtime::UpdateDeadline::Yield(1));
        };
        Err(AttemptAbort(Failure::new(FailureClass::Timeout, over)).into())
    });
    store
}

/// A capability the linker can provide: the interfaces it provides (`namespace:package/name`),
/// the version track it provides them for, and how it adds itself to a linker.
pub struct Capability {
    pub name: &'static str,
    pub interfaces: &'static [&'static str],
    /// Versions `<track>*` of the interfaces are provided, e.g. `0.2.`.
    pub track: &'static str,
    add: fn(&mut Linker<ToolState>) -> wasmtime::Result<()>,
}

impl Capability {
    /// Whether this capability provides `import` (`wasi:io/streams@0.2.3`).
    pub fn provides(&self, import: &str) -> bool {
        let (name, version) = import.split_once('@').unwrap_or((import, ""));
        self.interfaces.contains(&name) && version.starts_with(self.track)
    }
}

/// Every capability the host links, in one list: it drives both [`linker`] and
/// [`is_provided`], so an interface can never be linked yet reported missing, or the other
/// way round.
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "wasi",
        interfaces: wasi::PROVIDED,
        track: "0.2.",
        add: wasi::add_to_linker,
    },
    Capability {
        name: "http",
        interfaces: http::PROVIDED,
        track: "0.2.",
        add: http::add_to_linker,
    },
    Capability {
        name: "sockets",
        interfaces: sockets::PROVIDED,
        track: "0.2.",
        add: sockets::add_to_linker,
    },
    Capability {
        name: "tollgate",
        interfaces: TOLLGATE_PROVIDED,
        track: "0.1.",
        add: add_tollgate,
    },
];

/// The Tollgate interfaces: effects, checkpoints and log (and their shared types).
const TOLLGATE_PROVIDED: &[&str] = &[
    "tollgate:tool/types",
    "tollgate:tool/effects",
    "tollgate:tool/checkpoints",
    "tollgate:tool/log",
];

fn add_tollgate(linker: &mut Linker<ToolState>) -> wasmtime::Result<()> {
    Tool::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
}

/// The linker every tool is instantiated with: every capability in [`CAPABILITIES`].
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<ToolState>> {
    let mut linker = Linker::new(engine);
    for capability in CAPABILITIES {
        (capability.add)(&mut linker)?;
    }
    Ok(linker)
}

/// Whether the linker provides `import`. Used to name every missing import at load, not
/// only the first.
pub fn is_provided(import: &str) -> bool {
    CAPABILITIES.iter().any(|c| c.provides(import))
}

impl types::Host for ToolState {}

impl ToolState {
    /// The CPU time the tool's own code used, to the epoch tick.
    pub fn cpu_ms(&self) -> u64 {
        let tick = u64::try_from(crate::engine::EPOCH_TICK.as_millis()).unwrap_or(1);
        self.cpu_ticks.saturating_mul(tick)
    }
}

/// A host-side failure that ends the attempt; raised as a trap so the tool cannot swallow it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttemptAbort(pub crate::failure::Failure);

/// Converts a host failure to the WIT error a tool sees. Host-only classes become `fatal`.
pub fn to_tool_error(failure: &crate::failure::Failure) -> types::ToolError {
    use crate::failure::FailureClass as C;
    use types::ErrorClass as W;
    let class = match failure.class {
        C::Transient => W::Transient,
        C::Validation => W::Validation,
        C::Permission => W::Permission,
        C::Timeout => W::Timeout,
        C::Conflict => W::Conflict,
        C::InDoubt | C::ResourceExhausted | C::Fatal => W::Fatal,
    };
    types::ToolError {
        class,
        message: failure.message.clone(),
        details: failure.details.as_ref().map(|d| d.to_string()),
    }
}

/// Converts a tool's own error to a host failure.
pub fn from_tool_error(error: types::ToolError) -> crate::failure::Failure {
    use crate::failure::FailureClass as C;
    use types::ErrorClass as W;
    let class = match error.class {
        W::Transient => C::Transient,
        W::Validation => C::Validation,
        W::Permission => C::Permission,
        W::Timeout => C::Timeout,
        W::Conflict => C::Conflict,
        W::Fatal => C::Fatal,
    };
    // Bounded here, where a tool's error enters the host: it is stored in the attempt, the
    // run, the journal and an escalation, and printed, so its size must not be the tool's.
    let details = error
        .details
        .map(|d| crate::clip::json_text(&d, crate::clip::MAX_ERROR_DETAILS_BYTES));
    crate::failure::Failure {
        class,
        message: crate::clip::text(&error.message, crate::clip::MAX_ERROR_MESSAGE_BYTES),
        details,
    }
}

/// [`journal_denial`] during an attempt; while the host calls `describe` at load time there
/// is no run to journal against, so the denial is only logged.
pub fn journal_denial_if_running(
    attempt: Option<&AttemptContext>,
    asked: &str,
    rule: impl FnOnce(&AttemptContext) -> String,
    failure: &crate::failure::Failure,
) {
    match attempt {
        Some(ctx) => journal_denial(ctx, asked, &rule(ctx), failure),
        None => tracing::warn!("denied: {}", failure.message),
    }
}

/// Journals a policy denial with what was asked and which rule denied it. What was asked
/// (and the message quoting it) is the tool's, so both are stored clipped, and each denial
/// is charged to the run's storage budget: a tool repeating a denied request cannot grow the
/// ledger past it.
pub fn journal_denial(
    ctx: &AttemptContext,
    asked: &str,
    rule: &str,
    failure: &crate::failure::Failure,
) {
    let asked = crate::clip::text(asked, crate::clip::MAX_ASKED_BYTES);
    let message = crate::clip::text(&failure.message, crate::clip::MAX_ASKED_BYTES * 2);
    tracing::warn!(run_id = %ctx.run_id, tool = %ctx.tool, asked, rule, "denied: {message}");
    ctx.journal_charged(crate::journal::entry(
        ctx.at(),
        crate::journal::Event::PolicyDenied {
            tool: ctx.tool.clone(),
            asked,
            rule: rule.to_owned(),
        },
        message,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_interface_is_provided_on_its_track_only() {
        for capability in CAPABILITIES {
            for interface in capability.interfaces {
                let on_track = format!("{interface}@{}9", capability.track);
                assert!(is_provided(&on_track), "{on_track} ({})", capability.name);
                assert!(!is_provided(&format!("{interface}@9.9.9")), "{interface}");
            }
        }
    }

    #[test]
    fn anything_unlisted_is_not_provided() {
        for import in [
            "wasi:sockets/tcp-extra@0.2.0",
            "wasi:keyvalue/store@0.2.0",
            "tollgate:tool/admin@0.1.0",
            "wasi:http/types",
        ] {
            assert!(!is_provided(import), "{import}");
        }
    }

    #[test]
    fn the_linker_adds_every_capability_once() {
        // Two capabilities defining one interface would fail here with a duplicate definition.
        let options = crate::engine::EngineOptions {
            max_instances: 1,
            pooling: false,
            deadlines: true,
        };
        let engine = crate::engine::EngineHandle::new(&options).expect("engine");
        linker(engine.engine()).expect("every capability links");
    }
}
