//! `tollgate serve`: one long-running node of a fleet (see `tollgate::server::node`).

use std::time::Duration;

use super::{ExitStatus, Global, LedgerUse};
use anyhow::Result;
use tollgate::server::mcp;
use tollgate::server::node::{self, NodeOptions};
use tollgate::server::recovery::RecoveryOptions;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to serve HTTP: a PORT of 127.0.0.1, or ADDRESS:PORT, e.g. 0.0.0.0:8765, which
    /// needs bearer tokens in the config ([[mcp.tokens]]). Port 0 picks a free one.
    #[arg(long, value_name = "[ADDRESS:]PORT", value_parser = super::listen_addr)]
    listen: std::net::SocketAddr,
    /// How often the recovery loop looks for runs whose host died, in milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    recovery_interval_ms: u64,
    /// Stranded runs the recovery loop claims per look, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    recovery_batch: u64,
    /// On SIGTERM, how long calls in flight may go on before they are cut, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    drain_timeout_ms: u64,
}

pub async fn serve(global: &Global, args: ServeArgs) -> Result<ExitStatus> {
    let config_dir = global.config_dir();
    let server = mcp::McpServer::load(global.runtime(LedgerUse::Records)?, &config_dir)
        .await?
        .with_access(&config_dir)?;
    let names = server.tool_names().join(", ");
    let node_id = server.runtime().holder().to_owned();
    let options = NodeOptions {
        recovery: RecoveryOptions {
            interval: Duration::from_millis(args.recovery_interval_ms),
            batch: usize::try_from(args.recovery_batch).unwrap_or(usize::MAX),
        },
        drain: Duration::from_millis(args.drain_timeout_ms),
    };
    node::serve(
        server,
        args.listen,
        options,
        |bound| {
            eprintln!(
                "tollgate serve: {node_id} serving {names} on http://{bound}/mcp (health /healthz, /readyz, /metrics)"
            );
        },
        shutdown_signal(),
    )
    .await?;
    Ok(ExitStatus::Success)
}

/// SIGTERM (what an orchestrator sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C still stops the node");
            _ = tokio::signal::ctrl_c().await;
        }
    }
}
