-- The tables the parallel copy carries (those logical replication carries), with what splitting
-- them needs: their size on disk with TOAST (partitions summed into their parent), the pages of
-- the main fork (CTID ranges), the estimated rows and a single-column integer primary key if any.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name, t.estimated_rows,
       c.relkind = 'p' AS is_partitioned,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_table_size(p.relid)), 0) FROM pg_partition_tree(t.relid) AS p)
            ELSE pg_table_size(t.relid)
       END::bigint AS table_bytes,
       (pg_relation_size(t.relid) / current_setting('block_size')::bigint) AS pages,
       k.key_column
FROM user_tables AS t
JOIN pg_class AS c ON c.oid = t.relid
LEFT JOIN LATERAL (
    SELECT min(a.attname::text) AS key_column
    FROM pg_index AS i
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = t.relid AND i.indisprimary AND i.indnatts = 1
      AND a.atttypid IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
) AS k ON true
WHERE t.persistence = 'p'
  AND NOT t.is_partition
ORDER BY 1, 2
