//! A capability's world without a component: a recorded run on an in-memory ledger, one
//! attempt of it, and the store data a tool's calls reach, so each capability's host
//! functions can be called directly and their effect on the ledger read back.

use super::budget::StorageBudget;
use super::{AttemptContext, ToolState};
use crate::clock::ManualClock;
use crate::config::NoopConnectorConfig;
use crate::effects::EffectEngine;
use crate::effects::connector::Connector;
use crate::effects::noop::NoopConnector;
use crate::journal::EventName;
use crate::policy::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_ledger::{JournalEntry, Ledger, LedgerExt, NewRun, SqliteLedger};

pub const RUN_ID: &str = "run-2026-01-01-test";
pub const TOOL: &str = "demo";
/// The effect kind wired to a `noop` connector.
pub const KIND: &str = "demo.act";

pub struct Harness {
    pub ledger: Arc<dyn Ledger>,
    pub ctx: Arc<AttemptContext>,
    pub state: ToolState,
}

impl Harness {
    /// A recorded run of [`TOOL`] under the policy `toml` (the text of a `[tools.demo]`
    /// table), in its first attempt, with a storage budget of `budget` bytes.
    pub fn new(toml: &str, budget: u64) -> Self {
        let policy: Policy = toml::from_str(toml).expect("test policy parses");
        let ledger: Arc<dyn Ledger> =
            Arc::new(SqliteLedger::open_in_memory().expect("in-memory ledger"));
        let clock = Arc::new(ManualClock::new(1_000));
        ledger
            .create_run(NewRun {
                run_id: RUN_ID.to_owned(),
                tool: TOOL.to_owned(),
                input: "{}".to_owned(),
                now: 1_000,
                component: None,
                lock: None,
            })
            .expect("run created");
        let attempt = ledger
            .begin_attempt(RUN_ID, "sha256:test", "test-holder", 60_000, false, 1_000)
            .expect("attempt begun");
        let noop: Arc<dyn Connector> = Arc::new(NoopConnector::new(&NoopConnectorConfig {
            response: Some("{\"ok\":true}".to_owned()),
        }));
        let effects = Arc::new(EffectEngine::new(
            ledger.clone(),
            BTreeMap::from([(KIND.to_owned(), noop)]),
            clock.clone(),
        ));
        let ctx = Arc::new(AttemptContext {
            run_id: RUN_ID.to_owned(),
            attempt: attempt.attempt,
            tool: TOOL.to_owned(),
            policy: policy.clone(),
            ledger: ledger.clone(),
            effects,
            clock,
            fence: None,
            parked: std::sync::Mutex::new(None),
            budget: StorageBudget::new(budget, 0),
            failed_effect: std::sync::Mutex::new(None),
            unrecorded: std::sync::Mutex::new(None),
            deferred: None,
        });
        let state = ToolState::new(&policy, TOOL, Some(ctx.clone())).expect("store data");
        Self { ledger, ctx, state }
    }

    /// The store data of a call outside any run (the host describing the tool).
    pub fn unrecorded(toml: &str) -> ToolState {
        let policy: Policy = toml::from_str(toml).expect("test policy parses");
        ToolState::new(&policy, TOOL, None).expect("store data")
    }

    /// The run's journal, with every entry queued so far committed first.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.ledger.apply(Vec::new()).expect("journal flushed");
        self.ledger.journal_entries(RUN_ID).expect("journal read")
    }

    /// The journal's events, in order.
    pub fn events(&self) -> Vec<EventName> {
        self.journal()
            .iter()
            .map(|e| EventName::parse(&e.event).expect("every journaled event is a known one"))
            .collect()
    }

    /// How many times `name` was journaled.
    pub fn count(&self, name: EventName) -> usize {
        self.events().into_iter().filter(|&e| e == name).count()
    }
}
