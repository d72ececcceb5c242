//! `tollgate serve`, the long-running node, as a real process on a loopback port: health,
//! readiness and metrics beside MCP, a drain on SIGTERM that hands a cut call to another node,
//! the nodes' heartbeats, and the recovery loop resuming a run whose host was killed with
//! `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::ledger::{AttemptStatus, RunFilter, RunStatus};
use tollgate::server::mcp::RUN_ID_META;
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::mcp_http::Session;
use tollgate_tests::plugins::{HELLO, INVOICE};

use crate::harness::{Env, erp_config, invoice, tollgate_with};

/// A `tollgate serve` process, killed when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`
    pub(crate) base: String,
    /// The node's identity, as it records it as the holder of what it runs.
    pub(crate) id: String,
    /// Everything the node has written to stderr so far.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    pub(crate) fn start(env: &Env, config: &std::path::Path, args: &[&str]) -> Self {
        Self::start_with(env, config, args, &[])
    }

    /// [`Node::start`] with `vars` set in the node's environment.
    pub(crate) fn start_with(
        env: &Env,
        config: &std::path::Path,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Self {
        Self::start_on(env, config, "127.0.0.1:0", args, vars)
    }

    /// [`Node::start_with`] listening on `listen`.
    pub(crate) fn start_on(
        env: &Env,
        config: &std::path::Path,
        listen: &str,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Self {
        let mut child = tollgate_with(env, config)
            .args(["serve", "--listen", listen])
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = loop {
            let line = lines
                .next()
                .expect("tollgate serve exited before listening")
                .unwrap();
            if line.starts_with("tollgate serve:") {
                break line;
            }
        };
        // Keep draining the node's stderr so it never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(format!("{line}\n")));
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let id = line
            .trim_start_matches("tollgate serve: ")
            .split(' ')
            .next()
            .unwrap()
            .to_owned();
        let at = line.find("http://").unwrap();
        let base = line[at..].split("/mcp").next().unwrap().to_owned();
        Self {
            child,
            base,
            id,
            log,
        }
    }

    /// `GET path`: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        // On a thread of its own: tests drive their own runtime, and a nested one would panic.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let response = reqwest::get(&url).await.expect("GET");
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            })
        })
        .join()
        .unwrap()
    }
}

impl Node {
    /// Sends the node `sig` (`-TERM`, `-STOP`, `-CONT`) with `kill`.
    pub(crate) fn signal(&self, sig: &str) {
        let sent = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {sig}");
    }

    /// Waits up to `limit` for the node to exit; how it exited.
    pub(crate) async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "node {} did not exit", self.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        _ = self.child.kill();
        _ = self.child.wait();
    }
}

/// One MCP exchange over streamable HTTP, as any client makes it: a new session, then one
/// `tools/call` (with `meta` as its `_meta`, unless empty). The call's result; `Err` for a
/// node that is gone, refuses, or answers nothing usable.
pub(crate) async fn mcp_call(
    client: &reqwest::Client,
    base: &str,
    tool: &str,
    arguments: Value,
    meta: Value,
) -> Result<Value, String> {
    Session::open(client, base)
        .await?
        .call(tool, arguments, meta)
        .await
}

