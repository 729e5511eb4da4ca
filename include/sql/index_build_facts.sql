-- What the deferred builds on this database go by: whether a subscription streams into it
-- (replication writes the tables, so indexes are built CONCURRENTLY), and from what table size
-- PostgreSQL gives an index build parallel workers (min_parallel_table_scan_size).
SELECT EXISTS (
           SELECT 1 FROM pg_subscription
           WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       ) AS subscribed,
       pg_size_bytes(current_setting('min_parallel_table_scan_size')) AS parallel_build_bytes
