-- Every user table logical replication carries, with its primary key columns (in key order) and
-- their types.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name,
       coalesce(k.columns, ARRAY[]::text[]) AS key_columns,
       coalesce(k.types, ARRAY[]::text[]) AS key_types
FROM user_tables AS t
LEFT JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY key.position) AS columns,
           array_agg(format_type(a.atttypid, NULL) ORDER BY key.position) AS types
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS key(attnum, position)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = key.attnum
    WHERE i.indrelid = t.relid AND i.indisprimary
) AS k ON true
WHERE t.persistence = 'p'
  AND NOT t.is_partition
ORDER BY 1, 2
