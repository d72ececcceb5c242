//! Shared support for Tollgate's integration tests.

/// Absolute paths of the plugins and WAT fixtures that `build.rs` built, e.g.
/// [`plugins::HELLO`], plus `foreach_plugin!` (exported at the crate root) to require one
/// test per plugin.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

pub mod erp;
