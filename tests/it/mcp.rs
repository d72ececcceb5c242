//! `tollgate mcp` driven by real MCP clients from outside the project: the `mcp` Python SDK
//! over stdio and `@modelcontextprotocol/sdk` (Node) over streamable HTTP, both installed
//! pinned by `tests/mcp/setup.sh`. Each client runs the same scenario and prints what it saw.

use crate::harness::{Env, erp_config, events, invoice, tollgate_bin, tollgate_with};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tollgate_tests::erp::Erp;
use tollgate_tests::plugins::{HELLO, HOSTILE_COMPUTE, HOSTILE_NET, INVOICE};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

/// The operator config `tollgate mcp` serves: four tools, each with its component.
fn config(env: &Env, erp: &Erp) -> PathBuf {
    env.config_file(&format!(
        r#"{erp}component = {invoice:?}

[tools.hello]
component = {hello:?}

[tools.hostile-net]
component = {net:?}
[[tools.hostile-net.http]]
host = "{erp_host}"

[tools.hostile-compute]
component = {compute:?}
[tools.hostile-compute.limits]
cpu_ms = 60000
timeout_ms = 60000
"#,
        erp = erp_config(&erp.invoices_url(), true, 5_000),
        invoice = INVOICE,
        hello = HELLO,
        net = HOSTILE_NET,
        compute = HOSTILE_COMPUTE,
        erp_host = erp.addr(),
    ))
}

/// An invoice whose total does not add up: the tool refuses it as a validation error.
fn bad_invoice() -> String {
    let mut v: Value = serde_json::from_str(&invoice("INV-BAD")).unwrap();
    v["total_cents"] = 1.into();
    v.to_string()
}

