//! `tollgate nodes`: the nodes of a fleet, as their heartbeats in the ledger show them, with
//! what each holds.

use super::{ExitStatus, Global, LedgerUse, print_json};
use anyhow::Result;
use tollgate::clock::format_ms;
use tollgate::text::Escaped;

pub async fn nodes(global: &Global) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Reads)?;
    let nodes = runtime.nodes().await?;
    if global.json() {
        print_json(&nodes)?;
        return Ok(ExitStatus::Success);
    }
    if nodes.is_empty() {
        println!("no node heartbeats in this ledger: `tollgate serve` starts one");
        return Ok(ExitStatus::Success);
    }
    println!(
        "{:<48} {:<8} {:<22} {:<25} {:>5} {:>5}",
        "node", "state", "address", "last heartbeat", "runs", "locks"
    );
    for view in &nodes {
        let node = &view.node;
        println!(
            "{:<48} {:<8} {:<22} {:<25} {:>5} {:>5}",
            Escaped(&node.node_id),
            view.state.to_string(),
            Escaped(&node.address),
            format_ms(node.heartbeat_at),
            view.holds.attempts.len(),
            view.holds.locks.len()
        );
        for attempt in &view.holds.attempts {
            println!(
                "    run {} attempt {}, lease until {}",
                Escaped(&attempt.run_id),
                attempt.attempt,
                format_ms(attempt.lease_until)
            );
        }
        for lock in &view.holds.locks {
            println!(
                "    lock {} (fence {}) for run {}, lease until {}",
                Escaped(&lock.key),
                lock.fence,
                Escaped(&lock.run_id),
                format_ms(lock.lease_until)
            );
        }
    }
    Ok(ExitStatus::Success)
}
