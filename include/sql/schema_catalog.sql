-- Schema drift: what logical replication needs to be equal on both sides (it carries no DDL):
-- the user tables, their columns and types, their primary keys, the sequences. One row per fact,
-- compared between source and target before the switchover. The migration's own schema is left out.
WITH user_tables AS ({user_tables}),
tables AS (
    SELECT relid, quote_ident(schema_name) || '.' || quote_ident(table_name) AS table_name
    FROM user_tables
    WHERE schema_name <> 'pyairtable_migration' AND NOT is_partition
)
SELECT 'table' AS kind, t.table_name, '' AS name, '' AS detail
FROM tables AS t
UNION ALL
SELECT 'column', t.table_name, a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM tables AS t
JOIN pg_attribute AS a ON a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'primary key', t.table_name, '', pg_get_constraintdef(c.oid)
FROM tables AS t
JOIN pg_constraint AS c ON c.conrelid = t.relid AND c.contype = 'p'
UNION ALL
SELECT 'sequence', quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename), '', s.data_type::text
FROM pg_sequences AS s
WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', 'pyairtable_migration')
ORDER BY 1, 2, 3
