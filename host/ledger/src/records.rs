//! The ledger's data model: the records it stores and the mutations ([`Op`]) that change them.
//!
//! Owns only plain data shared by every backend; no storage logic lives here, so a Postgres
//! backend reuses it unchanged. Invariant: every status enum round-trips through one stable
//! snake_case string (`as_str` / `parse`), which is what the backends persist.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Unix time in milliseconds, always supplied by the caller: the ledger never reads the clock.
pub type Millis = i64;

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The stable snake_case name stored by every backend.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the name produced by [`Self::as_str`]; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// Where a run stands. `Running` means "not finished": the process driving it may have crashed.
    RunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Finished without knowing whether some effect happened; a human must look.
        InDoubt => "in_doubt",
    }
}

status_enum! {
    /// Where one attempt of a run stands.
    AttemptStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Ended without reporting: its lease expired or another holder took it over.
        Crashed => "crashed",
    }
}

status_enum! {
    /// Where one idempotency-keyed side effect stands.
    EffectStatus {
        /// Claimed (intent durable); the outcome is not recorded yet.
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The outcome is unknown and the downstream does not honour idempotency keys.
        InDoubt => "in_doubt",
    }
}

/// Hex SHA-256 of an effect payload, the form [`EffectRecord::payload_digest`] stores.
pub fn payload_digest(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub run_id: String,
    pub tool: String,
    /// The tool input, as JSON text.
    pub input: String,
    pub now: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub tool: String,
    pub input: String,
    pub status: RunStatus,
    pub output: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// How many attempts have been started.
    pub attempts: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub run_id: String,
    /// 1-based attempt number within the run.
    pub attempt: u32,
    pub component_digest: String,
    /// Who drives this attempt (e.g. host id + pid); leases are checked against it.
    pub holder: String,
    pub status: AttemptStatus,
    pub started_at: Millis,
    pub lease_until: Millis,
    pub ended_at: Option<Millis>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub kind: String,
    pub key: String,
    /// Hex SHA-256 of the payload (see [`payload_digest`]).
    pub payload_digest: String,
    pub payload: String,
    /// The run that currently owns the effect.
    pub run_id: String,
    /// The attempt that currently owns the effect.
    pub attempt: u32,
    pub status: EffectStatus,
    pub response: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// How many times a dispatch was started (see [`Op::MarkDispatched`]).
    pub dispatches: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run_id: String,
    pub attempt: u32,
    /// Ledger-wide increasing sequence number; later checkpoints have larger numbers.
    pub seq: i64,
    pub name: String,
    pub state: Vec<u8>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJournalEntry {
    pub run_id: String,
    pub attempt: Option<u32>,
    pub at: Millis,
    /// One of trace, debug, info, warn, error.
    pub level: String,
    /// What happened, dotted: "attempt.started", "effect.replayed", "log", …
    pub event: String,
    pub message: String,
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Ledger-wide increasing sequence number: the journal's order.
    pub seq: i64,
    pub run_id: String,
    pub attempt: Option<u32>,
    pub at: Millis,
    pub level: String,
    pub event: String,
    pub message: String,
    pub fields: serde_json::Value,
}

/// Which runs [`crate::Ledger::runs`] returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs in this status; `None` for all.
    pub status: Option<RunStatus>,
    /// At most this many runs.
    pub limit: usize,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            status: None,
            limit: 100,
        }
    }
}

