//! Throwaway PostgreSQL ledgers for tests: a schema of its own on a shared test server,
//! dropped with the value, so tests run in parallel and leave nothing behind.
//!
//! The server is `TOLLGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`,
//! which `tests/postgres/setup.sh` provides on a fresh machine).

use std::sync::atomic::{AtomicU64, Ordering};

/// The test server's URL.
pub fn server() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own on the test server, dropped with this value.
#[derive(Debug)]
pub struct PgScratch {
    schema: String,
}

impl PgScratch {
    /// Creates the schema. Panics, naming the fix, if the test server does not answer: a
    /// test that needs PostgreSQL must not pass without it.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let schema = format!(
            "t_{now:x}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let sql = format!("CREATE SCHEMA {schema}");
        admin(&sql).unwrap_or_else(|err| {
            panic!(
                "cannot create test schema {schema} on {} ({err}); run \
                 tests/postgres/setup.sh, or set TOLLGATE_TEST_POSTGRES to a server this user \
                 may create schemas on",
                crate::redact(&server())
            )
        });
        Self { schema }
    }

    /// The server's URL with this schema alone on the search path.
    pub fn url(&self) -> String {
        let server = server();
        let sep = if server.contains('?') { '&' } else { '?' };
        format!("{server}{sep}options=-csearch_path%3D{}", self.schema)
    }

    /// [`Self::url`], with connections named `application_name`, so that
    /// [`Self::await_disconnected`] can tell when the server is done with them.
    pub fn url_named(&self, application_name: &str) -> String {
        format!("{}&application_name={application_name}", self.url())
    }

    /// Waits until the server holds no connection named `application_name`.
    ///
    /// A client killed with `kill -9` may have sent a `COMMIT` the server has not finished:
    /// what it wrote is settled, committed or not, only once its backends are gone. Panics
    /// after 30 s.
    pub fn await_disconnected(&self, application_name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let live = on_own_thread(|| {
            let mut client = postgres::Client::connect(&server(), postgres::NoTls)?;
            loop {
                let row = client.query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&application_name],
                )?;
                let live = row.get::<_, i64>(0);
                if live == 0 || std::time::Instant::now() >= deadline {
                    return Ok(live);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
        .expect("read pg_stat_activity on the test server");
        assert_eq!(
            live, 0,
            "connections named {application_name} outlived their process by 30 s"
        );
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let _ = admin(&format!("DROP SCHEMA {} CASCADE", self.schema));
    }
}

/// Transactions the test server's database committed and rolled back so far (PostgreSQL's
/// `pg_stat_database`, updated about once a second): how many a workload's retries cost.
pub fn transaction_counts() -> Result<(i64, i64), postgres::Error> {
    on_own_thread(|| {
        let row = postgres::Client::connect(&server(), postgres::NoTls)?.query_one(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )?;
        Ok((row.get(0), row.get(1)))
    })
}

/// Runs `sql` on the test server.
fn admin(sql: &str) -> Result<(), postgres::Error> {
    on_own_thread(|| postgres::Client::connect(&server(), postgres::NoTls)?.batch_execute(sql))
}

/// Runs `f` on a thread of its own: the blocking client must not run on a thread that
/// drives async tasks, and tests are often async.
fn on_own_thread<T: Send>(
    f: impl FnOnce() -> Result<T, postgres::Error> + Send,
) -> Result<T, postgres::Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs this very test binary again with `env` set to `value`, on the tests the `filters`
/// select minus `skip`, and panics unless every one of them passed there: none failed, none
/// was ignored, none was filtered out by a typo. Returns how many passed.
///
/// This is how one `cargo test` proves a suite written for the default backend on another.
pub fn rerun_tests(env: &str, value: &str, filters: &[&str], skip: &[&str]) -> usize {
    let exe = std::env::current_exe().expect("the test binary's path");
    let command = || {
        let mut command = std::process::Command::new(&exe);
        command.env(env, value).args(filters);
        for skipped in skip {
            command.args(["--skip", skipped]);
        }
        command
    };
    let listed = command()
        .arg("--list")
        .output()
        .expect("list the tests to run again");
    let listed = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| line.ends_with(": test"))
        .count();
    assert!(listed > 0, "the filters {filters:?} matched no test");
    let output = command().output().expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tests failed with {env}={value}:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    println!("{passed} of {listed} tests passed with {env}={value}");
    assert_eq!(
        passed, listed,
        "not every listed test passed with {env}={value}:\n{stdout}"
    );
    passed
}
