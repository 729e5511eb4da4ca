-- Another attempt at the run begins (the first, or one after an interruption).
UPDATE pyairtable_snapshot_copy.copy_run
SET attempts = attempts + 1, attempt_started_at = clock_timestamp()
RETURNING attempts
