//! Evidence packets: everything a human needs to settle a run without opening the ledger,
//! gathered when the run is escalated and stored with the escalation.
//!
//! Invariant: a packet is bounded whatever the tool did (large inputs, responses and
//! checkpoints are clipped to summaries with their size and digest, and only the newest
//! attempts and effects are listed), and it shows an effect's payload exactly as sent.

use crate::clock::Millis;
use crate::failure::Failure;
use crate::ledger::{
    Attempt, AttemptStatus, Checkpoint, EffectRecord, EffectStatus, EscalationReason, Ledger,
    LedgerError, Run,
};
use crate::policy::Policy;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// Everything a human needs to settle a run without opening the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct EvidencePacket {
    pub run_id: String,
    pub tool: String,
    pub component_digest: Option<String>,
    pub input: serde_json::Value,
    pub reason: EscalationReason,
    /// The effect the run was attempting when it stopped, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// How the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub attempts: Vec<AttemptEvidence>,
    /// Older attempts not listed in `attempts`.
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts_omitted: usize,
    pub effects: Vec<EffectEvidence>,
    /// Older effects not listed in `effects` (`tollgate runs show` lists every one).
    #[serde(skip_serializing_if = "is_zero")]
    pub effects_omitted: usize,
    pub last_checkpoint: Option<CheckpointEvidence>,
    /// The policy in force for the tool.
    pub policy: Policy,
}

/// The effect a run attempted.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub kind: String,
    pub key: String,
    pub payload_digest: String,
    /// The payload as parsed (strictly: unique keys, decodable strings) before it was recorded.
    pub payload: serde_json::Value,
    /// The exact text that is (or was) sent downstream, whose SHA-256 is `payload_digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

