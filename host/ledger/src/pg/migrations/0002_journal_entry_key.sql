-- A journal entry queued by a process carries a key that process chose, so an entry written
-- again after a commit whose answer was lost (the connection dropped at COMMIT) is stored
-- once. Entries written inside an op's own transaction have none (NULLs never conflict).
ALTER TABLE journal ADD COLUMN entry_key TEXT;
CREATE UNIQUE INDEX journal_by_entry_key ON journal (entry_key);