/// [`mcp_call`] without `_meta`, by a test that expects an answer.
async fn call_over_mcp(base: &str, tool: &str, arguments: Value) -> Value {
    mcp_call(&reqwest::Client::new(), base, tool, arguments, json!({}))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Reads `/metrics` until the sample of `name` with `labels` appears (the counter moves just
/// after what the test waited on), or 10 s pass; returns the last text read.
fn metrics_once_counted(node: &Node, name: &str, labels: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let (status, metrics) = node.get("/metrics");
        assert_eq!(status, 200);
        if sample(&metrics, name, labels).is_some() || started.elapsed() > Duration::from_secs(10) {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the first sample of `name` whose labels hold each of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(name) && labels.iter().all(|l| line.contains(l))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn hello_config(env: &Env) -> std::path::PathBuf {
    env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_health_readiness_metrics_and_mcp_and_exits_cleanly_on_sigterm() {
    let env = Env::new();
    let config = hello_config(&env);
    let mut node = Node::start(&env, &config, &[]);
    assert_eq!(node.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(node.get("/readyz"), (200, "ready\n".to_owned()));

    let result = call_over_mcp(&node.base, "hello", json!({"message": "serve"})).await;
    assert_eq!(result["structuredContent"]["echo"], "serve", "{result}");
    let run_id = result["_meta"][RUN_ID_META].as_str().unwrap().to_owned();
    let run = env.open_ledger().run(&run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let attempts = env.open_ledger().attempts(&run_id).unwrap();
    assert_eq!(
        attempts[0].holder, node.id,
        "the node records itself as the holder"
    );

    let (status, metrics) = node.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            "tollgate_calls_total",
            &["tool=\"hello\"", "status=\"succeeded\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tollgate_calls_in_flight", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tollgate_call_seconds_count", &["tool=\"hello\""]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tollgate_open_escalations", &[]),
        Some(0.0),
        "{metrics}"
    );
    // What the runtime measured: the attempt, and the ledger writes that recorded it.
    assert_eq!(
        sample(
            &metrics,
            "tollgate_attempts_total",
            &["tool=\"hello\"", "outcome=\"succeeded\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_attempt_seconds_count",
            &["tool=\"hello\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "tollgate_ledger_writes_total",
            &["outcome=\"committed\""]
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "tollgate_ledger_write_seconds_count", &[]).is_some_and(|n| n >= 2.0),
        "{metrics}"
    );

    // SIGTERM with nothing in flight: the node stops and exits 0.
    node.signal("-TERM");
    let status = node.exited(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
}

/// `record = "async"`: a read-only tool's run is answered first and written after, whole. A
/// node that stops gracefully has written every run it answered; a node killed with `kill
/// -9` may lose the last runs it answered, but leaves no part of one (nothing for recovery
/// to resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_recorded_async_are_written_by_a_graceful_stop_and_whole_after_a_kill_9() {
    let env = Env::new();
    let config = env.config_file(&format!(
        "[tools.hello]\ncomponent = {HELLO:?}\nrecord = \"async\"\n"
    ));
    let mut node = Node::start(&env, &config, &[]);
    let mut answered = Vec::new();
    for n in 0..5 {
        let result = call_over_mcp(&node.base, "hello", json!({"message": format!("m{n}")})).await;
        answered.push(result["_meta"][RUN_ID_META].as_str().unwrap().to_owned());
    }
    node.signal("-TERM");
    assert_eq!(node.exited(Duration::from_secs(20)).await.code(), Some(0));
    let ledger = env.open_ledger();
    for (n, run_id) in answered.iter().enumerate() {
        let run = ledger.run(run_id).unwrap().expect("the run was written");
        assert_eq!(run.status, RunStatus::Succeeded, "{run_id}");
        let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
        assert_eq!(output["echo"], format!("m{n}"), "{run_id}");
    }
    drop(ledger);

    // Killed while two clients call as fast as they can.
    let mut node = Node::start(&env, &config, &[]);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (base, count) = (node.base.clone(), count.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let args = json!({"message": "load"});
                while mcp_call(&client, &base, "hello", args.clone(), json!({}))
                    .await
                    .is_ok()
                {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    while count.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few answers"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    for caller in callers {
        caller.await.unwrap();
    }
    let ledger = env.open_ledger();
    let filter = RunFilter {
        limit: 100_000,
        ..RunFilter::default()
    };
    let runs = ledger.runs(&filter).unwrap();
    assert!(runs.len() > answered.len(), "the second node wrote runs");
    for run in runs {
        let id = &run.run_id;
        assert_eq!(run.status, RunStatus::Succeeded, "{id}");
        let attempts = ledger.attempts(id).unwrap();
        assert_eq!(attempts.len(), 1, "{id}");
        assert_eq!(attempts[0].status, AttemptStatus::Succeeded, "{id}");
        let journal = ledger.journal_entries(id).unwrap();
        assert_eq!(
            journal.first().map(|e| e.event.as_str()),
            Some("run.created"),
            "{id}"
        );
        assert_eq!(
            journal.last().map(|e| e.event.as_str()),
            Some("attempt.succeeded"),
            "{id}"
        );
    }
}

/// Starts an invoice run of the real binary on `config` and kills it (`kill -9`) while its
/// request waits on the ERP, which booked it; returns the run's id.
async fn killed_mid_dispatch(env: &Env, config: &std::path::Path, erp: &Erp) -> String {
    let mut host = tollgate_with(env, config)
        .args(["run", INVOICE, "--input", &invoice("INV-REC")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while erp.stats().requests < 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "no request");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    host.kill().unwrap(); // SIGKILL, mid-dispatch, lease still running
    host.wait().unwrap();
    env.open_ledger().runs(&RunFilter::default()).unwrap()[0]
        .run_id
        .clone()
}

/// An ERP that books the first request and holds its answer for a minute, and a config
/// with a short lease (`extra` adds to the invoice tool's table).
fn recovery_setup(env: &Env, extra: &str) -> (Erp, std::path::PathBuf) {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let config = env.config_file(&format!(
        "lease_ttl_ms = 1500\n{}component = {INVOICE:?}\n{extra}",
        erp_config(&erp.invoices_url(), true, 120_000)
    ));
    (erp, config)
}

/// Waits until `run_id` is no longer running.
async fn ended(env: &Env, run_id: &str) -> tollgate::ledger::Run {
    let ledger = env.open_ledger();
    let started = Instant::now();
    loop {
        let run = ledger.run(run_id).unwrap().unwrap();
        if run.status != RunStatus::Running {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run was not recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A run's host is killed mid-dispatch; a serving node finds its lapsed lease, claims the run
/// and resumes it, and the key-honouring ERP books the invoice once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_resumes_a_run_whose_host_was_killed() {
    let env = Env::new();
    let (erp, config) = recovery_setup(&env, "");
    let run_id = killed_mid_dispatch(&env, &config, &erp).await;
    let node = Node::start(&env, &config, &["--recovery-interval-ms", "100"]);
    assert_eq!(ended(&env, &run_id).await.status, RunStatus::Succeeded);

    let ledger = env.open_ledger();
    let attempts = ledger.attempts(&run_id).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].status, AttemptStatus::Crashed);
    assert_eq!(
        attempts[1].holder, node.id,
        "the node holds the recovered attempt"
    );
    let recovered: Vec<_> = ledger
        .journal_entries(&run_id)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "run.recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].fields["node"], node.id.as_str());
    assert_eq!(recovered[0].fields["from"], attempts[0].holder.as_str());
    assert_eq!(
        erp.stats().postings,
        1,
        "booked once, replayed to the recovered attempt"
    );
    let labels = ["tool=\"invoice\"", "outcome=\"resumed\""];
    let metrics = metrics_once_counted(&node, "tollgate_recoveries_total", &labels);
    assert_eq!(
        sample(&metrics, "tollgate_recoveries_total", &labels),
        Some(1.0),
        "{metrics}"
    );
    // The node dispatched the effect again and recorded its (replayed) outcome.
    let effect = ["kind=\"erp.post-invoice\"", "status=\"succeeded\""];
    assert_eq!(
        sample(&metrics, "tollgate_effects_total", &effect),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_effect_seconds_count",
            &["kind=\"erp.post-invoice\""]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// A run whose hosts died on it as often as its retry policy allows attempts is not claimed
/// again, so it cannot take node after node down: it is escalated with its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_spent_its_attempts_dying_is_escalated_not_resumed() {
    let env = Env::new();
    let (erp, config) = recovery_setup(&env, "[tools.invoice.retry]\nmax_attempts = 1\n");
    let run_id = killed_mid_dispatch(&env, &config, &erp).await;
    let node = Node::start(&env, &config, &["--recovery-interval-ms", "100"]);
    assert_eq!(ended(&env, &run_id).await.status, RunStatus::Escalated);

    let ledger = env.open_ledger();
    assert_eq!(
        ledger.attempts(&run_id).unwrap().len(),
        1,
        "no attempt begun"
    );
    let escalations = ledger
        .escalations(&tollgate::ledger::EscalationFilter {
            status: None,
            run_id: Some(run_id.clone()),
            limit: 10,
        })
        .unwrap();
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(
        escalations[0].reason,
        tollgate::ledger::EscalationReason::RetriesExhausted
    );
    assert!(
        escalations[0]
            .summary
            .contains("stopped renewing its lease"),
        "{}",
        escalations[0].summary
    );
    assert_eq!(erp.stats().requests, 1, "nothing sent again");
    let labels = ["tool=\"invoice\"", "outcome=\"escalated\""];
    let metrics = metrics_once_counted(&node, "tollgate_recoveries_total", &labels);
    assert_eq!(
        sample(&metrics, "tollgate_recoveries_total", &labels),
        Some(1.0),
        "{metrics}"
    );
}

/// `tollgate nodes --json`, parsed.
fn nodes(env: &Env, config: &std::path::Path) -> Vec<Value> {
    let out = tollgate_with(env, config)
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn node_view<'a>(nodes: &'a [Value], id: &str) -> &'a Value {
    nodes
        .iter()
        .find(|n| n["node_id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {nodes:?}"))
}

/// Node A drains on SIGTERM while its call waits on the ERP. When the drain time is over it
/// cuts the call and gives up the attempt's lease, so node B resumes the run at once: with a
/// 10-minute lease, only the release explains a recovery within the test's 30 s. `tollgate
/// nodes` shows both nodes live with A holding the run, then A stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_releases_a_cut_calls_lease_and_another_node_resumes_it_at_once() {
    let env = Env::new();
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let config = env.config_file(&format!(
        "lease_ttl_ms = 600000\n{}component = {INVOICE:?}\n",
        erp_config(&erp.invoices_url(), true, 120_000)
    ));
    let b = Node::start(&env, &config, &["--recovery-interval-ms", "50"]);
    let mut a = Node::start(&env, &config, &["--drain-timeout-ms", "300"]);
    let base = a.base.clone();
    let call = tokio::spawn(async move {
        let input: Value = serde_json::from_str(&invoice("INV-DRAIN")).unwrap();
        call_over_mcp(&base, "invoice", input).await
    });
    let started = Instant::now();
    while erp.stats().requests < 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "no request");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run_id = env.open_ledger().runs(&RunFilter::default()).unwrap()[0]
        .run_id
        .clone();

    let listed = nodes(&env, &config);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let a_view = node_view(&listed, &a.id);
    assert_eq!(a_view["state"], "live", "{a_view}");
    assert_eq!(a_view["holds"]["attempts"][0]["run_id"], run_id.as_str());
    assert_eq!(node_view(&listed, &b.id)["state"], "live");
    assert_eq!(
        node_view(&listed, &b.id)["holds"]["attempts"],
        json!([]),
        "B holds nothing yet"
    );

    a.signal("-TERM");
    let result = call.await.unwrap();
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("shut down before it ended; run"),
        "{result}"
    );
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("another node resumes it now"),
        "{result}"
    );
    let status = a.exited(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "A drains and exits cleanly");

    assert_eq!(ended(&env, &run_id).await.status, RunStatus::Succeeded);
    let ledger = env.open_ledger();
    let attempts = ledger.attempts(&run_id).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].holder, a.id);
    assert_eq!(attempts[1].holder, b.id, "B resumed the run");
    let events: Vec<_> = ledger.journal_entries(&run_id).unwrap();
    let released = events
        .iter()
        .position(|e| e.event == "attempt.released")
        .unwrap_or_else(|| panic!("no attempt.released in {events:?}"));
    assert_eq!(events[released].fields["node"], a.id.as_str());
    let recovered = events
        .iter()
        .position(|e| e.event == "run.recovered")
        .unwrap_or_else(|| panic!("no run.recovered in {events:?}"));
    assert!(released < recovered);
    assert_eq!(events[recovered].fields["from"], a.id.as_str());
    assert_eq!(erp.stats().postings, 1, "booked once, replayed to B");

    let listed = nodes(&env, &config);
    assert_eq!(node_view(&listed, &a.id)["state"], "stopped");
    assert_eq!(node_view(&listed, &b.id)["state"], "live");
    assert_eq!(node_view(&listed, &a.id)["holds"]["attempts"], json!([]));
}
