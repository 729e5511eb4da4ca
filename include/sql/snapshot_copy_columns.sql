-- Each carried table's columns that COPY can write (not dropped, not generated), in order, with
-- their types, and whether every one of them has a binary send and receive function.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types,
       bool_and(ty.typsend <> 0 AND ty.typreceive <> 0) AS binary_ok
FROM user_tables AS t
JOIN pg_attribute AS a ON a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped
    AND a.attgenerated = ''
JOIN pg_type AS ty ON ty.oid = a.atttypid
WHERE t.persistence = 'p'
  AND NOT t.is_partition
GROUP BY 1, 2
ORDER BY 1, 2