fn client_output(output: std::process::Output, what: &str) -> Value {
    assert!(
        output.status.success(),
        "{what} failed ({}); run tests/mcp/setup.sh if its SDK is missing.\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

/// What both clients must have seen, and what the ERP and the ledger must show for it.
async fn assert_scenario(seen: &Value, erp: &Erp, env: &Env, invoice_id: &str) {
    assert_eq!(seen["server"], "tollgate");
    let tools = seen["tools"].as_object().unwrap();
    assert_eq!(tools.len(), 4, "{tools:?}");
    let invoice_tool = &tools["invoice"];
    assert_eq!(invoice_tool["schema"]["type"], "object");
    assert!(
        invoice_tool["schema"]["properties"]["invoice_id"].is_object(),
        "the input schema comes from describe: {invoice_tool}"
    );
    assert_eq!(invoice_tool["annotations"]["idempotentHint"], true);
    assert_eq!(invoice_tool["annotations"]["readOnlyHint"], false);
    assert_eq!(tools["hello"]["annotations"]["readOnlyHint"], true);

    let hello = &seen["hello"];
    assert_eq!(hello["is_error"], false, "{hello}");
    assert_eq!(hello["structured"]["echo"], "MCP");
    let hello_run = hello["meta"]["tollgate/runId"].as_str().unwrap();
    assert!(hello_run.starts_with("mcp-"), "{hello_run}");
    assert!(hello["text"].as_str().unwrap().contains("MCP"));

    let first = &seen["invoice_first"];
    assert_eq!(first["is_error"], false, "{first}");
    assert_eq!(first["structured"]["posted"], true);
    let run_id = first["meta"]["tollgate/runId"].as_str().unwrap();
    let repeat = &seen["invoice_repeat"];
    assert_eq!(repeat["is_error"], false, "{repeat}");
    assert_eq!(
        repeat["meta"]["tollgate/runId"], run_id,
        "the same run answers"
    );
    assert_eq!(repeat["meta"]["tollgate/replayed"], true);
    assert_eq!(repeat["structured"], first["structured"]);
    assert_eq!(erp.postings_for(invoice_id), 1, "one posting at the ERP");

    let conflict = &seen["invoice_conflict"];
    assert_eq!(conflict["is_error"], true, "{conflict}");
    assert_eq!(conflict["structured"]["class"], "conflict");
    assert_eq!(conflict["structured"]["run_id"], run_id);

    let tool_error = &seen["tool_error"];
    assert_eq!(tool_error["is_error"], true, "{tool_error}");
    assert_eq!(tool_error["structured"]["class"], "validation");
    assert!(tool_error["meta"]["tollgate/runId"].is_string());

    let denied = &seen["denied"];
    assert_eq!(denied["is_error"], true, "{denied}");
    assert_eq!(denied["structured"]["class"], "permission");

    assert_eq!(seen["cancelled"], true);
    assert_eq!(seen["after_cancel"]["structured"]["echo"], "again");
    let progress: Vec<&str> = seen["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        progress.iter().any(|p| p.starts_with("attempt.started")),
        "progress notifications name the run's milestones: {progress:?}"
    );

    // The ledger: the cancelled run's attempt ended, journaled, and stays resumable.
    let runtime = env.runtime("");
    let runs = runtime.ledger().runs(&Default::default()).unwrap();
    let cancelled = runs
        .iter()
        .find(|r| r.tool == "hostile-compute")
        .expect("the cancelled call is a recorded run");
    assert!(
        events(&runtime, &cancelled.run_id).contains(&"attempt.cancelled".to_owned()),
        "{:?}",
        events(&runtime, &cancelled.run_id)
    );
    let attempt = runtime
        .ledger()
        .attempts(&cancelled.run_id)
        .unwrap()
        .remove(0);
    assert_eq!(attempt.status, tollgate::ledger::AttemptStatus::Failed);
    assert_eq!(erp.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_stdio_lists_calls_dedupes_and_cancels() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = config(&env, &erp);
    let python = clients_dir().join(".venv/bin/python");
    let output = Command::new(&python)
        .arg(clients_dir().join("client_stdio.py"))
        .arg(tollgate_bin())
        .arg(&config)
        .arg(env.ledger())
        .arg(env.cache())
        .arg(invoice("INV-MCP-1"))
        .arg(bad_invoice())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run tests/mcp/setup.sh", python.display()));
    let seen = client_output(output, "the Python MCP client");
    assert_scenario(&seen, &erp, &env, "INV-MCP-1").await;
}

/// `tollgate mcp --listen 127.0.0.1:0`, killed when dropped.
struct HttpServer(std::process::Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_over_streamable_http_lists_calls_dedupes_and_cancels() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = config(&env, &erp);
    let mut child = tollgate_with(&env, &config)
        .args(["mcp", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = HttpServer(child);
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("tollgate mcp exited before listening")
            .unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    // Keep draining the server's stderr so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let output = Command::new("node")
        .arg(clients_dir().join("client_http.mjs"))
        .arg(&url)
        .arg(invoice("INV-MCP-2"))
        .arg(bad_invoice())
        .current_dir(clients_dir())
        .output()
        .expect("node is installed (see .ci/run)");
    let seen = client_output(output, "the Node MCP client");
    drop(server);
    assert_scenario(&seen, &erp, &env, "INV-MCP-2").await;
}

/// Progress notifications follow a run as the host journals it, not as the ledger holds it:
/// a run recorded `async`, written only after its caller has the answer, still names its
/// milestones, each call's before its result.
#[test]
fn a_run_recorded_async_reports_its_milestones_as_progress_before_its_result() {
    use std::io::Write;
    let env = Env::new();
    let config = env.config_file(&format!(
        "[tools.hello]\ncomponent = {HELLO:?}\nrecord = \"async\"\n"
    ));
    let mut child = tollgate_with(&env, &config)
        .arg("mcp")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate mcp");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("an answer").expect("a line");
        serde_json::from_str(&line).expect("JSON")
    };
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"progress","version":"1"}}}}}}"#
    )
    .unwrap();
    assert_eq!(next()["id"], 1);
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    for id in 2..7 {
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"hello","arguments":{{"message":"m"}},"_meta":{{"progressToken":{id}}}}}}}"#
        )
        .unwrap();
        let mut progress = Vec::new();
        loop {
            let message = next();
            if message["id"] == id {
                assert_eq!(message["result"]["isError"], false, "{message}");
                break;
            }
            assert_eq!(message["method"], "notifications/progress", "{message}");
            assert_eq!(message["params"]["progressToken"], id, "{message}");
            progress.push(message["params"]["message"].as_str().unwrap().to_owned());
        }
        assert!(
            progress.iter().any(|p| p.starts_with("attempt.started")),
            "call {id}: {progress:?}"
        );
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
