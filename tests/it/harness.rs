//! Shared set-up for the integration tests: a scratch directory per test with its own ledger
//! and component cache, operator configs pointing at real loopback servers, and the path of
//! the real `tollgate` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate::ledger::scratch::PgScratch;
use tollgate::ledger::{Ledger, Location};
use tollgate::{Config, LoadedTool, RunReport, Runtime};

/// Set to `postgres` to run the integration tests on a PostgreSQL ledger (a schema of its
/// own per test on the test server) instead of a SQLite file.
pub const LEDGER_ENV: &str = "TOLLGATE_TEST_LEDGER";

/// Whether this test process runs on PostgreSQL (see [`LEDGER_ENV`]).
pub fn on_postgres() -> bool {
    std::env::var(LEDGER_ENV).is_ok_and(|v| v == "postgres")
}

/// A scratch world for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The test's PostgreSQL schema, when the suite runs on PostgreSQL.
    pg: Option<PgScratch>,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pg: on_postgres().then(PgScratch::new),
        }
    }

    /// The test's ledger: a file in its directory, or a `postgres://` URL to its schema.
    pub fn ledger(&self) -> PathBuf {
        match &self.pg {
            Some(pg) => PathBuf::from(pg.url()),
            None => self.dir.path().join("ledger.db"),
        }
    }

    /// [`Self::ledger`], for a process the test may `kill -9`: on PostgreSQL its connections
    /// carry `name`, for [`Self::await_settled`].
    pub fn ledger_named(&self, name: &str) -> PathBuf {
        match &self.pg {
            Some(pg) => PathBuf::from(pg.url_named(name)),
            None => self.ledger(),
        }
    }

    /// Returns once what a killed process opened with [`Self::ledger_named`]`(name)` wrote is
    /// settled. A SQLite write is, once the process is gone; a PostgreSQL server may still be
    /// finishing a `COMMIT` the process sent just before it died.
    pub fn await_settled(&self, name: &str) {
        if let Some(pg) = &self.pg {
            pg.await_disconnected(name);
        }
    }

    /// Another handle on the test's ledger, as a second process would open it.
    pub fn open_ledger(&self) -> Arc<dyn Ledger> {
        Location::parse(&self.ledger())
            .open(Default::default())
            .expect("open the test's ledger")
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn config(&self, toml: &str) -> Config {
        Config::parse(toml, Path::new("test.toml")).expect("valid test config")
    }

    /// A runtime on this test's ledger and cache with the given operator config.
    pub fn runtime(&self, toml: &str) -> Runtime {
        self.builder(toml).build().expect("runtime")
    }

    pub fn builder(&self, toml: &str) -> tollgate::RuntimeBuilder {
        Runtime::builder()
            .config(self.config(toml))
            .ledger_path(self.ledger())
            .cache_dir(self.cache())
    }

    /// Writes `toml` to a config file for CLI tests.
    pub fn config_file(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("tollgate.toml");
        std::fs::write(&path, toml).expect("write config");
        path
    }
}

/// Operator config sending `erp.post-invoice` to `url`, granted to the invoice tool.
pub fn erp_config(url: &str, honours_keys: bool, timeout_ms: u64) -> String {
    format!(
        r#"
[connectors."erp.post-invoice"]
type = "http"
url = "{url}"
timeout_ms = {timeout_ms}
honours_idempotency_keys = {honours_keys}

[tools.invoice]
effects = ["erp.post-invoice"]
"#
    )
}

pub use tollgate_tests::{invoice, invoice_with};

pub async fn load(runtime: &Runtime, path: &str) -> Arc<LoadedTool> {
    runtime
        .load(path)
        .await
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

pub fn output(report: &RunReport) -> &serde_json::Value {
    match &report.result {
        Ok(v) => v,
        Err(f) => panic!("run {} failed: {f}", report.run_id),
    }
}

pub fn failure(report: &RunReport) -> &tollgate::Failure {
    match &report.result {
        Ok(v) => panic!("run {} succeeded unexpectedly: {v}", report.run_id),
        Err(f) => f,
    }
}

/// Events of a run's journal, in order.
pub fn events(runtime: &Runtime, run_id: &str) -> Vec<String> {
    runtime
        .story(run_id)
        .expect("story")
        .journal
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// The real `tollgate` binary, built by `cargo build --release --bins` beside this test.
/// The real `tollgate` binary run on `args` against the environment's ledger and cache,
/// with no config or log settings inherited from the caller.
pub fn tollgate(env: &Env, args: &[&str]) -> std::process::Output {
    tollgate_command(env)
        .args(args)
        .output()
        .expect("run tollgate")
}

/// The command [`tollgate`] runs, for a caller that spawns it itself (to kill it, say).
pub fn tollgate_command(env: &Env) -> std::process::Command {
    let mut command = std::process::Command::new(tollgate_bin());
    in_env(&mut command, env);
    command
}

/// Points `command` (the binary, or a wrapper that runs it) at the environment's ledger and
/// cache, with no config or log settings inherited from the caller.
pub fn in_env<'c>(
    command: &'c mut std::process::Command,
    env: &Env,
) -> &'c mut std::process::Command {
    command
        .env("TOLLGATE_LEDGER", env.ledger())
        .env("TOLLGATE_CACHE_DIR", env.cache())
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("RUST_LOG");
    without_telemetry(command)
        .env("NO_COLOR", "1")
        .current_dir(env.dir.path())
}

pub fn tollgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-<hash> → target/<profile>/tollgate
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("tollgate"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release --bins` (the README's test command does)",
        bin.display()
    );
    bin
}

/// Removes the caller's OpenTelemetry settings (`OTEL_*`) from `command`: a test's process
/// exports traces only when the test says so.
pub fn without_telemetry(command: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// A port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Polls `cond` every 10 ms until it holds; fails the test after `limit`.
pub async fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The real `tollgate` binary with `config`, and the test's ledger and cache.
pub fn tollgate_with(env: &Env, config: &Path) -> std::process::Command {
    tollgate_with_cache(env, config, &env.cache())
}

/// [`tollgate_with`] on another precompiled cache.
pub fn tollgate_with_cache(env: &Env, config: &Path, cache: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(tollgate_bin());
    without_telemetry(&mut cmd);
    cmd.arg("--config")
        .arg(config)
        .arg("--ledger")
        .arg(env.ledger())
        .arg("--cache-dir")
        .arg(cache);
    cmd
}

/// The run's checkpoints in the order saved, as `(name, attempt that saved it)`.
pub fn checkpoints_saved(runtime: &Runtime, run_id: &str) -> Vec<(String, u32)> {
    runtime
        .story(run_id)
        .unwrap()
        .checkpoints
        .into_iter()
        .map(|c| (c.name, c.attempt))
        .collect()
}

/// The run's open escalations.
pub fn open_escalations(runtime: &Runtime, run_id: &str) -> Vec<tollgate::ledger::Escalation> {
    runtime
        .ledger()
        .escalations(&tollgate::ledger::EscalationFilter {
            status: Some(tollgate::ledger::EscalationStatus::Open),
            run_id: Some(run_id.to_owned()),
            limit: 10,
        })
        .unwrap()
}

/// The journal entry of the run's first `policy.denied` event.
pub fn denial(runtime: &Runtime, run_id: &str) -> serde_json::Value {
    let story = runtime.story(run_id).unwrap();
    let entry = story
        .journal
        .iter()
        .find(|e| e.event == "policy.denied")
        .unwrap_or_else(|| panic!("no policy.denied in {:?}", events(runtime, run_id)));
    entry.fields.clone()
}
