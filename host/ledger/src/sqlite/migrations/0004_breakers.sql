-- 0004: per-connector circuit breakers, so a tripped breaker survives a restart.
-- Never edit a released migration; add the next numbered file instead.

CREATE TABLE breakers (
    connector            TEXT    NOT NULL PRIMARY KEY,
    state                TEXT    NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL CHECK (consecutive_failures >= 0),
    open_until           INTEGER,
    updated_at           INTEGER NOT NULL
) STRICT;
