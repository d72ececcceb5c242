//! The sandbox call: one instantiation of a tool in a fresh store and one call of its `run`,
//! under the policy's limits and deadlines, with every way it can end classified.
//!
//! Invariant: this is the only run file that touches wasmtime, and nothing here touches the
//! ledger; a trap, a limit hit or a host abort always becomes a [`Failure`], never a panic.

use crate::bindings::{Tool, types};
use crate::capabilities::{
    AttemptAbort, AttemptContext, Deadlines, ToolState, from_tool_error, guarded_store,
};
use crate::engine::EPOCH_TICK;
use crate::failure::{Failure, FailureClass};
use crate::policy::Policy;
use crate::tool::LoadedTool;
use std::sync::Arc;
use std::time::Duration;

/// What the tool printed, for the journal, and the CPU time it used.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub cpu_ms: u64,
}

/// What the tool learns about the attempt it runs in; the deadline is the policy's timeout
/// from now, by the host's clock.
pub fn run_context(
    now: crate::clock::Millis,
    tool: &LoadedTool,
    policy: &Policy,
    run_id: &str,
    attempt: u32,
) -> types::RunContext {
    let deadline_ms =
        now.saturating_add(i64::try_from(policy.limits.timeout_ms).unwrap_or(i64::MAX));
    types::RunContext {
        run_id: run_id.to_owned(),
        attempt,
        tool: tool.descriptor.name.clone(),
        deadline_ms: u64::try_from(deadline_ms).unwrap_or(0),
    }
}

/// The run ID a tool sees in an unrecorded call.
pub const UNRECORDED_RUN_ID: &str = "unrecorded";

/// Instantiates `tool` in a fresh store and calls `run`, under the policy's memory, table and
/// instance limits and its deadline. The sandbox alone: nothing here touches the ledger.
pub async fn execute(
    engine: &wasmtime::Engine,
    tool: &LoadedTool,
    policy: &Policy,
    run_ctx: types::RunContext,
    attempt: Option<Arc<AttemptContext>>,
    input_text: &str,
) -> (Result<String, Failure>, Stdio) {
    let timeout = Duration::from_millis(policy.limits.timeout_ms);
    let state = match ToolState::new(policy, &run_ctx.tool, attempt) {
        Ok(state) => state,
        Err(e) => {
            return (
                Err(Failure::new(FailureClass::Fatal, e.to_string())),
                Stdio::default(),
            );
        }
    };
    let stdio = state.stdio.clone();
    let mut store = guarded_store(
        engine,
        state,
        &Deadlines {
            wall: timeout,
            wall_rule: "limits.timeout_ms",
            cpu_ms: Some(policy.limits.cpu_ms),
        },
    );
    let call = async {
        let instance: Tool = tool.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, &run_ctx, input_text).await
    };
    // A guest blocked in a host call (a slow connector) never sees the epoch; the outer
    // timeout bounds that case, with a little grace so the epoch trap wins when it can.
    let outcome = tokio::time::timeout(timeout + EPOCH_TICK * 5, call).await;
    let result = match outcome {
        Err(_) => Err(Failure::new(
            FailureClass::Timeout,
            format!("attempt exceeded its {} ms time limit", timeout.as_millis()),
        )),
        Ok(Ok(Ok(output))) => Ok(output),
        Ok(Ok(Err(tool_error))) => Err(from_tool_error(tool_error)),
        Ok(Err(trap)) => Err(classify_trap(
            &trap,
            store.data().limiter.exceeded.as_deref(),
            timeout,
        )),
    };
    let stdio = Stdio {
        stdout: stdio.stdout.contents().to_vec(),
        stderr: stdio.stderr.contents().to_vec(),
        cpu_ms: store.data().cpu_ms(),
    };
    (result, stdio)
}

/// Maps a trap or host abort to a failure class.
fn classify_trap(error: &wasmtime::Error, limit_hit: Option<&str>, timeout: Duration) -> Failure {
    if let Some(AttemptAbort(failure)) = error.downcast_ref::<AttemptAbort>() {
        return failure.clone();
    }
    if let Some(limit) = limit_hit {
        return Failure::new(
            FailureClass::ResourceExhausted,
            format!("tool hit its {limit} and trapped"),
        )
        .with_details(serde_json::json!({ "trap": format!("{error:#}") }));
    }
    if error
        .downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some_and(|e| matches!(e, wasmtime::component::ResourceTableError::Full))
    {
        return Failure::new(
            FailureClass::ResourceExhausted,
            "tool holds too many host resource handles (limits.max_resources)",
        )
        .with_details(serde_json::json!({ "trap": format!("{error:#}") }));
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Failure::new(
            FailureClass::Timeout,
            format!(
                "tool ran past its {} ms deadline and was interrupted",
                timeout.as_millis()
            ),
        ),
        Some(wasmtime::Trap::StackOverflow) => {
            Failure::new(FailureClass::ResourceExhausted, "tool overflowed its stack")
        }
        Some(trap) => Failure::new(FailureClass::Fatal, format!("tool trapped: {trap}"))
            .with_details(serde_json::json!({ "trap": format!("{error:#}") })),
        None => Failure::new(FailureClass::Fatal, format!("tool failed: {error:#}")),
    }
}

/// The tool's output as JSON, within the policy's size cap.
pub fn checked_output(output: &str, max: u64) -> Result<serde_json::Value, Failure> {
    if u64::try_from(output.len()).unwrap_or(u64::MAX) > max {
        return Err(Failure::new(
            FailureClass::ResourceExhausted,
            format!(
                "tool output is {} bytes, over the cap of {max}",
                output.len()
            ),
        ));
    }
    serde_json::from_str(output).map_err(|e| {
        Failure::new(
            FailureClass::Fatal,
            format!("tool returned output that is not JSON: {e}"),
        )
    })
}
