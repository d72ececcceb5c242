//! Load: concurrent agents calling `tollgate serve` over MCP streamable HTTP, from this
//! process, against nodes that are processes of their own. Every table has its baseline
//! from the same run beside it:
//!
//! 1. `serve`: one node on the SQLite default serving `hello`, for N ∈ {1, 4, 16, 64}
//!    clients, next to the same N concurrent `Runtime::run` calls in this process (no HTTP,
//!    no MCP) on a SQLite file of its own. Calls/s, p50/p99 latency, and the server's CPU per
//!    call and cores busy, from `/proc/<pid>/stat`; then the same node with `hello`'s runs
//!    recorded `async` (answered first, written after in one commit).
//! 2. `fleet`: 1, 2 and 3 nodes on one PostgreSQL ledger with 64 clients spread over them
//!    (as a round-robin balancer does), next to one node on SQLite, in the same run.
//! 3. `recovery`: a node holding runs in flight is killed with `kill -9`; the time from its
//!    death to each run's next attempt starting on the surviving node, by the ledger's clock.
//!
//! Each client keeps one MCP session (one keep-alive connection) and calls in a loop; every
//! call is a recorded run. Run: `cargo bench --workspace --bench load` (results:
//! BENCHMARKS.md). `TOLLGATE_BENCH=serve|fleet|recovery` picks one section (`direct`: only
//! the in-process rows of `serve`, to profile the run itself),
//! `TOLLGATE_BENCH_SECONDS` sets each measurement's length (default 5). The fleet and
//! recovery sections need the PostgreSQL test server (`tests/postgres/setup.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::ledger::scratch::{PgScratch, transaction_counts};
use tollgate::ledger::{Ledger, Location};
use tollgate::{Config, Runtime};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::mcp_http::Session;
use tollgate_tests::plugins::{HELLO, INVOICE};

const CLIENTS: [usize; 4] = [1, 4, 16, 64];
/// Clients of the fleet table.
const FLEET_CLIENTS: usize = 64;
/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second
/// in its user-space ABI whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

