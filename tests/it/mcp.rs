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

/// `tollgate mcp` on stdio with `config`: the process, its stdin, and its answers, one JSON
/// message per call.
pub(crate) fn stdio_server(
    env: &Env,
    config: &Path,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    impl FnMut() -> Value,
) {
    let mut child = tollgate_with(env, config)
        .arg("mcp")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate mcp");
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next = move || -> Value {
        let line = lines.next().expect("an answer").expect("a line");
        serde_json::from_str(&line).expect("JSON")
    };
    (child, stdin, next)
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
    let (mut child, mut stdin, mut next) = stdio_server(&env, &config);
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

/// Input that is not an MCP message gets the JSON-RPC error it deserves, on stdio and over
/// HTTP: `-32700` for what is not JSON, `-32600` for JSON that is not a message (with its
/// `id` when it has one), and the session goes on. A malformed notification or response on
/// stdio gets no answer, so two peers cannot feed each other errors forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_its_json_rpc_error_on_stdio_and_over_http() {
    use std::io::Write as _;
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    let (mut child, mut stdin, mut next) = stdio_server(&env, &config);
    // Each refusal is awaited before the next line, so answers come in order.
    writeln!(stdin, "{{not json").unwrap();
    let parse = next();
    assert_eq!(parse["error"]["code"], -32700, "{parse}");
    assert_eq!(parse["id"], Value::Null, "{parse}");
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":"q7","method":42}}"#).unwrap();
    let invalid = next();
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");
    assert_eq!(invalid["id"], "q7", "{invalid}");
    writeln!(stdin, r#"[{{"jsonrpc":"2.0","id":1,"method":"ping"}}]"#).unwrap();
    let batch = next();
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    // Bytes that are not UTF-8, then a line over the 16 MiB cap: each answered, and reading
    // goes on after both.
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"\xff\xfe\"}\n")
        .unwrap();
    let bytes = next();
    assert_eq!(bytes["error"]["code"], -32700, "{bytes}");
    let mut long = vec![b' '; (16 << 20) + 1];
    long.push(b'\n');
    stdin.write_all(&long).unwrap();
    let long = next();
    assert_eq!(long["error"]["code"], -32600, "{long}");
    assert!(
        long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{long}"
    );
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"malformed","version":"1"}}}}}}"#
    )
    .unwrap();
    let init = next();
    assert_eq!(init["id"], 1, "{init}");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    // Neither of these is answered: the next line out is the tools/list result.
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32700,"message":"x"}}}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/bogus","params":3}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    let listed = next();
    assert_eq!(listed["result"]["tools"][0]["name"], "hello", "{listed}");
    drop(stdin);
    assert!(child.wait().unwrap().success());

    let node = crate::serve::Node::start(&env, &config, &[]);
    let post = |body: &'static str| {
        let url = format!("{}/mcp", node.base);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, parse) = post("{not json").await;
    assert_eq!(
        (status, &parse["error"]["code"]),
        (400, &Value::from(-32700)),
        "{parse}"
    );
    let (status, invalid) = post(r#"{"jsonrpc":"2.0","id":9,"method":42}"#).await;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");
    assert_eq!(invalid["id"], 9, "{invalid}");
}

/// A client may pipe requests in and send answers to a file: stdin stays readable while it
/// waits for the next request, even though only one of the two is a pipe.
#[test]
fn stdio_serves_a_pipe_in_and_a_file_out() {
    use std::io::Write as _;
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    let out_path = env.dir.path().join("answers.jsonl");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = tollgate_with(&env, &config)
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tollgate mcp");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"file","version":"1"}}}}}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    // The server reads an empty pipe here, as it does between any two requests.
    std::thread::sleep(std::time::Duration::from_millis(300));
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let answers = std::fs::read_to_string(&out_path).unwrap();
    let listed: Value = serde_json::from_str(answers.lines().nth(1).expect("two answers")).unwrap();
    assert_eq!(listed["result"]["tools"][0]["name"], "hello", "{answers}");
}

/// `_meta` of a stateless (2026-07-28) request: the protocol version, who the client is and
/// what it supports, carried on every request instead of a session.
fn stateless_meta() -> Value {
    serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "tollgate-tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

/// One stateless POST of `method` with `params` (and the stateless `_meta`), with `token` as
/// its bearer: the response's session header, if any, and the JSON-RPC message it answered.
pub(crate) async fn stateless(
    base: &str,
    token: Option<&str>,
    method: &str,
    name: Option<&str>,
    mut params: Value,
) -> (Option<String>, Value) {
    params["_meta"] = stateless_meta();
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{method}");
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    let message = body
        .lines()
        .map(|line| line.strip_prefix("data:").unwrap_or(line).trim())
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|message| message["id"] == 1)
        .unwrap_or_else(|| panic!("no answer to {method} in {body:?}"));
    (session, message)
}

/// The 2026-07-28 protocol is served statelessly (`server/discover`, no session, every
/// request carrying its own version and capabilities), and on the same endpoint a 2025
/// client still opens a session and calls as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2026_07_28_protocol_is_served_statelessly_beside_2025_sessions() {
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    let node = crate::serve::Node::start(&env, &config, &[]);

    let (session, discovered) = stateless(
        &node.base,
        None,
        "server/discover",
        None,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(session, None, "no session under 2026-07-28");
    let versions = discovered["result"]["supportedVersions"]
        .as_array()
        .unwrap();
    for version in ["2026-07-28", "2025-11-25", "2025-06-18"] {
        assert!(
            versions.iter().any(|v| v == version),
            "{version}: {discovered}"
        );
    }
    assert!(
        discovered["result"]["capabilities"]["tools"].is_object(),
        "{discovered}"
    );

    let (_, listed) = stateless(&node.base, None, "tools/list", None, serde_json::json!({})).await;
    assert_eq!(listed["result"]["tools"][0]["name"], "hello", "{listed}");
    let (session, called) = stateless(
        &node.base,
        None,
        "tools/call",
        Some("hello"),
        serde_json::json!({"name": "hello", "arguments": {"message": "stateless"}}),
    )
    .await;
    assert_eq!(session, None);
    let result = &called["result"];
    assert_eq!(result["structuredContent"]["echo"], "stateless", "{called}");
    let run_id = result["_meta"]["tollgate/runId"].as_str().unwrap();
    let run = env
        .open_ledger()
        .run(run_id)
        .unwrap()
        .expect("the call is a recorded run");
    assert_eq!(run.tool, "hello");

    for version in ["2025-11-25", "2025-06-18"] {
        let client = reqwest::Client::new();
        let mut session =
            tollgate_tests::mcp_http::Session::open_version(&client, &node.base, version)
                .await
                .unwrap();
        let result = session
            .call(
                "hello",
                serde_json::json!({"message": version}),
                serde_json::json!({}),
            )
            .await
            .unwrap();
        assert_eq!(result["structuredContent"]["echo"], version, "{result}");
    }
}