/// One durable mutation. A call to [`crate::Ledger::apply`] commits all its ops atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Creates a run in status `Running`. Error `RunExists` if the id is taken.
    CreateRun(NewRun),
    /// Starts attempt n+1 of an unfinished run → [`Applied::Attempt`].
    ///
    /// A `Running` latest attempt whose `lease_until > now` refuses with `AttemptLive` unless
    /// `take_over`; otherwise it becomes `Crashed` (`ended_at = now`). A finished run refuses
    /// with `RunFinished`, an unknown run with `RunNotFound`.
    BeginAttempt {
        run_id: String,
        component_digest: String,
        holder: String,
        lease_until: Millis,
        take_over: bool,
        now: Millis,
    },
    /// Extends the lease. Error `LeaseLost` if that attempt is no longer `Running` or the holder
    /// differs.
    RenewLease {
        run_id: String,
        attempt: u32,
        holder: String,
        lease_until: Millis,
    },
    /// Ends a `Running` attempt as `Succeeded`, `Failed` or `Crashed`. Repeating the same end is
    /// a no-op; ending an attempt that already ended differently is `LeaseLost`.
    EndAttempt {
        run_id: String,
        attempt: u32,
        status: AttemptStatus,
        error_class: Option<String>,
        error_message: Option<String>,
        now: Millis,
    },
    /// Finishes the run as `Succeeded`, `Failed` or `InDoubt`. Repeating the same status is a
    /// no-op; a run already finished with a different status is `RunFinished`.
    EndRun {
        run_id: String,
        status: RunStatus,
        output: Option<String>,
        error_class: Option<String>,
        error_message: Option<String>,
        now: Millis,
    },
    /// Step (b) of the effect protocol: makes the intent durable → [`Applied::Claim`].
    ///
    /// Keys are scoped by (kind, key), not by run. Absent: inserts a `Pending` row owned by
    /// (run_id, attempt) with `dispatches = 0` → [`Claim::Fresh`]. Present: returns it with its
    /// owning attempt → [`Claim::Existing`]; the host decides between replay and conflict.
    ClaimEffect {
        kind: String,
        key: String,
        payload_digest: String,
        payload: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Compare-and-set ownership for re-dispatch → [`Applied::TookOver`].
    ///
    /// `true` only if the row still has (expected_run_id, expected_attempt, expected_status);
    /// then it is owned by (run_id, attempt), `Pending`, with response and error cleared.
    TakeOverEffect {
        kind: String,
        key: String,
        expected_run_id: String,
        expected_attempt: u32,
        expected_status: EffectStatus,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// A dispatch is about to start: `dispatches += 1`. Error `OwnershipLost` unless owned by
    /// (run_id, attempt) and `Pending`.
    MarkDispatched {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Step (d): records `Succeeded` or `Failed`. Error `OwnershipLost` unless owned by
    /// (run_id, attempt) and `Pending`.
    RecordOutcome {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        status: EffectStatus,
        response: Option<String>,
        error_class: Option<String>,
        error_message: Option<String>,
        now: Millis,
    },
    /// The outcome is unknown and the downstream does not honour keys: `Pending` → `InDoubt`.
    /// Error `OwnershipLost` if another attempt owns it, `InvalidTransition` if not `Pending`.
    MarkInDoubt {
        kind: String,
        key: String,
        run_id: String,
        attempt: u32,
        now: Millis,
    },
    /// Saves a checkpoint. The attempt must be the run's `Running` one, else `LeaseLost`: a
    /// superseded attempt cannot overwrite what its successor resumes from.
    SaveCheckpoint {
        run_id: String,
        attempt: u32,
        name: String,
        state: Vec<u8>,
        now: Millis,
    },
    /// Appends to the journal. Error `RunNotFound` for an unknown run.
    Journal(NewJournalEntry),
}

/// What [`Op::ClaimEffect`] found.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per op, never stored in bulk; boxing would only complicate matching"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// The key was new; the caller now owns it in `Pending`.
    Fresh,
    /// The key was already claimed; `owner` is the attempt row that owns it (`None` if missing).
    Existing {
        effect: EffectRecord,
        owner: Option<Attempt>,
    },
}

/// The result of one [`Op`]; [`crate::Ledger::apply`] returns one per op, in the same order.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per op, never stored in bulk; boxing would only complicate matching"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Done,
    Attempt(Attempt),
    Claim(Claim),
    TookOver(bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_and_match_serde() {
        for status in [
            EffectStatus::Pending,
            EffectStatus::Succeeded,
            EffectStatus::Failed,
            EffectStatus::InDoubt,
        ] {
            assert_eq!(EffectStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(RunStatus::parse("in_doubt"), Some(RunStatus::InDoubt));
        assert_eq!(
            AttemptStatus::parse("crashed"),
            Some(AttemptStatus::Crashed)
        );
        assert_eq!(RunStatus::parse("InDoubt"), None);
    }

    #[test]
    fn payload_digest_is_lowercase_hex_sha256() {
        assert_eq!(
            payload_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
