-- 0002: named locks with fencing tokens (mutual exclusion across hosts sharing a ledger).
-- Never edit a released migration; add the next numbered file instead.
-- One row per key, kept after release: its fence only ever grows, so a downstream that
-- remembers the largest fence it saw can refuse a stale holder. No foreign key to runs: like
-- an effect, a lock row outlives whoever took it.

CREATE TABLE locks (
    lock_key    TEXT    NOT NULL PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    holder      TEXT    NOT NULL,
    fence       INTEGER NOT NULL CHECK (fence >= 1),
    acquired_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    released    INTEGER NOT NULL DEFAULT 0 CHECK (released IN (0, 1))
) STRICT;
