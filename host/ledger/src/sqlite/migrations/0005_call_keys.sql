-- 0005: run-level idempotency keys. A caller (an agent over MCP) may key a whole tool call;
-- the key is recorded in the same commit as the run it started, so a repeat finds that run.

CREATE TABLE call_keys (
    idempotency_key TEXT    NOT NULL PRIMARY KEY,
    tool            TEXT    NOT NULL,
    args_digest     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL REFERENCES runs (run_id),
    created_at      INTEGER NOT NULL
) STRICT;
