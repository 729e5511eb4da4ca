-- A deferred build's session: memory to sort in, {workers} parallel workers for an index on a table
-- big enough for them, no statement timeout. 64 MB, PostgreSQL's default: a bigger sort in memory
-- was slower here (10 M records' builds, rounds in turn: 1 GB 9.35 s, 256 MB 8.66 s, 64 MB 7.77 s
-- on average, and less CPU): sorted runs merged use the CPU's caches better than one huge sort.
SET maintenance_work_mem = '64MB';
SET max_parallel_maintenance_workers = {workers};
SET statement_timeout = 0
