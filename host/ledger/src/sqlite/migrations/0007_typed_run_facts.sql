-- 0007: what the host needs again about a run, as typed columns rather than fields of JSON
-- written earlier: the component a resume loads, the lock each attempt takes, each
-- attempt's CPU time (the retry budget adds them up), and the payload digest an approval
-- covers. Never edit a released migration; add the next numbered file instead.
-- Rows from earlier versions are filled in from where those facts used to live: the
-- `run.created` and `attempt.*` journal entries and the escalation's evidence.

ALTER TABLE runs ADD COLUMN component TEXT;
ALTER TABLE runs ADD COLUMN lock_key TEXT;
ALTER TABLE runs ADD COLUMN lock_wait_ms INTEGER CHECK (lock_wait_ms IS NULL OR lock_wait_ms >= 0);
ALTER TABLE runs ADD COLUMN lock_ttl_ms INTEGER CHECK (lock_ttl_ms IS NULL OR lock_ttl_ms > 0);
ALTER TABLE attempts ADD COLUMN cpu_ms INTEGER NOT NULL DEFAULT 0 CHECK (cpu_ms >= 0);
ALTER TABLE escalations ADD COLUMN payload_digest TEXT;

UPDATE runs SET
    component = (SELECT json_extract(j.fields, '$.component') FROM journal j
                 WHERE j.run_id = runs.run_id AND j.event = 'run.created'
                 ORDER BY j.seq LIMIT 1),
    lock_key = (SELECT json_extract(j.fields, '$.lock.key') FROM journal j
                WHERE j.run_id = runs.run_id AND j.event = 'run.created'
                ORDER BY j.seq LIMIT 1),
    lock_wait_ms = (SELECT json_extract(j.fields, '$.lock.wait_ms') FROM journal j
                    WHERE j.run_id = runs.run_id AND j.event = 'run.created'
                    ORDER BY j.seq LIMIT 1),
    lock_ttl_ms = (SELECT json_extract(j.fields, '$.lock.ttl_ms') FROM journal j
                   WHERE j.run_id = runs.run_id AND j.event = 'run.created'
                   ORDER BY j.seq LIMIT 1);

UPDATE attempts SET cpu_ms = coalesce(
    (SELECT sum(json_extract(j.fields, '$.cpu_ms')) FROM journal j
     WHERE j.run_id = attempts.run_id AND j.attempt = attempts.attempt
       AND j.event IN ('attempt.failed', 'attempt.succeeded')), 0);

UPDATE escalations SET payload_digest = json_extract(evidence, '$.action.payload_digest');
