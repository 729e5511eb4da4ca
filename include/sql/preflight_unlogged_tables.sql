-- Preflight, source: unlogged tables, which logical replication never carries.
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence = 'u'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
