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
    stopped_at   INTEGER
) STRICT;

-- What a node holds is read by holder; only unreleased locks are held.
CREATE INDEX locks_by_holder ON locks (holder) WHERE released = 0;
