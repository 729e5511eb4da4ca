-- Every user table with its primary key columns (in key order) and their types.
SELECT n.nspname AS schema_name, c.relname AS table_name,
       coalesce(k.columns, ARRAY[]::text[]) AS key_columns,
       coalesce(k.types, ARRAY[]::text[]) AS key_types
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY key.position) AS columns,
           array_agg(format_type(a.atttypid, NULL) ORDER BY key.position) AS types
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS key(attnum, position)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = key.attnum
    WHERE i.indrelid = c.oid AND i.indisprimary
) AS k ON true
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence = 'p'
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND left(n.nspname, 3) <> 'pg_'
ORDER BY 1, 2
