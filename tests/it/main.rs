//! Tollgate's integration tests: real components compiled from `plugins/`, a real SQLite
//! ledger file, real HTTP servers on 127.0.0.1 and the real `tollgate` binary.
//! One test binary, one module per area.

mod access;
mod cli;
mod commits;
mod crash;
mod effects;
mod escalations;
mod fleet;
mod foundation;
mod harness;
mod hostile;
mod locks;
mod mcp;
mod pg_restart;
mod plugins;
mod polyglot;
mod postgres;
mod races;
mod retry;
mod sdk;
mod serve;
mod snapshots;
mod traces;

/// Every plugin under `plugins/` has a test named after it in `plugins.rs`: adding a plugin
/// without a test fails the build.
macro_rules! assert_plugin_tested {
    ($name:ident, $path:ident) => {
        #[expect(unused_imports, reason = "the import is the assertion")]
        use self::plugins::$name as _;
    };
}
tollgate_tests::foreach_plugin!(assert_plugin_tested);
