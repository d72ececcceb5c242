//! The journal's vocabulary: every event a run's journal can hold, each a variant with its
//! typed fields, defined once here. Runs, effects, escalations, capabilities and the MCP
//! server build entries only through [`entry`], and refer to events by [`EventName`], never
//! by a string literal.
//!
//! Invariant: an event's name, its level and the JSON shape of its fields come from its
//! variant alone, so two places can never journal the same event differently.

use crate::clock::Millis;
use crate::failure::FailureClass;
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_ledger::{EffectStatus, EscalationReason, NewJournalEntry, Resolution};

macro_rules! events {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $level:literal $({ $($field:ident : $ty:ty),* $(,)? })? $(($tuple:ty))?
    );+ $(;)?) => {
        /// An event with its fields, as it is journaled.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Event {
            $($(#[$doc])* $variant $({ $($field: $ty),* })? $(($tuple))?,)+
        }

        /// The name of each [`Event`], for reading the journal back.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventName {
            $($variant,)+
        }

        impl EventName {
            pub const ALL: &'static [EventName] = &[$(EventName::$variant,)+];

            /// The dotted name the ledger stores, e.g. `attempt.started`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventName::$variant => $name,)+
                }
            }

            /// The event a stored name stands for.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|e| e.as_str() == name)
            }

            const fn default_level(self) -> &'static str {
                match self {
                    $(EventName::$variant => $level,)+
                }
            }
        }

        impl Event {
            pub const fn name(&self) -> EventName {
                match self {
                    $(events!(@pattern $variant $({ $($field),* })? $(($tuple))?) => EventName::$variant,)+
                }
            }
        }
    };
    (@pattern $variant:ident { $($field:ident),* }) => { Event::$variant { .. } };
    (@pattern $variant:ident ($tuple:ty)) => { Event::$variant(..) };
    (@pattern $variant:ident) => { Event::$variant };
}

events! {
    /// A run was recorded, before its first attempt.
    RunCreated = "run.created", "info" {
        component: String,
        digest: String,
        version: String,
        lock: Option<String>,
    };
    AttemptStarted = "attempt.started", "info" { holder: String, digest: String };
    /// A server's recovery loop claimed a run no live host drove: `from` held its last
    /// attempt, `node` (this host) starts the next.
    RunRecovered = "run.recovered", "warn" { node: String, from: Option<String> };
    AttemptSucceeded = "attempt.succeeded", "info" { cpu_ms: u64 };
    AttemptFailed = "attempt.failed", "warn" {
        class: FailureClass,
        details: Option<Value>,
        cpu_ms: u64,
    };
    /// The caller gave up on the attempt; the run stays resumable.
    AttemptCancelled = "attempt.cancelled", "warn" { why: String };
    /// The host shut down before the attempt ended: it gave up the attempt's lease (and its
    /// lock) at once, so another host resumes the run without waiting for the lease to lapse.
    AttemptReleased = "attempt.released", "warn" { node: String, why: String };
    LockWaiting = "lock.waiting", "info" { key: String, held_by_run_id: String };
    LockAcquired = "lock.acquired", "info" { key: String, fence: i64, waited: bool };
    RetryScheduled = "retry.scheduled", "info" { after_ms: u64, class: FailureClass };
    RetryStopped = "retry.stopped", "info" { reason: String, class: FailureClass };
    /// An effect's intent is durable and it is about to be dispatched.
    EffectIntent = "effect.intent", "info" {
        kind: String,
        key: String,
        payload_digest: String,
        connector: String,
    };
    EffectSucceeded = "effect.succeeded", "info" {
        kind: String,
        key: String,
        class: Option<FailureClass>,
    };
    EffectFailed = "effect.failed", "warn" {
        kind: String,
        key: String,
        class: Option<FailureClass>,
    };
    /// A recorded outcome was returned without a dispatch.
    EffectReplayed = "effect.replayed", "info" {
        kind: String,
        key: String,
        first_run_id: String,
        class: Option<FailureClass>,
    };
    EffectConflict = "effect.conflict", "warn" {
        kind: String,
        key: String,
        other_run_id: String,
    };
    /// Sent again under the same key: a retryable failure, or an unknown outcome the
    /// downstream deduplicates.
    EffectRedispatch = "effect.redispatch", "warn" {
        kind: String,
        key: String,
        why: String,
        previous_run_id: String,
        previous_attempt: u32,
        previous_status: EffectStatus,
    };
    /// Outcome unknown, and the downstream does not honour keys: not re-sent.
    EffectInDoubt = "effect.in_doubt", "error" {
        kind: String,
        key: String,
        owner_run_id: String,
        owner_attempt: u32,
        status: Option<u16>,
    };
    EffectCircuitOpen = "effect.circuit_open", "warn" { kind: String, open_until: Millis };
    /// Downstream was asked whether an effect of unknown outcome happened.
    EffectProbed = "effect.probed", "warn" {
        kind: String,
        key: String,
        answer: crate::effects::Answer,
        status: Option<u16>,
    };
    /// A human settled an in-doubt effect.
    EffectSettled = "effect.settled", "warn" {
        kind: String,
        key: String,
        status: EffectStatus,
    };
    EscalationOpened = "escalation.opened", "warn" { reason: EscalationReason };
    EscalationResolved = "escalation.resolved", "info" {
        id: i64,
        resolution: Resolution,
        by: String,
        reason: String,
    };
    CheckpointSaved = "checkpoint.saved", "info" { name: String, bytes: usize };
    PolicyDenied = "policy.denied", "warn" { tool: String, asked: String, rule: String };
    /// A tool's own log event, with its fields as the tool gave them.
    Log = "log", "info" (Map<String, Value>);
    LogTruncated = "log.truncated", "warn" { max_log_bytes: u64 };
    ToolStdout = "tool.stdout", "info" { bytes: usize };
    ToolStderr = "tool.stderr", "info" { bytes: usize };
    StorageBudgetSpent = "storage.budget_spent", "warn" { max_stored_bytes: u64 };
}