impl Action {
    /// The action a recorded effect stands for, its payload shown parsed and exact.
    pub fn of_effect(effect: &EffectRecord) -> Self {
        Self {
            kind: effect.kind.clone(),
            key: effect.key.clone(),
            payload_digest: effect.payload_digest.clone(),
            // Payloads are parsed strictly before they are recorded, so this never falls back.
            payload: crate::effects::intent::parse_payload(&effect.payload).unwrap_or_default(),
            payload_text: Some(effect.payload.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptEvidence {
    pub attempt: u32,
    pub status: AttemptStatus,
    pub class: Option<String>,
    pub error: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub duration_ms: Option<Millis>,
    pub holder: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EffectEvidence {
    pub kind: String,
    pub key: String,
    pub payload_digest: String,
    pub status: EffectStatus,
    pub response: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub dispatches: u32,
    pub first_run_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointEvidence {
    pub name: String,
    pub attempt: u32,
    pub seq: i64,
    pub bytes: usize,
    /// The state as JSON when it is JSON, else `{"hex": "…"}`.
    pub state: serde_json::Value,
    pub created_at: Millis,
}

/// How an attempt that has not been recorded as ended yet did end, so the packet built in
/// the same batch as its end already shows it.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub attempt: u32,
    pub failure: &'a Failure,
    pub at: Millis,
}

/// The input as an evidence packet shows it: the run's input when small, else a summary with
/// its size and digest (the whole input stays in the run record, `tollgate runs show`).
const MAX_EVIDENCE_INPUT_BYTES: usize = 16 << 10;
/// A checkpoint's state as an evidence packet shows it.
const MAX_EVIDENCE_CHECKPOINT_BYTES: usize = 16 << 10;
/// An effect's response or error as an evidence packet shows it.
const MAX_EVIDENCE_RESPONSE_BYTES: usize = 1 << 10;
/// The newest effects an evidence packet lists; it counts the ones it leaves out.
const MAX_EVIDENCE_EFFECTS: usize = 50;
/// The newest attempts an evidence packet lists.
const MAX_EVIDENCE_ATTEMPTS: usize = 20;

/// What the ledger holds about a run that goes into its evidence packet, read in one go on
/// the blocking pool (see [`crate::ledger::read`]).
#[derive(Debug, Clone)]
pub struct RunRows {
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub effects: Vec<EffectRecord>,
    pub last_checkpoint: Option<Checkpoint>,
}

impl RunRows {
    /// Reads `run_id`'s rows; `RunNotFound` if there is no such run.
    pub fn read(ledger: &dyn Ledger, run_id: &str) -> Result<Self, LedgerError> {
        let run = ledger
            .run(run_id)?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: run_id.to_owned(),
            })?;
        Ok(Self {
            run,
            attempts: ledger.attempts(run_id)?,
            effects: ledger.effects_for_run(run_id)?,
            last_checkpoint: ledger.latest_checkpoint(run_id, None)?,
        })
    }

    /// [`RunRows::read`] without blocking the executor.
    pub async fn fetch(ledger: &Arc<dyn Ledger>, run_id: &str) -> Result<Self, LedgerError> {
        let run_id = run_id.to_owned();
        crate::ledger::read(ledger, move |l| Self::read(l, &run_id)).await
    }
}

/// The evidence for a run, from its rows. The packet is bounded whatever the tool did: large
/// inputs, responses and checkpoints appear as clipped summaries with their size and digest,
/// and only the newest effects and attempts are listed (with how many were left out), since
/// the packet is stored in the ledger and read by a human.
pub fn packet(
    rows: RunRows,
    policy: &Policy,
    reason: EscalationReason,
    failure: Option<&Failure>,
    action: Option<Action>,
    ending: Option<Ending<'_>>,
) -> EvidencePacket {
    let RunRows {
        run,
        attempts,
        effects,
        last_checkpoint,
    } = rows;
    let component_digest = attempts.first().map(|a| a.component_digest.clone());
    let attempts_omitted = attempts.len().saturating_sub(MAX_EVIDENCE_ATTEMPTS);
    let attempts = attempts
        .into_iter()
        .skip(attempts_omitted)
        .map(|a| attempt_evidence(a, ending))
        .collect();
    let effects_omitted = effects.len().saturating_sub(MAX_EVIDENCE_EFFECTS);
    let effects = effects
        .into_iter()
        .skip(effects_omitted)
        .map(effect_evidence)
        .collect();
    let last_checkpoint = last_checkpoint.map(checkpoint_evidence);
    EvidencePacket {
        run_id: run.run_id,
        tool: run.tool,
        component_digest,
        input: crate::clip::json_text(&run.input, MAX_EVIDENCE_INPUT_BYTES),
        reason,
        action,
        failure: failure.cloned(),
        attempts,
        attempts_omitted,
        effects,
        effects_omitted,
        last_checkpoint,
        policy: policy.clone(),
    }
}

fn attempt_evidence(a: Attempt, ending: Option<Ending<'_>>) -> AttemptEvidence {
    let mut e = AttemptEvidence {
        attempt: a.attempt,
        status: a.status,
        class: a.error_class,
        error: a.error_message,
        started_at: a.started_at,
        ended_at: a.ended_at,
        duration_ms: a.ended_at.map(|end| end - a.started_at),
        holder: a.holder,
    };
    if let Some(end) = ending.filter(|end| end.attempt == a.attempt) {
        e.status = AttemptStatus::Failed;
        e.class = Some(end.failure.class.as_str().to_owned());
        e.error = Some(end.failure.message.clone());
        e.ended_at = Some(end.at);
        e.duration_ms = Some(end.at - a.started_at);
    }
    e
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn effect_evidence(e: EffectRecord) -> EffectEvidence {
    let clip = |text: String| crate::clip::text(&text, MAX_EVIDENCE_RESPONSE_BYTES);
    EffectEvidence {
        kind: e.kind,
        key: e.key,
        payload_digest: e.payload_digest,
        status: e.status,
        response: e.response.map(clip),
        error_class: e.error_class,
        error_message: e.error_message.map(clip),
        dispatches: e.dispatches,
        first_run_id: e.run_id,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn checkpoint_evidence(c: Checkpoint) -> CheckpointEvidence {
    let state = match std::str::from_utf8(&c.state) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            crate::clip::json_text(text, MAX_EVIDENCE_CHECKPOINT_BYTES)
        }
        _ => {
            let shown = c.state.len().min(MAX_EVIDENCE_CHECKPOINT_BYTES / 2);
            json!({ "hex": hex::encode(c.state.get(..shown).unwrap_or_default()), "bytes": c.state.len() })
        }
    };
    CheckpointEvidence {
        name: c.name,
        attempt: c.attempt,
        seq: c.seq,
        bytes: c.state.len(),
        state,
        created_at: c.created_at,
    }
}
