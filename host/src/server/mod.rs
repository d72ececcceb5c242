//! The long-running server side of Tollgate: protocol adapters that turn network requests
//! into runs of the library's [`crate::Runtime`]. Each lives in its own module tree.
//!
//! [`access`]: who may call the HTTP endpoint (bearer tokens, `Host` and `Origin`).
//! [`mcp`]: the Model Context Protocol, over stdio or streamable HTTP.
//! [`node`]: `tollgate serve`, one node of a fleet: MCP, health, readiness and metrics over
//! HTTP, and the [`recovery`] loop that resumes runs whose host died; its [`drain`] on
//! shutdown.

pub mod access;
pub mod drain;
pub mod mcp;
pub mod metrics;
pub mod node;
pub mod recovery;
