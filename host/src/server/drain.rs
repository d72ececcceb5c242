//! A node's drain: the calls in flight when shutdown begins may finish for a while; then they
//! are cut, and each gives up its attempt's lease at once ([`crate::Runtime::released`]), so
//! another node resumes the run without waiting for the lease to lapse.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Shared by a node and its MCP server.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    cut: CancellationToken,
    calls: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a call as in flight until the token is dropped.
    pub(crate) fn enter(&self) -> TaskTrackerToken {
        self.calls.token()
    }

    /// Resolves once the drain time is over and calls still running must stop.
    pub(crate) async fn cut(&self) {
        self.cut.cancelled().await;
    }

    /// Tells the calls still running to stop and give up their leases.
    pub fn cut_now(&self) {
        self.cut.cancel();
    }

    /// Resolves once no call is in flight. Calls that begin after this was called are
    /// still waited for: a node stops taking connections before it drains.
    pub async fn idle(&self) {
        self.calls.close();
        self.calls.wait().await;
    }
}
