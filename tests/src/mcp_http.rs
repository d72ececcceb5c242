//! An MCP client over streamable HTTP, as small as any client is: `initialize`, then
//! `notifications/initialized`, then `tools/call`s on the session, each answered as plain
//! JSON or as an SSE stream. Shared by the tests and the load benchmark.

use serde_json::{Value, json};

/// An initialized MCP session with one server.
pub struct Session {
    client: reqwest::Client,
    url: String,
    id: Option<String>,
    next: u64,
    /// Sent as `Authorization: Bearer <token>` on every request.
    token: Option<String>,
}

impl Session {
    /// Opens a session with the server at `base` (`http://HOST:PORT`); `Err` for a server
    /// that is gone, refuses, or answers nothing usable.
    pub async fn open(client: &reqwest::Client, base: &str) -> Result<Self, String> {
        Self::open_with_token(client, base, None).await
    }

    /// [`Session::open`] with a bearer token on every request.
    pub async fn open_with_token(
        client: &reqwest::Client,
        base: &str,
        token: Option<&str>,
    ) -> Result<Self, String> {
        Self::open_as(client, base, token, "2025-06-18").await
    }

    /// [`Session::open`] negotiating protocol `version` (a 2025 one: later ones have no
    /// sessions).
    pub async fn open_version(
        client: &reqwest::Client,
        base: &str,
        version: &str,
    ) -> Result<Self, String> {
        Self::open_as(client, base, None, version).await
    }

    async fn open_as(
        client: &reqwest::Client,
        base: &str,
        token: Option<&str>,
        version: &str,
    ) -> Result<Self, String> {
        let mut session = Self {
            client: client.clone(),
            url: format!("{base}/mcp"),
            id: None,
            next: 1,
            token: token.map(str::to_owned),
        };
        let init = session
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "tollgate-tests", "version": "1"}}}),
            )
            .await?;
        if !init.status().is_success() {
            return Err(format!("initialize: {init:?}"));
        }
        session.id = init
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        init.text().await.map_err(|e| e.to_string())?;
        let notified = session
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        if !notified.status().is_success() {
            return Err(format!("notifications/initialized: {notified:?}"));
        }
        Ok(session)
    }

    /// The session's `Mcp-Session-Id`, when the server gave one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// One `tools/call` (with `meta` as its `_meta`, unless empty): the call's result.
    pub async fn call(
        &mut self,
        tool: &str,
        arguments: Value,
        meta: Value,
    ) -> Result<Value, String> {
        let mut params = json!({"name": tool, "arguments": arguments});
        if meta.as_object().is_some_and(|m| !m.is_empty()) {
            params["_meta"] = meta;
        }
        self.request("tools/call", params).await
    }

    /// One request of `method` on the session: its result, or `Err` with the JSON-RPC error
    /// it answered.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let body = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        // An SSE stream or a plain JSON body: the answer is the message with the call's id.
        body.lines()
            .map(|line| line.strip_prefix("data:").unwrap_or(line).trim())
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .find(|message| message["id"] == id)
            .ok_or_else(|| format!("no answer to {method} in {body:?}"))
            .and_then(|message| match message.get("error") {
                Some(error) => Err(format!("{method} answered a JSON-RPC error: {error}")),
                None => Ok(message["result"].clone()),
            })
    }

    async fn post(&self, body: Value) -> Result<reqwest::Response, String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| e.to_string())
    }
}
