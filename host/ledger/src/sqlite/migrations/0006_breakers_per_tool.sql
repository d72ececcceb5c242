-- 0006: a circuit per connector and tool, so one tool's failures (or a hostile tool whose
-- payloads make the downstream fail) never open the circuit for the other tools using the
-- connector. Never edit a released migration; add the next numbered file instead.
-- A circuit is short-lived health state, so the per-connector rows are not carried over:
-- every circuit starts closed after the upgrade and re-opens on the next failures.

DROP TABLE breakers;
CREATE TABLE breakers (
    connector            TEXT    NOT NULL,
    tool                 TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL CHECK (consecutive_failures >= 0),
    open_until           INTEGER,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (connector, tool)
) STRICT, WITHOUT ROWID;
