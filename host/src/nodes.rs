//! The nodes of a fleet, as the ledger knows them. Each `tollgate serve` process heartbeats
//! its row about three times per lease; a node is *live* while its last heartbeat is younger
//! than one lease, *stopped* after a clean shutdown, and *dead* otherwise (its attempts'
//! leases have lapsed too, so the recovery loops of the live nodes resume its runs).

use serde::Serialize;

use crate::ledger::{self, Holdings, LedgerError, Millis, NodeRecord};
use crate::services::Services;

/// A node silent for this long is forgotten: the next node to start deletes its row.
pub const FORGET_AFTER_MS: Millis = 7 * 24 * 60 * 60 * 1000;

/// Whether a node still serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Its last heartbeat is younger than one lease.
    Live,
    /// It shut down cleanly.
    Stopped,
    /// It went silent without shutting down: killed, crashed, hung or cut off.
    Dead,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Live => "live",
            Self::Stopped => "stopped",
            Self::Dead => "dead",
        })
    }
}

/// A node and what it holds, as `tollgate nodes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: NodeRecord,
    pub state: NodeState,
    /// The running attempts it leases and the locks it has not released. A dead node's are
    /// what the live nodes have yet to take over.
    pub holds: Holdings,
}

/// `node`'s state at `now`, judged by its own lease TTL.
pub fn state(node: &NodeRecord, now: Millis) -> NodeState {
    if node.stopped_at.is_some() {
        NodeState::Stopped
    } else if node.heartbeat_at.saturating_add(node.lease_ttl_ms) > now {
        NodeState::Live
    } else {
        NodeState::Dead
    }
}

/// How often a node heartbeats: three times per lease, so one lost beat does not make a
/// live node look dead; at least every 10 s, at most every 50 ms.
pub fn heartbeat_interval(lease_ttl_ms: Millis) -> std::time::Duration {
    let ms = (lease_ttl_ms / 3).clamp(50, 10_000);
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(10_000))
}

/// Records that this host, serving on `address`, is alive. The `first` beat of a process
/// also forgets nodes silent for [`FORGET_AFTER_MS`].
pub(crate) async fn heartbeat(
    services: &Services,
    address: &str,
    first: bool,
) -> Result<(), LedgerError> {
    let now = services.now();
    let op = ledger::Op::Heartbeat {
        node_id: services.holder().to_owned(),
        address: address.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        lease_ttl_ms: services.lease_ttl_ms(),
        forget_silent_before: first.then(|| now.saturating_sub(FORGET_AFTER_MS)),
        now,
    };
    ledger::apply(services.ledger(), vec![op]).await.map(drop)
}

/// Records that this host shut down cleanly.
pub(crate) async fn stopped(services: &Services) -> Result<(), LedgerError> {
    let op = ledger::Op::NodeStopped {
        node_id: services.holder().to_owned(),
        now: services.now(),
    };
    ledger::apply(services.ledger(), vec![op]).await.map(drop)
}

/// Every node the ledger knows, most recently started first, with its state and holdings.
pub(crate) async fn list(services: &Services) -> Result<Vec<NodeView>, LedgerError> {
    let nodes = ledger::read(services.ledger(), |l| l.nodes()).await?;
    let now = services.now();
    let mut views = Vec::with_capacity(nodes.len());
    for node in nodes {
        let holder = node.node_id.clone();
        let holds = ledger::read(services.ledger(), move |l| l.holdings(&holder)).await?;
        views.push(NodeView {
            state: state(&node, now),
            node,
            holds,
        });
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(heartbeat_at: Millis, lease_ttl_ms: Millis, stopped_at: Option<Millis>) -> NodeRecord {
        NodeRecord {
            node_id: "n".into(),
            address: "127.0.0.1:1".into(),
            version: "0".into(),
            started_at: 0,
            heartbeat_at,
            lease_ttl_ms,
            stopped_at,
        }
    }

    #[test]
    fn a_node_is_live_for_its_own_lease_after_its_last_beat_and_stopped_once_it_says_so() {
        assert_eq!(state(&node(1_000, 30_000, None), 30_999), NodeState::Live);
        assert_eq!(state(&node(1_000, 30_000, None), 31_000), NodeState::Dead);
        assert_eq!(state(&node(1_000, 2_000, None), 3_000), NodeState::Dead);
        assert_eq!(
            state(&node(1_000, 30_000, Some(1_500)), 1_600),
            NodeState::Stopped
        );
    }

    #[test]
    fn heartbeats_come_three_times_per_lease_within_bounds() {
        assert_eq!(heartbeat_interval(30_000).as_millis(), 10_000);
        assert_eq!(heartbeat_interval(3_000).as_millis(), 1_000);
        assert_eq!(heartbeat_interval(60).as_millis(), 50);
        assert_eq!(heartbeat_interval(3_600_000).as_millis(), 10_000);
    }
}
