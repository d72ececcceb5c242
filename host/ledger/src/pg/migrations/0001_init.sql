-- The whole ledger as SQLite's migration 0007 left it, in PostgreSQL's types. Times are unix
-- milliseconds (BIGINT); JSON is kept as the exact text written (TEXT), as on SQLite, so
-- evidence and fields read back byte for byte. `seq` columns give the insertion order that
-- SQLite's rowid gives.

CREATE TABLE runs (
    seq           BIGSERIAL NOT NULL UNIQUE,
    run_id        TEXT    NOT NULL PRIMARY KEY,
    tool          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'in_doubt',
                                                     'escalated', 'waiting_approval')),
    output        TEXT,
    error_class   TEXT,
    error_message TEXT,
    attempts      BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    component     TEXT,
    lock_key      TEXT,
    lock_wait_ms  BIGINT  CHECK (lock_wait_ms IS NULL OR lock_wait_ms >= 0),
    lock_ttl_ms   BIGINT  CHECK (lock_ttl_ms IS NULL OR lock_ttl_ms > 0)
);
CREATE INDEX runs_by_created ON runs (created_at, seq);
CREATE INDEX runs_by_status_created ON runs (status, created_at, seq);

CREATE TABLE attempts (
    run_id           TEXT    NOT NULL REFERENCES runs (run_id),
    attempt          BIGINT  NOT NULL CHECK (attempt >= 1),
    component_digest TEXT    NOT NULL,
    holder           TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'crashed')),
    started_at       BIGINT  NOT NULL,
    lease_until      BIGINT  NOT NULL,
    ended_at         BIGINT,
    error_class      TEXT,
    error_message    TEXT,
    cpu_ms           BIGINT  NOT NULL DEFAULT 0 CHECK (cpu_ms >= 0),
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE effects (
    seq            BIGSERIAL NOT NULL UNIQUE,
    kind           TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    payload_digest TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    run_id         TEXT    NOT NULL,
    attempt        BIGINT  NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'in_doubt')),
    response       TEXT,
    error_class    TEXT,
    error_message  TEXT,
    dispatches     BIGINT  NOT NULL DEFAULT 0 CHECK (dispatches >= 0),
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX effects_by_run ON effects (run_id, seq);

CREATE TABLE checkpoints (
    seq        BIGSERIAL PRIMARY KEY,
    run_id     TEXT    NOT NULL REFERENCES runs (run_id),
    attempt    BIGINT  NOT NULL,
    name       TEXT    NOT NULL,
    state      BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX checkpoints_by_run_name ON checkpoints (run_id, name, seq);

CREATE TABLE journal (
    seq     BIGSERIAL PRIMARY KEY,
    run_id  TEXT    NOT NULL REFERENCES runs (run_id),
    attempt BIGINT,
    at      BIGINT  NOT NULL,
    level   TEXT    NOT NULL,
    event   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    fields  TEXT    NOT NULL
);
CREATE INDEX journal_by_run ON journal (run_id, seq);

CREATE TABLE locks (
    lock_key    TEXT    NOT NULL PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    holder      TEXT    NOT NULL,
    fence       BIGINT  NOT NULL CHECK (fence >= 1),
    acquired_at BIGINT  NOT NULL,
    lease_until BIGINT  NOT NULL,
    released    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE escalations (
    id                BIGSERIAL PRIMARY KEY,
    run_id            TEXT    NOT NULL REFERENCES runs (run_id),
    reason            TEXT    NOT NULL CHECK (reason IN ('retries_exhausted', 'non_retryable',
                                                         'in_doubt', 'approval')),
    summary           TEXT    NOT NULL,
    effect_kind       TEXT,
    effect_key        TEXT,
    evidence          TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution        TEXT    CHECK (resolution IS NULL OR resolution IN ('retry',
                                     'mark_succeeded', 'abandon', 'approved', 'rejected')),
    resolution_reason TEXT,
    resolved_by       TEXT,
    created_at        BIGINT  NOT NULL,
    resolved_at       BIGINT,
    payload_digest    TEXT,
    CHECK ((status = 'open') = (resolution IS NULL))
);
CREATE INDEX escalations_by_status ON escalations (status, id);
CREATE INDEX escalations_by_run ON escalations (run_id, id);
CREATE UNIQUE INDEX escalations_one_open_per_run ON escalations (run_id) WHERE status = 'open';

CREATE TABLE call_keys (
    idempotency_key TEXT    NOT NULL PRIMARY KEY,
    tool            TEXT    NOT NULL,
    args_digest     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL REFERENCES runs (run_id),
    created_at      BIGINT  NOT NULL
);

CREATE TABLE breakers (
    connector            TEXT    NOT NULL,
    tool                 TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures BIGINT  NOT NULL CHECK (consecutive_failures >= 0),
    open_until           BIGINT,
    updated_at           BIGINT  NOT NULL,
    PRIMARY KEY (connector, tool)
);
