-- The parallel copy's run on the target, if any (at most one row), with the server's time now.
SELECT slot, consistent_point::text AS consistent_point, snapshot, attempts, planned_at,
       attempt_started_at, finished_at, clock_timestamp() AS now
FROM pyairtable_snapshot_copy.copy_run
