//! Tollgate: a WebAssembly plugin host for sandboxed AI-agent tools, with exactly-once
//! effects and resumable, traceable runs.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let runtime = tollgate::Runtime::builder().build()?;
//! let tool = runtime.load("hello.wasm").await?;
//! let report = runtime.run(&tool, r#"{"message":"hi"}"#).await?;
//! println!("{} -> {:?}", report.run_id, report.result);
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod capabilities;
pub mod clip;
pub mod clock;
pub mod config;
pub mod effects;
pub mod engine;
pub mod escalation;
pub mod failure;
mod holder;
pub mod journal;
pub mod ledger;
pub mod locks;
pub mod meters;
pub mod milestones;
pub mod nodes;
pub mod policy;
pub mod retry;
pub mod runs;
mod runtime;
pub mod schema;
pub mod secret;
pub mod server;
mod services;
pub mod story;
pub mod telemetry;
pub mod text;
pub mod tool;

pub use clock::{
    Clock, ManualClock, Random, SeededRandom, Sleeper, SystemClock, ThreadRandom, TokioSleeper,
};
pub use config::Config;
pub use escalation::{Decision, EscalationError, EvidencePacket};
pub use failure::{EffectRef, Failure, FailureClass};
pub use runs::{CallKey, RunError, RunOptions, RunReport};
pub use runtime::{
    DEFAULT_CACHE_DIR, DEFAULT_LEDGER, Runtime, RuntimeBuilder, RuntimeError, SettleError, Settled,
};
pub use story::RunStory;
pub use tool::{Descriptor, LoadError, LoadedTool};
