//! A run's story, as `tollgate runs show` tells it: the run, each attempt, each effect with its
//! key and status, the checkpoints, and the journal.
//!
//! Its `Display` is for a terminal: every string it shows from the ledger (most of them chosen
//! by the tool or the caller) is escaped with [`crate::text`], so each line of the story is
//! one the host wrote.

use crate::clock::format_ms;
use crate::ledger::{
    Attempt, BreakerRecord, EffectRecord, Escalation, EscalationFilter, JournalEntry, Ledger,
    LedgerError, Run,
};
use crate::text::Escaped;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Serialize)]
pub struct RunStory {
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub effects: Vec<EffectRecord>,
    pub checkpoints: Vec<CheckpointSummary>,
    /// The run's escalations, open and resolved.
    pub escalations: Vec<Escalation>,
    /// The run's tool's circuit on each connector its effects went through.
    pub circuits: Vec<BreakerRecord>,
    pub journal: Vec<JournalEntry>,
    /// What the run's rows occupy in the ledger (see `limits.max_stored_bytes`).
    pub stored_bytes: u64,
}

/// A checkpoint without its state bytes.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    pub name: String,
    pub attempt: u32,
    pub bytes: usize,
    pub created_at: i64,
}

impl RunStory {
    pub fn read(ledger: &dyn Ledger, run_id: &str) -> Result<Self, LedgerError> {
        let run = ledger
            .run(run_id)?
            .ok_or_else(|| LedgerError::RunNotFound {
                run_id: run_id.to_owned(),
            })?;
        let effects = ledger.effects_for_run(run_id)?;
        let circuits = ledger
            .breakers()?
            .into_iter()
            .filter(|b| b.tool == run.tool && effects.iter().any(|e| e.kind == b.connector))
            .collect();
        let escalations = ledger.escalations(&EscalationFilter {
            status: None,
            run_id: Some(run_id.to_owned()),
            limit: usize::MAX,
        })?;
        Ok(Self {
            run,
            attempts: ledger.attempts(run_id)?,
            effects,
            escalations,
            circuits,
            checkpoints: ledger
                .checkpoints(run_id)?
                .into_iter()
                .map(|c| CheckpointSummary {
                    name: c.name,
                    attempt: c.attempt,
                    bytes: c.state.len(),
                    created_at: c.created_at,
                })
                .collect(),
            journal: ledger.journal_entries(run_id)?,
            stored_bytes: ledger.stored_bytes(run_id)?,
        })
    }
}

impl fmt::Display for RunStory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.run;
        writeln!(
            f,
            "run {}  tool {}  status {:?}",
            Escaped(&r.run_id),
            Escaped(&r.tool),
            r.status
        )?;
        writeln!(
            f,
            "  created {}  updated {}  stored {} bytes",
            format_ms(r.created_at),
            format_ms(r.updated_at),
            self.stored_bytes
        )?;
        writeln!(f, "  input  {}", Escaped(&r.input))?;
        if let Some(output) = &r.output {
            writeln!(f, "  output {}", Escaped(output))?;
        }
        if let Some(message) = &r.error_message {
            writeln!(
                f,
                "  error  {}: {}",
                Escaped(r.error_class.as_deref().unwrap_or("?")),
                Escaped(message)
            )?;
        }
        writeln!(f, "attempts ({})", self.attempts.len())?;
        for a in &self.attempts {
            let ended = a.ended_at.map(format_ms).unwrap_or_else(|| "-".into());
            write!(
                f,
                "  #{} {:?}  started {}  ended {}  component {}",
                a.attempt,
                a.status,
                format_ms(a.started_at),
                ended,
                Escaped(short(&a.component_digest))
            )?;
            if let Some(message) = &a.error_message {
                write!(
                    f,
                    "\n      {}: {}",
                    Escaped(a.error_class.as_deref().unwrap_or("?")),
                    Escaped(message)
                )?;
            }
            writeln!(f)?;
        }
        writeln!(f, "effects ({})", self.effects.len())?;
        for e in &self.effects {
            writeln!(
                f,
                "  {} key={} status={:?} dispatches={} attempt={} payload={}",
                Escaped(&e.kind),
                Escaped(&e.key),
                e.status,
                e.dispatches,
                e.attempt,
                Escaped(short(&e.payload_digest))
            )?;
            if let Some(message) = &e.error_message {
                writeln!(
                    f,
                    "      {}: {}",
                    Escaped(e.error_class.as_deref().unwrap_or("?")),
                    Escaped(message)
                )?;
            }
        }
        for b in &self.circuits {
            let until = b.open_until.map(format_ms).unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "  circuit {} {}  consecutive failures {}  open until {until}",
                Escaped(&b.connector),
                b.state,
                b.consecutive_failures
            )?;
        }
        writeln!(f, "escalations ({})", self.escalations.len())?;
        for e in &self.escalations {
            write!(
                f,
                "  #{} {} {}: {}",
                e.id,
                e.status,
                e.reason,
                Escaped(&e.summary)
            )?;
            if let Some(resolution) = e.resolution {
                write!(
                    f,
                    "\n      {resolution} by {}: {}",
                    Escaped(e.resolved_by.as_deref().unwrap_or("?")),
                    Escaped(e.resolution_reason.as_deref().unwrap_or(""))
                )?;
            }
            writeln!(f)?;
        }
        writeln!(f, "checkpoints ({})", self.checkpoints.len())?;
        for c in &self.checkpoints {
            writeln!(
                f,
                "  {} ({} bytes) attempt {} at {}",
                Escaped(&c.name),
                c.bytes,
                c.attempt,
                format_ms(c.created_at)
            )?;
        }
        writeln!(f, "journal ({})", self.journal.len())?;
        for j in &self.journal {
            let attempt = j
                .attempt
                .map(|a| format!("#{a}"))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "  {} {attempt:>3} {:<5} {:<18} {}",
                format_ms(j.at),
                Escaped(&j.level),
                Escaped(&j.event),
                // The whole message, `\n` and all: a line the tool logged after its first
                // is shown, not hidden, and never starts a line of the story.
                Escaped(&j.message)
            )?;
        }
        Ok(())
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
