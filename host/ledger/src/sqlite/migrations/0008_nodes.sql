-- 0008: the nodes of a fleet. Each `tollgate serve` process heartbeats its row, so an
-- operator can see which nodes are alive and what each holds; a clean shutdown sets
-- `stopped_at`. Rows of nodes silent for long are deleted by a starting node.
-- Never edit a released migration; add the next numbered file instead.

CREATE TABLE nodes (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    address      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    -- The node's own lease TTL: it is dead once silent this long.
    lease_ttl_ms INTEGER NOT NULL CHECK (lease_ttl_ms > 0),
    stopped_at   INTEGER
) STRICT;

-- What a node holds is read by holder: the running attempts and the unreleased locks.
CREATE INDEX attempts_running_by_holder ON attempts (holder) WHERE status = 'running';
CREATE INDEX locks_by_holder ON locks (holder) WHERE released = 0;
