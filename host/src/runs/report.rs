//! What a run ends an attempt with: its report, or why no attempt could run.

use crate::failure::Failure;
use crate::ledger::{LedgerError, RunStatus};
use serde::Serialize;

/// The result of one attempt of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub attempt: u32,
    pub tool: String,
    /// The tool's JSON output, or its classified failure.
    pub result: Result<serde_json::Value, Failure>,
    /// Whether the run is finished, or may be resumed.
    pub status: RunStatus,
    pub duration_ms: u64,
    /// A resume found the run already finished: this is its recorded ending, and no attempt
    /// was started.
    pub already_finished: bool,
    /// The effect this attempt failed on, as the host saw it (not as the tool reported it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_effect: Option<crate::failure::EffectRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("input is not valid JSON: {}", crate::text::Escaped(.0))]
    InputNotJson(String),
    #[error(
        "input is {bytes} bytes, over the {max} that tool `{tool}` accepts (limits.max_input_bytes in its policy)"
    )]
    InputTooLarge {
        tool: String,
        bytes: usize,
        max: u64,
    },
    #[error("input does not match the schema of tool `{tool}`:\n{}", .problems.iter().map(|p| format!("  - {}", crate::text::Escaped(p))).collect::<Vec<_>>().join("\n"))]
    SchemaViolation { tool: String, problems: Vec<String> },
    #[error("run prefix `{0}` must be 1-32 lowercase letters, digits or `-`")]
    BadPrefix(String),
    #[error(
        "run {run_id} was started with component {expected} but {path} has digest {found}: resume with the same build of the tool"
    )]
    DigestMismatch {
        run_id: String,
        expected: String,
        found: String,
        path: String,
    },
    #[error(
        "run {0} has no record of the component it was started with; give the component to resume it"
    )]
    UnknownComponent(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Load(#[from] crate::tool::LoadError),
    #[error("could not start the tool: {}", crate::text::Escaped(.0))]
    Instantiate(String),
    #[error("cannot name the run's lock: {}; fix `lock.key` in the tool's policy or name the lock for the run", crate::text::Escaped(.0))]
    LockKey(String),
    #[error(
        "run {run_id} (attempt {attempt}): {effect}. Its intent is recorded, so it is not lost: {recovery}"
    )]
    OutcomeUnrecorded {
        run_id: String,
        attempt: u32,
        effect: Box<crate::effects::Unrecorded>,
        recovery: String,
    },
    #[error("run {run_id} is {status}{}: a human must settle it before the run can continue", .escalation.map(|id| format!(" on escalation #{id}")).unwrap_or_default())]
    Parked {
        run_id: String,
        status: RunStatus,
        escalation: Option<i64>,
    },
}
