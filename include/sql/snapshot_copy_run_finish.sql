-- Every range of the run is copied.
UPDATE pyairtable_snapshot_copy.copy_run
SET finished_at = clock_timestamp()
WHERE finished_at IS NULL
