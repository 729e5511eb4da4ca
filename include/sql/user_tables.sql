-- The one definition of a user table, which every statement about the tables reads as a CTE
-- named user_tables (hooks/database.py statement()): an ordinary or partitioned table outside the
-- system schemas. `pg_` begins only the schema names PostgreSQL reserves for itself (pg_catalog,
-- pg_toast*, the sessions' pg_temp_* and pg_toast_temp_*), so one test leaves them all out.
-- Persistence and partitions are columns: a partition needs its own replica identity, but its
-- rows travel with its parent.
SELECT c.oid AS relid, n.nspname AS schema_name, c.relname AS table_name,
       c.relpersistence::text AS persistence, c.relispartition AS is_partition,
       greatest(c.reltuples, 0)::bigint AS estimated_rows
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname <> 'information_schema'
  AND left(n.nspname, 3) <> 'pg_'
