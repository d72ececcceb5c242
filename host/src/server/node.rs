//! `tollgate serve`: one long-running node. Over HTTP it serves MCP at `/mcp`, liveness at
//! `/healthz`, readiness at `/readyz` and Prometheus metrics at `/metrics`; beside them it
//! runs the [`super::recovery`] loop. Any number of nodes may share one PostgreSQL ledger; on
//! the SQLite default there is one.
//!
//! Shutdown: when `shutdown` resolves the node turns not ready, stops taking connections and
//! the recovery loop, and lets calls in flight finish for up to the drain timeout; calls still
//! running then are cut, and their leases lapse for another node to take over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::mcp::{self, McpError, McpServer};
use super::metrics::Metrics;
use super::recovery::{self, RecoveryOptions};
use crate::ledger;

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub recovery: RecoveryOptions,
    /// How long calls in flight may go on after shutdown begins.
    pub drain: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            recovery: RecoveryOptions::default(),
            drain: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct Node {
    server: McpServer,
    metrics: Arc<Metrics>,
    /// False once shutdown began: a load balancer stops sending calls here.
    accepting: Arc<AtomicBool>,
}

/// Serves the node on `addr` until `shutdown` resolves and the drain is over; `listening`
/// hears the bound address (useful with port 0).
pub async fn serve(
    server: McpServer,
    addr: SocketAddr,
    options: NodeOptions,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let metrics = Arc::new(Metrics::new());
    let server = server.with_metrics(Arc::clone(&metrics));
    let node = Node {
        server: server.clone(),
        metrics: Arc::clone(&metrics),
        accepting: Arc::new(AtomicBool::new(true)),
    };
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(node.clone())
        .merge(mcp::router(server.clone()));
    let (listener, bound) = mcp::bind(addr).await?;
    listening(bound);

    let stop = CancellationToken::new();
    let recovering = tokio::spawn(recovery::run(
        server,
        metrics,
        options.recovery,
        stop.clone(),
    ));
    let signalled = stop.clone();
    let accepting = Arc::clone(&node.accepting);
    let serving =
        axum::serve(mcp::without_delay(listener), app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: not ready, draining the calls in flight");
            accepting.store(false, Ordering::SeqCst);
            signalled.cancel();
        });
    let drained = async {
        stop.cancelled().await;
        tokio::time::sleep(options.drain).await;
    };
    let result = tokio::select! {
        served = serving => served.map_err(|e| McpError::Transport(e.to_string())),
        () = drained => {
            tracing::warn!(
                "drain timeout of {} ms passed: cutting the calls still running",
                options.drain.as_millis()
            );
            Ok(())
        }
    };
    stop.cancel();
    if let Err(e) = recovering.await {
        tracing::warn!("the recovery loop ended badly: {e}");
    }
    result
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: taking calls, with every configured tool loaded (a node whose tools do not load
/// never starts) and the ledger answering at the schema this binary knows (a newer one is
/// refused when the node opens it).
async fn readyz(State(node): State<Node>) -> Response {
    if !node.accepting.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    match ledger::read(node.server.runtime().ledger(), |l| l.escalation(0)).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            node.metrics.ledger_error("readiness");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the ledger does not answer: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(node): State<Node>) -> Response {
    let text = node.metrics.render(node.server.runtime()).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
