//! Tollgate as an MCP server: each tool named in the operator config (with its `component`)
//! is an MCP tool, and each `tools/call` is a recorded Tollgate run, retried under the tool's
//! policy, with the run ID in the result's `_meta`.
//!
//! Served over stdio, or over streamable HTTP on a local address. The config is read once at
//! start: changing it means restarting the server (no live reload).

mod handler;
mod malformed;
mod progress;
mod stdio;

pub use handler::{ATTEMPT_META, IDEMPOTENCY_KEY_META, McpServer, RUN_ID_META, STATUS_META};

use rmcp::ServiceExt as _;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(
        "no tool to serve: give each tool a `component = \"path/to/tool.wasm\"` in its [tools.<name>] table"
    )]
    NoTools,
    #[error("tool `{tool}` ({path}): {source}")]
    Load {
        tool: String,
        path: String,
        source: crate::tool::LoadError,
    },
    #[error(
        "[tools.{configured}] names component {path}, which is the tool `{found}`: point it at the `{configured}` component or rename the table"
    )]
    NameMismatch {
        configured: String,
        found: String,
        path: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("MCP transport failed: {0}")]
    Transport(String),
    #[error(transparent)]
    Access(#[from] crate::server::access::AccessError),
}

/// Serves MCP over stdin/stdout until the client closes it. Logs must go to stderr.
pub async fn serve_stdio(server: McpServer) -> Result<(), McpError> {
    let running = match pipes() {
        Some((rx, tx)) => server.serve(stdio::LineTransport::new(rx, tx)).await,
        None => {
            let transport = stdio::LineTransport::new(tokio::io::stdin(), tokio::io::stdout());
            server.serve(transport).await
        }
    }
    .map_err(|e| McpError::Transport(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?;
    Ok(())
}

/// stdin and stdout as non-blocking pipes driven by the reactor, when they are pipes (as
/// for a client that spawned us). tokio's own stdin/stdout hand every read and write to a
/// blocking thread, which costs a thread wake-up each way on every message.
fn pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::FileTypeExt as _;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    // Both or neither: turning one into a pipe makes it non-blocking for the whole process,
    // and the fallback's blocking reads of stdin would then fail with EAGAIN.
    let is_pipe = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.file_type().is_fifo());
    if !is_pipe(&stdin) || !is_pipe(&stdout) {
        return None;
    }
    let rx = tokio::net::unix::pipe::Receiver::from_file(stdin).ok()?;
    let tx = tokio::net::unix::pipe::Sender::from_file(stdout).ok()?;
    Some((rx, tx))
}

/// Accepts connections with `TCP_NODELAY` set. An answer goes out in two or three writes;
/// without it, on a kept-alive connection the last write waits for the client's delayed ACK,
/// about 40 ms on every call.
pub(crate) fn without_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on an MCP connection: {e}");
        }
    })
}

/// Serves MCP over streamable HTTP at `http://<addr>/mcp` until `shutdown` resolves;
/// `listening` hears the bound address (useful with port 0).
pub async fn serve_http(
    server: McpServer,
    addr: SocketAddr,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let (listener, bound) = bind(&server, addr).await?;
    let app = router(server, bound);
    listening(bound);
    axum::serve(without_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| McpError::Transport(e.to_string()))
}

/// MCP streamable HTTP at `/mcp`, behind the server's [access rules](crate::server::access)
/// for a listener bound to `bound`.
pub fn router(server: McpServer, bound: SocketAddr) -> axum::Router {
    use rmcp::transport::StreamableHttpService;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    let access = server.access().clone();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        access.transport_config(bound),
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(answer_malformed))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::server::access::guard,
        ))
}

/// The largest POST body taken, as rmcp's own default.
const MAX_BODY_BYTES: usize = 4 << 20;

/// A JSON POST that is not an MCP message gets `400` with the JSON-RPC error it deserves
/// ([`malformed`]), where the transport alone would answer `415` in plain text. The body is
/// looked at again only when the transport refused it.
async fn answer_malformed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode, header};
    use axum::response::IntoResponse as _;
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if request.method() != Method::POST || !json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        let answer = malformed::error(
            serde_json::Value::Null,
            malformed::INVALID_REQUEST,
            format!(
                "Invalid request: the body is larger than {MAX_BODY_BYTES} bytes, or was cut off"
            ),
        );
        return json_answer(StatusCode::PAYLOAD_TOO_LARGE, answer);
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
    let response = next.run(request).await;
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    match malformed::answer_body(&bytes) {
        Some(answer) => json_answer(StatusCode::BAD_REQUEST, answer),
        None => response.into_response(),
    }
}

fn json_answer(status: axum::http::StatusCode, body: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A listener on `addr` for `server`, and the address it is bound to (`addr` may ask for
/// port 0); refused beyond loopback unless the server's access rules have tokens.
pub(crate) async fn bind(
    server: &McpServer,
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), McpError> {
    server.access().check_listen(addr)?;
    let listen = |source| McpError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = without_delay(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set");
    }
}
