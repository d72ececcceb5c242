-- 0003: escalations (runs parked for a human decision), and the two parked run statuses.
-- Never edit a released migration; add the next numbered file instead.

-- Deferred so the runs rebuild below is checked against attempts, checkpoints and journal
-- only at commit. Resets itself when the migration's transaction ends.
PRAGMA defer_foreign_keys = ON;

-- Widen the CHECK on runs.status to admit 'escalated' and 'waiting_approval'. SQLite cannot
-- alter a CHECK, so the table is rebuilt. It is recreated under its own name rather than built
-- as runs_new and renamed: DROP TABLE counts every child row it orphans as a deferred foreign
-- key violation, and only inserting the parent rows back under the name `runs` uncounts them
-- (a rename does not), so the commit verifies that no run was lost. Rowids are kept because
-- they order runs created in the same millisecond.
CREATE TABLE runs_rebuild (
    copy_rowid    INTEGER NOT NULL PRIMARY KEY,
    run_id        TEXT    NOT NULL,
    tool          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    output        TEXT,
    error_class   TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
INSERT INTO runs_rebuild
SELECT rowid, run_id, tool, input, status, output, error_class, error_message, attempts,
       created_at, updated_at
FROM runs;

DROP TABLE runs;

CREATE TABLE runs (
    run_id        TEXT    NOT NULL PRIMARY KEY,
    tool          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'in_doubt',
                                                     'escalated', 'waiting_approval')),
    output        TEXT,
    error_class   TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
INSERT INTO runs (rowid, run_id, tool, input, status, output, error_class, error_message,
                  attempts, created_at, updated_at)
SELECT copy_rowid, run_id, tool, input, status, output, error_class, error_message, attempts,
       created_at, updated_at
FROM runs_rebuild;
DROP TABLE runs_rebuild;
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status_created ON runs (status, created_at);

-- A resolved escalation keeps its row: it is the record of who decided what, and why.
CREATE TABLE escalations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT    NOT NULL REFERENCES runs (run_id),
    reason            TEXT    NOT NULL CHECK (reason IN ('retries_exhausted', 'non_retryable',
                                                         'in_doubt', 'approval')),
    summary           TEXT    NOT NULL,
    effect_kind       TEXT,
    effect_key        TEXT,
    evidence          TEXT    NOT NULL, -- JSON
    status            TEXT    NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution        TEXT    CHECK (resolution IS NULL OR resolution IN ('retry',
                                     'mark_succeeded', 'abandon', 'approved', 'rejected')),
    resolution_reason TEXT,
    resolved_by       TEXT,
    created_at        INTEGER NOT NULL,
    resolved_at       INTEGER,
    CHECK ((status = 'open') = (resolution IS NULL))
) STRICT;
CREATE INDEX escalations_by_status ON escalations (status, id);
CREATE INDEX escalations_by_run ON escalations (run_id, id);
-- At most one open escalation per run.
CREATE UNIQUE INDEX escalations_one_open_per_run ON escalations (run_id) WHERE status = 'open';
