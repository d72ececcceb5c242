//! What a tool knows about the attempt it runs in: the host's `run-context`, read-only.

use std::time::{Duration, SystemTime};

use crate::bindings::RunContext;

/// The run and attempt a tool is executing in, as the host reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    run_id: String,
    attempt: u32,
    tool: String,
    deadline_ms: u64,
}

impl Context {
    /// A context with the given values; the host builds the real one. Useful to call
    /// [`Tool::run`](crate::Tool::run) from a native unit test of pure logic.
    pub fn new(
        run_id: impl Into<String>,
        attempt: u32,
        tool: impl Into<String>,
        deadline_ms: u64,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            attempt,
            tool: tool.into(),
            deadline_ms,
        }
    }

    /// The run's ID, stable across retries and resumes; it also reaches downstream systems.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// 1 for the first attempt; each retry or resume adds one.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The tool's name, as `describe` reported it.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// This attempt's wall-clock deadline, in milliseconds since the Unix epoch. The host
    /// interrupts the tool when it passes.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// This attempt's wall-clock deadline.
    pub fn deadline(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.deadline_ms)
    }

    /// Time left before the deadline, zero once it has passed. Reads the wall clock
    /// (so the component imports `wasi:clocks/wall-clock` when a tool calls it).
    pub fn remaining(&self) -> Duration {
        self.deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

impl From<RunContext> for Context {
    fn from(ctx: RunContext) -> Self {
        Self {
            run_id: ctx.run_id,
            attempt: ctx.attempt,
            tool: ctx.tool,
            deadline_ms: ctx.deadline_ms,
        }
    }
}
