//! `tollgate mcp`: serve the config's tools over MCP, on stdio or streamable HTTP.

use super::{ExitStatus, Global, LedgerUse};
use anyhow::Result;
use tollgate::server::mcp;

#[derive(clap::Args)]
pub struct McpArgs {
    /// Serve streamable HTTP instead of stdio: on a PORT of 127.0.0.1, or on ADDRESS:PORT.
    /// Beyond loopback, the config must list bearer tokens ([[mcp.tokens]]).
    #[arg(long, value_name = "[ADDRESS:]PORT", value_parser = super::listen_addr)]
    listen: Option<std::net::SocketAddr>,
}

pub async fn mcp(global: &Global, args: McpArgs) -> Result<ExitStatus> {
    let config_dir = global.config_dir();
    let server = mcp::McpServer::load(global.runtime(LedgerUse::Records)?, &config_dir).await?;
    let runtime = server.runtime().clone();
    match args.listen {
        None => mcp::serve_stdio(server).await?,
        Some(addr) => {
            let server = server.with_access(&config_dir)?;
            let names = server.tool_names().join(", ");
            mcp::serve_http(
                server,
                addr,
                |bound| eprintln!("tollgate mcp: serving {names} on http://{bound}/mcp"),
                async {
                    _ = tokio::signal::ctrl_c().await;
                },
            )
            .await?;
        }
    }
    runtime.records_written().await;
    Ok(ExitStatus::Success)
}