impl EventName {
    /// The level this event is journaled at unless its entry says otherwise.
    pub const fn level(self) -> &'static str {
        self.default_level()
    }
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an entry belongs: its run, and the attempt when there is one.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub run_id: &'a str,
    pub attempt: Option<u32>,
    pub at: Millis,
}

/// The journal entry for `event`, at the event's own level.
pub fn entry(at: At<'_>, event: Event, message: impl Into<String>) -> NewJournalEntry {
    let level = event.name().level();
    entry_at_level(at, level, event, message)
}

/// The journal entry for `event` at `level` (a tool's log event carries its own).
pub fn entry_at_level(
    at: At<'_>,
    level: &str,
    event: Event,
    message: impl Into<String>,
) -> NewJournalEntry {
    let name = event.name();
    let message = message.into();
    crate::milestones::note(at.run_id, name, &message);
    // Serializing plain fields cannot fail; should it, the entry still says what happened.
    let fields = serde_json::to_value(&event)
        .unwrap_or_else(|e| serde_json::json!({ "unserializable": e.to_string() }));
    NewJournalEntry {
        run_id: at.run_id.to_owned(),
        attempt: at.attempt,
        at: at.at,
        level: level.to_owned(),
        event: name.as_str().to_owned(),
        message,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for name in EventName::ALL {
            assert!(seen.insert(name.as_str()), "{name} twice");
            assert_eq!(EventName::parse(name.as_str()), Some(*name));
        }
        assert_eq!(EventName::parse("nope"), None);
    }

    #[test]
    fn an_entry_carries_the_name_level_and_typed_fields_of_its_event() {
        let at = At {
            run_id: "run-1",
            attempt: Some(2),
            at: 7,
        };
        let e = entry(
            at,
            Event::LockAcquired {
                key: "invoice:1".into(),
                fence: 3,
                waited: false,
            },
            "holding lock",
        );
        assert_eq!(
            (e.event.as_str(), e.level.as_str(), e.attempt, e.at),
            ("lock.acquired", "info", Some(2), 7)
        );
        assert_eq!(
            e.fields,
            serde_json::json!({ "key": "invoice:1", "fence": 3, "waited": false })
        );
        let failed = entry(
            at,
            Event::AttemptFailed {
                class: FailureClass::Transient,
                details: None,
                cpu_ms: 10,
            },
            "x",
        );
        assert_eq!(failed.level, "warn");
        assert_eq!(failed.fields["class"], "transient");
    }

    #[test]
    fn a_log_event_keeps_the_tools_fields_and_level() {
        let mut fields = Map::new();
        fields.insert("n".into(), Value::String("1".into()));
        let at = At {
            run_id: "r",
            attempt: Some(1),
            at: 0,
        };
        let e = entry_at_level(at, "debug", Event::Log(fields), "hello");
        assert_eq!((e.event.as_str(), e.level.as_str()), ("log", "debug"));
        assert_eq!(e.fields, serde_json::json!({ "n": "1" }));
    }
}
