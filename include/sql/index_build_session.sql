-- A deferred index build's session: memory to sort in (a big table's builds run one at a time, so
-- at most one such sort at once), {workers} parallel workers for a big table's build, no statement
-- timeout.
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = {workers};
SET statement_timeout = 0
