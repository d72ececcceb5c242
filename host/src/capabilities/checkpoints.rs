//! The `checkpoints` interface: a save is durable before it returns; loads see every
//! checkpoint the run's earlier attempts saved.

use super::{AttemptAbort, ToolState, journal_denial, to_tool_error};
use crate::bindings::{checkpoints, types};
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::Op;

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
        ctx.apply(ops).await.map_err(|e| {
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
        self.load(None).await
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Option<checkpoints::Checkpoint>> {
        self.load(Some(name)).await
    }
}

impl ToolState {
    /// Reads a checkpoint without holding `self` across the read: the store's state is not
    /// `Sync`, and the read waits on the blocking pool.
    fn load(
        &self,
        name: Option<String>,
    ) -> impl Future<Output = wasmtime::Result<Option<checkpoints::Checkpoint>>> + Send + 'static
    {
        let ctx = self
            .attempt
            .as_ref()
            .map(|ctx| (ctx.ledger.clone(), ctx.run_id.clone()));
        async move {
            let Some((ledger, run_id)) = ctx else {
                return Ok(None);
            };
            let found = crate::ledger::read(&ledger, move |l| {
                l.latest_checkpoint(&run_id, name.as_deref())
            })
            .await
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Harness, RUN_ID};
    use crate::bindings::checkpoints::Host as _;
    use crate::bindings::types::ErrorClass;
    use crate::journal::EventName;

    #[tokio::test]
    async fn a_save_is_in_the_ledger_when_it_returns_and_loads_by_name_and_as_latest() {
        let mut h = Harness::new("", 1 << 20);
        h.state
            .save("first".into(), b"1".to_vec())
            .await
            .unwrap()
            .unwrap();
        h.state
            .save("second".into(), b"2".to_vec())
            .await
            .unwrap()
            .unwrap();
        // Read back from the ledger itself, not from anything the store keeps.
        let saved = h.ledger.checkpoints(RUN_ID).unwrap();
        assert_eq!(saved.len(), 2, "{saved:?}");
        let first = h.state.get("first".into()).await.unwrap().unwrap();
        assert_eq!(first.state, b"1");
        let latest = h.state.latest().await.unwrap().unwrap();
        assert_eq!(
            (latest.name.as_str(), latest.state.as_slice()),
            ("second", &b"2"[..])
        );
        assert_eq!(h.count(EventName::CheckpointSaved), 2);
    }

    #[tokio::test]
    async fn saving_a_name_again_replaces_it_and_gives_its_bytes_back() {
        // 40 saves of 1,000 bytes would need 40,000 bytes of a 32 KiB budget if each were
        // kept; one copy per name plus the journal rows fits.
        let mut h = Harness::new("", 32 << 10);
        for i in 0..40u8 {
            h.state
                .save("step".into(), vec![i; 1_000])
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("save {i}: {}", e.message));
        }
        let saved = h.ledger.checkpoints(RUN_ID).unwrap();
        assert_eq!(saved.len(), 1, "one copy per name");
        assert_eq!(saved[0].state, vec![39u8; 1_000]);
    }

    #[tokio::test]
    async fn a_checkpoint_over_the_cap_is_denied_journaled_and_not_saved() {
        let mut h = Harness::new("[limits]\nmax_checkpoint_bytes = 10\n", 1 << 20);
        let err = h
            .state
            .save("big".into(), vec![0; 11])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permission);
        assert!(
            err.message.contains("over the cap of 10"),
            "{}",
            err.message
        );
        assert!(h.ledger.checkpoints(RUN_ID).unwrap().is_empty());
        let denial = h
            .journal()
            .into_iter()
            .find(|e| e.event == EventName::PolicyDenied.as_str())
            .expect("the denial is journaled");
        assert_eq!(
            denial.fields["rule"],
            "tools.demo.limits.max_checkpoint_bytes"
        );
    }

    #[tokio::test]
    async fn a_bad_name_is_a_validation_error() {
        let mut h = Harness::new("", 1 << 20);
        for name in [String::new(), "n".repeat(129)] {
            let err = h.state.save(name, vec![1]).await.unwrap().unwrap_err();
            assert_eq!(err.class, ErrorClass::Validation);
        }
        assert!(h.ledger.checkpoints(RUN_ID).unwrap().is_empty());
    }

    #[tokio::test]
    async fn saves_past_the_storage_budget_are_refused_and_the_cut_noted_once() {
        let mut h = Harness::new("", 3_000);
        h.state
            .save("a".into(), vec![0; 1_500])
            .await
            .unwrap()
            .unwrap();
        for name in ["b", "c"] {
            let err = h
                .state
                .save(name.into(), vec![0; 1_500])
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(err.class, ErrorClass::Permission);
            assert!(err.message.contains("max_stored_bytes"), "{}", err.message);
        }
        assert_eq!(h.ledger.checkpoints(RUN_ID).unwrap().len(), 1);
        assert_eq!(h.count(EventName::StorageBudgetSpent), 1);
    }

    #[tokio::test]
    async fn outside_a_run_saves_are_refused_and_loads_find_nothing() {
        let mut state = Harness::unrecorded("");
        let err = state.save("a".into(), vec![1]).await.unwrap().unwrap_err();
        assert_eq!(err.class, ErrorClass::Permission);
        assert!(state.latest().await.unwrap().is_none());
    }
}
