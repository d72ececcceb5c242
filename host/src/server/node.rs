//! `tollgate serve`: one long-running node. Over HTTP it serves MCP at `/mcp`, liveness at
//! `/healthz`, readiness at `/readyz` and Prometheus metrics at `/metrics`; beside them it
//! runs the [`super::recovery`] loop and heartbeats in the ledger ([`crate::nodes`]). Any
//! number of nodes may share one PostgreSQL ledger; on the SQLite default there is one.
//!
//! Shutdown: when `shutdown` resolves the node turns not ready, stops taking connections and
//! the recovery loop, and lets calls and recoveries in flight finish for up to the drain
//! timeout; those still running then are cut at their next await point and give up their
//! leases ([`super::drain`]), so another node resumes them at once. Last, the node records
//! in the ledger that it stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::drain::Drain;
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

/// How long calls cut at the end of the drain have to record that they gave up their leases.
const RELEASE_GRACE: Duration = Duration::from_secs(10);
/// How long connections have to close once nothing runs: a client holding a stream open
/// does not keep a stopping node up.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves the node on `addr` until `shutdown` resolves and the drain is over; `listening`
/// hears the bound address (useful with port 0).
pub async fn serve(
    server: McpServer,
    addr: SocketAddr,
    options: NodeOptions,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let metrics = Arc::new(Metrics::new().with_runtime(server.runtime()));
    let drain = Drain::new();
    let server = server
        .with_metrics(Arc::clone(&metrics))
        .with_drain(drain.clone());
    let runtime = server.runtime().clone();
    let node = Node {
        server: server.clone(),
        metrics: Arc::clone(&metrics),
        accepting: Arc::new(AtomicBool::new(true)),
    };
    let (listener, bound) = mcp::bind(&server, addr).await?;
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(node.clone())
        .merge(mcp::router(server.clone(), bound));
    let address = bound.to_string();
    // Before the node says it listens, so `tollgate nodes` lists every node that does.
    if let Err(e) = runtime.heartbeat(&address, true).await {
        tracing::warn!("cannot record this node in the ledger yet (will retry): {e}");
        metrics.ledger_error("heartbeat");
    }
    listening(bound);

    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let beating = tokio::spawn(heartbeats(
        runtime.clone(),
        address,
        Arc::clone(&metrics),
        done.clone(),
    ));
    let recovering = tokio::spawn(recovery::run(
        server,
        Arc::clone(&metrics),
        options.recovery,
        stop.clone(),
        drain.clone(),
    ));
    let signalled = stop.clone();
    let accepting = Arc::clone(&node.accepting);
    let serving = axum::serve(mcp::without_delay(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: not ready, draining the calls in flight");
            accepting.store(false, Ordering::SeqCst);
            signalled.cancel();
        })
        .into_future();
    tokio::pin!(serving);
    let result = tokio::select! {
        // First: with no connection open, serving may end in the same wake that shutdown
        // began, and the drain must still run for the recoveries in flight.
        biased;
        () = stop.cancelled() => {
            finish_drain(&drain, options.drain).await;
            match tokio::time::timeout(CLOSE_GRACE, &mut serving).await {
                Ok(served) => served.map_err(|e| McpError::Transport(e.to_string())),
                Err(_) => Ok(()),
            }
        }
        served = &mut serving => served.map_err(|e| McpError::Transport(e.to_string())),
    };
    stop.cancel();
    drain.cut_now(); // reached without a drain only if serving failed: nothing may run on
    if let Err(e) = recovering.await {
        tracing::warn!("the recovery loop ended badly: {e}");
    }
    done.cancel();
    if let Err(e) = beating.await {
        tracing::warn!("the heartbeat ended badly: {e}");
    }
    runtime.records_written().await;
    if let Err(e) = runtime.node_stopped().await {
        tracing::warn!("cannot record in the ledger that this node stopped: {e}");
    }
    result
}

/// Lets calls and recoveries in flight finish for up to `timeout`; then cuts the rest, and
/// waits (boundedly) while each gives up its attempt's lease.
async fn finish_drain(drain: &Drain, timeout: Duration) {
    if tokio::time::timeout(timeout, drain.idle()).await.is_ok() {
        return;
    }
    tracing::warn!(
        "drain timeout of {} ms passed: cutting the calls still running and releasing their leases",
        timeout.as_millis()
    );
    drain.cut_now();
    if tokio::time::timeout(RELEASE_GRACE, drain.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "calls cut at shutdown did not record their release within {} s: their leases lapse after the TTL instead",
            RELEASE_GRACE.as_secs()
        );
    }
}

/// Records this node alive in the ledger about three times per lease, until `done`.
async fn heartbeats(
    runtime: crate::Runtime,
    address: String,
    metrics: Arc<Metrics>,
    done: CancellationToken,
) {
    let interval = crate::nodes::heartbeat_interval(runtime.lease_ttl_ms());
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = runtime.heartbeat(&address, false).await {
            tracing::warn!("cannot record this node's heartbeat: {e}");
            metrics.ledger_error("heartbeat");
        }
    }
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
