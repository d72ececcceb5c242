//! Who may call the MCP endpoint over HTTP, against real `tollgate serve` and `tollgate mcp
//! --listen` processes: loopback unless tokens are configured, bearer tokens per agent with
//! their own tool grants and caps on calls in flight, and `Host`/`Origin` checks against DNS
//! rebinding.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate::ledger::RunFilter;
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::mcp_http::Session;
use tollgate_tests::plugins::{HELLO, INVOICE};

use crate::harness::{Env, erp_config, invoice, tollgate_with};
use crate::serve::Node;

const BILLING_TOKEN: &str = "billing-agent-token-0123456789abcdef";
const SEARCH_TOKEN: &str = "search-agent-token-fedcba9876543210";

/// `hello` and `invoice`, with two agents: `billing` (token in a file, every tool, one call
/// in flight) and `search` (token by its sha256, `hello` only).
fn config_with_tokens(env: &Env, erp: &Erp) -> std::path::PathBuf {
    let token_file = env.dir.path().join("billing.token");
    std::fs::write(&token_file, format!("{BILLING_TOKEN}\n")).unwrap();
    let search_digest = hex::encode(Sha256::digest(SEARCH_TOKEN));
    env.config_file(&format!(
        r#"{erp}component = {INVOICE:?}

[tools.hello]
component = {HELLO:?}

[[mcp.tokens]]
agent = "billing"
token = {{ file = {token_file:?} }}
max_concurrent_calls = 1

[[mcp.tokens]]
agent = "search"
sha256 = "{search_digest}"
tools = ["hello"]
"#,
        erp = erp_config(&erp.invoices_url(), true, 10_000),
    ))
}

/// A node serving [`config_with_tokens`] (with `vars` in its environment), its ERP and its
/// test environment.
fn node_with_tokens(vars: &[(&str, &str)]) -> (Env, Erp, Node) {
    let env = Env::new();
    let erp = Erp::start(true).unwrap();
    let config = config_with_tokens(&env, &erp);
    let node = Node::start_with(&env, &config, &[], vars);
    (env, erp, node)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "tollgate-tests", "version": "1"}}})
}

