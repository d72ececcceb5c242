//! Tollgate as an MCP server: each tool named in the operator config (with its `component`)
//! is an MCP tool, and each `tools/call` is a recorded Tollgate run, retried under the tool's
//! policy, with the run ID in the result's `_meta`.
//!
//! Served over stdio, or over streamable HTTP on a local address. The config is read once at
//! start: changing it means restarting the server (no live reload).

mod handler;

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
}

/// Serves MCP over stdin/stdout until the client closes it. Logs must go to stderr.
pub async fn serve_stdio(server: McpServer) -> Result<(), McpError> {
    let running = match pipes() {
        Some(pipes) => server.serve(pipes).await,
        None => server.serve(rmcp::transport::stdio()).await,
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
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
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
    let app = router(server);
    let (listener, bound) = bind(addr).await?;
    listening(bound);
    axum::serve(without_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| McpError::Transport(e.to_string()))
}

/// MCP streamable HTTP at `/mcp`.
pub fn router(server: McpServer) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new().nest_service("/mcp", service)
}

/// A listener on `addr`, and the address it is bound to (`addr` may ask for port 0).
pub(crate) async fn bind(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), McpError> {
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
