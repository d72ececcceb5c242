//! The `checkpoints` interface: a save is durable before it returns; loads see every
//! checkpoint the run's earlier attempts saved.

use super::{AttemptAbort, ToolState, journal_denial, to_tool_error};
use crate::bindings::{checkpoints, types};
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::{self, Op};

const MAX_NAME_BYTES: usize = 128;

impl checkpoints::Host for ToolState {
    async fn save(
        &mut self,
        name: String,
        state: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::ToolError>> {
        let Some(ctx) = self.attempt.clone() else {
            return Ok(Err(to_tool_error(&Failure::new(
                FailureClass::Permission,
                "checkpoints need a recorded run: start one with `run` (not while the host describes the tool or in an unrecorded call)",
            ))));
        };
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Ok(Err(to_tool_error(&Failure::new(
                FailureClass::Validation,
                format!("checkpoint name must be 1 to {MAX_NAME_BYTES} bytes"),
            ))));
        }
        let cap = ctx.policy.limits.max_checkpoint_bytes;
        if u64::try_from(state.len()).unwrap_or(u64::MAX) > cap {
            let failure = Failure::new(
                FailureClass::Permission,
                format!(
                    "checkpoint `{name}` is {} bytes, over the cap of {cap}",
                    state.len()
                ),
            );
            journal_denial(
                &ctx,
                &format!("checkpoint {name} ({} bytes)", state.len()),
                &format!("tools.{}.limits.max_checkpoint_bytes", ctx.tool),
                &failure,
            );
            return Ok(Err(to_tool_error(&failure)));
        }
        let now = ctx.clock.now_ms();
        let bytes = state.len();
        let journaled = journal::entry(
            ctx.at(),
            Event::CheckpointSaved {
                name: name.clone(),
                bytes,
            },
            format!("checkpoint `{name}` saved"),
        );
        let cost = tollgate_ledger::stored::checkpoint(&name, bytes)
            .saturating_add(tollgate_ledger::stored::journal_entry(&journaled));
        if ctx.budget.charge(cost).is_err() {
            ctx.note_budget_spent();
            return Ok(Err(to_tool_error(&Failure::new(
                FailureClass::Permission,
                format!(
                    "checkpoint `{name}` not saved: the run's tool used the {} bytes of ledger storage it may cause (limits.max_stored_bytes)",
                    ctx.budget.limit()
                ),
            ))));
        }
        let ops = vec![
            Op::SaveCheckpoint {
                run_id: ctx.run_id.clone(),
                attempt: ctx.attempt,
                name: name.clone(),
                state,
                now,
            },
            Op::Journal(journaled),
        ];
        ledger::apply(&ctx.ledger, ops).await.map_err(|e| {
            wasmtime::Error::new(AttemptAbort(Failure::new(
                FailureClass::Fatal,
                format!("ledger unavailable, checkpoint not saved: {e}"),
            )))
        })?;
        // The ledger keeps one copy per name: what this attempt saved under the name before
        // is gone, so its bytes are free again.
        let state_cost = tollgate_ledger::stored::checkpoint(&name, bytes);
        if let Some(replaced) = self.checkpoint_bytes.insert(name, state_cost) {
            ctx.budget.refund(replaced);
        }
        Ok(Ok(()))
    }

    async fn latest(&mut self) -> wasmtime::Result<Option<checkpoints::Checkpoint>> {
        self.load(None)
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Option<checkpoints::Checkpoint>> {
        self.load(Some(&name))
    }
}

impl ToolState {
    fn load(&self, name: Option<&str>) -> wasmtime::Result<Option<checkpoints::Checkpoint>> {
        let Some(ctx) = &self.attempt else {
            return Ok(None);
        };
        let found = ctx
            .ledger
            .latest_checkpoint(&ctx.run_id, name)
            .map_err(|e| {
                wasmtime::Error::new(AttemptAbort(Failure::new(
                    FailureClass::Fatal,
                    format!("ledger unavailable, checkpoint not loaded: {e}"),
                )))
            })?;
        Ok(found.map(|c| checkpoints::Checkpoint {
            name: c.name,
            state: c.state,
            attempt: c.attempt,
        }))
    }
}