/// A bare `initialize` POST with `headers`: its status, `WWW-Authenticate` and body.
async fn post_initialize(base: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_server_refuses_to_listen_beyond_loopback() {
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    for command in [
        &["serve", "--listen", "0.0.0.0:0"][..],
        &["mcp", "--listen", "0.0.0.0:0"],
    ] {
        let output = tollgate_with(&env, &config)
            .args(command)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?} started: {stderr}");
        assert!(
            stderr.contains("refusing to serve MCP on 0.0.0.0:0 without authentication")
                && stderr.contains("[[mcp.tokens]]"),
            "{command:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_port_listens_on_loopback() {
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    let node = Node::start_on(&env, &config, "0", &[], &[]);
    assert!(node.base.starts_with("http://127.0.0.1:"), "{}", node.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_only_a_valid_bearer_gets_in_and_sees_only_its_tools() {
    let (env, erp, node) = node_with_tokens(&[("RUST_LOG", "debug")]);

    let (status, challenge, body) = post_initialize(&node.base, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge, r#"Bearer realm="tollgate""#);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let wrong = "Bearer not-a-token-this-server-knows";
    let (status, challenge, body) = post_initialize(&node.base, &[("authorization", wrong)]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        challenge,
        r#"Bearer realm="tollgate", error="invalid_token""#
    );

    let client = reqwest::Client::new();
    let mut search = Session::open_with_token(&client, &node.base, Some(SEARCH_TOKEN))
        .await
        .unwrap();
    let listed = search.request("tools/list", json!({})).await.unwrap();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello"], "search is granted hello only");
    let refused = search
        .call(
            "invoice",
            serde_json::from_str(&invoice("INV-ACCESS-0")).unwrap(),
            json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        refused.contains("tool `invoice` is not granted to agent `search`"),
        "{refused}"
    );
    let hello = search
        .call("hello", json!({"message": "hi"}), json!({}))
        .await
        .unwrap();
    assert_eq!(hello["structuredContent"]["echo"], "hi", "{hello}");

    // The same grant holds for a stateless (2026-07-28) request, which has no session.
    let (_, listed) = crate::mcp::stateless(
        &node.base,
        Some(SEARCH_TOKEN),
        "tools/list",
        None,
        json!({}),
    )
    .await;
    assert_eq!(
        listed["result"]["tools"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(listed["result"]["tools"][0]["name"], "hello", "{listed}");

    let (_, refused) = crate::mcp::stateless(
        &node.base,
        Some(SEARCH_TOKEN),
        "tools/call",
        Some("invoice"),
        json!({"name": "invoice", "arguments": {}}),
    )
    .await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not granted to agent `search`"),
        "{refused}"
    );

    let mut billing = Session::open_with_token(&client, &node.base, Some(BILLING_TOKEN))
        .await
        .unwrap();
    let listed = billing.request("tools/list", json!({})).await.unwrap();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 2, "{listed}");

    // Nothing ran for the refused call, and neither token reached the node's log, even at
    // debug level.
    let runs = env
        .open_ledger()
        .runs(&RunFilter {
            status: None,
            limit: 100,
        })
        .unwrap();
    assert_eq!(runs.len(), 1, "only hello ran: {runs:?}");
    assert_eq!(runs[0].tool, "hello");
    let log = node.log.lock().unwrap().clone();
    assert!(log.contains("refused"), "denials are logged: {log}");
    for token in [BILLING_TOKEN, SEARCH_TOKEN, "not-a-token-this-server-knows"] {
        assert!(!log.contains(token), "a token reached the log");
    }
    drop(erp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_beyond_its_calls_in_flight_is_refused_as_transient_until_one_ends() {
    let (_env, erp, node) = node_with_tokens(&[]);
    erp.inject(Faults {
        delay_ms: 1_500,
        ..Faults::default()
    });
    let base = node.base.clone();
    let slow = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut session = Session::open_with_token(&client, &base, Some(BILLING_TOKEN))
            .await
            .unwrap();
        let input = serde_json::from_str(&invoice("INV-ACCESS-1")).unwrap();
        session.call("invoice", input, json!({})).await.unwrap()
    });
    // Until the invoice reaches the ERP, its call may not hold the agent's one slot yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while erp.stats().requests == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the invoice never reached the ERP"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = reqwest::Client::new();
    let mut second = Session::open_with_token(&client, &node.base, Some(BILLING_TOKEN))
        .await
        .unwrap();
    let refused = second
        .call("hello", json!({"message": "second"}), json!({}))
        .await
        .unwrap();
    assert_eq!(refused["isError"], true, "{refused}");
    assert_eq!(
        refused["structuredContent"]["class"], "transient",
        "{refused}"
    );
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("agent `billing` already has 1 calls in flight"),
        "{text}"
    );
    let posted = slow.await.unwrap();
    assert_ne!(posted["isError"], true, "{posted}");
    let after = second
        .call("hello", json!({"message": "after"}), json!({}))
        .await
        .unwrap();
    assert_eq!(after["structuredContent"]["echo"], "after", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_server_refuses_foreign_hosts_and_origins_and_accepts_its_own() {
    let env = Env::new();
    let config = env.config_file(&format!("[tools.hello]\ncomponent = {HELLO:?}\n"));
    let node = Node::start(&env, &config, &[]);
    let own = node.base.trim_start_matches("http://").to_owned();
    let evil = "http://evil.example";
    let (status, _, body) = post_initialize(&node.base, &[("origin", evil)]).await;
    assert_eq!(status, 403, "a foreign Origin is refused: {body}");
    let (status, _, body) = post_initialize(&node.base, &[("host", "evil.example")]).await;
    assert_eq!(status, 403, "a foreign Host is refused: {body}");
    let origin = format!("http://{own}");
    let (status, _, body) = post_initialize(&node.base, &[("origin", &origin)]).await;
    assert_eq!(status, 200, "the server's own origin is accepted: {body}");
    let (status, _, body) = post_initialize(&node.base, &[]).await;
    assert_eq!(status, 200, "no Origin (not a browser) is accepted: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_needs_a_token_and_a_session_serves_only_the_agent_that_opened_it() {
    let (_env, _erp, node) = node_with_tokens(&[]);
    let client = reqwest::Client::new();
    let url = format!("{}/mcp", node.base);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{method} without a token");
    }
    // billing opens a session; search, with a valid token of its own, may not use it.
    let billing = Session::open_with_token(&client, &node.base, Some(BILLING_TOKEN))
        .await
        .unwrap();
    let session = billing.id().expect("a 2025 session").to_owned();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::POST,
    ] {
        let mut request = client
            .request(method.clone(), &url)
            .bearer_auth(SEARCH_TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session);
        if method == reqwest::Method::POST {
            request = request.json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 404, "{method} on another agent's session");
    }
    // Its owner still uses it, and may close it.
    let mut billing = billing;
    let listed = billing.request("tools/list", json!({})).await.unwrap();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 2, "{listed}");
    let closed = client
        .delete(&url)
        .bearer_auth(BILLING_TOKEN)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_are_read_by_an_http_server_only() {
    let env = Env::new();
    let config = env.config_file(&format!(
        "[tools.hello]\ncomponent = {HELLO:?}\n\n[[mcp.tokens]]\nagent = \"a\"\ntoken = {{ env = \"TOLLGATE_TEST_UNSET_TOKEN\" }}\n"
    ));
    let output = tollgate_with(&env, &config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("TOLLGATE_TEST_UNSET_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("agent `a`: environment variable TOLLGATE_TEST_UNSET_TOKEN is not set"),
        "{stderr}"
    );
    // Over stdio the spawning process owns the server: no token is read, none is needed.
    assert!(std::env::var_os("TOLLGATE_TEST_UNSET_TOKEN").is_none());
    let (mut child, mut stdin, mut next) = crate::mcp::stdio_server(&env, &config);
    {
        use std::io::Write as _;
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        )
        .unwrap();
        let answer = next();
        assert_eq!(answer["id"], 1, "{answer}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
