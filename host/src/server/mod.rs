//! The long-running server side of Tollgate: protocol adapters that turn network requests
//! into runs of the library's [`crate::Runtime`]. Each lives in its own module tree.
//!
//! [`mcp`]: the Model Context Protocol, over stdio or streamable HTTP.

pub mod mcp;
