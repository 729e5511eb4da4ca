-- A deferred build's session: memory to sort in, {workers} parallel workers for an index on a table
-- big enough for them, no statement timeout.
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = {workers};
SET statement_timeout = 0
