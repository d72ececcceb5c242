-- 0001: the core ledger. Never edit a released migration; add the next numbered file instead.
-- Planned: 0002 locks (named mutual exclusion across hosts sharing a ledger),
--          0003 escalations (runs parked for a human decision).
-- Statuses are the snake_case names from records.rs; times are unix milliseconds.

CREATE TABLE runs (
    run_id        TEXT    NOT NULL PRIMARY KEY,
    tool          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'in_doubt')),
    output        TEXT,
    error_class   TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status_created ON runs (status, created_at);

CREATE TABLE attempts (
    run_id           TEXT    NOT NULL REFERENCES runs (run_id),
    attempt          INTEGER NOT NULL CHECK (attempt >= 1),
    component_digest TEXT    NOT NULL,
    holder           TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'crashed')),
    started_at       INTEGER NOT NULL,
    lease_until      INTEGER NOT NULL,
    ended_at         INTEGER,
    error_class      TEXT,
    error_message    TEXT,
    PRIMARY KEY (run_id, attempt)
) STRICT, WITHOUT ROWID;

-- Keyed by (kind, key) alone: an idempotency key is global, not per run. No foreign key to
-- runs or attempts: an effect outlives whoever claimed it, and ownership moves by CAS.
-- A rowid table so that rowid gives creation order.
CREATE TABLE effects (
    kind           TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    payload_digest TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    run_id         TEXT    NOT NULL,
    attempt        INTEGER NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'in_doubt')),
    response       TEXT,
    error_class    TEXT,
    error_message  TEXT,
    dispatches     INTEGER NOT NULL DEFAULT 0 CHECK (dispatches >= 0),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT;
CREATE INDEX effects_by_run ON effects (run_id);

CREATE TABLE checkpoints (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT    NOT NULL REFERENCES runs (run_id),
    attempt    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    state      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX checkpoints_by_run_name ON checkpoints (run_id, name, seq);

CREATE TABLE journal (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT    NOT NULL REFERENCES runs (run_id),
    attempt INTEGER,
    at      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    event   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    fields  TEXT    NOT NULL
) STRICT;
CREATE INDEX journal_by_run ON journal (run_id, seq);
