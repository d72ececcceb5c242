//! A call's progress notifications: the run's milestones, as this process journals them.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;

use crate::milestones;

/// Forwards a run's milestones (attempts, retries, lock waits, escalations) to the caller as
/// progress notifications, as this process journals them ([`crate::milestones`]). Stops when
/// dropped; [`finish`] first forwards the milestones noted so far.
///
/// [`finish`]: Progress::finish
pub(super) struct Progress {
    task: tokio::task::JoinHandle<()>,
    done: Arc<tokio::sync::Notify>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Progress {
    /// Follows `run_id` from now: call it before the run starts.
    pub(super) fn spawn(run_id: &str, token: ProgressToken, peer: Peer<RoleServer>) -> Self {
        let mut following = milestones::follow(run_id);
        let done = Arc::new(tokio::sync::Notify::new());
        let finished = done.clone();
        let task = tokio::spawn(async move {
            let mut step = 0u32;
            let mut finishing = false;
            loop {
                let milestone = if finishing {
                    following.try_next()
                } else {
                    tokio::select! {
                        biased;
                        milestone = following.next() => milestone,
                        // The run ended, so every milestone it had is noted: forward those.
                        () = finished.notified() => {
                            finishing = true;
                            following.try_next()
                        }
                    }
                };
                let Some(milestone) = milestone else {
                    return;
                };
                step += 1;
                let note = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_message(format!("{}: {}", milestone.event, milestone.message));
                if peer.notify_progress(note).await.is_err() {
                    return;
                }
            }
        });
        Self { task, done }
    }

    /// Forwards the rest of the run's milestones, then stops.
    pub(super) async fn finish(mut self) {
        self.done.notify_one();
        _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}