fn seconds() -> Duration {
    let s: f64 = std::env::var("TOLLGATE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(s)
}

fn section(name: &str) -> bool {
    std::env::var("TOLLGATE_BENCH").map_or(true, |s| s == name)
}

/// What one measurement saw.
struct Load {
    calls: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Server CPU seconds over the measurement, all nodes together; in-process, this
    /// process's (the runs' and the clients' loops, which do next to nothing else).
    server_cpu: Option<f64>,
}

impl Load {
    /// The clients' tallies, each `(latencies of the calls that succeeded, errors)`, as one.
    fn of(results: Vec<ClientResult>, elapsed: Duration, server_cpu: Option<f64>) -> Self {
        let mut load = Load {
            calls: 0,
            errors: 0,
            elapsed,
            latencies: Vec::new(),
            server_cpu,
        };
        for (latencies, errors) in results {
            load.calls += latencies.len();
            load.errors += errors;
            load.latencies.extend(latencies);
        }
        load
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    fn row(&self, label: &str) -> String {
        let rate = self.calls as f64 / self.elapsed.as_secs_f64();
        let cpu = self.server_cpu.map_or("– | –".to_owned(), |cpu| {
            format!(
                "{:.2} ms | {:.2}",
                cpu * 1000.0 / self.calls.max(1) as f64,
                cpu / self.elapsed.as_secs_f64()
            )
        });
        format!(
            "| {label} | {rate:.0} | {} | {} | {cpu} | {} |",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            self.errors
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A `tollgate serve` process; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(dir: &Path, config: &Path, ledger: &str, args: &[&str]) -> Self {
        let mut command = Command::new(tollgate_bin());
        // The nodes export no traces, whatever the caller's environment says.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(config)
            .args(["--ledger", ledger])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let line = loop {
            let line = lines
                .next()
                .expect("tollgate serve exited before listening")
                .expect("stderr");
            if line.starts_with("tollgate serve:") {
                break line;
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let at = line.find("http://").expect("address");
        let base = line[at..].split("/mcp").next().expect("base").to_owned();
        Self { child, base }
    }

    /// User plus system CPU seconds the process has used.
    fn cpu(&self) -> f64 {
        process_cpu(self.child.id())
    }
}

/// User plus system CPU seconds process `pid` has used.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // After the `(comm)` field, which may hold spaces: utime and stime are fields 14, 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / TICKS_PER_SECOND
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tollgate_bin() -> PathBuf {
    // target/release/deps/load-<hash> → target/release/tollgate
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("tollgate"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release --workspace --bins` first",
        bin.display()
    );
    bin
}

/// `clients` MCP sessions spread over `nodes` calling `hello` for `length`, after a warm-up.
async fn drive(nodes: &[Node], clients: usize, length: Duration) -> Load {
    let mut sessions = Vec::with_capacity(clients);
    for i in 0..clients {
        let client = reqwest::Client::new();
        let base = &nodes[i % nodes.len()].base;
        sessions.push(Session::open(&client, base).await.expect("MCP session"));
    }
    // Warm-up: every session calls a few times, so pools, caches and connections are hot.
    let warm = Instant::now() + Duration::from_millis(500);
    let sessions = run_clients(sessions, warm).await.0;
    let cpu_before: f64 = nodes.iter().map(Node::cpu).sum();
    let started = Instant::now();
    let (_, results) = run_clients(sessions, started + length).await;
    let elapsed = started.elapsed();
    let cpu_after: f64 = nodes.iter().map(Node::cpu).sum();
    Load::of(results, elapsed, Some(cpu_after - cpu_before))
}

type ClientResult = (Vec<Duration>, usize);

async fn run_clients(sessions: Vec<Session>, until: Instant) -> (Vec<Session>, Vec<ClientResult>) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, mut session)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let started = Instant::now();
                    let args = json!({"message": format!("c{i}-{n}")});
                    match session.call("hello", args, json!({})).await {
                        Ok(result) if result["isError"] != Value::Bool(true) => {
                            latencies.push(started.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (session, (latencies, errors))
            })
        })
        .collect();
    let mut sessions = Vec::new();
    let mut results = Vec::new();
    for task in tasks {
        let (session, result) = task.await.expect("client task");
        sessions.push(session);
        results.push(result);
    }
    (sessions, results)
}

/// The same `clients` concurrent `Runtime::run(hello)` calls in this process.
async fn in_process(dir: &Path, clients: usize, length: Duration) -> Load {
    let runtime = Runtime::builder()
        .config(Config::parse("", "bench.toml".as_ref()).expect("config"))
        .ledger_path(dir.join(format!("direct-{clients}.db")))
        .cache_dir(dir.join("cache"))
        .build()
        .expect("runtime");
    let tool = runtime.load(HELLO).await.expect("load hello");
    let drive_until = |until: Instant| {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let runtime = runtime.clone();
                let tool = tool.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    let mut n = 0u64;
                    while Instant::now() < until {
                        n += 1;
                        let input = json!({"message": format!("c{i}-{n}")}).to_string();
                        let started = Instant::now();
                        match runtime.run(&tool, &input).await {
                            Ok(report) if report.result.is_ok() => {
                                latencies.push(started.elapsed());
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        async move {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.expect("task"));
            }
            results
        }
    };
    drive_until(Instant::now() + Duration::from_millis(500)).await;
    let cpu = process_cpu(std::process::id());
    let started = Instant::now();
    let results = drive_until(started + length).await;
    let cpu = process_cpu(std::process::id()) - cpu;
    Load::of(results, started.elapsed(), Some(cpu))
}

const HEADER: &str = "| | calls/s | p50 | p99 | server CPU per call | server cores busy | errors |\n| --- | --- | --- | --- | --- | --- | --- |";

/// A config serving `hello`, its runs recorded as `record` says (`sync` or `async`).
fn hello_config(dir: &Path, record: &str) -> PathBuf {
    let path = dir.join(format!("tollgate-{record}.toml"));
    let toml = format!("[tools.hello]\ncomponent = {HELLO:?}\nrecord = {record:?}\n");
    std::fs::write(&path, toml).expect("config");
    path
}

/// Only the in-process rows of `serve`: what a profiler of the run itself records.
async fn direct(dir: &Path, length: Duration) {
    println!("\n## in-process `Runtime::run(hello)` on SQLite, N concurrent\n");
    println!("{HEADER}");
    for clients in CLIENTS {
        let load = in_process(dir, clients, length).await;
        println!("{}", load.row(&format!("{clients} concurrent")));
    }
}

async fn serve(dir: &Path, length: Duration) {
    println!("\n## 1. `serve` on SQLite, `hello`, N clients (one MCP session each)\n");
    println!("{HEADER}");
    let config = hello_config(dir, "sync");
    let read_only = hello_config(dir, "async");
    for clients in CLIENTS {
        let direct = in_process(dir, clients, length).await;
        println!(
            "{}",
            direct.row(&format!("in-process `Runtime::run`, {clients} concurrent"))
        );
        let ledger = dir.join(format!("serve-{clients}.db"));
        let node = Node::start(dir, &config, ledger.to_str().expect("path"), &[]);
        let load = drive(std::slice::from_ref(&node), clients, length).await;
        println!("{}", load.row(&format!("**serve, {clients} clients**")));
        drop(node);
        let ledger = dir.join(format!("serve-async-{clients}.db"));
        let node = Node::start(dir, &read_only, ledger.to_str().expect("path"), &[]);
        let load = drive(std::slice::from_ref(&node), clients, length).await;
        println!(
            "{}",
            load.row(&format!("serve, {clients} clients, `record = \"async\"`"))
        );
    }
}

async fn fleet(dir: &Path, length: Duration) {
    println!(
        "\n## 2. A fleet on one PostgreSQL, `hello`, {FLEET_CLIENTS} clients spread over the nodes\n"
    );
    println!("{HEADER}");
    let config = hello_config(dir, "sync");
    let ledger = dir.join("fleet-sqlite.db");
    let node = Node::start(dir, &config, ledger.to_str().expect("path"), &[]);
    let load = drive(std::slice::from_ref(&node), FLEET_CLIENTS, length).await;
    println!("{}", load.row("one node on SQLite (baseline)"));
    drop(node);
    let mut retries = Vec::new();
    for n in 1..=3 {
        let pg = PgScratch::new();
        let nodes: Vec<Node> = (0..n)
            .map(|_| Node::start(dir, &config, &pg.url(), &[]))
            .collect();
        let before = transaction_counts().expect("pg_stat_database");
        let load = drive(&nodes, FLEET_CLIENTS, length).await;
        // The statistics reach pg_stat_database within a second.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let after = transaction_counts().expect("pg_stat_database");
        retries.push((n, after.0 - before.0, after.1 - before.1));
        println!(
            "{}",
            load.row(&format!(
                "**{n} node{} on PostgreSQL**",
                if n == 1 { "" } else { "s" }
            ))
        );
    }
    println!("\nPostgreSQL's own count over each line (warm-up included; pg_stat_database):\n");
    println!("| nodes | committed | rolled back | rolled back per commit |");
    println!("| --- | --- | --- | --- |");
    for (n, committed, rolled_back) in retries {
        println!(
            "| {n} | {committed} | {rolled_back} | {:.2} |",
            rolled_back as f64 / committed.max(1) as f64
        );
    }
}

/// Runs in flight on a node that is killed: how long until another node starts each one's
/// next attempt.
async fn recovery(dir: &Path) {
    const RUNS: usize = 32;
    const LEASE_MS: u64 = 1_000;
    const INTERVAL_MS: u64 = 200;
    println!(
        "\n## 3. Recovery: {RUNS} runs in flight on a node killed with `kill -9`, on PostgreSQL\n"
    );
    let erp = Erp::start(true).expect("erp");
    // Every request is held, so the runs are in flight when their node dies.
    erp.inject(Faults {
        delay_ms: 600_000,
        ..Faults::default()
    });
    let config = dir.join("invoice.toml");
    std::fs::write(
        &config,
        format!(
            "lease_ttl_ms = {LEASE_MS}\n[connectors.\"erp.post-invoice\"]\ntype = \"http\"\nurl = \"{}\"\ntimeout_ms = 900000\nhonours_idempotency_keys = true\n[tools.invoice]\neffects = [\"erp.post-invoice\"]\ncomponent = {INVOICE:?}\n",
            erp.invoices_url()
        ),
    )
    .expect("config");
    let pg = PgScratch::new();
    let interval = INTERVAL_MS.to_string();
    let args = [
        "--recovery-interval-ms",
        &interval,
        "--recovery-batch",
        "16",
    ];
    let mut doomed = Node::start(dir, &config, &pg.url(), &args);
    let survivor = Node::start(dir, &config, &pg.url(), &args);
    let client = reqwest::Client::new();
    for i in 0..RUNS {
        let mut session = Session::open(&client, &doomed.base).await.expect("session");
        let input: Value =
            serde_json::from_str(&tollgate_tests::invoice(&format!("INV-R{i}"))).expect("invoice");
        tokio::spawn(async move { session.call("invoice", input, json!({})).await });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while erp.stats().requests < RUNS as u64 {
        assert!(Instant::now() < deadline, "the runs never reached the ERP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = now_ms();
    doomed.child.kill().expect("kill -9");
    let _ = doomed.child.wait();
    let ledger: Arc<dyn Ledger> = Location::parse(Path::new(&pg.url()))
        .open(Default::default())
        .expect("ledger");
    let runs = ledger
        .runs(&tollgate::ledger::RunFilter::default())
        .expect("runs");
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for run in &runs {
        loop {
            let attempts = ledger.attempts(&run.run_id).expect("attempts");
            if let Some(next) = attempts.iter().find(|a| a.attempt >= 2) {
                waits.push(Duration::from_millis(
                    u64::try_from(next.started_at - killed_at).unwrap_or(0),
                ));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {} was never resumed",
                run.run_id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(survivor);
    waits.sort();
    let p50 = waits[waits.len() / 2];
    let max = waits[waits.len() - 1];
    println!(
        "lease TTL {LEASE_MS} ms, recovery interval {INTERVAL_MS} ms, batch 16: {} runs resumed on the surviving node; death → next attempt started: p50 {}, max {}, min {}",
        waits.len(),
        ms(p50),
        ms(max),
        ms(waits[0])
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let length = seconds();
    println!(
        "load bench: {} s per measurement, {} cores",
        length.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    runtime.block_on(async {
        if section("serve") {
            serve(dir.path(), length).await;
        }
        if std::env::var("TOLLGATE_BENCH").is_ok_and(|s| s == "direct") {
            direct(dir.path(), length).await;
        }
        if section("fleet") {
            fleet(dir.path(), length).await;
        }
        if section("recovery") {
            recovery(dir.path()).await;
        }
    });
}
