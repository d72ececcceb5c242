//! The recovery loop: every node looks for running runs that no live host drives (their
//! attempt's lease lapsed because its host died or hung) and resumes them, so a dead node's
//! runs go on without a human typing `tollgate resume`.
//!
//! Exactly one node resumes each run: the claim is the run's next `BeginAttempt`, which the
//! ledger grants once ([`crate::Runtime::recover`]). A node that loses the claim leaves the
//! run to the winner.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::drain::Drain;
use super::mcp::McpServer;
use super::metrics::Metrics;
use crate::runs::Recovery;

/// How often the loop looks, and how many runs it takes on each time.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryOptions {
    pub interval: Duration,
    /// Runs claimed per look, at most; the rest wait for the next look (or another node).
    pub batch: usize,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            batch: 16,
        }
    }
}

/// Runs the loop until `stop` is cancelled. The recoveries under way then drain like calls:
/// they may finish until `drain` is cut, and those still running then give up their leases
/// so another node resumes them at once.
pub async fn run(
    server: McpServer,
    metrics: Arc<Metrics>,
    options: RecoveryOptions,
    stop: CancellationToken,
    drain: Drain,
) {
    let runtime = server.runtime().clone();
    let tools = server.tool_names();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut recoveries = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(options.interval) => {}
        }
        while recoveries.try_join_next().is_some() {}
        let stranded = match runtime.stranded_runs(options.batch, &tools).await {
            Ok(stranded) => stranded,
            Err(e) => {
                tracing::warn!("recovery: cannot look for stranded runs: {e}");
                metrics.ledger_error("stranded runs");
                continue;
            }
        };
        for (run_id, tool_name) in stranded {
            if stop.is_cancelled() {
                break; // shutdown began during the look: claim nothing more
            }
            let Some(tool) = server.tool(&tool_name).cloned() else {
                continue; // only this node's tools were asked for
            };
            if !lock(&busy).insert(run_id.clone()) {
                continue; // this node is recovering it already
            }
            let (runtime, metrics) = (runtime.clone(), Arc::clone(&metrics));
            // Frees the run for the next look however the task ends, a panic included.
            let claimed = Busy {
                busy: Arc::clone(&busy),
                run_id: run_id.clone(),
            };
            let in_flight = drain.enter();
            recoveries.spawn(async move {
                let _claimed = claimed;
                let _in_flight = in_flight;
                let outcome = match runtime.recover(&tool, &run_id).await {
                    Ok(Recovery::NotStranded) => None,
                    Ok(Recovery::Escalated) => {
                        tracing::warn!(run_id, "recovery: retry budget spent, escalated");
                        Some("escalated")
                    }
                    Ok(Recovery::Resumed(report)) => {
                        tracing::info!(run_id, status = %report.status, "recovery: resumed");
                        Some("resumed")
                    }
                    Err(e) => {
                        tracing::warn!(run_id, "recovery: could not resume: {e}");
                        Some("failed")
                    }
                };
                if let Some(outcome) = outcome {
                    metrics.recovered(&tool_name, outcome);
                }
            });
        }
    }
    tokio::select! {
        () = async { while recoveries.join_next().await.is_some() {} } => return,
        () = drain.cut() => {}
    }
    let given_up: Vec<String> = lock(&busy).iter().cloned().collect();
    recoveries.shutdown().await;
    for run_id in given_up {
        let why = "the node shut down during its recovery of the run";
        if let Err(e) = runtime.released(&run_id, why).await {
            tracing::warn!(
                run_id,
                "recovery: could not release the attempt's lease: {e}"
            );
        }
    }
}

/// A run this node is recovering, until dropped.
struct Busy {
    busy: Arc<Mutex<HashSet<String>>>,
    run_id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.busy).remove(&self.run_id);
    }
}

fn lock(busy: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    busy.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
